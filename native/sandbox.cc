// The sandbox (--sandbox namespace|chroot): the process enters a mount namespace of its own
// (and, for namespace, network and IPC namespaces) whose root is a fresh read-only tmpfs
// holding only bind mounts of what the daemon needs: the shared directory (read-write), and
// read-only the system directories the Node binary and its libraries live in, the
// daemon's own files, /proc and the null and random devices. Everything else of the host is
// gone from the process's view; and the capabilities it keeps are only those a file server
// needs (limitCapabilities). src/sandbox.ts decides what goes in; this file does the
// system calls, then execve starts the daemon again inside (a Node process cannot change
// the root under its running threads, and after execve it has one thread, in the new
// namespaces). Run on the main thread before any other thread of ours exists.
#include "common.h"

#include <fcntl.h>
#include <sched.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>

#include <algorithm>
#include <string>
#include <vector>

extern char** environ;

namespace vfsn {

namespace {

constexpr const char* kRoot = "/tmp";  // where the new root is assembled (in our namespace only)

struct Bind {
  std::string src, dst;
  bool readOnly;
  int fd = -1;
};

std::string Fail(const std::string& step) { return step + ": " + strerror(errno); }

// mkdir -p of path (absolute, under kRoot); existing components are fine.
bool MakeDirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); i++) {
    if (i < path.size() && path[i] != '/') continue;
    std::string p = path.substr(0, i);
    if (mkdir(p.c_str(), 0755) < 0 && errno != EEXIST) return false;
  }
  return true;
}

