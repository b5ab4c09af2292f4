// Guest memory: the process-wide tables of regions the front end shares with us, and
// memfd/mmap helpers for our own test front end.
//
// A memory table lives here, not in any one JS thread, so every queue worker sees the same
// regions. JS reaches a region through Buffer views made by memTableViews(); each view owns
// a reference to the mapping, so a region is unmapped only when the table has dropped it AND
// every view of it (in every worker) has been garbage-collected. Replacing the table while a
// worker still holds old views is therefore safe: old views keep pointing at valid memory.
#include "common.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace vfsn {
namespace {

// Views are split in chunks of at most this size: V8 refuses Buffers above 4 GiB and
// guests may have larger regions.
constexpr uint64_t kChunk = 1ull << 30;

struct Mapping {
  void* base = MAP_FAILED;
  size_t len = 0;
  ~Mapping() {
    if (base != MAP_FAILED) munmap(base, len);
  }
};

struct Region {
  uint64_t gpa, size, uaddr, mmapOffset;
  std::shared_ptr<Mapping> map;
  uint8_t* host() const { return static_cast<uint8_t*>(map->base) + mmapOffset; }
};

struct Table {
  std::mutex mu;
  std::vector<Region> regions;
  uint32_t generation = 0;
};

std::mutex gRegistryMu;
std::map<int64_t, std::shared_ptr<Table>> gTables;
int64_t gNextTable = 1;

std::shared_ptr<Table> FindTable(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return nullptr;
  std::lock_guard<std::mutex> g(gRegistryMu);
  auto it = gTables.find(id);
  return it == gTables.end() ? nullptr : it->second;
}

bool Overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

// Reads {gpa, size, uaddr, mmapOffset, fd} from a JS object and maps it.
// Returns false with a pending exception on error.
bool MapRegion(Napi::Env env, Napi::Value v, Region* out) {
  if (!v.IsObject()) {
    ThrowType(env, "region must be an object");
    return false;
  }
  Napi::Object o = v.As<Napi::Object>();
  const char* names[] = {"gpa", "size", "uaddr", "mmapOffset", "fd"};
  uint64_t vals[5];
  for (int i = 0; i < 5; i++) {
    Napi::Value f = o.Get(names[i]);
    double d;
    if (f.IsBigInt()) {
      bool lossless;
      vals[i] = f.As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) {
        ThrowRange(env, "region field out of range");
        return false;
      }
      continue;
    }
    if (!f.IsNumber() || (d = f.As<Napi::Number>().DoubleValue()) < 0 || d != d ||
        d > 9007199254740992.0) {
      ThrowType(env, "region fields must be non-negative integers");
      return false;
    }
    vals[i] = static_cast<uint64_t>(d);
  }
  uint64_t size = vals[1], off = vals[3];
  if (size == 0 || size + off < size || vals[0] + size < vals[0] || vals[2] + size < vals[2]) {
    ThrowRange(env, "region size is zero or wraps around");
    return false;
  }
  // A region that runs past the end of its file maps without complaint, but the first
  // touch beyond the end raises SIGBUS and would kill the daemon: refuse it here.
  struct stat st;
  if (fstat(static_cast<int>(vals[4]), &st) < 0) {
    ThrowErrno(env, errno, "fstat");
    return false;
  }
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < size + off) {
    ThrowRange(env, "memory region runs past the end of its file");
    return false;
  }
  auto m = std::make_shared<Mapping>();
  m->len = size + off;
  m->base = mmap(nullptr, m->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                 static_cast<int>(vals[4]), 0);
  if (m->base == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap");
    return false;
  }
  *out = Region{vals[0], size, vals[2], off, m};
  return true;
}

bool CheckNoOverlap(Napi::Env env, const std::vector<Region>& rs) {
  for (size_t i = 0; i < rs.size(); i++)
    for (size_t j = i + 1; j < rs.size(); j++)
      if (Overlaps(rs[i].gpa, rs[i].size, rs[j].gpa, rs[j].size) ||
          Overlaps(rs[i].uaddr, rs[i].size, rs[j].uaddr, rs[j].size)) {
        ThrowRange(env, "memory regions overlap");
        return false;
      }
  return true;
}

Napi::Value MemTableCreate(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> g(gRegistryMu);
  int64_t id = gNextTable++;
  gTables[id] = std::make_shared<Table>();
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value MemTableDestroy(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return ThrowType(info.Env(), "table id expected");
  std::lock_guard<std::mutex> g(gRegistryMu);
  gTables.erase(id);
  return info.Env().Undefined();
}

// memTableSet(id, regions[]): maps every region, then replaces the table at once.
Napi::Value MemTableSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  if (!t) return ThrowType(env, "unknown memory table");
  if (!info[1].IsArray()) return ThrowType(env, "regions array expected");
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<Region> rs;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Region r;
    if (!MapRegion(env, arr.Get(i), &r)) return env.Undefined();
    rs.push_back(std::move(r));
  }
  if (!CheckNoOverlap(env, rs)) return env.Undefined();
  std::lock_guard<std::mutex> g(t->mu);
  t->regions = std::move(rs);
  t->generation++;
  return Napi::Number::New(env, t->generation);
}

