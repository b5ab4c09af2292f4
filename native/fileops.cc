// File-system operations on open handles (fh): reading directories, fsync, fallocate,
// lseek, copy_file_range, and locks. Each pins the handle (and inode) it names for the length
// of its system calls (state.h).
//
// Directories: READDIR and READDIRPLUS are encoded here, straight from getdents64 into the
// reply's fuse_dirent / fuse_direntplus records (include/uapi/linux/fuse.h), one call per
// request. A READDIRPLUS entry is a lookup: it takes a lookup reference on the inode, except
// for "." and "..", which carry nodeid 0 and take none (the kernel skips them).
//
// Locks are held by the host kernel, so they are real against other users of the files:
//  - POSIX (fcntl) locks belong to a lock owner (a guest process). Each (inode, owner) gets
//    an open file description of its own carrying OFD locks, so an owner's locks span all its
//    handles of the file and different owners conflict, as POSIX wants. The owner's FLUSH
//    (a close() in the guest) closes that description and so drops its locks.
//  - BSD flock() locks belong to an open file description: the handle's own.
// Waiting for a lock never blocks a queue thread: these calls never wait (F_OFD_SETLK,
// LOCK_NB); the FUSE server retries a SETLKW without holding the thread. OFD locks have no
// deadlock detection, so the POSIX locks granted and waited for are also recorded here
// (state.h, LockTable) and a wait that could never end is answered EDEADLK, as the kernel
// answers for classic POSIX locks.
#include "state.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <cstring>

namespace vfsn {
namespace {

constexpr int64_t kOffsetMax = 0x7fffffffffffffffll;

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

inline size_t Align8(size_t n) { return (n + 7) & ~static_cast<size_t>(7); }
constexpr size_t kDirentHead = 24;   // fuse_dirent without its name
constexpr size_t kEntryOut = 128;    // fuse_entry_out

inline void Put64(uint8_t* p, uint64_t v) { memcpy(p, &v, 8); }
inline void Put32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }

// The kernel's new_encode_dev(), the dev_t layout of fuse_attr.rdev.
inline uint32_t EncodeDev(uint32_t major, uint32_t minor) {
  return (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffu) << 12);
}

// fuse_entry_out for nodeid with attributes st (StatxField order) at p (128 bytes).
void PutEntry(uint8_t* p, uint64_t nodeid, const double* st, const double* timeouts) {
  memset(p, 0, kEntryOut);
  Put64(p, nodeid);
  Put64(p + 16, static_cast<uint64_t>(timeouts[0]));
  Put64(p + 24, static_cast<uint64_t>(timeouts[2]));
  Put32(p + 32, static_cast<uint32_t>(timeouts[1]));
  Put32(p + 36, static_cast<uint32_t>(timeouts[3]));
  uint8_t* a = p + 40;  // fuse_attr
  Put64(a, ExactIno(st));
  Put64(a + 8, static_cast<uint64_t>(st[10]));
  Put64(a + 16, static_cast<uint64_t>(st[11]));
  Put64(a + 24, static_cast<uint64_t>(static_cast<int64_t>(st[13])));
  Put64(a + 32, static_cast<uint64_t>(static_cast<int64_t>(st[15])));
  Put64(a + 40, static_cast<uint64_t>(static_cast<int64_t>(st[17])));
  Put32(a + 48, static_cast<uint32_t>(st[14]));
  Put32(a + 52, static_cast<uint32_t>(st[16]));
  Put32(a + 56, static_cast<uint32_t>(st[18]));
  Put32(a + 60, static_cast<uint32_t>(st[4]));
  Put32(a + 64, static_cast<uint32_t>(st[5]));
  Put32(a + 68, static_cast<uint32_t>(st[6]));
  Put32(a + 72, static_cast<uint32_t>(st[7]));
  Put32(a + 76, EncodeDev(static_cast<uint32_t>(st[8]), static_cast<uint32_t>(st[9])));
  Put32(a + 80, static_cast<uint32_t>(st[12]));
  Put32(a + 84, static_cast<uint32_t>(st[kAttrFlagsField]));
}

}  // namespace

int SyncHandle(FsState* s, uint64_t fh, bool datasync) {
  HandlePin h(s, fh);
  if (h.fd() < 0) return h.fd();
  return (datasync ? fdatasync(h.fd()) : fsync(h.fd())) < 0 ? -errno : 0;
}

