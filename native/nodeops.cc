// File-system operations named by nodeid (FUSE requests on inodes): make, create, link,
// unlink, rename, readlink, setattr, extended attributes, statfs, syncfs. Each pins the
// inodes it names for the length of its system calls (state.h) and works relative to their
// O_PATH descriptors: a name is always one component, never resolved through a symlink, so
// nothing outside the shared directory is reachable. Operations that need a real open file
// reach the inode through /proc/self/fd/N of its O_PATH descriptor, never by name again.
//
// Operations that create a file run with the caller's uid and gid as this thread's fsuid and
// fsgid (Linux keeps them per thread), so new files belong to the guest user, as with the
// Rust virtiofsd. A daemon that is not root creates everything as itself.
//
// Return convention: the result or -errno; "entry" operations fill out[0..22) with the new
// inode's attributes (StatxField order) and return its nodeid with one lookup reference.
#include "state.h"

#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>

#include <cstring>
#include <optional>

namespace vfsn {
namespace {

constexpr size_t kFhSlot = kStatxFields;  // the fh of CREATE and TMPFILE, after the statx fields
constexpr size_t kCreatedSlot = kStatxFields + 1;  // nodeCreate's 1 when the file was made, 0 when it existed

// This thread's fsuid/fsgid set to the caller's for the scope (root daemons only): the
// guest's IDs as host IDs (--translate-uid/-gid). error() is -EPERM for an ID the guest may
// not use; nothing may be made then.
class Creds {
 public:
  Creds(const FsState* s, int64_t uid, int64_t gid) {
    uint32_t hu, hg;
    if (!s->uids.ToHost(static_cast<uint32_t>(uid), &hu) || !s->gids.ToHost(static_cast<uint32_t>(gid), &hg)) {
      error_ = -EPERM;
      return;
    }
    if (geteuid() != 0 || uid < 0 || gid < 0) return;
    syscall(SYS_setfsgid, static_cast<gid_t>(hg));
    syscall(SYS_setfsuid, static_cast<uid_t>(hu));
    active_ = true;
    // An ID the kernel does not take (one a user namespace, --uid-map/--gid-map, does not
    // map) leaves the old one: refused rather than acting as the daemon's own user. setfs*id
    // of -1 changes nothing and says what is in force.
    if (static_cast<uint32_t>(syscall(SYS_setfsuid, -1)) != hu || static_cast<uint32_t>(syscall(SYS_setfsgid, -1)) != hg)
      error_ = -EINVAL;
  }
  int error() const { return error_; }
  ~Creds() {
    if (!active_) return;
    syscall(SYS_setfsuid, 0);
    syscall(SYS_setfsgid, 0);
  }
  Creds(const Creds&) = delete;
  Creds& operator=(const Creds&) = delete;

 private:
  bool active_ = false;
  int error_ = 0;
};

// A name from the guest: one component, not empty, no '/' (NUL was cut by the decoder).
bool NameArg(const Napi::CallbackInfo& info, size_t i, std::string* name, int* err) {
  if (!PathArg(info, i, name)) return false;
  *err = (name->empty() || name->find('/') != std::string::npos || name->find('\0') != std::string::npos) ? EINVAL : 0;
  if (!*err && name->size() > 255) *err = ENAMETOOLONG;
  return true;
}

bool U64(const Napi::CallbackInfo& info, size_t i, uint64_t* v) { return ArgU64(info, i, v); }
bool I64(const Napi::CallbackInfo& info, size_t i, int64_t* v) { return ArgInt(info, i, v); }
// An optional trailing u32 argument (a umask): 0 when it is missing or not a number.
uint32_t OptionalU32(const Napi::CallbackInfo& info, size_t i) {
  int64_t v;
  return info.Length() > i && info[i].IsNumber() && ArgInt(info, i, &v) && v >= 0 && v <= UINT32_MAX ? static_cast<uint32_t>(v) : 0;
}

double* OutArg(const Napi::CallbackInfo& info, size_t i, size_t need) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      v.As<Napi::TypedArray>().ElementLength() < need) {
    ThrowType(info.Env(), "out: Float64Array too short");
    return nullptr;
  }
  return v.As<Napi::Float64Array>().Data();
}

