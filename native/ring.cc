// Ring-index access with the ordering the virtio split ring needs (virtio 1.2, 2.7.13 and
// 2.7.14). Plain JS typed-array accesses have no defined ordering against the other side,
// so the three points where ordering matters go through here:
//  - loadAcquire16: read avail.idx (device) or used.idx (driver) before reading the entries
//    it publishes;
//  - storeRelease16: publish used.idx (device) or avail.idx (driver) after writing entries;
//  - fence: a full barrier between publishing an index and reading the other side's event
//    index or flags (store-load ordering, which x86 does not give for free).
// Each call also acts as a compiler barrier for V8: it cannot move JS memory accesses
// across an opaque native call.
#include "common.h"

#include <atomic>

namespace vfsn {
namespace {

// Returns a pointer to a u16 at off inside the Buffer in info[0], or nullptr (with a pending
// exception) when it is out of bounds or misaligned.
uint16_t* U16At(const Napi::CallbackInfo& info) {
  int64_t off;
  if (!info[0].IsBuffer() || !ArgInt(info, 1, &off)) {
    ThrowType(info.Env(), "(buffer, offset) expected");
    return nullptr;
  }
  Napi::Buffer<uint8_t> b = info[0].As<Napi::Buffer<uint8_t>>();
  if (off < 0 || static_cast<uint64_t>(off) + 2 > b.Length()) {
    ThrowRange(info.Env(), "ring index outside its buffer");
    return nullptr;
  }
  uint8_t* p = b.Data() + off;
  if (reinterpret_cast<uintptr_t>(p) & 1) {
    ThrowRange(info.Env(), "misaligned ring index");
    return nullptr;
  }
  // Safe: bounds and alignment checked above, and the Buffer keeps its memory mapped.
  return reinterpret_cast<uint16_t*>(p);
}

Napi::Value LoadAcquire16(const Napi::CallbackInfo& info) {
  uint16_t* p = U16At(info);
  if (!p) return info.Env().Undefined();
  uint16_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
  return Napi::Number::New(info.Env(), v);
}

Napi::Value StoreRelease16(const Napi::CallbackInfo& info) {
  uint16_t* p = U16At(info);
  int64_t v;
  if (!p) return info.Env().Undefined();
  if (!ArgInt(info, 2, &v)) return ThrowType(info.Env(), "value expected");
  __atomic_store_n(p, static_cast<uint16_t>(v), __ATOMIC_RELEASE);
  return info.Env().Undefined();
}

Napi::Value Fence(const Napi::CallbackInfo& info) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return info.Env().Undefined();
}

}  // namespace

void InitRing(Napi::Env env, Napi::Object exports) {
  exports.Set("loadAcquire16", Napi::Function::New(env, LoadAcquire16));
  exports.Set("storeRelease16", Napi::Function::New(env, StoreRelease16));
  exports.Set("fence", Napi::Function::New(env, Fence));
}

}  // namespace vfsn