int FallocateHandle(FsState* s, uint64_t fh, int mode, int64_t offset, int64_t length, bool killSuidgid) {
  HandlePin h(s, fh);
  if (h.fd() < 0) return h.fd();
  FsetidDropped f(killSuidgid);
  if (f.error()) return f.error();
  if (fallocate(h.fd(), mode, offset, length) < 0) return -errno;
  s->DropMappedCapability(h.fd());  // a change of the file's contents, as a write
  return 0;
}

int64_t SeekHandle(FsState* s, uint64_t fh, int64_t offset, int whence) {
  HandlePin h(s, fh);
  if (h.fd() < 0) return h.fd();
  off_t r = lseek(h.fd(), offset, whence);
  return r < 0 ? -errno : r;
}

int64_t CopyRangeHandles(FsState* s, uint64_t fhIn, int64_t offIn, uint64_t fhOut, int64_t offOut, uint64_t length,
                         unsigned flags, bool killSuidgid) {
  HandlePin a(s, fhIn);
  if (a.fd() < 0) return a.fd();
  HandlePin b(s, fhOut);
  if (b.fd() < 0) return b.fd();
  FsetidDropped f(killSuidgid);
  if (f.error()) return f.error();
  loff_t i = offIn, o = offOut;
  ssize_t r = copy_file_range(a.fd(), &i, b.fd(), &o, static_cast<size_t>(length), flags);
  if (r < 0) return -errno;
  if (r > 0) s->DropMappedCapability(b.fd());  // the destination was written
  return r;
}

int64_t ReadDirectory(FsState* s, uint64_t fh, int64_t offset, uint8_t* out, size_t cap, bool plus, const double* timeouts) {
  size_t pos = 0;
  HandlePin h(s, fh);
  if (h.fd() < 0) return h.fd();
  if (lseek(h.fd(), offset, SEEK_SET) < 0) return -errno;
  thread_local char dbuf[32768];
  double st[kStatxFields];
  double dirSt[kStatxFields];  // the directory's own attributes, read once if needed
  dirSt[0] = -1;
  for (;;) {
    long n = syscall(SYS_getdents64, h.fd(), dbuf, sizeof dbuf);
    if (n < 0) return pos > 0 ? static_cast<int64_t>(pos) : -errno;
    if (n == 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<LinuxDirent64*>(dbuf + off);
      off += d->d_reclen;
      size_t namelen = strlen(d->d_name);
      size_t rec = Align8(kDirentHead + namelen) + (plus ? kEntryOut : 0);
      if (pos + rec > cap) return static_cast<int64_t>(pos);
      uint8_t* p = out + pos;
      uint64_t ino = d->d_ino;
      if (plus) {
        memset(p, 0, kEntryOut);
        if (!IsDotOrDotDot(d->d_name, namelen)) {
          int fd;
          do {
            fd = openat(h.fd(), d->d_name, O_PATH_ | O_NOFOLLOW | O_CLOEXEC);
          } while (fd < 0 && errno == EINTR);
          // A name that vanished since getdents stays in the listing with nodeid 0: the
          // guest then looks it up itself if it needs it.
          if (fd >= 0) {
            int64_t nodeid = RegisterInode(s, fd, st);
            if (nodeid > 0) {
              MarkSubmount(s, h.fd(), d->d_name, st, dirSt);
              PutEntry(p, static_cast<uint64_t>(nodeid), st, timeouts);
              ino = ExactIno(st);
            }
          }
        }
        p += kEntryOut;
      }
      memset(p, 0, Align8(kDirentHead + namelen));
      Put64(p, ino);
      Put64(p + 8, static_cast<uint64_t>(d->d_off));
      Put32(p + 16, static_cast<uint32_t>(namelen));
      Put32(p + 20, d->d_type);
      memcpy(p + kDirentHead, d->d_name, namelen);
      pos += rec;
    }
  }
  return static_cast<int64_t>(pos);
}

namespace {

// handleReaddir(id, fh, offset, out, plus, timeouts) -> bytes of records written into out,
// or -errno (ReadDirectory). timeouts: Float64Array [entrySec, entryNsec, attrSec, attrNsec].
Napi::Value HandleReaddir(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  int64_t offset;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 2, &offset) || !info[3].IsBuffer() || !info[5].IsTypedArray())
    return ThrowType(info.Env(), "handleReaddir(id, fh, offset, out, plus, timeouts)");
  Napi::Float64Array tmo = info[5].As<Napi::Float64Array>();
  if (tmo.ElementLength() < 4) return ThrowType(info.Env(), "timeouts: Float64Array(4)");
  Napi::Buffer<uint8_t> out = info[3].As<Napi::Buffer<uint8_t>>();
  return Num(info, static_cast<double>(ReadDirectory(s, fh, offset, out.Data(), out.Length(), info[4].ToBoolean(), tmo.Data())));
}