// Registers a file just created or opened: its O_PATH descriptor as an inode (one lookup
// taken) and fd as a handle whose fh goes to out[kFhSlot]. Takes both descriptors; returns the
// nodeid or -errno (then both are closed).
int64_t RegisterOpened(FsState* s, int pathFd, int fd, double* out) {
  int64_t nodeid = RegisterInode(s, pathFd, out);
  if (nodeid < 0) {
    close(fd);
    return nodeid;
  }
  out[kFhSlot] = static_cast<double>(s->InsertHandle(fd, static_cast<uint64_t>(nodeid)));
  return nodeid;
}

// nodeMake(id, parent, name, kind, mode, rdev, target, uid, gid, out, umask?) -> nodeid or
// -errno (MakeNode).
Napi::Value NodeMake(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t parent;
  int64_t kind, mode, rdev, uid, gid;
  std::string name, target;
  int err;
  double* out = OutArg(info, 9, kStatxFields);
  if (!out || !NameArg(info, 2, &name, &err) || !PathArg(info, 6, &target)) return info.Env().Undefined();
  if (!U64(info, 1, &parent) || !I64(info, 3, &kind) || !I64(info, 4, &mode) || !I64(info, 5, &rdev) ||
      !I64(info, 7, &uid) || !I64(info, 8, &gid) || kind < 0 || kind > 2)
    return ThrowType(info.Env(), "nodeMake(id, parent, name, kind, mode, rdev, target, uid, gid, out)");
  if (err) return Num(info, -err);
  if (target.find('\0') != std::string::npos) return Num(info, -EINVAL);
  return Num(info, static_cast<double>(MakeNode(s, parent, name.c_str(), static_cast<MakeKind>(kind), static_cast<uint32_t>(mode),
                                                static_cast<uint64_t>(rdev), target.c_str(), static_cast<uint32_t>(uid),
                                                static_cast<uint32_t>(gid), out, OptionalU32(info, 10))));
}

// nodeCreate(id, parent, name, flags, mode, uid, gid, out, killSuidgid?, umask?) -> nodeid or
// -errno; out[kFhSlot] gets the fh of the opened file, out[kCreatedSlot] 1 when the file was
// made (0: the name existed). An existing name is opened only if it is a regular file (and not at all with
// O_EXCL), as the caller; it is never followed if it is a symlink.
Napi::Value NodeCreate(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t parent;
  int64_t flags, mode, uid, gid;
  std::string name;
  int err;
  double* out = OutArg(info, 7, kCreatedSlot + 1);
  if (!out || !NameArg(info, 2, &name, &err)) return info.Env().Undefined();
  if (!U64(info, 1, &parent) || !I64(info, 3, &flags) || !I64(info, 4, &mode) || !I64(info, 5, &uid) || !I64(info, 6, &gid))
    return ThrowType(info.Env(), "nodeCreate(id, parent, name, flags, mode, uid, gid, out)");
  if (err) return Num(info, -err);
  bool created = false;
  int64_t r = CreateName(s, parent, name.c_str(), static_cast<int>(flags), static_cast<uint32_t>(mode), static_cast<uint32_t>(uid),
                         static_cast<uint32_t>(gid), out, info[8].ToBoolean(), OptionalU32(info, 9), &created);
  out[kCreatedSlot] = created ? 1 : 0;
  return Num(info, static_cast<double>(r));
}

