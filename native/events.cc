// Event descriptors: eventfd kick/call notifiers, and FdWatcher, which waits for a
// descriptor to become readable on the libuv loop of the JS thread that created it.
// A queue without a kick thread (its kick fd is not an eventfd, or at trace level there is
// no fast path) is watched this way on the main thread's loop; the others are served by
// their kick threads (kickthread.cc).
#include "chainserver.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>

namespace vfsn {
namespace {

Napi::Value EventfdCreate(const Napi::CallbackInfo& info) {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ThrowErrno(info.Env(), errno, "eventfd");
  return Napi::Number::New(info.Env(), fd);
}

// eventfdWrite(fd, n=1) -> 0 or -errno
Napi::Value EventfdWrite(const Napi::CallbackInfo& info) {
  int64_t fd, n = 1;
  if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "eventfdWrite(fd, n?)");
  if (info.Length() > 1) ArgInt(info, 1, &n);
  uint64_t v = static_cast<uint64_t>(n);
  ssize_t r;
  do {
    r = write(static_cast<int>(fd), &v, 8);
  } while (r < 0 && errno == EINTR);
  return Napi::Number::New(info.Env(), r < 0 ? -errno : 0);
}

// eventfdRead(fd) -> counter value (0 when nothing was pending) or -errno.
// The descriptor must be non-blocking (setNonBlocking) or known to be readable.
Napi::Value EventfdRead(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "eventfdRead(fd)");
  uint64_t v = 0;
  ssize_t r;
  do {
    r = read(static_cast<int>(fd), &v, 8);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return Napi::Number::New(info.Env(), errno == EAGAIN ? 0 : -errno);
  return Napi::Number::New(info.Env(), static_cast<double>(v));
}

// pollReadable(fd, timeoutMs) -> true when readable within the timeout.
Napi::Value PollReadable(const Napi::CallbackInfo& info) {
  int64_t fd, tmo;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &tmo)) return ThrowType(info.Env(), "pollReadable(fd, ms)");
  pollfd p{static_cast<int>(fd), POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, static_cast<int>(tmo));
  } while (r < 0 && errno == EINTR);
  if (r < 0) return ThrowErrno(info.Env(), errno, "poll");
  return Napi::Boolean::New(info.Env(), r > 0);
}

Napi::Value SetNonBlocking(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "setNonBlocking(fd)");
  int fl = fcntl(static_cast<int>(fd), F_GETFL);
  if (fl < 0 || fcntl(static_cast<int>(fd), F_SETFL, fl | O_NONBLOCK) < 0)
    return ThrowErrno(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "close(fd)");
  int r = close(static_cast<int>(fd));
  return Napi::Number::New(info.Env(), r < 0 ? -errno : 0);
}

