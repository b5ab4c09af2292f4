// Shared helpers for the native addon: errno-carrying exceptions and argument checks.
//
// Two error conventions, chosen per function and documented in src/native.ts:
//  - setup calls (mmap, sockets, eventfds) throw an Error shaped like Node's own system
//    errors: {code: 'ENOENT', errno: -2, syscall: 'openat'};
//  - hot-path file-system calls return the result or -errno (the kernel's own convention),
//    so a failed LOOKUP costs no exception.
#pragma once
#include <napi.h>
#include <cerrno>
#include <cstring>
#include <string>

namespace vfsn {

const char* ErrnoCode(int err);

// Throws a Node-style system error (code, errno, syscall) as a pending JS exception.
inline Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  std::string msg = std::string(ErrnoCode(err)) + ": " + strerror(err) + ", " + syscall;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoCode(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

inline Napi::Value ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

inline Napi::Value ThrowRange(Napi::Env env, const char* msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Integer argument i as int64 (JS numbers up to 2^53 and BigInts are both accepted).
bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t* out);
bool ArgU64(const Napi::CallbackInfo& info, size_t i, uint64_t* out);

void InitMemory(Napi::Env env, Napi::Object exports);
void InitSocket(Napi::Env env, Napi::Object exports);
void InitEvents(Napi::Env env, Napi::Object exports);
void InitRing(Napi::Env env, Napi::Object exports);
void InitIo(Napi::Env env, Napi::Object exports);
void InitFsOps(Napi::Env env, Napi::Object exports);
void InitState(Napi::Env env, Napi::Object exports);

}  // namespace vfsn
