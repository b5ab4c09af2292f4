// Unix stream sockets that carry file descriptors (SCM_RIGHTS): the vhost-user channel.
// Node's net module cannot pass descriptors on a plain socket, so the sends and receives
// with descriptors are done here; src/vhost/message-reader.ts frames the messages (12-byte
// header with its fds, then the payload). See docs/interop/vhost-user.rst, "Message
// Specification".
#include "common.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <vector>

namespace vfsn {
namespace {

constexpr int kMaxFds = 8;     // vhost-user never sends more than 8 descriptors

bool FillAddr(Napi::Env env, Napi::Value v, sockaddr_un* sa) {
  if (!v.IsString()) {
    ThrowType(env, "socket path expected");
    return false;
  }
  std::string path = v.As<Napi::String>();
  if (path.empty() || path.size() >= sizeof(sa->sun_path)) {
    ThrowRange(env, "socket path empty or too long");
    return false;
  }
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path.data(), path.size());
  return true;
}

// unixListen(path, backlog) -> listening fd
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_un sa;
  if (!FillAddr(env, info[0], &sa)) return env.Undefined();
  int64_t backlog = 1;
  if (info.Length() > 1) ArgInt(info, 1, &backlog);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket");
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "bind");
  }
  if (listen(fd, static_cast<int>(backlog)) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "listen");
  }
  return Napi::Number::New(env, fd);
}

// unixAccept(listenFd, recvTimeoutMs) -> connected fd. The receive timeout bounds how long
// a front end may stall in the middle of a message before the connection is dropped.
Napi::Value UnixAccept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t lfd, tmo = 0;
  if (!ArgInt(info, 0, &lfd)) return ThrowType(env, "unixAccept(fd, timeoutMs)");
  if (info.Length() > 1) ArgInt(info, 1, &tmo);
  int fd;
  do {
    fd = accept4(static_cast<int>(lfd), nullptr, nullptr, SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return ThrowErrno(env, errno, "accept4");
  if (tmo > 0) {
    timeval tv{static_cast<time_t>(tmo / 1000), static_cast<suseconds_t>((tmo % 1000) * 1000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  return Napi::Number::New(env, fd);
}

// unixConnect(path) -> connected fd (our test front end's side).
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_un sa;
  if (!FillAddr(env, info[0], &sa)) return env.Undefined();
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket");
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "connect");
  }
  return Napi::Number::New(env, fd);
}

// unixDatagram(path, bind) -> fd: a datagram socket connected to path (the daemon's side of
// /dev/log, for --syslog: a send that cannot go within a second fails rather than stalling
// the thread that logs), or bound to it and non-blocking (a receiver, as in tests).
Napi::Value UnixDatagram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_un sa;
  if (!FillAddr(env, info[0], &sa)) return env.Undefined();
  bool bindIt = info.Length() > 1 && info[1].ToBoolean().Value();
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | (bindIt ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return ThrowErrno(env, errno, "socket");
  int r = bindIt ? bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) : connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  if (r < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, bindIt ? "bind" : "connect");
  }
  if (!bindIt) {
    timeval tv{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  }
  return Napi::Number::New(env, fd);
}

// socketPair() -> [fd, fd]: a connected pair, for the backend request channel in tests.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return ThrowErrno(env, errno, "socketpair");
  Napi::Array a = Napi::Array::New(env, 2);
  a.Set(0u, Napi::Number::New(env, sv[0]));
  a.Set(1u, Napi::Number::New(env, sv[1]));
  return a;
}

// One recvmsg into [p, p + n), with the descriptors riding on those bytes appended to *fds
// (close-on-exec): the bytes read, 0 at EOF, or -1 with errno (EINTR retried).
ssize_t RecvWithFds(int fd, uint8_t* p, size_t n, int flags, std::vector<int>* fds, bool* truncated) {
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)];
  iovec iov{p, n};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof(ctrl);
  ssize_t r;
  do {
    r = recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int* d = reinterpret_cast<const int*>(CMSG_DATA(c));
      for (size_t i = 0; i < count; i++) fds->push_back(d[i]);
    }
  }
  *truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  return r;
}