// handleLseek(id, fh, offset, whence) -> the resulting offset or -errno (SEEK_DATA/HOLE).
Napi::Value HandleLseek(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  int64_t off, whence;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 2, &off) || !ArgInt(info, 3, &whence))
    return ThrowType(info.Env(), "handleLseek(id, fh, offset, whence)");
  return Num(info, static_cast<double>(SeekHandle(s, fh, off, static_cast<int>(whence))));
}

// handleFlock(id, fh, op) -> 0 or -errno; op is LOCK_SH/LOCK_EX/LOCK_UN, always non-blocking.
Napi::Value HandleFlock(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  int64_t op;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 2, &op)) return ThrowType(info.Env(), "handleFlock(id, fh, op)");
  return Num(info, FlockHandle(s, fh, static_cast<int>(op)));
}

// The descriptor that owner's POSIX locks on nodeid ride on, if it has one: the descriptor, -1 when
// it has none (it holds no lock on the file), -EBADF when the inode is gone. Called with
// locks.mu held.
int FoundOwnerFd(FsState* s, uint64_t nodeid, uint64_t owner) {
  InodeShard& sh = s->ShardOf(nodeid);
  std::lock_guard<std::mutex> g(sh.mu);
  auto it = sh.byId.find(nodeid);
  if (it == sh.byId.end()) return -EBADF;
  auto l = it->second.lockFds.find(owner);
  return l != it->second.lockFds.end() ? l->second : -1;
}

void ToFlock(struct flock* fl, int64_t type, int64_t start, int64_t end) {
  memset(fl, 0, sizeof *fl);
  fl->l_type = static_cast<short>(type);
  fl->l_whence = SEEK_SET;
  fl->l_start = start;
  fl->l_len = (end == kOffsetMax || end < start) ? 0 : end - start + 1;
}