// nodeTmpfile(id, parent, flags, mode, uid, gid, out, umask?) -> nodeid or -errno;
// out[kFhSlot] = fh.
Napi::Value NodeTmpfile(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t parent;
  int64_t flags, mode, uid, gid;
  double* out = OutArg(info, 6, kStatxFields + 1);
  if (!out) return info.Env().Undefined();
  if (!U64(info, 1, &parent) || !I64(info, 2, &flags) || !I64(info, 3, &mode) || !I64(info, 4, &uid) || !I64(info, 5, &gid))
    return ThrowType(info.Env(), "nodeTmpfile(id, parent, flags, mode, uid, gid, out)");
  uint32_t umask = OptionalU32(info, 7);
  InodePin p(s, parent);
  if (p.fd() < 0) return Num(info, p.fd());
  if (p.type() != S_IFDIR) return Num(info, -ENOTDIR);
  int oflags = (static_cast<int>(flags) & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_DIRECTORY)) | O_TMPFILE;
  if ((oflags & O_ACCMODE) == O_RDONLY) oflags |= O_RDWR;  // O_TMPFILE needs write access
  int fd;
  {
    Creds c(s, uid, gid);
    if (c.error()) return Num(info, c.error());
    ThreadUmask m(PosixAclSession(s), umask);
    if (m.error()) return Num(info, m.error());
    do {
      fd = openat(p.fd(), ".", oflags | O_CLOEXEC, static_cast<mode_t>(mode));
    } while (fd < 0 && errno == EINTR);
  }
  if (fd < 0) return Num(info, -errno);
  int pathFd = Reopen(s, fd, O_PATH_);
  if (pathFd < 0) {
    close(fd);
    return Num(info, pathFd);
  }
  return Num(info, static_cast<double>(RegisterOpened(s, pathFd, fd, out)));
}

// nodeLink(id, nodeid, newparent, newname, out) -> nodeid (one more lookup) or -errno.
Napi::Value NodeLink(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, parent;
  std::string name;
  int err;
  double* out = OutArg(info, 4, kStatxFields);
  if (!out || !NameArg(info, 3, &name, &err)) return info.Env().Undefined();
  if (!U64(info, 1, &nodeid) || !U64(info, 2, &parent)) return ThrowType(info.Env(), "nodeLink(id, nodeid, newparent, newname, out)");
  if (err) return Num(info, -err);
  return Num(info, static_cast<double>(LinkName(s, nodeid, parent, name.c_str(), out)));
}

// nodeUnlink(id, parent, name, rmdir) -> 0 or -errno.
Napi::Value NodeUnlink(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t parent;
  bool rmdir = info[3].ToBoolean();
  std::string name;
  int err;
  if (!NameArg(info, 2, &name, &err)) return info.Env().Undefined();
  if (!U64(info, 1, &parent)) return ThrowType(info.Env(), "nodeUnlink(id, parent, name, rmdir)");
  if (err) return Num(info, -err);
  return Num(info, UnlinkName(s, parent, name.c_str(), rmdir));
}

// nodeRename(id, olddir, oldname, newdir, newname, flags) -> 0 or -errno (renameat2 flags).
Napi::Value NodeRename(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t od, nd;
  int64_t flags;
  std::string on, nn;
  int e1, e2;
  if (!NameArg(info, 2, &on, &e1) || !NameArg(info, 4, &nn, &e2)) return info.Env().Undefined();
  if (!U64(info, 1, &od) || !U64(info, 3, &nd) || !I64(info, 5, &flags))
    return ThrowType(info.Env(), "nodeRename(id, olddir, oldname, newdir, newname, flags)");
  if (e1 || e2) return Num(info, -(e1 ? e1 : e2));
  return Num(info, RenameName(s, od, on.c_str(), nd, nn.c_str(), static_cast<uint32_t>(flags)));
}

// nodeReadlink(id, nodeid, buf) -> length of the target (bytes written into buf) or -errno.
Napi::Value NodeReadlink(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!U64(info, 1, &nodeid) || !info[2].IsBuffer()) return ThrowType(info.Env(), "nodeReadlink(id, nodeid, buf)");
  Napi::Buffer<char> b = info[2].As<Napi::Buffer<char>>();
  return Num(info, static_cast<double>(ReadLinkNode(s, nodeid, b.Data(), b.Length())));
}