// new FdWatcher(fd, drainEventfd, callback): calls callback() each time fd is readable.
// start()/stop() pause and resume; close() ends it (before the fd itself is closed).
// With drainEventfd the eventfd counter is read (cleared) first, so a kick is consumed
// before the queue is scanned and a kick that arrives during the scan is not lost.
// While started, the watcher keeps itself and the event loop alive; stop() releases both.
// new FdWatcher(fd, true, callback, vring): a queue's kick watcher. Each kick is first
// offered to the virtqueue (KickServer::ServeKick, chainserver.h); callback() runs only when
// that leaves something for JS.
class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {InstanceMethod("start", &FdWatcher::Start), InstanceMethod("stop", &FdWatcher::Stop),
                        InstanceMethod("close", &FdWatcher::Close)});
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    int64_t fd;
    if (!ArgInt(info, 0, &fd) || !info[2].IsFunction()) {
      ThrowType(env, "new FdWatcher(fd, drainEventfd, callback)");
      return;
    }
    fd_ = static_cast<int>(fd);
    drain_ = info[1].ToBoolean();
    if (drain_) {
      int fl = fcntl(fd_, F_GETFL);
      if (fl >= 0) fcntl(fd_, F_SETFL, fl | O_NONBLOCK);
    }
    cb_ = Napi::Persistent(info[2].As<Napi::Function>());
    if (info.Length() > 3 && !info[3].IsUndefined()) {
      kick_ = KickServerOf(info[3]);
      if (!kick_) {
        ThrowType(env, "new FdWatcher(fd, drainEventfd, callback, vring?)");
        return;
      }
      kickRef_ = Napi::Persistent(info[3].As<Napi::Object>());
    }
    napi_value name = Napi::String::New(env, "FdWatcher");
    napi_async_init(env, nullptr, name, &ctx_);
    uv_loop_t* loop = nullptr;
    napi_get_uv_event_loop(env, &loop);
    poll_ = new uv_poll_t;
    if (uv_poll_init(loop, poll_, fd_) != 0) {
      delete poll_;
      poll_ = nullptr;
      ThrowErrno(env, EBADF, "uv_poll_init");
      return;
    }
    poll_->data = this;
  }

  ~FdWatcher() override {
    ReleasePoll();
    if (ctx_) napi_async_destroy(Env(), ctx_);
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    if (poll_ && !active_) {
      uv_poll_start(poll_, UV_READABLE, OnPoll);
      active_ = true;
      Ref();
    }
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (poll_ && active_) {
      uv_poll_stop(poll_);
      active_ = false;
      Unref();
    }
    return info.Env().Undefined();
  }

  // close(): stops for good and lets go of the descriptor now. Call it before the fd is
  // closed: libuv removes the fd *number* from epoll when it closes the handle, so a handle
  // left to the garbage collector could later remove a reused number that another watcher
  // is waiting on, and that watcher would never fire again.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (active_) {
      active_ = false;
      Unref();
    }
    ReleasePoll();
    return info.Env().Undefined();
  }

  void ReleasePoll() {
    if (!poll_) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }

  static void OnPoll(uv_poll_t* h, int status, int) {
    auto* self = static_cast<FdWatcher*>(h->data);
    if (!self || !self->active_) return;
    if (self->drain_) DrainEventfd(self->fd_);
    if (self->kick_) {
      KickServer::Outcome o = self->kick_->ServeKick();
      if (o == KickServer::kDone) return;
      if (o == KickServer::kYield) {
        // Our own kick: the fd is readable again after the event loop's next round.
        PokeEventfd(self->fd_);
        return;
      }
    }
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    napi_value arg = Napi::Number::New(env, status);
    MakeCallback(env, self->ctx_, self->cb_, 1, &arg);
  }

  int fd_ = -1;
  bool drain_ = false;
  bool active_ = false;
  uv_poll_t* poll_ = nullptr;
  napi_async_context ctx_ = nullptr;
  Napi::FunctionReference cb_;
  KickServer* kick_ = nullptr;  // kept alive by kickRef_
  Napi::ObjectReference kickRef_;
};

}  // namespace

void MakeCallback(Napi::Env env, napi_async_context ctx, const Napi::FunctionReference& fn, size_t argc, const napi_value* argv) {
  Napi::HandleScope scope(env);
  napi_value result;
  if (napi_make_callback(env, ctx, env.Global(), fn.Value(), argc, argv, &result) == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
}

void InitEvents(Napi::Env env, Napi::Object exports) {
  exports.Set("eventfdCreate", Napi::Function::New(env, EventfdCreate));
  exports.Set("eventfdWrite", Napi::Function::New(env, EventfdWrite));
  exports.Set("eventfdRead", Napi::Function::New(env, EventfdRead));
  exports.Set("pollReadable", Napi::Function::New(env, PollReadable));
  exports.Set("setNonBlocking", Napi::Function::New(env, SetNonBlocking));
  exports.Set("close", Napi::Function::New(env, CloseFd));
  exports.Set("FdWatcher", FdWatcher::Define(env));
}

}  // namespace vfsn