// One non-blocking F_OFD_SETLK of [start, end] (inclusive) through fd: 0 or -errno (EACCES or
// EAGAIN when another description holds a conflicting lock).
int OfdSetlk(int fd, int type, int64_t start, int64_t end) {
  struct flock fl;
  ToFlock(&fl, type, start, end);
  int r;
  do {
    r = fcntl(fd, F_OFD_SETLK, &fl);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? -errno : 0;
}

// Whether owner holds a lock on nodeid (called with locks.mu held).
bool HoldsAny(const LockTable& t, uint64_t nodeid, uint64_t owner) {
  auto it = t.held.find(nodeid);
  return it != t.held.end() && it->second.count(owner) > 0;
}

// Whether a description opened with access mode `access` may take a lock of `type`: a read
// lock needs it open for reading, a write lock for writing (fcntl's EBADF), an unlock nothing.
bool Allows(int access, int type) {
  if (type == F_RDLCK) return access != O_WRONLY;
  if (type == F_WRLCK) return access != O_RDONLY;
  return true;
}

int AccessOf(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -errno : (fl & O_ACCMODE);
}

// Opens the file of node (by its /proc/self/fd link) for locks: read-only for `access`
// O_RDONLY; else read-write (a handle open for writing already has the file open for
// writing, and so the owner can take read locks too), or, when the host refuses that, with
// only what a lock of `type` needs. -errno on failure.
int OpenForLocks(FsState* s, const InodePin& node, int access, int type) {
  std::string p = std::to_string(node.fd());
  int fd = openat(s->procFd, p.c_str(), (access == O_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0 && access != O_RDONLY && (errno == EACCES || errno == EROFS || errno == EISDIR))
    fd = openat(s->procFd, p.c_str(), (type == F_WRLCK ? O_WRONLY : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  return fd < 0 ? -errno : fd;
}

// Moves owner's locks on nodeid from its description from (opened read-only, so holding read
// locks only) to to (opened read-write): each range is taken on to first (read locks of
// two descriptions never conflict, and no other owner holds a write lock where owner holds
// a read one), so no range is ever unlocked on the way; from is closed by the caller. 0 or
// -errno. Called with locks.mu held.
int MoveReadLocks(const LockTable& t, uint64_t nodeid, uint64_t owner, int to) {
  auto inode = t.held.find(nodeid);
  if (inode == t.held.end()) return 0;
  auto mine = inode->second.find(owner);
  if (mine == inode->second.end()) return 0;
  for (const LockRange& r : mine->second)
    if (int rc = OfdSetlk(to, r.type, r.start, r.end); rc < 0) return rc;
  return 0;
}

// The open file description that carries owner's POSIX locks on the inode of nodeid, able
// to take a lock of `type` (F_UNLCK: any); -errno on failure. The first use opens the file
// as the guest's handle the lock comes through is open (`access`, see OpenForLocks), so
// that a read lock through a read-only file opens nothing for writing (a host write open
// copies an overlayfs file up, makes an execve of it fail with ETXTBSY, breaks leases and
// reports a write at its close). An owner whose description was opened read-only and now
// asks for a write lock (a process with a read-only and a read-write descriptor of one
// file) gets a read-write one, its read locks moved over (MoveReadLocks); where locks
// cannot move without a gap (from a write-only description, or to one) ENOLCK.
//
// Called with locks.mu held through held, which keeps the descriptor open while the caller
// uses it (UnlockOwner closes it under locks.mu). An open runs with locks.mu released (on a
// network file system an open talks to the server; every queue's lock requests and FLUSHes
// wait for locks.mu), and the owner's entry is looked at again once it is held again:
// returns with it held in any case. Only a regular file or a directory is opened (ENOLCK for
// anything else): opening a device node runs its host driver, a FIFO's open blocks or wakes
// a writer, and the guest's kernel keeps the locks of its special files itself (it sends no
// lock request for them).
int OwnerFd(FsState* s, std::unique_lock<std::mutex>& held, uint64_t nodeid, const InodePin& node, uint64_t owner, int type,
            int access) {
  if (node.type() != S_IFREG && node.type() != S_IFDIR) return -ENOLCK;
  InodeShard& sh = s->ShardOf(nodeid);
  int found = FoundOwnerFd(s, nodeid, owner);
  if (found < -1) return found;
  if (found >= 0) {
    int has = AccessOf(found);
    if (has < 0) return has;
    if (Allows(has, type)) return found;
    if (has == O_WRONLY && HoldsAny(s->locks, nodeid, owner)) return -ENOLCK;
    access = O_RDWR;  // an owner's description that must do more: it becomes read-write
  } else if (s->lockFdsTotal.fetch_add(1, std::memory_order_relaxed) >= s->lockFdBudget) {
    // As the kernel answers when its lock table is full: the guest may not fill the daemon's.
    // The place is taken before the open (which runs with locks.mu released), so that
    // owners opening at once on several queues cannot pass the budget together.
    s->lockFdsTotal.fetch_sub(1, std::memory_order_relaxed);
    return -ENOLCK;
  }
  bool placed = found == -1;  // a place in the budget taken for a new descriptor
  auto giveBack = [&] {
    if (placed) s->lockFdsTotal.fetch_sub(1, std::memory_order_relaxed);
  };
  held.unlock();
  int fd = OpenForLocks(s, node, access, type);
  held.lock();
  if (fd < 0) {
    giveBack();
    // Not to be taken for a lock that someone holds (EACCES and EAGAIN say that of a lock).
    return fd == -EACCES || fd == -EAGAIN ? -ENOLCK : fd;
  }
  int old = -1, result = fd;
  {
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byId.find(nodeid);
    if (it == sh.byId.end()) {
      result = -EBADF;
    } else if (auto l = it->second.lockFds.find(owner); l == it->second.lockFds.end()) {
      // An upgrade whose owner's descriptor was closed meanwhile takes its place now, within
      // the budget as any new one.
      if (!placed && s->lockFdsTotal.fetch_add(1, std::memory_order_relaxed) >= s->lockFdBudget) {
        s->lockFdsTotal.fetch_sub(1, std::memory_order_relaxed);
        result = -ENOLCK;
      } else {
        it->second.lockFds.emplace(owner, fd);
        sh.lockFdsOpen++;
        placed = false;  // counted in lockFdsTotal from now on
      }
    } else if (int has = AccessOf(l->second); has >= 0 && Allows(has, type)) {
      result = l->second;  // another request of this owner opened one meanwhile
    } else if (HoldsAny(s->locks, nodeid, owner) && (has != O_RDONLY || AccessOf(fd) == O_WRONLY)) {
      result = -ENOLCK;  // write locks to move, or read locks to a write-only description
    } else if (int r = MoveReadLocks(s->locks, nodeid, owner, fd); r < 0) {
      result = r == -EACCES || r == -EAGAIN ? -ENOLCK : r;
    } else {
      old = l->second;
      l->second = fd;
    }
  }
  giveBack();
  // Outside the shard's mutex (on a network file system a close talks to the server), but
  // under locks.mu, which must stay held for the descriptor returned.
  if (result != fd) close(fd);
  if (old >= 0) close(old);
  return result;
}

inline int64_t EndOf(int64_t end) { return end < 0 ? kOffsetMax : end; }
inline bool Overlap(int64_t a0, int64_t a1, int64_t b0, int64_t b1) { return a0 <= b1 && b0 <= a1; }

// Drops the record of the handle owner's last lock on nodeid came through (locks.mu held).
void ForgetVia(LockTable& t, uint64_t nodeid, uint64_t owner) {
  auto v = t.via.find(nodeid);
  if (v == t.via.end()) return;
  v->second.erase(owner);
  if (v->second.empty()) t.via.erase(v);
}

// Forgets owner's ranges on nodeid and the handle they came through (locks.mu held).
void ForgetRanges(LockTable& t, uint64_t nodeid, uint64_t owner) {
  auto it = t.held.find(nodeid);
  if (it != t.held.end()) {
    it->second.erase(owner);
    if (it->second.empty()) t.held.erase(it);
  }
  ForgetVia(t, nodeid, owner);
  t.any.store(!t.held.empty(), std::memory_order_release);
}

// Records a granted lock or unlock of [start, end] for owner (called with locks.mu held).
void ApplyRange(LockTable& t, uint64_t nodeid, uint64_t owner, int type, int64_t start, int64_t end) {
  auto& mine = t.held[nodeid][owner];
  std::vector<LockRange> next;
  for (const LockRange& r : mine) {
    if (!Overlap(r.start, r.end, start, end)) {
      next.push_back(r);
      continue;
    }
    if (r.start < start) next.push_back({r.start, start - 1, r.type});
    if (r.end > end) next.push_back({end + 1, r.end, r.type});
  }
  if (type != F_UNLCK) next.push_back({start, end, type});
  if (next.empty()) {
    ForgetRanges(t, nodeid, owner);
    return;
  }
  mine = std::move(next);
  t.any.store(true, std::memory_order_release);
}

// The guest process that took the lock fl describes (as F_OFD_GETLK found it), from the
// table: another owner holding a lock of that type over its first byte (the host merges an
// owner's adjacent ranges, the table need not); 0 for a lock the host took (its pid would
// name some unrelated guest process) or one whose taker is not known (put back by a
// migration). Called with locks.mu held.
uint32_t TakerOf(const LockTable& t, uint64_t nodeid, uint64_t asker, const struct flock& fl) {
  auto inode = t.held.find(nodeid);
  auto v = t.via.find(nodeid);
  if (inode == t.held.end() || v == t.via.end()) return 0;
  for (const auto& [owner, ranges] : inode->second) {
    if (owner == asker) continue;
    for (const LockRange& r : ranges) {
      if (r.type != fl.l_type || r.start > fl.l_start || r.end < fl.l_start) continue;
      auto o = v->second.find(owner);
      return o == v->second.end() ? 0 : o->second.pid;
    }
  }
  return 0;
}

// One attempt at owner's lock of [start, end] (inclusive) through its descriptor fd, recorded
// in the table when granted: 0, -EAGAIN when another holds a conflicting lock, or -errno.
// Called with t.mu held: the attempt and the bookkeeping happen under it (a non-blocking
// call), so the table always matches what the host granted.
int SetlkLocked(LockTable& t, int fd, uint64_t nodeid, uint64_t owner, int type, int64_t start, int64_t end) {
  int r = OfdSetlk(fd, type, start, end);
  if (r < 0) return r == -EACCES ? -EAGAIN : r;
  ApplyRange(t, nodeid, owner, type, start, end);
  return 0;
}

// Would owner, waiting for w, wait forever? Follows who holds what it waits for, and what
// those owners wait for in turn, back to owner (called with locks.mu held).
bool Deadlocks(LockTable& t, uint64_t owner, const LockWait& w) {
  std::vector<std::pair<uint64_t, LockWait>> todo{{owner, w}};
  std::unordered_map<uint64_t, bool> seen;
  while (!todo.empty()) {
    auto [waiter, want] = todo.back();
    todo.pop_back();
    auto inode = t.held.find(want.nodeid);
    if (inode == t.held.end()) continue;
    for (const auto& [holder, ranges] : inode->second) {
      if (holder == waiter) continue;
      bool conflicts = false;
      for (const LockRange& r : ranges)
        if (Overlap(r.start, r.end, want.start, want.end) && (r.type == F_WRLCK || want.type == F_WRLCK)) conflicts = true;
      if (!conflicts) continue;
      if (holder == owner) return true;
      if (seen[holder]) continue;
      seen[holder] = true;
      auto next = t.waiting.find(holder);
      if (next != t.waiting.end()) todo.push_back({holder, next->second});
    }
  }
  return false;
}

// nodeSetlk(id, nodeid, fh, owner, type, start, end, mode) -> SetlkNode (state.h).
Napi::Value NodeSetlk(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, fh, owner;
  int64_t type, start, end, mode;
  if (!ArgU64(info, 1, &nodeid) || !ArgU64(info, 2, &fh) || !ArgU64(info, 3, &owner) || !ArgInt(info, 4, &type) ||
      !ArgInt(info, 5, &start) || !ArgInt(info, 6, &end) || !ArgInt(info, 7, &mode))
    return ThrowType(info.Env(), "nodeSetlk(id, nodeid, fh, owner, type, start, end, mode)");
  int64_t pid = 0;
  if (info.Length() > 8 && (!ArgInt(info, 8, &pid) || pid < 0 || pid > UINT32_MAX))
    return ThrowType(info.Env(), "nodeSetlk(id, nodeid, fh, owner, type, start, end, mode, pid)");
  return Num(info, SetlkNode(s, nodeid, fh, owner, static_cast<int>(type), start, end, static_cast<int>(mode), static_cast<uint32_t>(pid)));
}

// nodeGetlk(id, nodeid, fh, owner, type, start, end, out) -> 0 or -errno; out, a
// BigInt64Array(4) = [type, start, end, pid] of a conflicting lock (exact over the whole
// 64-bit range), or type F_UNLCK when there is none (GetlkNode).
Napi::Value NodeGetlk(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, fh, owner;
  int64_t type, start, end;
  if (!ArgU64(info, 1, &nodeid) || !ArgU64(info, 2, &fh) || !ArgU64(info, 3, &owner) || !ArgInt(info, 4, &type) ||
      !ArgInt(info, 5, &start) || !ArgInt(info, 6, &end) || !info[7].IsTypedArray() ||
      info[7].As<Napi::TypedArray>().TypedArrayType() != napi_bigint64_array)
    return ThrowType(info.Env(), "nodeGetlk(id, nodeid, fh, owner, type, start, end, out: BigInt64Array)");
  Napi::TypedArrayOf<int64_t> out = info[7].As<Napi::TypedArrayOf<int64_t>>();
  if (out.ElementLength() < 4) return ThrowType(info.Env(), "out: BigInt64Array(4)");
  struct flock fl;
  int r = GetlkNode(s, nodeid, fh, owner, static_cast<int>(type), start, end, &fl);
  if (r < 0) return Num(info, r);
  out[0] = fl.l_type;
  out[1] = fl.l_start;
  out[2] = fl.l_len == 0 ? kOffsetMax : fl.l_start + fl.l_len - 1;
  out[3] = fl.l_pid > 0 ? fl.l_pid : 0;  // the guest process that took it (TakerOf), or 0
  return Num(info, 0);
}

// nodeUnlockOwner(id, nodeid, owner): the owner closed a descriptor of the file (FLUSH);
// UnlockOwner.
Napi::Value NodeUnlockOwner(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, owner;
  if (!ArgU64(info, 1, &nodeid) || !ArgU64(info, 2, &owner)) return ThrowType(info.Env(), "nodeUnlockOwner(id, nodeid, owner)");
  UnlockOwner(s, nodeid, owner);
  return info.Env().Undefined();
}

}  // namespace

namespace {

// UnlockOwner's work, with locks.mu held: under it no SETLK or GETLK of the owner is using the
// descriptor as it closes, and none takes a lock between the close and the table's
// forgetting of the owner's.
void UnlockOwnerLocked(FsState* s, uint64_t nodeid, uint64_t owner) {
  int fd = -1;
  {
    InodeShard& sh = s->ShardOf(nodeid);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byId.find(nodeid);
    if (it != sh.byId.end()) {
      auto l = it->second.lockFds.find(owner);
      if (l != it->second.lockFds.end()) {
        fd = l->second;
        it->second.lockFds.erase(l);
        sh.lockFdsOpen--;
        s->lockFdsTotal.fetch_sub(1, std::memory_order_relaxed);
      }
    }
  }
  // Outside the shard's mutex (on a network file system a close talks to the server).
  if (fd >= 0) close(fd);
  ForgetRanges(s->locks, nodeid, owner);
}

// An owner left holding nothing on nodeid, and not waiting for it, gives its descriptor up:
// else every refused owner the guest makes up would keep one, and so would an open file
// description's lock taken and dropped (no FLUSH names its owner, and with nothing held its
// handle's RELEASE has nothing to end). Called with locks.mu held.
void DropIdleOwner(FsState* s, uint64_t nodeid, uint64_t owner) {
  const LockTable& t = s->locks;
  auto w = t.waiting.find(owner);
  if (!HoldsAny(t, nodeid, owner) && (w == t.waiting.end() || w->second.nodeid != nodeid)) UnlockOwnerLocked(s, nodeid, owner);
}

}  // namespace

void UnlockOwner(FsState* s, uint64_t nodeid, uint64_t owner) {
  std::lock_guard<std::mutex> locks(s->locks.mu);
  UnlockOwnerLocked(s, nodeid, owner);
}

void ReleaseLocksVia(FsState* s, uint64_t nodeid, uint64_t fh) {
  LockTable& t = s->locks;
  if (!t.any.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> locks(t.mu);
  auto v = t.via.find(nodeid);
  if (v == t.via.end()) return;
  std::vector<uint64_t> owners;
  for (const auto& [owner, last] : v->second)
    if (last.fh == fh) owners.push_back(owner);
  for (uint64_t owner : owners) UnlockOwnerLocked(s, nodeid, owner);
}

int FlockHandle(FsState* s, uint64_t fh, int op) {
  HandlePin h(s, fh);
  if (h.fd() < 0) return h.fd();
  // The lock and the record of it (remembered for a migration, which takes the lock again
  // on the destination's descriptor) under the shard's mutex, so that two requests on one
  // handle from two queues leave the record as the host has the lock. It never waits.
  HandleShard& sh = s->HandleShardOf(fh);
  std::lock_guard<std::mutex> g(sh.mu);
  int r;
  do {
    r = flock(h.fd(), op | LOCK_NB);
  } while (r < 0 && errno == EINTR);
  auto it = sh.byFh.find(fh);
  if (r < 0) {
    int e = errno;
    // Linux drops a lock the description held before it looks for conflicts with the new
    // one: a conversion that fails leaves none.
    if ((e == EWOULDBLOCK || e == EAGAIN) && it != sh.byFh.end()) it->second.flock = 0;
    return -e;
  }
  if (it != sh.byFh.end()) it->second.flock = static_cast<uint8_t>(op & (LOCK_SH | LOCK_EX));
  return 0;
}

int SetlkNode(FsState* s, uint64_t nodeid, uint64_t fh, uint64_t owner, int type, int64_t start, int64_t end, int mode, uint32_t pid) {
  LockTable& t = s->locks;
  if (mode == 2) {
    std::lock_guard<std::mutex> g(t.mu);
    t.waiting.erase(owner);
    // The descriptor opened for the wait goes, unless the owner holds locks through it.
    DropIdleOwner(s, nodeid, owner);
    return 0;
  }
  if (start < 0 || EndOf(end) < start) return -EINVAL;
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  HandlePin h(s, fh);
  // locks.mu before the owner's descriptor is looked up (UnlockOwner closes it under it).
  std::unique_lock<std::mutex> g(t.mu);
  if (type == F_UNLCK && (p.type() == S_IFREG || p.type() == S_IFDIR) && FoundOwnerFd(s, nodeid, owner) == -1) {
    // An owner without a descriptor holds nothing here to unlock: no file is opened for it.
    t.waiting.erase(owner);
    return 0;
  }
  // A lock comes through a handle of the file, as every fcntl() on an open file does; the
  // handle's RELEASE is what ends a lock no FLUSH names (ReleaseLocksVia).
  // And, as fcntl() checks, through one open for reading for a read lock and for writing
  // for a write lock: the owner's description is opened as the handle is (OwnerFd).
  // A refusal ends a wait the owner was in, and leaves it no descriptor it does not use.
  auto refuse = [&](int e) {
    if (mode == 1) t.waiting.erase(owner);
    DropIdleOwner(s, nodeid, owner);
    return e;
  };
  int access = O_RDONLY;
  if (p.type() == S_IFREG || p.type() == S_IFDIR) {
    if (h.fd() < 0 || h.nodeid() != nodeid) return refuse(-EBADF);
    access = AccessOf(h.fd());
    if (access < 0) return refuse(access);
    if (!Allows(access, type)) return refuse(-EBADF);
  }
  int fd = OwnerFd(s, g, nodeid, p, owner, type, access);
  if (fd < 0) return refuse(fd);
  int r = SetlkLocked(t, fd, nodeid, owner, type, start, EndOf(end));
  if (r == 0) {
    t.waiting.erase(owner);
    if (HoldsAny(t, nodeid, owner)) t.via[nodeid][owner] = {fh, pid};
  } else if (mode == 1 && r == -EAGAIN) {
    LockWait w{nodeid, start, EndOf(end), type};
    if (Deadlocks(t, owner, w)) {
      t.waiting.erase(owner);
      r = -EDEADLK;
    } else {
      t.waiting[owner] = w;
    }
  } else if (mode == 1) {
    t.waiting.erase(owner);  // an error that ends the wait
  }
  DropIdleOwner(s, nodeid, owner);
  return r;
}

int GetlkNode(FsState* s, uint64_t nodeid, uint64_t fh, uint64_t owner, int type, int64_t start, int64_t end, struct flock* fl) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  if (p.type() != S_IFREG && p.type() != S_IFDIR) return -ENOLCK;
  if (start < 0 || EndOf(end) < start) return -EINVAL;
  HandlePin h(s, fh);
  std::unique_lock<std::mutex> g(s->locks.mu);
  int fd = FoundOwnerFd(s, nodeid, owner);
  bool justToAsk = false;
  if (fd == -1) {
    // An owner without a descriptor holds no lock on the file, so any description that holds
    // none asks the same question: the handle's, when it is one of this file; else one
    // opened to ask, and closed once asked.
    justToAsk = !(h.fd() >= 0 && h.nodeid() == nodeid);
    fd = justToAsk ? OwnerFd(s, g, nodeid, p, owner, F_UNLCK, O_RDONLY) : h.fd();
  }
  if (fd < 0) return fd;
  ToFlock(fl, type, start, end);
  int r = fcntl(fd, F_OFD_GETLK, fl) < 0 ? -errno : 0;
  if (r == 0 && fl->l_type != F_UNLCK) fl->l_pid = static_cast<pid_t>(TakerOf(s->locks, nodeid, owner, *fl));
  if (justToAsk) DropIdleOwner(s, nodeid, owner);
  return r;
}

int TakeLock(FsState* s, uint64_t nodeid, uint64_t owner, int type, int64_t start, int64_t end, bool writable) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  std::unique_lock<std::mutex> g(s->locks.mu);
  // Opened for what the owner's locks need: read-write when any is a write lock (writable).
  int fd = OwnerFd(s, g, nodeid, p, owner, type, type == F_WRLCK || writable ? O_RDWR : O_RDONLY);
  if (fd < 0) return fd;
  return SetlkLocked(s->locks, fd, nodeid, owner, type, start, end);
}

void ReleaseAllLocks(FsState* s) {
  std::lock_guard<std::mutex> locks(s->locks.mu);
  for (InodeShard& sh : s->inodes) {
    std::lock_guard<std::mutex> g(sh.mu);
    if (sh.lockFdsOpen == 0) continue;
    for (auto& kv : sh.byId) {
      for (auto& l : kv.second.lockFds) close(l.second);
      kv.second.lockFds.clear();
    }
    s->lockFdsTotal.fetch_sub(sh.lockFdsOpen, std::memory_order_relaxed);
    sh.lockFdsOpen = 0;
  }
  s->locks.held.clear();
  s->locks.via.clear();
  s->locks.any.store(false, std::memory_order_release);
  s->locks.waiting.clear();
}

void InitFileOps(Napi::Env env, Napi::Object exports) {
  exports.Set("handleReaddir", Napi::Function::New(env, HandleReaddir));
  exports.Set("handleLseek", Napi::Function::New(env, HandleLseek));
  exports.Set("handleFlock", Napi::Function::New(env, HandleFlock));
  exports.Set("nodeSetlk", Napi::Function::New(env, NodeSetlk));
  exports.Set("nodeGetlk", Napi::Function::New(env, NodeGetlk));
  exports.Set("nodeUnlockOwner", Napi::Function::New(env, NodeUnlockOwner));
}

}  // namespace vfsn