// nodeSetattr(id, nodeid, fh, valid, mode, uid, gid, size, atime, atimeNsec, mtime, mtimeNsec,
// out) -> 0 or -errno; out gets the attributes afterwards (SetAttributes).
Napi::Value NodeSetattr(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, fh;
  int64_t valid, mode, uid, gid, size, at, atn, mt, mtn;
  double* out = OutArg(info, 12, kStatxFields);
  if (!out) return info.Env().Undefined();
  if (!U64(info, 1, &nodeid) || !U64(info, 2, &fh) || !I64(info, 3, &valid) || !I64(info, 4, &mode) ||
      !I64(info, 5, &uid) || !I64(info, 6, &gid) || !I64(info, 7, &size) || !I64(info, 8, &at) || !I64(info, 9, &atn) ||
      !I64(info, 10, &mt) || !I64(info, 11, &mtn))
    return ThrowType(info.Env(), "nodeSetattr(id, nodeid, fh, valid, mode, uid, gid, size, at, atn, mt, mtn, out)");
  SetattrArgs a;
  a.valid = static_cast<uint32_t>(valid);
  a.fh = fh;
  a.mode = static_cast<uint32_t>(mode);
  a.uid = static_cast<uint32_t>(uid);
  a.gid = static_cast<uint32_t>(gid);
  a.size = size;
  a.atime = at;
  a.atimeNsec = static_cast<uint32_t>(atn);
  a.mtime = mt;
  a.mtimeNsec = static_cast<uint32_t>(mtn);
  return Num(info, SetAttributes(s, nodeid, a, out));
}

// Extended attributes go through ProcPath (state.h) of the inode's O_PATH descriptor.

// nodeGetxattr(id, nodeid, name, buf) -> value size (into buf; size query when buf is empty).
Napi::Value NodeGetxattr(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  std::string name;
  if (!PathArg(info, 2, &name)) return info.Env().Undefined();
  if (!U64(info, 1, &nodeid) || !info[3].IsBuffer()) return ThrowType(info.Env(), "nodeGetxattr(id, nodeid, name, buf)");
  Napi::Buffer<char> b = info[3].As<Napi::Buffer<char>>();
  return Num(info, static_cast<double>(GetXattrNode(s, nodeid, name.c_str(), b.Data(), b.Length())));
}

// nodeListxattr(id, nodeid, buf) -> size of the NUL-separated name list.
Napi::Value NodeListxattr(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!U64(info, 1, &nodeid) || !info[2].IsBuffer()) return ThrowType(info.Env(), "nodeListxattr(id, nodeid, buf)");
  Napi::Buffer<char> b = info[2].As<Napi::Buffer<char>>();
  InodePin p(s, nodeid);
  if (p.fd() < 0) return Num(info, p.fd());
  ssize_t n = listxattr(ProcPath(p.fd()).c_str(), b.Length() ? b.Data() : nullptr, b.Length());
  return Num(info, n < 0 ? -errno : static_cast<double>(n));
}

