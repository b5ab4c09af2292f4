// Blocking file operations run off the queue's thread (--thread-pool-size > 0): READ, WRITE,
// FSYNC as N-API async work on libuv's thread pool, each returning a Promise. A request that
// blocks (a cold read, an fsync) then holds back no other request of its queue, and
// completions reach the used ring in the order they finish.
//
// Everything that must stay valid while the system call runs on a pool thread is taken on
// the calling (queue) thread first: the handle is pinned (state.h: it cannot be closed and its
// number reused meanwhile), the guest ranges are translated into iovecs, and the thread's
// snapshot of guest memory is held (memory.cc: the mappings the iovecs point into stay
// mapped even if the front end changes the memory table meanwhile). The pin is dropped when
// the work object is destroyed, back on the queue's thread.
#include "state.h"

namespace vfsn {
namespace {

class HandleWork : public Napi::AsyncWorker {
 public:
  HandleWork(Napi::Env env, FsState* s, uint64_t fh)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), s_(s), fh_(fh), fd_(s->PinHandle(fh)) {
    if (fd_ < 0) result_ = fd_;
  }
  ~HandleWork() override {
    if (fd_ >= 0) s_->UnpinHandle(fh_);
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

class RwWork : public HandleWork {
 public:
  RwWork(Napi::Env env, FsState* s, uint64_t fh, int64_t pos, bool write, int64_t table, const double* pairs, size_t n)
      : HandleWork(env, s, fh), pos_(pos), write_(write) {
    if (result_ != 0) return;
    int e = GuestIovecs(table, pairs, n, &iov_);
    if (e) result_ = -e;
    keep_ = KeepGuestMemory(table);
  }
  void Execute() override {
    if (ready()) result_ = TransferIov(fd_, pos_, iov_, write_);
  }

 private:
  int64_t pos_;
  bool write_;
  std::vector<iovec> iov_;
  std::shared_ptr<const void> keep_;
};

class FsyncWork : public HandleWork {
 public:
  FsyncWork(Napi::Env env, FsState* s, uint64_t fh, bool datasync) : HandleWork(env, s, fh), datasync_(datasync) {}
  void Execute() override {
    if (ready()) result_ = (datasync_ ? fdatasync(fd_) : fsync(fd_)) < 0 ? -errno : 0;
  }

 private:
  bool datasync_;
};

// handleReadvAsync / handleWritevAsync(id, fh, position, table, pairs, count)
//   -> Promise<bytes or -errno>
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
  auto* w = new RwWork(info.Env(), s, fh, pos, kWrite, table, pairs, n);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// handleFsyncAsync(id, fh, datasync) -> Promise<0 or -errno>
Napi::Value HandleFsyncAsync(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return ThrowType(info.Env(), "handleFsyncAsync(id, fh, datasync)");
  auto* w = new FsyncWork(info.Env(), s, fh, info[2].ToBoolean());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void InitAsyncOps(Napi::Env env, Napi::Object exports) {
  exports.Set("handleReadvAsync", Napi::Function::New(env, HandleRwAsync<false>));
  exports.Set("handleWritevAsync", Napi::Function::New(env, HandleRwAsync<true>));
  exports.Set("handleFsyncAsync", Napi::Function::New(env, HandleFsyncAsync));
}

}  // namespace vfsn
