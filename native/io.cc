// Data movement between host files and guest memory without a JS copy: preadv/pwritev
// whose iovecs point straight into Buffer views of guest memory.
// A segment list is a flat array [buf0, off0, len0, buf1, off1, len1, ...]; every segment is
// checked to lie inside its Buffer before its address goes to the kernel.
#include "common.h"

#include <limits.h>
#include <sys/uio.h>
#include <unistd.h>

#include <vector>

namespace vfsn {
namespace {

bool BuildIov(const Napi::CallbackInfo& info, size_t argi, std::vector<iovec>* iov) {
  Napi::Env env = info.Env();
  if (!info[argi].IsArray()) {
    ThrowType(env, "segment array expected");
    return false;
  }
  Napi::Array a = info[argi].As<Napi::Array>();
  uint32_t n = a.Length();
  if (n % 3 != 0) {
    ThrowType(env, "segments come in (buffer, offset, length) triples");
    return false;
  }
  iov->reserve(n / 3);
  for (uint32_t i = 0; i < n; i += 3) {
    Napi::Value b = a.Get(i), o = a.Get(i + 1), l = a.Get(i + 2);
    if (!b.IsBuffer() || !o.IsNumber() || !l.IsNumber()) {
      ThrowType(env, "bad segment");
      return false;
    }
    Napi::Buffer<uint8_t> buf = b.As<Napi::Buffer<uint8_t>>();
    double off = o.As<Napi::Number>().DoubleValue(), len = l.As<Napi::Number>().DoubleValue();
    if (!(off >= 0) || !(len >= 0) || off + len > static_cast<double>(buf.Length())) {
      ThrowRange(env, "segment outside its buffer");
      return false;
    }
    if (len > 0) iov->push_back(iovec{buf.Data() + static_cast<size_t>(off), static_cast<size_t>(len)});
  }
  return true;
}

// Loops over IOV_MAX-sized batches and short transfers; stops at EOF (read) or error.
template <bool kWrite>
int64_t Transfer(int fd, int64_t pos, std::vector<iovec>& iov) {
  int64_t total = 0;
  size_t i = 0;
  while (i < iov.size()) {
    int cnt = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t r;
    if (kWrite)
      r = pos < 0 ? writev(fd, &iov[i], cnt) : pwritev(fd, &iov[i], cnt, pos + total);
    else
      r = pos < 0 ? readv(fd, &iov[i], cnt) : preadv(fd, &iov[i], cnt, pos + total);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return total > 0 ? total : -errno;
    if (r == 0) break;
    total += r;
    size_t asked = 0;
    for (int k = 0; k < cnt; k++) asked += iov[i + k].iov_len;
    // A short read from a file means end of file: skip the extra call that would return 0.
    if (!kWrite && static_cast<size_t>(r) < asked) break;
    size_t left = static_cast<size_t>(r);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return total;
}

template <bool kWrite>
Napi::Value Rw(const Napi::CallbackInfo& info) {
  int64_t fd, pos;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &pos))
    return ThrowType(info.Env(), "(fd, position, segments)");
  std::vector<iovec> iov;
  if (!BuildIov(info, 2, &iov)) return info.Env().Undefined();
  return Napi::Number::New(info.Env(), static_cast<double>(Transfer<kWrite>(static_cast<int>(fd), pos, iov)));
}

}  // namespace

void InitIo(Napi::Env env, Napi::Object exports) {
  // preadv(fd, position (-1: current), segments) -> bytes read or -errno
  exports.Set("preadv", Napi::Function::New(env, Rw<false>));
  // pwritev(fd, position (-1: current), segments) -> bytes written or -errno
  exports.Set("pwritev", Napi::Function::New(env, Rw<true>));
}

}  // namespace vfsn