// nodeSetxattr(id, nodeid, name, value, flags, killSgidAs?) -> 0 or -errno. killSgidAs, a
// [uid, gid] pair, sets the value as that guest user without CAP_FSETID: for a POSIX access
// ACL the guest marked FUSE_SETXATTR_ACL_KILL_SGID (its caller is neither in the file's group
// nor privileged), so that the host kernel clears the setgid bit as it would for that user.
Napi::Value NodeSetxattr(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  int64_t flags;
  std::string name;
  if (!PathArg(info, 2, &name)) return info.Env().Undefined();
  if (!U64(info, 1, &nodeid) || !info[3].IsBuffer() || !I64(info, 4, &flags))
    return ThrowType(info.Env(), "nodeSetxattr(id, nodeid, name, value, flags)");
  Napi::Buffer<char> v = info[3].As<Napi::Buffer<char>>();
  int64_t as[2] = {-1, -1};
  if (info.Length() > 5 && !info[5].IsUndefined()) {
    Napi::Value a = info[5];
    if (!a.IsArray() || a.As<Napi::Array>().Length() != 2 || !a.As<Napi::Array>().Get(0u).IsNumber() ||
        !a.As<Napi::Array>().Get(1u).IsNumber())
      return ThrowType(info.Env(), "nodeSetxattr(id, nodeid, name, value, flags, [uid, gid]?)");
    as[0] = a.As<Napi::Array>().Get(0u).As<Napi::Number>().Int64Value();
    as[1] = a.As<Napi::Array>().Get(1u).As<Napi::Number>().Int64Value();
  }
  InodePin p(s, nodeid);
  if (p.fd() < 0) return Num(info, p.fd());
  bool asCaller = as[0] >= 0 && as[1] >= 0;
  std::optional<Creds> c;
  if (asCaller) {
    c.emplace(s, as[0], as[1]);
    if (c->error()) return Num(info, c->error());
  }
  FsetidDropped f(asCaller);
  if (f.error()) return Num(info, f.error());
  int r = setxattr(ProcPath(p.fd()).c_str(), name.c_str(), v.Data(), v.Length(), static_cast<int>(flags));
  return Num(info, r < 0 ? -errno : 0);
}

// nodeRemovexattr(id, nodeid, name) -> 0 or -errno.
Napi::Value NodeRemovexattr(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  std::string name;
  if (!PathArg(info, 2, &name)) return info.Env().Undefined();
  if (!U64(info, 1, &nodeid)) return ThrowType(info.Env(), "nodeRemovexattr(id, nodeid, name)");
  InodePin p(s, nodeid);
  if (p.fd() < 0) return Num(info, p.fd());
  return Num(info, removexattr(ProcPath(p.fd()).c_str(), name.c_str()) < 0 ? -errno : 0);
}

// nodeStatfs(id, nodeid, out[8]) -> 0 or -errno: blocks, bfree, bavail, files, ffree, bsize,
// namelen, frsize of the file system holding the inode.
Napi::Value NodeStatfs(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  double* out = OutArg(info, 2, 8);
  if (!out) return info.Env().Undefined();
  if (!U64(info, 1, &nodeid)) return ThrowType(info.Env(), "nodeStatfs(id, nodeid, out)");
  struct statfs st;
  int r = StatfsNode(s, nodeid, &st);
  if (r < 0) return Num(info, r);
  out[0] = static_cast<double>(st.f_blocks);
  out[1] = static_cast<double>(st.f_bfree);
  out[2] = static_cast<double>(st.f_bavail);
  out[3] = static_cast<double>(st.f_files);
  out[4] = static_cast<double>(st.f_ffree);
  out[5] = static_cast<double>(st.f_bsize);
  out[6] = static_cast<double>(st.f_namelen);
  out[7] = static_cast<double>(st.f_frsize);
  return Num(info, 0);
}

}  // namespace

int StatfsNode(FsState* s, uint64_t nodeid, struct statfs* out) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  return fstatfs(p.fd(), out) < 0 ? -errno : 0;
}

int SyncfsNode(FsState* s, uint64_t nodeid) {
  // syncfs() refuses O_PATH descriptors: use the inode opened for reading if it is a file
  // or a directory, else the shared directory.
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  InodePin root(s, kRootId);
  int src = (p.type() == S_IFREG || p.type() == S_IFDIR) ? p.fd() : root.fd();
  int fd = Reopen(s, src, O_RDONLY | O_NONBLOCK);
  if (fd < 0) return fd;
  int r = syncfs(fd);
  int e = errno;
  close(fd);
  return r < 0 ? -e : 0;
}

