// Data movement between host files and guest memory without a JS copy: preadv/pwritev whose
// iovecs point straight into the front end's memory. JS names the guest ranges as a
// Float64Array of (guest-physical address, length) pairs plus a count (a reused per-thread
// array: V8 keeps small typed arrays on its heap and moves them out, at about 800 ns, the
// first time native code looks at one); they are translated and bounds-checked here (GuestIovecs, memory.cc) before any address reaches the kernel, so one
// typed-array read replaces a JS object per segment. state.cc uses the same transfer for
// reads and writes through an open handle.
#include "common.h"

#include <limits.h>
#include <unistd.h>

#include <vector>

namespace vfsn {

int64_t TransferIov(int fd, int64_t pos, std::vector<iovec>& iov, bool write) {
  int64_t total = 0;
  size_t i = 0;
  while (i < iov.size()) {
    int cnt = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    ssize_t r;
    if (write)
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
    if (!write && static_cast<size_t>(r) < asked) break;
    size_t left = static_cast<size_t>(r);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  return total;
}

int TransferIovNoWait(int fd, int64_t pos, std::vector<iovec>& iov, bool write, int64_t* moved) {
  *moved = 0;
  size_t i = 0;
  int status = 1;
  while (i < iov.size()) {
    int cnt = static_cast<int>(std::min<size_t>(iov.size() - i, IOV_MAX));
    int64_t at = pos < 0 ? -1 : pos + *moved;
    ssize_t r = write ? pwritev2(fd, &iov[i], cnt, at, RWF_NOWAIT) : preadv2(fd, &iov[i], cnt, at, RWF_NOWAIT);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      status = errno == EAGAIN ? 0 : -errno;
      break;
    }
    // A read of 0 bytes is the end of the file (RWF_NOWAIT answers EAGAIN, not 0, for data
    // that is not cached). A short read is not: the rest may just not be cached yet.
    if (r == 0) {
      if (!write) return 1;
      status = 0;
      break;
    }
    *moved += r;
    size_t left = static_cast<size_t>(r);
    while (i < iov.size() && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left > 0) {
      iov[i].iov_base = static_cast<uint8_t*>(iov[i].iov_base) + left;
      iov[i].iov_len -= left;
    }
  }
  if (status != 1) iov.erase(iov.begin(), iov.begin() + static_cast<std::ptrdiff_t>(i));
  return status;
}

int64_t FinishTransfer(int fd, int64_t pos, int64_t moved, std::vector<iovec>& iov, bool write) {
  int64_t r = TransferIov(fd, pos < 0 ? pos : pos + moved, iov, write);
  return moved > 0 ? moved + std::max<int64_t>(r, 0) : r;
}

int ThreadGuestIovecs(int64_t tableId, const double* pairs, size_t npairs, std::vector<iovec>** out) {
  // One vector per thread, reused: no allocation per request once it has grown.
  thread_local std::vector<iovec> iov;
  iov.clear();
  *out = &iov;
  return GuestIovecs(tableId, pairs, npairs, &iov);
}

namespace {

// (fd, position (-1: current), table, pairs, count) -> bytes moved or -errno
template <bool kWrite>
Napi::Value Rw(const Napi::CallbackInfo& info) {
  int64_t fd, pos, table;
  const double* pairs;
  size_t n;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &pos) || !ArgInt(info, 2, &table))
    return ThrowType(info.Env(), "(fd, position, table, pairs, count)");
  if (!ArgPairs(info, 3, &pairs, &n)) return info.Env().Undefined();
  std::vector<iovec>* iov;
  int e = ThreadGuestIovecs(table, pairs, n, &iov);
  if (e) return Napi::Number::New(info.Env(), -e);
  return Napi::Number::New(info.Env(), static_cast<double>(TransferIov(static_cast<int>(fd), pos, *iov, kWrite)));
}

}  // namespace

void InitIo(Napi::Env env, Napi::Object exports) {
  exports.Set("preadv", Napi::Function::New(env, Rw<false>));
  exports.Set("pwritev", Napi::Function::New(env, Rw<true>));
}

}  // namespace vfsn
