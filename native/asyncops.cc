// Blocking file operations off the calling thread, as N-API async work on libuv's thread
// pool, each returning a Promise: READ, WRITE, FSYNC for callers without a virtqueue (the
// filesystem's unit tests; a request whose reply buffer cannot hold its header), whose
// requests on a virtqueue go to the I/O pool instead (iopool.cc), which replies on the ring
// itself; and FSYNC without the pool, FALLOCATE, COPY_FILE_RANGE and SYNCFS whenever the JS
// server serves them, so that none of them blocks the JS thread every queue shares. (The
// fast path serves them on the queue's kick thread; JS gets them when a queue has no kick
// thread, at trace level, or when the fast path declines them.)
//
// A READ or WRITE is first tried on the calling thread without blocking (TryTransferNow,
// state.cc: RWF_NOWAIT); only what would block goes to the pool.
//
// For a READ or WRITE, everything that must stay valid while the system call runs on a pool
// thread is taken on the calling (queue) thread first: the handle is pinned (state.h: it cannot be closed and its
// number reused meanwhile), the guest ranges are translated into iovecs, and the thread's
// snapshot of guest memory is held (memory.cc: the mappings the iovecs point into stay
// mapped even if the front end changes the memory table meanwhile). The pin is dropped when
// the work object is destroyed, back on the queue's thread. The other operations are one
// fused call each (FusedWork), which pins what it uses on the pool thread for its length.
#include "state.h"

#include <functional>

namespace vfsn {
namespace {

class HandleWork : public Napi::AsyncWorker {
 public:
  // fd: the handle's descriptor, pinned by the caller (the pin passes to this object), or
  // -errno.
  HandleWork(Napi::Env env, FsState* s, uint64_t fh, int fd)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(s), fh_(fh), fd_(fd) {
    HoldState(s_);
    if (fd_ < 0) result_ = fd_;
  }
  ~HandleWork() override {
    if (fd_ >= 0) s_->UnpinHandle(fh_);
    ReleaseState(s_);
  }
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(result_))); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  bool ready() const { return fd_ >= 0 && result_ == 0; }

  Napi::Promise::Deferred deferred_;
  FsState* s_;
  uint64_t fh_;
  int fd_;
  int64_t result_ = 0;
};

// The rest of a READ or WRITE: iov (translated by the caller, from its snapshot of table)
// at pos, after `moved` bytes already moved on the queue's thread.
class RwWork : public HandleWork {
 public:
  RwWork(Napi::Env env, FsState* s, uint64_t fh, int fd, int64_t pos, bool write, bool killSuidgid, int64_t table,
         std::vector<iovec> iov, int64_t moved)
      : HandleWork(env, s, fh, fd),
        pos_(pos),
        write_(write),
        killSuidgid_(killSuidgid),
        moved_(moved),
        iov_(std::move(iov)),
        keep_(KeepGuestMemory(table)) {}
  void Execute() override {
    if (!ready()) return;
    FsetidDropped f(killSuidgid_);
    result_ = f.error() ? f.error() : FinishTransfer(fd_, pos_, moved_, iov_, write_);
  }

 private:
  int64_t pos_;
  bool write_;
  bool killSuidgid_;
  int64_t moved_;
  std::vector<iovec> iov_;
  std::shared_ptr<const void> keep_;
};

// One fused operation run on libuv's pool: its result. It pins the handle or inode it uses
// there, for the length of the call (ids are never reused, so one released meanwhile is
// EBADF or ESTALE, never another file's). It holds the file-system state until it is
// destroyed, back on the JS thread: a daemon stops a queue only once its requests in flight
// completed (src/vhost/queue-runner.ts), but a caller that destroys the state with one still
// queued (a test that did not wait for an fsync) must not have it run on freed memory.
class FusedWork : public Napi::AsyncWorker {
 public:
  FusedWork(Napi::Env env, FsState* s, std::function<int64_t()> op)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(s), op_(std::move(op)) {
    HoldState(s_);
  }
  ~FusedWork() override { ReleaseState(s_); }
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Execute() override { result_ = op_(); }

 protected:
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(result_))); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  FsState* s_;
  std::function<int64_t()> op_;
  int64_t result_ = 0;
};