// memTableAdd(id, region): maps one more region (ADD_MEM_REG).
Napi::Value MemTableAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  if (!t) return ThrowType(env, "unknown memory table");
  Region r;
  if (!MapRegion(env, info[1], &r)) return env.Undefined();
  std::lock_guard<std::mutex> g(t->mu);
  std::vector<Region> rs = t->regions;
  rs.push_back(r);
  if (!CheckNoOverlap(env, rs)) return env.Undefined();
  t->regions = std::move(rs);
  t->generation++;
  return Napi::Number::New(env, t->generation);
}

// memTableRemove(id, gpa, size): drops the region with exactly this gpa and size
// (REM_MEM_REG). Returns the new generation, or -1 when no region matched.
Napi::Value MemTableRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  uint64_t gpa, size;
  if (!t || !ArgU64(info, 1, &gpa) || !ArgU64(info, 2, &size))
    return ThrowType(env, "memTableRemove(id, gpa, size)");
  std::lock_guard<std::mutex> g(t->mu);
  for (auto it = t->regions.begin(); it != t->regions.end(); ++it) {
    if (it->gpa == gpa && it->size == size) {
      t->regions.erase(it);
      t->generation++;
      return Napi::Number::New(env, t->generation);
    }
  }
  return Napi::Number::New(env, -1);
}

Napi::Value MemTableGeneration(const Napi::CallbackInfo& info) {
  auto t = FindTable(info);
  if (!t) return ThrowType(info.Env(), "unknown memory table");
  std::lock_guard<std::mutex> g(t->mu);
  return Napi::Number::New(info.Env(), t->generation);
}

// memTableViews(id) -> {generation, regions: [{gpa, size, uaddr, chunks: Buffer[]}]}
// Each Buffer is a zero-copy view of at most kChunk bytes that keeps its mapping alive.
Napi::Value MemTableViews(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  if (!t) return ThrowType(env, "unknown memory table");
  std::vector<Region> rs;
  uint32_t gen;
  {
    std::lock_guard<std::mutex> g(t->mu);
    rs = t->regions;
    gen = t->generation;
  }
  Napi::Object res = Napi::Object::New(env);
  res.Set("generation", Napi::Number::New(env, gen));
  Napi::Array out = Napi::Array::New(env, rs.size());
  for (size_t i = 0; i < rs.size(); i++) {
    const Region& r = rs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("gpa", Napi::Number::New(env, static_cast<double>(r.gpa)));
    o.Set("size", Napi::Number::New(env, static_cast<double>(r.size)));
    o.Set("uaddr", Napi::Number::New(env, static_cast<double>(r.uaddr)));
    uint64_t nchunks = (r.size + kChunk - 1) / kChunk;
    Napi::Array chunks = Napi::Array::New(env, nchunks);
    for (uint64_t c = 0; c < nchunks; c++) {
      uint64_t len = std::min(kChunk, r.size - c * kChunk);
      // The view holds a heap-allocated shared_ptr to the mapping; the finalizer drops it.
      auto* keep = new std::shared_ptr<Mapping>(r.map);
      chunks.Set(c, Napi::Buffer<uint8_t>::New(
                        env, r.host() + c * kChunk, len,
                        [](Napi::Env, uint8_t*, std::shared_ptr<Mapping>* k) { delete k; }, keep));
    }
    o.Set("chunks", chunks);
    out.Set(i, o);
  }
  res.Set("regions", out);
  return res;
}

// memfdCreate(name, size) -> fd: anonymous shared memory, as QEMU's memory-backend-memfd.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t size;
  if (!info[0].IsString() || !ArgInt(info, 1, &size) || size <= 0)
    return ThrowType(env, "memfdCreate(name, size)");
  std::string name = info[0].As<Napi::String>();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "memfd_create");
  if (ftruncate(fd, size) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "ftruncate");
  }
  return Napi::Number::New(env, fd);
}

// mmapShared(fd, size, offset=0) -> Buffer: a shared read-write view, unmapped when collected.
Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, size, off = 0;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &size) || size <= 0 ||
      static_cast<uint64_t>(size) > kChunk * 4 || (info.Length() > 2 && !ArgInt(info, 2, &off)))
    return ThrowType(env, "mmapShared(fd, size, offset?)");
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, off);
  if (p == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  return Napi::Buffer<uint8_t>::New(
      env, static_cast<uint8_t*>(p), size,
      [](Napi::Env, uint8_t* d, size_t* len) {
        munmap(d, *len);
        delete len;
      },
      new size_t(size));
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  exports.Set("memTableCreate", Napi::Function::New(env, MemTableCreate));
  exports.Set("memTableDestroy", Napi::Function::New(env, MemTableDestroy));
  exports.Set("memTableSet", Napi::Function::New(env, MemTableSet));
  exports.Set("memTableAdd", Napi::Function::New(env, MemTableAdd));
  exports.Set("memTableRemove", Napi::Function::New(env, MemTableRemove));
  exports.Set("memTableGeneration", Napi::Function::New(env, MemTableGeneration));
  exports.Set("memTableViews", Napi::Function::New(env, MemTableViews));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared));
}

}  // namespace vfsn
