// The *at system calls Node's fs module lacks, as thin wrappers. They return the result or
// -errno (never throw), because they sit on the FUSE hot path where errors such as ENOENT
// are ordinary answers.
#include "common.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vfsn {

int StatxInto(int dirfd, const char* path, int flags, double* o) {
  struct statx st;
  if (statx(dirfd, path, flags | AT_STATX_SYNC_AS_STAT, STATX_BASIC_STATS | STATX_BTIME | STATX_MNT_ID, &st) < 0)
    return -errno;
  o[0] = st.stx_mask;
  o[1] = st.stx_dev_major;
  o[2] = st.stx_dev_minor;
  o[3] = static_cast<double>(st.stx_ino);
  o[4] = st.stx_mode;
  o[5] = st.stx_nlink;
  o[6] = st.stx_uid;
  o[7] = st.stx_gid;
  o[8] = st.stx_rdev_major;
  o[9] = st.stx_rdev_minor;
  o[10] = static_cast<double>(st.stx_size);
  o[11] = static_cast<double>(st.stx_blocks);
  o[12] = st.stx_blksize;
  o[13] = static_cast<double>(st.stx_atime.tv_sec);
  o[14] = st.stx_atime.tv_nsec;
  o[15] = static_cast<double>(st.stx_mtime.tv_sec);
  o[16] = st.stx_mtime.tv_nsec;
  o[17] = static_cast<double>(st.stx_ctime.tv_sec);
  o[18] = st.stx_ctime.tv_nsec;
  o[19] = static_cast<double>(st.stx_btime.tv_sec);
  o[20] = st.stx_btime.tv_nsec;
  o[21] = static_cast<double>(st.stx_mnt_id);
  o[kAttrFlagsField] = 0;
  o[kInoHighField] = static_cast<double>(st.stx_ino >> 32);
  o[kInoLowField] = static_cast<double>(st.stx_ino & 0xffffffffu);
  return 0;
}

double* ArgStatxOut(const Napi::CallbackInfo& info, size_t i) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      v.As<Napi::TypedArray>().ElementLength() < kStatxFields) {
    ThrowType(info.Env(), "out must be a Float64Array of 25");
    return nullptr;
  }
  return v.As<Napi::Float64Array>().Data();
}

bool PathArg(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  if (info[i].IsString()) {
    *out = info[i].As<Napi::String>().Utf8Value();
    return true;
  }
  if (info[i].IsBuffer()) {
    Napi::Buffer<char> b = info[i].As<Napi::Buffer<char>>();
    out->assign(b.Data(), b.Length());
    return true;
  }
  ThrowType(info.Env(), "path must be a string or a Buffer");
  return false;
}

namespace {

// openat(dirfd, path, flags, mode) -> fd or -errno. Always O_CLOEXEC.
Napi::Value OpenAt(const Napi::CallbackInfo& info) {
  int64_t dirfd, flags, mode = 0;
  std::string path;
  if (!ArgInt(info, 0, &dirfd) || !ArgInt(info, 2, &flags))
    return ThrowType(info.Env(), "openat(dirfd, path, flags, mode?)");
  if (!PathArg(info, 1, &path)) return info.Env().Undefined();
  if (info.Length() > 3) ArgInt(info, 3, &mode);
  if (path.find('\0') != std::string::npos) return Napi::Number::New(info.Env(), -EINVAL);
  int fd;
  do {
    fd = openat(static_cast<int>(dirfd), path.c_str(), static_cast<int>(flags) | O_CLOEXEC,
                static_cast<mode_t>(mode));
  } while (fd < 0 && errno == EINTR);
  return Napi::Number::New(info.Env(), fd < 0 ? -errno : fd);
}

// statx(dirfd, path, flags, out: Float64Array(25)) -> 0 or -errno.
Napi::Value Statx(const Napi::CallbackInfo& info) {
  int64_t dirfd, flags;
  std::string path;
  double* out;
  if (!ArgInt(info, 0, &dirfd) || !PathArg(info, 1, &path) || !ArgInt(info, 2, &flags) || !(out = ArgStatxOut(info, 3)))
    return info.Env().Undefined();
  return Napi::Number::New(info.Env(), StatxInto(static_cast<int>(dirfd), path.c_str(), static_cast<int>(flags), out));
}

// unlinkat(dirfd, name, flags) -> 0 or -errno.
Napi::Value UnlinkAt(const Napi::CallbackInfo& info) {
  int64_t dirfd, flags;
  std::string path;
  if (!ArgInt(info, 0, &dirfd) || !PathArg(info, 1, &path) || !ArgInt(info, 2, &flags)) return info.Env().Undefined();
  int r = unlinkat(static_cast<int>(dirfd), path.c_str(), static_cast<int>(flags));
  return Napi::Number::New(info.Env(), r < 0 ? -errno : 0);
}

// nofileLimit(out: Float64Array(2)) -> 0 or -errno: RLIMIT_NOFILE's soft and hard limits.
Napi::Value NofileLimit(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[0].As<Napi::Float64Array>().ElementLength() < 2)
    return ThrowType(info.Env(), "nofileLimit(out: Float64Array(2))");
  rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) < 0) return Napi::Number::New(info.Env(), -errno);
  double* o = info[0].As<Napi::Float64Array>().Data();
  o[0] = static_cast<double>(r.rlim_cur);
  o[1] = static_cast<double>(r.rlim_max);
  return Napi::Number::New(info.Env(), 0);
}

// setNofileLimit(soft, hard) -> 0 or -errno (EPERM: raising the hard limit needs
// CAP_SYS_RESOURCE).
Napi::Value SetNofileLimit(const Napi::CallbackInfo& info) {
  int64_t soft, hard;
  if (!ArgInt(info, 0, &soft) || !ArgInt(info, 1, &hard) || soft < 0 || hard < soft)
    return ThrowType(info.Env(), "setNofileLimit(soft, hard), 0 <= soft <= hard");
  rlimit r{static_cast<rlim_t>(soft), static_cast<rlim_t>(hard)};
  return Napi::Number::New(info.Env(), setrlimit(RLIMIT_NOFILE, &r) < 0 ? -errno : 0);
}

}  // namespace

void InitFsOps(Napi::Env env, Napi::Object exports) {
  exports.Set("nofileLimit", Napi::Function::New(env, NofileLimit));
  exports.Set("setNofileLimit", Napi::Function::New(env, SetNofileLimit));
  exports.Set("openat", Napi::Function::New(env, OpenAt));
  exports.Set("statx", Napi::Function::New(env, Statx));
  exports.Set("unlinkat", Napi::Function::New(env, UnlinkAt));
}

}  // namespace vfsn