int OpenPath(int dirfd, const std::string& name) {
  int fd;
  do {
    fd = openat(dirfd, name.c_str(), O_PATH_ | O_NOFOLLOW | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

// The inode behind an O_PATH fd, opened again with flags through /proc/self/fd.
int Reopen(FsState* s, int pathFd, int flags) {
  std::string p = std::to_string(pathFd);
  int fd;
  do {
    fd = openat(s->procFd, p.c_str(), flags | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

int64_t OpenNode(FsState* s, uint64_t nodeid, int flags, bool killSuidgid) {
  if (flags & kRefusedOpenFlags) return -EINVAL;
  flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  int fd;
  {
    InodePin p(s, nodeid);
    if (p.fd() < 0) return p.fd();
    // Only regular files and directories are opened here. The guest kernel serves FIFOs,
    // sockets and device nodes itself and never sends OPEN for them; a guest that did could
    // otherwise block a queue on a FIFO or reach a host device through a node it made.
    if (p.type() == S_IFLNK) return -ELOOP;
    if (p.type() != S_IFREG && p.type() != S_IFDIR) return -ENXIO;
    FsetidDropped f(killSuidgid && (flags & O_TRUNC));
    fd = f.error() ? f.error() : Reopen(s, p.fd(), flags);
    if (fd < 0) return fd;
    if (flags & O_TRUNC) s->DropMappedCapability(fd);  // as for any truncation
  }
  return static_cast<int64_t>(s->InsertHandle(fd, nodeid));
}

int64_t MakeNode(FsState* s, uint64_t parent, const char* name, MakeKind kind, uint32_t mode, uint64_t rdev, const char* target,
                 uint32_t uid, uint32_t gid, double* out, uint32_t umask) {
  if (name[0] == '\0' || strchr(name, '/')) return -EINVAL;
  InodePin p(s, parent);
  if (p.fd() < 0) return p.fd();
  if (p.type() != S_IFDIR) return -ENOTDIR;
  int r;
  {
    Creds c(s, uid, gid);
    if (c.error()) return c.error();
    ThreadUmask m(kind != MakeKind::kSymlink && PosixAclSession(s), umask);
    if (m.error()) return m.error();
    if (kind == MakeKind::kMknod)
      r = mknodat(p.fd(), name, static_cast<mode_t>(mode), static_cast<dev_t>(rdev));
    else if (kind == MakeKind::kMkdir)
      r = mkdirat(p.fd(), name, static_cast<mode_t>(mode));
    else
      r = symlinkat(target, p.fd(), name);
    if (r < 0) r = -errno;
  }
  if (r < 0) return r;
  int fd = OpenPath(p.fd(), name);
  if (fd < 0) return fd;
  return RegisterInode(s, fd, out);
}

int64_t CreateName(FsState* s, uint64_t parent, const char* name, int flags, uint32_t mode, uint32_t uid, uint32_t gid,
                   double* out, bool killSuidgid, uint32_t umask, bool* created) {
  if (created) *created = false;
  if (name[0] == '\0' || strchr(name, '/') || (flags & kRefusedOpenFlags)) return -EINVAL;
  InodePin p(s, parent);
  if (p.fd() < 0) return p.fd();
  if (p.type() != S_IFDIR) return -ENOTDIR;
  int oflags = flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW);
  int fd, pathFd = -1;
  {
    // The open of a name that exists runs as the caller too: the guest sends CREATE for a
    // name it believes missing (a negative entry it cached while another guest or the host
    // made the file), so its kernel checked no permission on that file. As the daemon, the
    // open (O_TRUNC included) would ignore the file's mode and owner.
    Creds c(s, uid, gid);
    if (c.error()) return c.error();
    {
      ThreadUmask m(PosixAclSession(s), umask);
      if (m.error()) return m.error();
      do {
        fd = openat(p.fd(), name, oflags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, static_cast<mode_t>(mode));
      } while (fd < 0 && errno == EINTR);
    }
    if (fd < 0) {
      if (errno != EEXIST || (flags & O_EXCL)) return -errno;
      // The name exists: open what it names only if that is a regular file.
      pathFd = OpenPath(p.fd(), name);
      if (pathFd < 0) return pathFd;
      struct stat st;
      if (fstat(pathFd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : S_ISLNK(st.st_mode) ? ELOOP : EEXIST;
        close(pathFd);
        return -e;
      }
      FsetidDropped f(killSuidgid && (oflags & O_TRUNC));
      fd = f.error() ? f.error() : Reopen(s, pathFd, oflags);
      if (fd < 0) {
        close(pathFd);
        return fd;
      }
      if (oflags & O_TRUNC) s->DropMappedCapability(fd);
    }
  }
  if (pathFd < 0) {
    pathFd = Reopen(s, fd, O_PATH_);
    if (pathFd < 0) {
      close(fd);
      return pathFd;
    }
    if (created) *created = true;
  }
  return RegisterOpened(s, pathFd, fd, out);
}

int64_t LinkName(FsState* s, uint64_t nodeid, uint64_t parent, const char* name, double* out) {
  if (name[0] == '\0' || strchr(name, '/')) return -EINVAL;
  InodePin src(s, nodeid);
  if (src.fd() < 0) return src.fd();
  if (src.type() == S_IFDIR) return -EPERM;
  InodePin dst(s, parent);
  if (dst.fd() < 0) return dst.fd();
  if (dst.type() != S_IFDIR) return -ENOTDIR;
  int r = linkat(src.fd(), "", dst.fd(), name, AT_EMPTY_PATH);
  if (r < 0 && (errno == ENOENT || errno == EPERM)) {
    // Without CAP_DAC_READ_SEARCH, AT_EMPTY_PATH is refused; the /proc link works instead.
    std::string p = std::to_string(src.fd());
    r = linkat(s->procFd, p.c_str(), dst.fd(), name, AT_SYMLINK_FOLLOW);
  }
  if (r < 0) return -errno;
  int fd = OpenPath(dst.fd(), name);
  if (fd < 0) return fd;
  return RegisterInode(s, fd, out);
}

int64_t ReadLinkNode(FsState* s, uint64_t nodeid, char* buf, size_t cap) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  if (p.type() != S_IFLNK) return -EINVAL;
  ssize_t n = readlinkat(p.fd(), "", buf, cap);
  return n < 0 ? -errno : n;
}

int64_t GetXattrNode(FsState* s, uint64_t nodeid, const char* name, char* buf, size_t cap) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  ssize_t n = getxattr(ProcPath(p.fd()).c_str(), name, cap ? buf : nullptr, cap);
  return n < 0 ? -errno : n;
}

int UnlinkName(FsState* s, uint64_t parent, const char* name, bool rmdir) {
  if (name[0] == '\0' || strchr(name, '/')) return -EINVAL;
  InodePin p(s, parent);
  if (p.fd() < 0) return p.fd();
  if (p.type() != S_IFDIR) return -ENOTDIR;
  return unlinkat(p.fd(), name, rmdir ? AT_REMOVEDIR : 0) < 0 ? -errno : 0;
}

int RenameName(FsState* s, uint64_t oldParent, const char* oldName, uint64_t newParent, const char* newName, uint32_t flags) {
  if (oldName[0] == '\0' || strchr(oldName, '/') || newName[0] == '\0' || strchr(newName, '/')) return -EINVAL;
  InodePin a(s, oldParent);
  if (a.fd() < 0) return a.fd();
  InodePin b(s, newParent);
  if (b.fd() < 0) return b.fd();
  if (a.type() != S_IFDIR || b.type() != S_IFDIR) return -ENOTDIR;
  long r = syscall(SYS_renameat2, a.fd(), oldName, b.fd(), newName, flags);
  return r < 0 ? -errno : 0;
}

int SetAttributes(FsState* s, uint64_t nodeid, const SetattrArgs& a, double* out) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  int hfd = -1;
  HandlePin h(s, (a.valid & kFattrFh) ? a.fh : 0);
  if (a.valid & kFattrFh) {
    if (h.fd() < 0) return h.fd();
    hfd = h.fd();
  }
  std::string path = std::to_string(p.fd());
  if (a.valid & kFattrMode) {
    if (p.type() == S_IFLNK) return -EOPNOTSUPP;
    int r = hfd >= 0 ? fchmod(hfd, static_cast<mode_t>(a.mode & 07777))
                     : fchmodat(s->procFd, path.c_str(), static_cast<mode_t>(a.mode & 07777), 0);
    if (r < 0) return -errno;
  }
  // The guest asks this of a chown, and of a truncation by a process without CAP_FSETID.
  FsetidDropped kill(a.valid & kFattrKillSuidgid && a.valid & (kFattrUid | kFattrGid | kFattrSize));
  if (kill.error()) return kill.error();
  if (a.valid & (kFattrUid | kFattrGid)) {
    uint32_t hu = static_cast<uint32_t>(-1), hg = static_cast<uint32_t>(-1);
    if (((a.valid & kFattrUid) && !s->uids.ToHost(a.uid, &hu)) || ((a.valid & kFattrGid) && !s->gids.ToHost(a.gid, &hg)))
      return -EPERM;
    uid_t u = static_cast<uid_t>(hu);
    gid_t g = static_cast<gid_t>(hg);
    if (fchownat(p.fd(), "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) return -errno;
    s->DropMappedCapability(p.fd());
  }
  if (a.valid & kFattrSize) {
    if (p.type() == S_IFDIR) return -EISDIR;
    if (p.type() != S_IFREG) return -EINVAL;
    int r;
    if (hfd >= 0) {
      r = ftruncate(hfd, a.size);
    } else {
      int fd = Reopen(s, p.fd(), O_WRONLY);
      if (fd < 0) return fd;
      r = ftruncate(fd, a.size);
      int e = errno;
      close(fd);
      errno = e;
    }
    if (r < 0) return -errno;
    s->DropMappedCapability(p.fd());
  }
  if (a.valid & (kFattrAtime | kFattrMtime)) {
    timespec ts[2];
    ts[0] = (a.valid & kFattrAtimeNow) ? timespec{0, UTIME_NOW}
            : (a.valid & kFattrAtime)  ? timespec{a.atime, static_cast<long>(a.atimeNsec)}
                                  : timespec{0, UTIME_OMIT};
    ts[1] = (a.valid & kFattrMtimeNow) ? timespec{0, UTIME_NOW}
            : (a.valid & kFattrMtime)  ? timespec{a.mtime, static_cast<long>(a.mtimeNsec)}
                                  : timespec{0, UTIME_OMIT};
    int r;
    if (hfd >= 0)
      r = futimens(hfd, ts);
    else if (p.type() == S_IFLNK)
      r = utimensat(p.fd(), "", ts, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    else
      r = utimensat(s->procFd, path.c_str(), ts, 0);
    if (r < 0) return -errno;
  }
  int r = StatxInto(p.fd(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out);
  if (r == 0) OwnerToGuest(s, out);
  return r;
}

void InitNodeOps(Napi::Env env, Napi::Object exports) {
  exports.Set("nodeMake", Napi::Function::New(env, NodeMake));
  exports.Set("nodeCreate", Napi::Function::New(env, NodeCreate));
  exports.Set("nodeTmpfile", Napi::Function::New(env, NodeTmpfile));
  exports.Set("nodeLink", Napi::Function::New(env, NodeLink));
  exports.Set("nodeUnlink", Napi::Function::New(env, NodeUnlink));
  exports.Set("nodeRename", Napi::Function::New(env, NodeRename));
  exports.Set("nodeReadlink", Napi::Function::New(env, NodeReadlink));
  exports.Set("nodeSetattr", Napi::Function::New(env, NodeSetattr));
  exports.Set("nodeGetxattr", Napi::Function::New(env, NodeGetxattr));
  exports.Set("nodeListxattr", Napi::Function::New(env, NodeListxattr));
  exports.Set("nodeSetxattr", Napi::Function::New(env, NodeSetxattr));
  exports.Set("nodeRemovexattr", Napi::Function::New(env, NodeRemovexattr));
  exports.Set("nodeStatfs", Napi::Function::New(env, NodeStatfs));
}

}  // namespace vfsn