// recvSome(fd, buf, offset, length) -> {bytes, fds: number[], truncatedFds}: one
// non-blocking recvmsg into buf[offset, offset + length). bytes is 0 at EOF and -1 when
// nothing is there yet. A message's header and then its payload are read with this, never
// past the message's end, so that descriptors sent with the next message are not taken
// for this one's (src/vhost/message-reader.ts assembles the pieces).
Napi::Value RecvSome(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, offset, length;
  if (!ArgInt(info, 0, &fd) || !info[1].IsBuffer() || !ArgInt(info, 2, &offset) || !ArgInt(info, 3, &length))
    return ThrowType(env, "recvSome(fd, buf, offset, length)");
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  if (offset < 0 || length <= 0 || static_cast<uint64_t>(offset) + static_cast<uint64_t>(length) > buf.Length())
    return ThrowRange(env, "recvSome: range outside the buffer");
  std::vector<int> fds;
  bool truncated = false;
  ssize_t r = RecvWithFds(static_cast<int>(fd), buf.Data() + offset, static_cast<size_t>(length), MSG_DONTWAIT, &fds, &truncated);
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return ThrowErrno(env, errno, "recvmsg");
  Napi::Array jfds = Napi::Array::New(env, fds.size());
  for (size_t i = 0; i < fds.size(); i++) jfds.Set(static_cast<uint32_t>(i), fds[i]);
  Napi::Object res = Napi::Object::New(env);
  res.Set("bytes", Napi::Number::New(env, r < 0 ? -1 : static_cast<double>(r)));
  res.Set("fds", jfds);
  res.Set("truncatedFds", Napi::Boolean::New(env, truncated));
  return res;
}

// vhostSend(fd, data: Buffer, fds?: number[]): writes the whole buffer, the descriptors
// riding on the first byte.
Napi::Value VhostSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd;
  if (!ArgInt(info, 0, &fd) || !info[1].IsBuffer()) return ThrowType(env, "vhostSend(fd, buf, fds?)");
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  std::vector<int> fds;
  if (info.Length() > 2 && info[2].IsArray()) {
    Napi::Array a = info[2].As<Napi::Array>();
    if (a.Length() > kMaxFds) return ThrowRange(env, "too many descriptors");
    for (uint32_t i = 0; i < a.Length(); i++) fds.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  }
  size_t done = 0;
  while (done < buf.Length() || (done == 0 && buf.Length() == 0)) {
    iovec iov{buf.Data() + done, buf.Length() - done};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * kMaxFds)];
    if (done == 0 && !fds.empty()) {
      msg.msg_control = ctrl;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t r = sendmsg(static_cast<int>(fd), &msg, MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return ThrowErrno(env, errno, "sendmsg");
    done += static_cast<size_t>(r);
    if (buf.Length() == 0) break;
  }
  return env.Undefined();
}

// shutdownSocket(fd): wakes up anyone blocked on the socket and ends the stream.
Napi::Value ShutdownSocket(const Napi::CallbackInfo& info) {
  int64_t fd;
  if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "shutdownSocket(fd)");
  shutdown(static_cast<int>(fd), SHUT_RDWR);
  return info.Env().Undefined();
}

}  // namespace

void InitSocket(Napi::Env env, Napi::Object exports) {
  exports.Set("unixListen", Napi::Function::New(env, UnixListen));
  exports.Set("unixAccept", Napi::Function::New(env, UnixAccept));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect));
  exports.Set("unixDatagram", Napi::Function::New(env, UnixDatagram));
  exports.Set("socketPair", Napi::Function::New(env, SocketPair));
  exports.Set("recvSome", Napi::Function::New(env, RecvSome));
  exports.Set("vhostSend", Napi::Function::New(env, VhostSend));
  exports.Set("shutdownSocket", Napi::Function::New(env, ShutdownSocket));
}

}  // namespace vfsn