// A mount's per-mount flags (statvfs) as mount(2) flags, to keep them on a remount.
unsigned long MountFlags(const std::string& path) {
  struct statvfs v;
  if (statvfs(path.c_str(), &v) < 0) return 0;
  unsigned long f = 0;
  if (v.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (v.f_flag & ST_NODEV) f |= MS_NODEV;
  if (v.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (v.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (v.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (v.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

// The whole sandbox set-up; "" on success, else what failed.
std::string Enter(std::vector<Bind>& binds, const std::vector<std::pair<std::string, std::string>>& links, bool newNet) {
  int flags = CLONE_NEWNS | (newNet ? CLONE_NEWNET | CLONE_NEWIPC : 0);
  if (unshare(flags) < 0) return Fail("unshare");
  // A slave: mounts the host makes later (under the share too) still reach us, ours never leave.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) < 0) return Fail("making / a slave");
  // The sources, opened in the new namespace (a bind takes only its own namespace's mounts)
  // and before the new root covers /tmp (a source may lie under it).
  for (auto& b : binds) {
    b.fd = open(b.src.c_str(), O_PATH | O_CLOEXEC);
    if (b.fd < 0) return Fail("open " + b.src);
  }
  if (mount("tmpfs", kRoot, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") < 0) return Fail("tmpfs for the new root");
  std::string root = kRoot;
  for (const auto& l : links) {
    if (symlink(l.first.c_str(), (root + l.second).c_str()) < 0) return Fail("symlink " + l.second);
  }
  // Outer paths first, so that a bind inside another lands on top of it.
  std::sort(binds.begin(), binds.end(), [](const Bind& a, const Bind& b) { return a.dst.size() < b.dst.size(); });
  for (auto& b : binds) {
    struct stat st;
    if (fstat(b.fd, &st) < 0) return Fail("stat " + b.src);
    std::string dst = root + b.dst;
    if (S_ISDIR(st.st_mode)) {
      if (!MakeDirs(dst)) return Fail("mkdir " + b.dst);
    } else {
      if (!MakeDirs(dst.substr(0, dst.rfind('/')))) return Fail("mkdir for " + b.dst);
      int f = open(dst.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      if (f < 0 && errno != EEXIST) return Fail("mount point " + b.dst);
      if (f >= 0) close(f);
    }
    std::string src = "/proc/self/fd/" + std::to_string(b.fd);
    if (mount(src.c_str(), dst.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0) return Fail("bind " + b.src);
    if (b.readOnly) {
      // Devices stay usable: no MS_NODEV on a device node's own mount. The flags the mount
      // has stay (in a user namespace they are locked, and dropping one would be refused).
      unsigned long ro = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (S_ISCHR(st.st_mode) ? 0 : MS_NODEV) | MountFlags(dst);
      if (mount(nullptr, dst.c_str(), nullptr, ro, nullptr) < 0) return Fail("read-only " + b.dst);
    }
    close(b.fd);
    b.fd = -1;
  }
  // /proc for /proc/self/fd (how inodes are reopened): a new instance, or the host's where a
  // container forbids that.
  std::string proc = root + "/proc";
  if (!MakeDirs(proc)) return Fail("mkdir /proc");
  if (mount("proc", proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) < 0 &&
      mount("/proc", proc.c_str(), nullptr, MS_BIND | MS_REC, nullptr) < 0)
    return Fail("mount /proc");
  std::string old = root + "/.old";
  if (mkdir(old.c_str(), 0700) < 0) return Fail("mkdir /.old");
  if (syscall(SYS_pivot_root, root.c_str(), old.c_str()) < 0) return Fail("pivot_root");
  if (chdir("/") < 0) return Fail("chdir /");
  if (umount2("/.old", MNT_DETACH) < 0) return Fail("unmounting the old root");
  if (rmdir("/.old") < 0) return Fail("rmdir /.old");
  if (mount(nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) < 0)
    return Fail("read-only root");
  return "";
}

bool StringArray(const Napi::Value& v, std::vector<std::string>* out) {
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) return false;
    out->push_back(e.As<Napi::String>().Utf8Value());
  }
  return true;
}

// enterSandbox(binds: [src, dst, readOnly][], links: [target, path][], newNet) -> "" or what
// failed (the process is then in a half-made namespace and must exit).
Napi::Value EnterSandbox(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsArray())
    return ThrowType(env, "enterSandbox(binds, links, newNet)");
  std::vector<Bind> binds;
  Napi::Array ba = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < ba.Length(); i++) {
    Napi::Value e = ba.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 3) return ThrowType(env, "enterSandbox: a bind is [src, dst, readOnly]");
    Napi::Array t = e.As<Napi::Array>();
    if (!t.Get(0u).IsString() || !t.Get(1u).IsString()) return ThrowType(env, "enterSandbox: a bind is [src, dst, readOnly]");
    std::string dst = t.Get(1u).As<Napi::String>().Utf8Value();
    if (dst.empty() || dst[0] != '/' || dst.find("/..") != std::string::npos) return ThrowType(env, "enterSandbox: dst must be absolute");
    binds.push_back({t.Get(0u).As<Napi::String>().Utf8Value(), dst, t.Get(2u).ToBoolean()});
  }
  std::vector<std::pair<std::string, std::string>> links;
  Napi::Array la = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < la.Length(); i++) {
    std::vector<std::string> pair;
    if (!StringArray(la.Get(i), &pair) || pair.size() != 2 || pair[1].empty() || pair[1][0] != '/')
      return ThrowType(env, "enterSandbox: a link is [target, absolute path]");
    links.emplace_back(pair[0], pair[1]);
  }
  std::string r = Enter(binds, links, info[2].ToBoolean());
  for (auto& b : binds)
    if (b.fd >= 0) close(b.fd);
  return Napi::String::New(env, r);
}

// execve(path, argv, extraEnv, keepFds) -> -errno (only on failure): this process becomes
// `path argv` with the current environment plus extraEnv ("NAME=value" strings); keepFds
// (the listening socket, its directory) and the standard streams stay open across it.
Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> argv, extra;
  if (info.Length() < 4 || !info[0].IsString() || !StringArray(info[1], &argv) || !StringArray(info[2], &extra) || !info[3].IsArray())
    return ThrowType(env, "execve(path, argv, extraEnv, keepFds)");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<int> keep = {0, 1, 2};  // Node marks the standard streams close-on-exec too
  Napi::Array ka = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < ka.Length(); i++) {
    if (!ka.Get(i).IsNumber()) return ThrowType(env, "execve: keepFds are numbers");
    keep.push_back(ka.Get(i).As<Napi::Number>().Int32Value());
  }
  for (size_t i = 0; i < keep.size(); i++) {
    int fl = fcntl(keep[i], F_GETFD);
    if (fl >= 0 && fcntl(keep[i], F_SETFD, fl & ~FD_CLOEXEC) < 0) return Napi::Number::New(env, -errno);
    if (fl < 0 && i >= 3) return Napi::Number::New(env, -errno);  // a descriptor asked for must exist
  }
  std::vector<char*> av, ev;
  for (auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  for (char** e = environ; *e; e++) ev.push_back(*e);
  for (auto& e : extra) ev.push_back(const_cast<char*>(e.c_str()));
  ev.push_back(nullptr);
  execve(path.c_str(), av.data(), ev.data());
  return Napi::Number::New(env, -errno);
}

// limitCapabilities(keep: number[]) -> "" or what failed. Leaves the capability bounding
// set (of this thread, the one that will execve) at `keep` and the inheritable and ambient
// sets empty: after execve a root process has exactly `keep` (permitted and effective).
Napi::Value LimitCapabilities(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) return ThrowType(env, "limitCapabilities(keep)");
  uint64_t keep = 0;
  Napi::Array a = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0 || v.As<Napi::Number>().Int32Value() > 63)
      return ThrowType(env, "limitCapabilities: capability numbers 0..63");
    keep |= 1ull << v.As<Napi::Number>().Int32Value();
  }
  for (int cap = 0; cap <= 63; cap++) {
    if (keep & (1ull << cap)) continue;
    if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) < 0) break;  // past the kernel's last capability
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) return Napi::String::New(env, Fail("dropping capability " + std::to_string(cap)));
  }
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
    return Napi::String::New(env, Fail("clearing the ambient capabilities"));
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
  if (syscall(SYS_capget, &h, d) < 0) return Napi::String::New(env, Fail("capget"));
  for (auto& w : d) w.inheritable = 0;
  if (syscall(SYS_capset, &h, d) < 0) return Napi::String::New(env, Fail("capset"));
  return Napi::String::New(env, "");
}

}  // namespace

void InitSandbox(Napi::Env env, Napi::Object exports) {
  exports.Set("enterSandbox", Napi::Function::New(env, EnterSandbox));
  exports.Set("execve", Napi::Function::New(env, Execve));
  exports.Set("limitCapabilities", Napi::Function::New(env, LimitCapabilities));
}

}  // namespace vfsn
