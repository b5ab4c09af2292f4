// Entry point of the native addon: registers each part's functions on one exports object.
// The TypeScript view of this surface is src/native.ts; keep the two in step.
#include "common.h"

namespace vfsn {

const char* ErrnoCode(int err) {
  switch (err) {
#define E(x) case x: return #x;
    E(EPERM) E(ENOENT) E(ESRCH) E(EINTR) E(EIO) E(ENXIO) E(E2BIG) E(ENOEXEC) E(EBADF)
    E(ECHILD) E(EAGAIN) E(ENOMEM) E(EACCES) E(EFAULT) E(EBUSY) E(EEXIST) E(EXDEV)
    E(ENODEV) E(ENOTDIR) E(EISDIR) E(EINVAL) E(ENFILE) E(EMFILE) E(ENOTTY) E(EFBIG)
    E(ENOSPC) E(ESPIPE) E(EROFS) E(EMLINK) E(EPIPE) E(ERANGE) E(EDEADLK) E(ENAMETOOLONG)
    E(ENOLCK) E(ENOSYS) E(ENOTEMPTY) E(ELOOP) E(ENODATA) E(EPROTO) E(EOVERFLOW)
    E(EBADMSG) E(ENOTSOCK) E(EOPNOTSUPP) E(EADDRINUSE) E(ECONNRESET) E(ECONNREFUSED)
    E(ENOTCONN) E(ETIMEDOUT) E(ESTALE) E(EDQUOT) E(EMSGSIZE) E(ENOTBLK) E(ETXTBSY)
#undef E
    default: return "EUNKNOWN";
  }
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  Napi::Value v = info[i];
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d != d || d > 9007199254740992.0 || d < -9007199254740992.0) return false;
    *out = static_cast<int64_t>(d);
    return static_cast<double>(*out) == d;
  }
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Int64Value(&lossless);
    return lossless;
  }
  return false;
}

bool ArgU64(const Napi::CallbackInfo& info, size_t i, uint64_t* out) {
  Napi::Value v = info[i];
  if (v.IsBigInt()) {
    bool lossless = false;
    *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
    return lossless;
  }
  int64_t s;
  if (!ArgInt(info, i, &s) || s < 0) return false;
  *out = static_cast<uint64_t>(s);
  return true;
}

bool ArgPairs(const Napi::CallbackInfo& info, size_t i, const double** pairs, size_t* npairs) {
  Napi::Value v = info[i];
  int64_t count;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      !ArgInt(info, i + 1, &count) || count < 0) {
    ThrowType(info.Env(), "(pairs: Float64Array, count) expected");
    return false;
  }
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  if (static_cast<size_t>(count) * 2 > a.ElementLength()) {
    ThrowRange(info.Env(), "pair count exceeds the array");
    return false;
  }
  *pairs = a.Data();
  *npairs = static_cast<size_t>(count);
  return true;
}

}  // namespace vfsn

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  vfsn::InitMemory(env, exports);
  vfsn::InitSocket(env, exports);
  vfsn::InitEvents(env, exports);
  vfsn::InitRing(env, exports);
  vfsn::InitVring(env, exports);
  vfsn::InitIo(env, exports);
  vfsn::InitFsOps(env, exports);
  vfsn::InitState(env, exports);
  vfsn::InitNodeOps(env, exports);
  vfsn::InitFileOps(env, exports);
  vfsn::InitAsyncOps(env, exports);
  vfsn::InitIoPool(env, exports);
  vfsn::InitFastPath(env, exports);
  vfsn::InitKickThread(env, exports);
  vfsn::InitSandbox(env, exports);
  vfsn::InitSeccomp(env, exports);
  vfsn::InitDirtyLog(env, exports);
  vfsn::InitMigration(env, exports);
  return exports;
}

NODE_API_MODULE(virtiofsd_native, Init)