// Queues op, which uses s, on libuv's pool: a Promise of its result.
Napi::Value QueueFused(const Napi::CallbackInfo& info, FsState* s, std::function<int64_t()> op) {
  auto* w = new FusedWork(info.Env(), s, std::move(op));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// handleFallocateAsync(id, fh, mode, offset, length, killSuidgid?) -> Promise<0 or -errno>
Napi::Value HandleFallocateAsync(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  int64_t mode, off, len;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 2, &mode) || !ArgInt(info, 3, &off) || !ArgInt(info, 4, &len))
    return ThrowType(info.Env(), "handleFallocateAsync(id, fh, mode, offset, length, killSuidgid?)");
  bool kill = info[5].ToBoolean();
  return QueueFused(info, s, [=] { return static_cast<int64_t>(FallocateHandle(s, fh, static_cast<int>(mode), off, len, kill)); });
}

// handleCopyRangeAsync(id, fhIn, offIn, fhOut, offOut, length, flags, killSuidgid?) -> Promise<bytes or -errno>
Napi::Value HandleCopyRangeAsync(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fin, fout;
  int64_t oin, oout, len, flags;
  if (!ArgU64(info, 1, &fin) || !ArgInt(info, 2, &oin) || !ArgU64(info, 3, &fout) || !ArgInt(info, 4, &oout) ||
      !ArgInt(info, 5, &len) || !ArgInt(info, 6, &flags))
    return ThrowType(info.Env(), "handleCopyRangeAsync(id, fhIn, offIn, fhOut, offOut, length, flags, killSuidgid?)");
  bool kill = info[7].ToBoolean();
  return QueueFused(info, s, [=] {
    return CopyRangeHandles(s, fin, oin, fout, oout, static_cast<uint64_t>(len), static_cast<unsigned>(flags), kill);
  });
}

// nodeSyncfsAsync(id, nodeid) -> Promise<0 or -errno>
Napi::Value NodeSyncfsAsync(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return ThrowType(info.Env(), "nodeSyncfsAsync(id, nodeid)");
  return QueueFused(info, s, [=] { return static_cast<int64_t>(SyncfsNode(s, nodeid)); });
}

// handleReadvAsync / handleWritevAsync(id, fh, position, table, pairs, count, killSuidgid?)
//   -> bytes or -errno when done at once, else Promise<bytes or -errno>
template <bool kWrite>
Napi::Value HandleRwAsync(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  int64_t pos, table;
  const double* pairs;
  size_t n;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 2, &pos) || !ArgInt(info, 3, &table))
    return ThrowType(info.Env(), "(id, fh, position, table, pairs, count)");
  if (!ArgPairs(info, 4, &pairs, &n)) return info.Env().Undefined();
  std::vector<iovec>* iov;
  int e = ThreadGuestIovecs(table, pairs, n, &iov);
  if (e) return Num(info, -e);
  int fd;
  int64_t moved, result;
  bool kill = kWrite && info[6].ToBoolean();
  {
    FsetidDropped f(kill);
    if (f.error()) return Num(info, f.error());
    if (TryTransferNow(s, fh, pos, *iov, kWrite, &fd, &moved, &result)) return Num(info, static_cast<double>(result));
  }
  auto* w = new RwWork(info.Env(), s, fh, fd, pos, kWrite, kill, table, std::vector<iovec>(*iov), moved);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// handleFsyncAsync(id, fh, datasync) -> Promise<0 or -errno>
Napi::Value HandleFsyncAsync(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return ThrowType(info.Env(), "handleFsyncAsync(id, fh, datasync)");
  bool datasync = info[2].ToBoolean();
  return QueueFused(info, s, [=] { return static_cast<int64_t>(SyncHandle(s, fh, datasync)); });
}

}  // namespace

void InitAsyncOps(Napi::Env env, Napi::Object exports) {
  exports.Set("handleReadvAsync", Napi::Function::New(env, HandleRwAsync<false>));
  exports.Set("handleWritevAsync", Napi::Function::New(env, HandleRwAsync<true>));
  exports.Set("handleFsyncAsync", Napi::Function::New(env, HandleFsyncAsync));
  exports.Set("handleFallocateAsync", Napi::Function::New(env, HandleFallocateAsync));
  exports.Set("handleCopyRangeAsync", Napi::Function::New(env, HandleCopyRangeAsync));
  exports.Set("nodeSyncfsAsync", Napi::Function::New(env, NodeSyncfsAsync));
}

}  // namespace vfsn
