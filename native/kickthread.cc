// A queue's kick thread: a native thread that waits for the queue's kicks and serves them
// (KickServer::ServeKick, vring.cc: pop, the FUSE fast path, poll, re-arm) without going
// through the JS thread's event loop, whose every round costs a few microseconds of its own
// (Node's immediate check, a callback scope, the garbage that leaves). The ring is this
// thread's alone: a chain the fast path declines is popped and queued for JS
// (Vring::HandOffDeclined), JS is woken with a uv_async on its own loop and takes the queued
// chains (src/vhost/queue-runner.ts), and the thread goes on serving the ring meanwhile. So
// a request JS serves for a long time (a SETLKW that waits) holds back nothing behind it,
// and the main thread never runs what the fast path serves.
#include "chainserver.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <memory>
#include <vector>
#include <cstring>
#include <string>
#include <thread>

namespace vfsn {
namespace {

// isEventfd(fd) -> whether fd is an eventfd (what the kick thread can wait on).
Napi::Value IsEventfd(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "isEventfd(fd)");
  char path[64], target[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", static_cast<int>(fd));
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (n < 0) return Napi::Boolean::New(info.Env(), false);
  target[n] = 0;
  return Napi::Boolean::New(info.Env(), strcmp(target, "anon_inode:[eventfd]") == 0);
}

// new KickThread(kickFd, vring, callback): start() runs the thread; callback() runs on this
// JS thread when chains were queued for JS (vring.takeHandedOff()) or the thread stopped
// serving (a broken ring, which takeHandedOff() then reports); close() stops and joins the
// thread (before the kick fd is closed).
class KickThread : public Napi::ObjectWrap<KickThread> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KickThread",
                       {InstanceMethod("start", &KickThread::Start), InstanceMethod("close", &KickThread::Close),
                        InstanceMethod("closeAsync", &KickThread::CloseAsync)});
  }

  explicit KickThread(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KickThread>(info) {
    Napi::Env env = info.Env();
    int64_t fd;
    kick_ = ArgInt(info, 0, &fd) && info[2].IsFunction() ? KickServerOf(info[1]) : nullptr;
    if (!kick_) {
      ThrowType(env, "new KickThread(kickFd, vring, callback)");
      return;
    }
    kickFd_ = static_cast<int>(fd);
    int fl = fcntl(kickFd_, F_GETFL);
    if (fl >= 0) fcntl(kickFd_, F_SETFL, fl | O_NONBLOCK);
    wakeFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wakeFd_ < 0) {
      ThrowErrno(env, errno, "eventfd");
      return;
    }
    kickRef_ = Napi::Persistent(info[1].As<Napi::Object>());
    cb_ = Napi::Persistent(info[2].As<Napi::Function>());
    napi_value name = Napi::String::New(env, "KickThread");
    napi_async_init(env, nullptr, name, &ctx_);
  }

  ~KickThread() override {
    Shutdown(false);  // only at an environment's teardown: the thread holds a reference
    if (ctx_) napi_async_destroy(Env(), ctx_);
    if (wakeFd_ >= 0) close(wakeFd_);
  }

 private:
  // start(): the thread owns the ring from now on (for good: chains it declines go to JS's
  // queue) and serves what is already on it.
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (thread_.joinable() || wakeFd_ < 0) return info.Env().Undefined();
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(info.Env(), &loop);
    async_ = new uv_async_t;
    if (uv_async_init(loop, async_, OnAsync) != 0) {
      delete async_;
      async_ = nullptr;
      return ThrowErrno(info.Env(), EAGAIN, "uv_async_init");
    }
    async_->data = this;
    Ref();  // the thread calls back into this object until close()
    kick_->HandOffDeclined();
    stop_.store(false, std::memory_order_release);
    exited_.store(false, std::memory_order_release);
    PokeEventfd(wakeFd_);  // the driver may have kicked before the ring was enabled
    thread_ = std::thread([this] { Run(); });
    return info.Env().Undefined();
  }

  // close(): stops the thread, waiting for the kick it serves to end (and settles a
  // closeAsync() that was waiting for the same).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown(true);
    std::vector<Napi::Promise::Deferred> waiting = std::move(closing_);
    closing_.clear();
    for (auto& d : waiting) d.Resolve(info.Env().Undefined());
    return info.Env().Undefined();
  }

  // closeAsync() -> Promise: the same without blocking this thread, whose loop serves the
  // other queues and the socket meanwhile: the thread is told to stop, and the Promise
  // resolves once it has ended the request it was serving (an fsync, say) and exited.
  Napi::Value CloseAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto d = Napi::Promise::Deferred::New(env);
    // Not running, or already out of its loop (poll failed): nothing to wait for.
    if (!thread_.joinable() || (closing_.empty() && exited_.load(std::memory_order_acquire))) {
      Shutdown(true);
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    // A second caller waits for the same end.
    closing_.push_back(d);
    stop_.store(true, std::memory_order_release);
    PokeEventfd(wakeFd_);
    return d.Promise();
  }

  void Shutdown(bool unref) {
    if (thread_.joinable()) {
      stop_.store(true, std::memory_order_release);
      PokeEventfd(wakeFd_);
      thread_.join();
      if (unref) Unref();
    }
    if (async_) {
      async_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(async_), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
      async_ = nullptr;
    }
  }

  void Run() {
    // Out of the loop without being told to stop: JS fails the queue, with the reason.
    const char* why = RunUntilStopped();
    if (why) kick_->HandOffEnded(why);
    // For closeAsync(): JS joins the thread, which is about to return; or else JS learns of
    // a broken ring.
    exited_.store(true, std::memory_order_release);
    uv_async_send(async_);
  }

  // Serves kicks until told to stop (nullptr), or until it cannot go on: why not.
  const char* RunUntilStopped() {
    pollfd p[2] = {{kickFd_, POLLIN, 0}, {wakeFd_, POLLIN, 0}};
    while (!stop_.load(std::memory_order_acquire)) {
      int r = poll(p, 2, -1);
      if (r < 0) {
        if (errno == EINTR) continue;
        return "the kick thread's poll() failed";
      }
      if (stop_.load(std::memory_order_acquire)) break;
      if (p[1].revents & POLLIN) DrainEventfd(wakeFd_);
      if (p[0].revents & POLLIN) DrainEventfd(kickFd_);
      // Not a descriptor to wait on any more (the backend closes it only after the queue
      // stopped): nothing more can come.
      if (p[0].revents & (POLLERR | POLLNVAL | POLLHUP)) return "the kick descriptor failed";
      // A broken ring: the vring reports it to JS itself.
      if (!Serve()) return nullptr;
    }
    return nullptr;
  }

  // Serves what the ring holds; false when the thread must stop serving it (a broken ring,
  // which JS learns from takeHandedOff() once Run() has woken it).
  bool Serve() {
    for (;;) {
      KickServer::Outcome o = kick_->ServeKick();
      if (o == KickServer::kDone) return true;
      if (o == KickServer::kToJs) return false;
      // A chain queued for JS: wake it and go on (the wake-ups coalesce until JS runs).
      if (o == KickServer::kHandedOff) uv_async_send(async_);
      // kYield: chains keep coming; nothing else runs on this thread, so go on serving.
      if (stop_.load(std::memory_order_acquire)) return true;
    }
  }

  static void OnAsync(uv_async_t* h) {
    auto* self = static_cast<KickThread*>(h->data);
    if (!self) return;
    if (!self->closing_.empty()) {
      if (!self->exited_.load(std::memory_order_acquire)) return;
      Napi::Env env = self->Env();
      Napi::HandleScope scope(env);
      // In a callback scope, so that what awaits the Promise runs when this returns rather
      // than at whatever callback comes next.
      Napi::CallbackScope callback(env, self->ctx_);
      std::vector<Napi::Promise::Deferred> waiting = std::move(self->closing_);
      self->closing_.clear();
      self->Shutdown(true);
      for (auto& d : waiting) d.Resolve(env.Undefined());
      return;
    }
    MakeCallback(self->Env(), self->ctx_, self->cb_, 0, nullptr);
  }

  int kickFd_ = -1;
  int wakeFd_ = -1;
  KickServer* kick_ = nullptr;  // kept alive by kickRef_
  Napi::ObjectReference kickRef_;
  Napi::FunctionReference cb_;
  napi_async_context ctx_ = nullptr;
  uv_async_t* async_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> exited_{false};
  // The Promises of the closeAsync() calls in progress.
  std::vector<Napi::Promise::Deferred> closing_;
};

}  // namespace

void InitKickThread(Napi::Env env, Napi::Object exports) {
  exports.Set("isEventfd", Napi::Function::New(env, IsEventfd));
  exports.Set("KickThread", KickThread::Define(env));
}

}  // namespace vfsn
