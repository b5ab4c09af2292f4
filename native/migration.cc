// The device state a live migration carries from one daemon to the next (vhost-user
// SET_DEVICE_STATE_FD, src/vhost/backend.ts; src/fuse/passthrough/migration.ts wraps it): what the
// guest's FUSE session knows of this daemon and a new daemon could not learn by itself.
//   - the session flags INIT negotiated (FsState::sessionFlags): the destination sees no INIT;
//   - every inode the guest holds: its node id, lookup count, type and path below the share;
//   - every open handle: its fh, node id, open flags and the flock() lock it holds;
//   - every POSIX lock the guest holds: node id, owner and ranges.
// Inodes travel by path (--migration-mode find-paths, the Rust virtiofsd's default): the
// source reads each inode's path from /proc/self/fd and checks that the path leads back to
// the inode (during the precopy, on a thread of its own, MigrationPrep; at the switch-over,
// on up to one thread per core, DescribeAll, only the paths whose link changed since are
// walked again, and no link is read for an inode whose directories kept the timestamps the
// precopy took before it checked the paths, UnchangedDirs); the destination walks it one
// component at a time, never following a symlink or '..', so a stream cannot reach outside
// the share (from the inode's directory when that came first, else from the share). With
// --migration-verify-handles the source adds each inode's file handle, and the destination
// checks that the path led to that very inode. Or they travel as file handles (file-handles:
// the same files on both sides, CAP_DAC_READ_SEARCH on the destination), which also carries
// files the guest holds open after their last name went; the destination opens each and
// keeps it only if the kernel places it below the share. An inode the source cannot describe
// travels with the reason; the destination's --migration-on-error decides (as in the Rust
// virtiofsd, where the option is ignored on the source).
// Locks are host locks, so the source lets go of them as it saves, for the destination (on
// the same files) to take them; if the source goes on instead (the migration failed), it
// takes them again.
//
// Stream (little-endian): "VTSM", u32 version 1, u32 flags (kByHandle), u32 session flags,
// u32 inodes, u32 handles, u32 lock owners; per inode u64 node id, u64 lookups, u32 S_IFMT
// type, then three u32-length-prefixed byte strings: its path below the share (no NUL), its
// struct file_handle, and why the source could not describe it (empty: it could); per handle
// u64 fh, u64 node id, u32 open flags, u32 flock (LOCK_SH, LOCK_EX or 0); per lock owner of a
// file u64 node id, u64 owner, u32 ranges, and per range u64 start, u64 end (inclusive), u32
// type (F_RDLCK, F_WRLCK); then, with flag kLockVia, the handle the owner's last lock came
// through (u64 fh, 0 for none) and the guest process that asked (u32 pid): what ends a guest's
// open-file lock at its handle's RELEASE and what GETLK reports (LockTable::via).
#include "state.h"

#include <linux/magic.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>

#include <algorithm>
#include <cstring>

namespace vfsn {
namespace {

constexpr char kMagic[4] = {'V', 'T', 'S', 'M'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kByHandle = 1;  // stream flag: inodes are opened by file handle
constexpr uint32_t kLockVia = 2;   // stream flag: each lock owner's handle and process follow its ranges
constexpr size_t kMaxPath = 4096;
constexpr size_t kMaxHandle = sizeof(file_handle) + MAX_HANDLE_SZ;
constexpr size_t kMaxReason = 256;
// Bytes of the stream's head, and of an inode and a handle besides their strings.
constexpr size_t kHeadBytes = 4 + 6 * 4;
constexpr size_t kInodeBytes = 8 + 8 + 4 + 3 * 4;
constexpr size_t kHandleBytes = 8 + 8 + 4 + 4;

using ViaMap = std::unordered_map<uint64_t, std::unordered_map<uint64_t, LockTable::Via>>;

// The handle and process of owner's locks on nodeid in m (LockTable::via or carriedVia), {0, 0}
// when none is known.
LockTable::Via ViaOf(const ViaMap& m, uint64_t nodeid, uint64_t owner) {
  auto v = m.find(nodeid);
  if (v == m.end()) return {0, 0};
  auto o = v->second.find(owner);
  return o == v->second.end() ? LockTable::Via{0, 0} : o->second;
}

// Owner's locks on nodeid, put back, came through via (LockTable::via): its RELEASE ends
// them, and a GETLK that finds them names its process. Only an open handle of that file is
// recorded (one released meanwhile, or a stream's handle of another file, would never match).
void RecordVia(FsState* s, uint64_t nodeid, uint64_t owner, LockTable::Via via) {
  if (via.fh == 0) return;
  HandlePin h(s, via.fh);
  if (h.fd() < 0 || h.nodeid() != nodeid) return;
  LockTable& t = s->locks;
  std::lock_guard<std::mutex> g(t.mu);
  auto inode = t.held.find(nodeid);
  if (inode != t.held.end() && inode->second.count(owner)) t.via[nodeid][owner] = via;
}

// Takes owner's locks on nodeid again (a destination's load, a source that goes on), on one
// description (read-write when any is a write lock), and records the handle they came
// through. All or none: an owner that cannot have them all keeps none. 0 or -errno.
int TakeOwnersLocks(FsState* s, uint64_t nodeid, uint64_t owner, const std::vector<LockRange>& ranges, LockTable::Via via) {
  bool writable = std::any_of(ranges.begin(), ranges.end(), [](const LockRange& l) { return l.type == F_WRLCK; });
  for (const LockRange& l : ranges) {
    if (int r = TakeLock(s, nodeid, owner, l.type, l.start, l.end, writable); r < 0) {
      UnlockOwner(s, nodeid, owner);
      return r;
    }
  }
  RecordVia(s, nodeid, owner, via);
  return 0;
}

struct Writer {
  std::vector<uint8_t> b;
  void U32(uint32_t v) {
    for (int i = 0; i < 4; i++) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; i++) b.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Bytes(const std::string& s) { b.insert(b.end(), s.begin(), s.end()); }
  void Put32(size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  void Str(const std::string& s) {
    U32(static_cast<uint32_t>(s.size()));
    Bytes(s);
  }
};

struct Reader {
  const uint8_t* p;
  size_t left;
  bool ok = true;
  uint64_t Take(int n) {
    if (!ok || left < static_cast<size_t>(n)) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    p += n;
    left -= n;
    return v;
  }
  uint32_t U32() { return static_cast<uint32_t>(Take(4)); }
  uint64_t U64() { return Take(8); }
  std::string Bytes(size_t n) {
    if (!ok || left < n) {
      ok = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(p), n);
    p += n;
    left -= n;
    return s;
  }
  // A u32-length-prefixed string of at most max bytes.
  std::string Str(size_t max) {
    uint32_t n = U32();
    if (n > max) ok = false;
    return Bytes(ok ? n : 0);
  }
};

// The struct file_handle of the inode behind descriptor fd, or "" (errno set).
std::string HandleOf(int fd) {
  FileHandleBytes h;
  if (!ReadFileHandle(fd, &h)) return {};
  return std::string(h.bytes.begin(), h.bytes.end());
}

// What descriptor fd's /proc/self/fd link names: the file's path as the kernel sees it.
bool LinkOf(FsState* s, int fd, std::string* out) {
  char buf[kMaxPath + 16];
  ssize_t n = readlinkat(s->procFd, std::to_string(fd).c_str(), buf, sizeof buf);
  if (n < 0 || static_cast<size_t>(n) >= sizeof buf) return false;
  out->assign(buf, static_cast<size_t>(n));
  return true;
}

std::string Octal(uint32_t v) {
  char b[16];
  snprintf(b, sizeof b, "%o", v);
  return b;
}

// Whether name may be one component of a path in the stream: not empty, '.' or '..'.
bool PlainName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.size() <= 255 && name.find('\0') == std::string::npos && name.find('/') == std::string::npos;
}

// rel (components joined by '/', none empty, '.' or '..') walked from the share's root
// without following a symlink: an O_PATH descriptor or -errno. "" is the root itself.
int WalkFromRoot(FsState* s, const std::string& rel) {
  int fd = OpenPath(s->rootFd, ".");
  for (size_t at = 0; fd >= 0 && at < rel.size();) {
    size_t end = rel.find('/', at);
    if (end == std::string::npos) end = rel.size();
    std::string name = rel.substr(at, end - at);
    if (!PlainName(name)) {
      close(fd);
      return -EINVAL;
    }
    int next = OpenPath(fd, name);
    close(fd);
    fd = next;
    at = end + 1;
  }
  return fd;
}

// Statx of an O_PATH descriptor: its key and S_IFMT type, or false.
bool KeyOf(int fd, InodeKey* k, uint32_t* type) {
  double st[kStatxFields];
  if (StatxInto(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, st) < 0) return false;
  *k = KeyOfStatx(st);
  *type = static_cast<uint32_t>(st[4]) & S_IFMT;
  return true;
}

// Cuts the " (deleted)" a /proc/self/fd link ends with once the file's last name went:
// whether it did.
bool StripDeleted(std::string* link) {
  static const std::string kDeleted = " (deleted)";
  if (link->size() < kDeleted.size() || link->compare(link->size() - kDeleted.size(), kDeleted.size(), kDeleted) != 0) return false;
  link->resize(link->size() - kDeleted.size());
  return true;
}

// Whether a /proc/self/fd link names a file below the share ("(deleted)" or not); a file the
// kernel cannot place below the process's root reads "(unreachable)/...", which is not.
bool LinkBelowRoot(const std::string& rootLink, std::string link, std::string* rel) {
  StripDeleted(&link);
  std::string prefix = rootLink == "/" ? "/" : rootLink + "/";
  if (link.compare(0, prefix.size(), prefix) != 0 || link.size() == prefix.size()) return false;
  if (rel) *rel = link.substr(prefix.size());
  return true;
}

// Whether rel, walked from the share's root, leads to the file with key (whose /proc/self/fd
// link is link). A link is only text: for a file outside the share's subtree but on its file
// system (beside the directory the share is bind-mounted from, or hidden under a mount point)
// the kernel writes the path from the file system's root, which can read like one below
// the share. A removed file (" (deleted)") has no path to walk: its link is all there is.
bool SameFileAt(FsState* s, const InodeKey& key, std::string link, const std::string& rel) {
  if (StripDeleted(&link)) return true;
  int at = WalkFromRoot(s, rel);
  if (at < 0) return false;
  InodeKey a;
  uint32_t ta;
  bool same = KeyOf(at, &a, &ta) && a == key;
  close(at);
  return same;
}

// The path below the share of the inode with key `key` (its descriptor fd), or why there is
// none. checked: the path found for it and checked during the precopy, if any.
const char* PathBelowRoot(FsState* s, const std::string& rootLink, int fd, const InodeKey& key, std::string* rel, const std::string* checked = nullptr) {
  std::string link;
  if (!LinkOf(s, fd, &link)) return "its path cannot be read";
  // A name removed while the guest holds the inode (an unlinked open file, a removed
  // directory): nothing leads to it any more.
  if (StripDeleted(&link)) return "it was removed";
  if (!LinkBelowRoot(rootLink, link, rel)) return "its path is not below the share";
  // The kernel still names the inode as when its path was walked back to it: the same
  // dentries, so the same walk (a mount placed over one of them since is not seen).
  if (checked && *checked == *rel) return nullptr;
  // The link is the kernel's idea of the name at the time; renames since, or a mount over a
  // part of it, would send the destination elsewhere: the path must lead back to the inode.
  int back = WalkFromRoot(s, *rel);
  if (back < 0) return "its path does not lead back to it";
  InodeKey k;
  uint32_t type;
  bool same = KeyOf(back, &k, &type) && k == key;
  close(back);
  return same ? nullptr : "its path leads to another file";
}

// A directory's mtime and ctime from attributes in StatxInto's layout, or false.
bool StampOfStatx(const double* st, DirStamp* out) {
  uint32_t mask = static_cast<uint32_t>(st[0]);
  if ((mask & (STATX_MTIME | STATX_CTIME)) != (STATX_MTIME | STATX_CTIME)) return false;
  out->mtimeNs = static_cast<int64_t>(st[15]) * 1000000000LL + static_cast<int64_t>(st[16]);
  out->ctimeNs = static_cast<int64_t>(st[17]) * 1000000000LL + static_cast<int64_t>(st[18]);
  return true;
}

// A directory's mtime and ctime now, or false.
bool StampOf(int fd, DirStamp* out) {
  double st[kStatxFields];
  return StatxInto(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, st) == 0 && StampOfStatx(st, out);
}

// How long ago a directory's last change must be for its timestamps to stand for its entries:
// longer than the coarsest timestamp of the file systems below (1 s: ext4 with 128-byte
// inodes, ext2, ext3), so that no change after the stamp can carry the stamp's own time.
constexpr int64_t kSettledNs = 2000000000LL;

// A directory's timestamps as the preparation takes them, when they can stand for its
// entries: on a file system that sets a directory's mtime and ctime whenever an entry is made,
// removed or renamed in it (ext2/3/4, XFS, btrfs, tmpfs, F2FS; not a network or FUSE file
// system, whose times come from elsewhere), and last changed at least kSettledNs ago.
bool DirStampOf(int fd, DirStamp* out) {
  struct statfs f;
  if (fstatfs(fd, &f) < 0) return false;
  switch (static_cast<uint64_t>(f.f_type)) {
    case EXT4_SUPER_MAGIC:
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
    case F2FS_SUPER_MAGIC:
      break;
    default:
      return false;
  }
  timespec now;
  if (!StampOf(fd, out) || clock_gettime(CLOCK_REALTIME, &now) < 0) return false;
  int64_t nowNs = now.tv_sec * 1000000000LL + now.tv_nsec;
  return nowNs - std::max(out->mtimeNs, out->ctimeNs) >= kSettledNs;
}

// The preparation's thread, at a lower priority than the queues that serve the running guest.
// First every directory's timestamps, then each inode's path, found and checked as the save
// would, one inode pinned at a time. In that order: an entry made, removed or renamed after a
// path through it was checked moves its directory's timestamps away from the stamp.
void PrepareWorker(FsState* s, MigrationPrep* p, std::string rootLink) {
  setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 10);
  std::vector<uint64_t> ids;
  for (InodeShard& sh : s->inodes) {
    std::lock_guard<std::mutex> g(sh.mu);
    for (auto& [id, n] : sh.byId)
      if (id != kRootId && !n.detached) ids.push_back(id);
  }
  PreparedPaths& out = p->found;
  DirStamp stamp;
  if (DirStampOf(s->rootFd, &stamp)) out.dirStamps[kRootId] = stamp;
  for (uint64_t id : ids) {
    if (p->stop.load(std::memory_order_relaxed)) return;
    uint32_t type = 0;
    int fd = s->PinInode(id, &type, &stamp.key);
    if (fd < 0) continue;  // forgotten since
    if (type == S_IFDIR && DirStampOf(fd, &stamp)) out.dirStamps[id] = stamp;
    s->UnpinInode(id);
  }
  for (uint64_t id : ids) {
    if (p->stop.load(std::memory_order_relaxed)) return;
    InodeKey key;
    int fd = s->PinInode(id, nullptr, &key);
    if (fd < 0) continue;
    std::string rel;
    if (!PathBelowRoot(s, rootLink, fd, key, &rel)) out.paths[id] = std::move(rel);
    s->UnpinInode(id);
  }
}

// What DescribeInode found of an inode: its path below the share, its file handle (a parked
// inode's, from the start, when inodes travel by handle), or why it cannot travel.
struct Described {
  std::string rel, handle, why;
};

// One inode of a save: what the shard held, then what was found. Kept small (a save may list
// hundreds of thousands): what DescribeInode finds is apart, and an inode whose precopy path
// stands as it is (unchanged) has none.
struct SavedInode {
  uint64_t id = 0, lookups = 0;
  uint32_t type = 0;
  bool prepared = false;                 // the precopy's path served
  bool unchanged = false;                // ... and its directories have not changed since
  const std::string* checked = nullptr;  // its path as the precopy found and checked it
  std::unique_ptr<Described> found;
  Described& Found() {
    if (!found) found = std::make_unique<Described>();
    return *found;
  }
};

std::string DirOf(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

// Which paths of the precopy still hold at the save without reading any inode's link: those
// whose directories, from the share's root down, kept the timestamps the precopy took before
// it checked a path. The directories are those the path leads through now, one statx by
// name each (memoized per path): the root unchanged since its stamp means its entries lead
// where they led when the path was checked, so its next component led to that same
// directory then, which, unchanged too, vouches for its own entries, and so on down to the
// inode's own entry. A change anywhere along the path (a directory moved, swapped for
// another, an entry renamed) makes its directory's timestamps move, and everything below it
// goes back to the link reads; a directory the guest does not hold, or that the precopy could
// not stamp, likewise.
class UnchangedDirs {
 public:
  UnchangedDirs(FsState* s, const PreparedPaths& prep) : s_(s), prep_(prep) {
    for (const auto& [id, stamp] : prep.dirStamps)
      if (id != kRootId) byKey_[stamp.key] = id;
    auto root = prep.dirStamps.find(kRootId);
    DirStamp now;
    rootFixed_ = root != prep.dirStamps.end() && StampOf(s->rootFd, &now) && now == root->second;
  }
  // The directories found unchanged, the root's included.
  size_t Count() const {
    size_t n = rootFixed_ ? 1 : 0;
    for (const auto& [rel, id] : fixed_) n += id != 0;
    return n;
  }

  // Whether the precopy's path of inode e still leads to it.
  bool Holds(const SavedInode& e) { return e.checked && Fixed(DirOf(*e.checked)) != 0; }

 private:
  // The directory that the path rel leads to now, when it and every directory above it kept
  // their stamps (so rel led there when the precopy checked paths through it); else 0.
  uint64_t Fixed(const std::string& rel) {
    if (rel.empty()) return rootFixed_ ? kRootId : 0;
    auto known = fixed_.find(rel);
    if (known != fixed_.end()) return known->second;
    std::string parent = DirOf(rel);
    uint64_t parentId = Fixed(parent);
    uint64_t id = parentId == 0 ? 0 : Entry(parentId, rel.substr(parent.empty() ? 0 : parent.size() + 1));
    fixed_[rel] = id;
    return id;
  }

  // The stamped directory that the entry `name` of directory parentId names now, if its
  // timestamps are still the stamp's; else 0.
  uint64_t Entry(uint64_t parentId, const std::string& name) {
    int fd = parentId == kRootId ? s_->rootFd : s_->PinInode(parentId);
    if (fd < 0) return 0;
    double st[kStatxFields];
    bool found = StatxInto(fd, name.c_str(), AT_SYMLINK_NOFOLLOW, st) == 0;
    if (parentId != kRootId) s_->UnpinInode(parentId);
    if (!found) return 0;
    auto dir = byKey_.find(KeyOfStatx(st));
    DirStamp now;
    if (dir == byKey_.end() || !StampOfStatx(st, &now)) return 0;
    return now == prep_.dirStamps.at(dir->second) ? dir->second : 0;
  }

  FsState* s_;
  const PreparedPaths& prep_;
  bool rootFixed_ = false;
  std::unordered_map<InodeKey, uint64_t, KeyHash> byKey_;  // the stamped directories
  std::unordered_map<std::string, uint64_t> fixed_;         // Fixed's answers so far
};

// Fills in e's path below the share (or file handle), or why it has none. The inode is
// pinned meanwhile (a parked one opened by its handle).
void DescribeInode(FsState* s, const std::string& rootLink, bool byHandle, bool attachHandles, SavedInode& e) {
  Described& d = e.Found();
  InodeKey key;
  int fd = s->PinInode(e.id, nullptr, &key);
  if (fd < 0) {
    d.why = "its file is gone";
    return;
  }
  if (byHandle) {
    if (d.handle.empty()) d.handle = HandleOf(fd);
    if (d.handle.empty()) d.why = std::string("it has no file handle: ") + strerror(errno);
  } else {
    const char* w = nullptr;
    if (e.unchanged) d.rel = *e.checked;
    else w = PathBelowRoot(s, rootLink, fd, key, &d.rel, e.checked);
    e.prepared = !w && e.checked && *e.checked == d.rel;
    if (w) d.why = w;
    else if (d.rel.size() > kMaxPath) d.why = "its path is too long";
    if (d.why.empty() && attachHandles) {
      d.handle = HandleOf(fd);
      if (d.handle.empty()) d.why = std::string("it has no file handle: ") + strerror(errno);
    }
  }
  s->UnpinInode(e.id);
}

// Runs f(0) .. f(n - 1) on as many threads as the daemon may run on (sched_getaffinity, so a
// CPU pinning counts; at most 8, one per 512 items), the calling thread one of them. A
// migration's save and load are a few system calls per inode in the guest's downtime, which
// on a host with many cores need not add up one after the other.
template <typename F>
void OnCores(size_t n, F f) {
  cpu_set_t cpus;
  unsigned cores = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? static_cast<unsigned>(CPU_COUNT(&cpus)) : 1;
  unsigned threads = std::min<unsigned>({std::max(cores, 1u), 8u, static_cast<unsigned>(n / 512 + 1)});
  constexpr size_t kBatch = 64;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t at; (at = next.fetch_add(kBatch)) < n;)
      for (size_t i = at; i < std::min(at + kBatch, n); i++) f(i);
  };
  std::vector<std::thread> helpers;
  for (unsigned i = 1; i < threads; i++) helpers.emplace_back(work);
  work();
  for (std::thread& t : helpers) t.join();
}

// What the stream carries for e: why it cannot travel (empty: it can), and if it can, its
// path (the precopy's, not copied, when its directories did not change) and file handle.
const std::string kNone;
const std::string& WhyNot(const SavedInode& e) { return e.found ? e.found->why : kNone; }
const std::string& PathToSave(const SavedInode& e) {
  if (!e.found) return e.unchanged ? *e.checked : kNone;
  return e.found->why.empty() ? e.found->rel : kNone;
}
const std::string& HandleToSave(const SavedInode& e) { return e.found && e.found->why.empty() ? e.found->handle : kNone; }

// Describes every inode of list on several threads (OnCores). An inode whose precopy path
// stands (unchanged) needs nothing, unless its file handle goes too.
void DescribeAll(FsState* s, const std::string& rootLink, bool byHandle, bool attachHandles, std::vector<SavedInode>& list) {
  std::vector<SavedInode*> todo;
  for (SavedInode& e : list) {
    if (e.unchanged) {
      e.prepared = true;
      if (e.checked->size() > kMaxPath) e.Found().why = "its path is too long";
      if (!attachHandles || e.found) continue;
    }
    todo.push_back(&e);
  }
  OnCores(todo.size(), [&](size_t i) { DescribeInode(s, rootLink, byHandle, attachHandles, *todo[i]); });
}

Napi::Object Lost(Napi::Env env, uint64_t id, std::string what) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("nodeid", Napi::Number::New(env, static_cast<double>(id)));
  o.Set("reason", Napi::String::New(env, what));
  return o;
}

// stateSave(id, byHandle, attachHandles) -> { data: Buffer, inodes, handles, locks, lost:
// [{nodeid, reason}] }: the state of every inode, handle and lock, inodes by path (with their
// file handles when attachHandles) or by file handle; inodes that cannot be described travel
// with the reason and are listed in lost. Lets go of the host locks. The queues must be
// stopped.
Napi::Value StateSave(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  STATE_OR_THROW(s);
  bool byHandle = info.Length() > 1 && info[1].ToBoolean();
  bool attachHandles = info.Length() > 2 && info[2].ToBoolean();
  // What the precopy found; whatever it did not reach is walked now.
  PreparedPaths prep = TakeMigrationPrep(s);
  std::string rootLink;
  if (!LinkOf(s, s->rootFd, &rootLink)) return ThrowType(env, "the share's own path cannot be read");
  // Each inode's path (or file handle) costs a few system calls, in the guest's downtime: the
  // inodes are listed first, then described on several threads (DescribeAll). Memory is
  // reserved once, for the list as for the stream: in a VM, the first touch of each page can
  // cost more than what is written on it (11 µs a page fault on the machine of bench/results).
  std::vector<SavedInode> list;
  size_t listed = 0;
  for (InodeShard& sh : s->inodes) {
    std::lock_guard<std::mutex> g(sh.mu);
    listed += sh.byId.size();
  }
  list.reserve(listed);
  for (InodeShard& sh : s->inodes) {
    std::lock_guard<std::mutex> g(sh.mu);
    for (auto& [id, n] : sh.byId) {
      if (id == kRootId || n.detached) continue;
      SavedInode e;
      e.id = id;
      e.lookups = n.lookups;
      e.type = n.type;
      if (byHandle && n.parked) e.Found().handle.assign(n.parked->bytes.begin(), n.parked->bytes.end());
      auto c = prep.paths.find(id);
      if (c != prep.paths.end()) e.checked = &c->second;
      list.push_back(std::move(e));
    }
  }
  // The inodes whose directories have not changed since the precopy need no system call.
  UnchangedDirs dirs(s, prep);
  uint32_t unchanged = 0;
  for (SavedInode& e : list)
    if ((e.unchanged = dirs.Holds(e))) unchanged++;
  DescribeAll(s, rootLink, byHandle, attachHandles, list);
  size_t handlesListed = 0;
  for (HandleShard& sh : s->handles) {
    std::lock_guard<std::mutex> g(sh.mu);
    handlesListed += sh.byFh.size();
  }
  size_t size = kHeadBytes + handlesListed * kHandleBytes;
  for (const SavedInode& e : list) size += kInodeBytes + PathToSave(e).size() + HandleToSave(e).size() + WhyNot(e).size();
  // The stream, written straight into the buffer handed to JS (locks may make it grow).
  auto out = std::make_unique<Writer>();
  out->b.reserve(size);
  Writer& w = *out;
  w.Bytes(std::string(kMagic, 4));
  w.U32(kVersion);
  w.U32(0);  // flags: set at the end
  w.U32(s->sessionFlags.load());
  w.U32(0);  // inodes, handles and lock owners: set at the end
  w.U32(0);
  w.U32(0);
  uint32_t nInodes = 0, nHandles = 0, described = 0, prepared = 0;
  Napi::Array lost = Napi::Array::New(env);
  for (SavedInode& e : list) {
    if (!WhyNot(e).empty()) {
      lost.Set(lost.Length(), Lost(env, e.id, WhyNot(e)));
    } else {
      described++;
      if (e.prepared) prepared++;
    }
    w.U64(e.id);
    w.U64(e.lookups);
    w.U32(e.type);
    w.Str(PathToSave(e));
    w.Str(HandleToSave(e));
    w.Str(WhyNot(e));
    nInodes++;
  }
  for (HandleShard& sh : s->handles) {
    std::lock_guard<std::mutex> g(sh.mu);
    for (auto& [fh, h] : sh.byFh) {
      if (h.released) continue;
      int fl = fcntl(h.fd, F_GETFL);
      if (fl < 0) {
        lost.Set(lost.Length(), Lost(env, h.nodeid, "a handle whose flags cannot be read"));
        continue;
      }
      w.U64(fh);
      w.U64(h.nodeid);
      w.U32(static_cast<uint32_t>(fl));
      w.U32(h.flock);
      nHandles++;
      if (h.flock) {
        flock(h.fd, LOCK_UN);
        h.flockCarried = true;
      }
    }
  }
  uint32_t nLocks = 0, streamFlags = byHandle ? kByHandle : 0;
  {
    std::lock_guard<std::mutex> g(s->locks.mu);
    // What a save before this one let go of, with no resume since, still belongs to the guest.
    LockTable& t = s->locks;
    for (auto& [nodeid, owners] : t.held) {
      for (auto& [owner, ranges] : owners) {
        t.carried[nodeid][owner] = ranges;
        if (LockTable::Via v = ViaOf(t.via, nodeid, owner); v.fh != 0) t.carriedVia[nodeid][owner] = v;
      }
    }
    for (auto& [nodeid, owners] : t.carried) {
      for (auto& [owner, ranges] : owners) {
        w.U64(nodeid);
        w.U64(owner);
        w.U32(static_cast<uint32_t>(ranges.size()));
        for (const LockRange& l : ranges) {
          w.U64(static_cast<uint64_t>(l.start));
          w.U64(static_cast<uint64_t>(l.end));
          w.U32(static_cast<uint32_t>(l.type));
        }
        LockTable::Via via = ViaOf(t.carriedVia, nodeid, owner);
        w.U64(via.fh);
        w.U32(via.pid);
        nLocks++;
      }
    }
  }
  ReleaseAllLocks(s);
  // kLockVia only when there are locks, so that a stream without any still loads into a
  // daemon of before the flag (which refuses flags it does not know).
  if (nLocks > 0) streamFlags |= kLockVia;
  w.Put32(8, streamFlags);
  w.Put32(kHeadBytes - 12, nInodes);
  w.Put32(kHeadBytes - 8, nHandles);
  w.Put32(kHeadBytes - 4, nLocks);
  Writer* owned = out.release();
  Napi::Buffer<uint8_t> data = Napi::Buffer<uint8_t>::New(
      env, owned->b.data(), owned->b.size(), [](Napi::Env, uint8_t*, Writer* done) { delete done; }, owned);
  Napi::Object r = Napi::Object::New(env);
  r.Set("data", data);
  r.Set("inodes", Napi::Number::New(env, described));
  r.Set("handles", Napi::Number::New(env, nHandles));
  r.Set("locks", Napi::Number::New(env, nLocks));
  r.Set("prepared", Napi::Number::New(env, prepared));
  r.Set("unchanged", Napi::Number::New(env, unchanged));
  r.Set("unchangedDirs", Napi::Number::New(env, static_cast<double>(dirs.Count())));
  r.Set("lost", lost);
  return r;
}

// stateMigrationPrepare(id): a migration's precopy began (dirty logging on): a thread finds
// and checks every inode's path now, so that the save has less to do in the guest's downtime.
// A preparation under way starts over.
Napi::Value StateMigrationPrepare(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  TakeMigrationPrep(s);
  std::string rootLink;
  if (!LinkOf(s, s->rootFd, &rootLink)) return ThrowType(info.Env(), "the share's own path cannot be read");
  auto p = std::make_unique<MigrationPrep>();
  p->worker = std::thread(PrepareWorker, s, p.get(), std::move(rootLink));
  std::lock_guard<std::mutex> g(s->prepMu);
  s->prep = std::move(p);
  return info.Env().Undefined();
}

// stateMigrationUnprepare(id) -> paths dropped: dirty logging went off before any save (the
// migration was cancelled): the preparation's thread stops and the paths it found, a few MB
// for 100k inodes, are freed now rather than at the next save or session.
Napi::Value StateMigrationUnprepare(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  return Napi::Number::New(info.Env(), static_cast<double>(TakeMigrationPrep(s).paths.size()));
}

// stateResume(id) -> [{nodeid, reason}]: the source goes on after a save (the migration
// failed): the locks the save let go of are taken again; those another took meanwhile are
// listed.
Napi::Value StateResume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  STATE_OR_THROW(s);
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, std::vector<LockRange>>> carried;
  ViaMap carriedVia;
  {
    std::lock_guard<std::mutex> g(s->locks.mu);
    carried.swap(s->locks.carried);
    carriedVia.swap(s->locks.carriedVia);
  }
  Napi::Array lost = Napi::Array::New(env);
  for (auto& [nodeid, owners] : carried) {
    for (auto& [owner, ranges] : owners) {
      if (int r = TakeOwnersLocks(s, nodeid, owner, ranges, ViaOf(carriedVia, nodeid, owner)); r < 0)
        lost.Set(lost.Length(), Lost(env, nodeid, std::string("a POSIX lock: ") + strerror(-r)));
    }
  }
  for (HandleShard& sh : s->handles) {
    std::lock_guard<std::mutex> g(sh.mu);
    for (auto& [fh, h] : sh.byFh) {
      if (!h.flockCarried) continue;
      h.flockCarried = false;
      if (flock(h.fd, h.flock | LOCK_NB) < 0) {
        lost.Set(lost.Length(), Lost(env, h.nodeid, std::string("a flock() lock: ") + strerror(errno)));
        h.flock = 0;
      }
    }
  }
  return lost;
}

// stateLoad(id, data) -> { inodes, handles, lost: [{nodeid, reason}] }: puts back what
// stateSave wrote, into a state that holds nothing but its root; what cannot be put back is
// listed in lost. Throws on a stream that is not one (nothing is kept then).
Napi::Value StateLoad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  STATE_OR_THROW(s);
  if (info.Length() < 2 || !info[1].IsBuffer()) return ThrowType(env, "stateLoad(id, data)");
  Napi::Buffer<uint8_t> buf = info[1].As<Napi::Buffer<uint8_t>>();
  Reader r{buf.Data(), buf.Length()};
  std::string magic = r.Bytes(4);
  uint32_t version = r.U32(), flags = r.U32(), session = r.U32(), nInodes = r.U32(), nHandles = r.U32(), nLocks = r.U32();
  if (!r.ok || magic != std::string(kMagic, 4)) return ThrowType(env, "not a virtiofsd-ts device state");
  if (flags & ~(kByHandle | kLockVia)) return ThrowType(env, "device state with unknown flags");
  if (version != kVersion) return ThrowType(env, ("device state version " + std::to_string(version) + ", this daemon reads " + std::to_string(kVersion)).c_str());
  for (InodeShard& sh : s->inodes) {
    std::lock_guard<std::mutex> g(sh.mu);
    if (sh.byId.size() > (&sh == &s->ShardOf(kRootId) ? 1u : 0u)) return ThrowType(env, "device state loaded into a state in use");
  }
  // Check the whole stream before anything is opened.
  struct In {
    uint64_t id, lookups;
    uint32_t type;
    std::string rel, handle, why;
    size_t depth;  // '/'s in rel: parents go back before their children
  };
  struct Hd {
    uint64_t fh, nodeid;
    uint32_t flags, flock;
  };
  struct Lk {
    uint64_t nodeid, owner;
    std::vector<LockRange> ranges;
    LockTable::Via via{0, 0};
  };
  std::vector<In> ins;
  std::vector<Hd> hds;
  std::vector<Lk> lks;
  for (uint32_t i = 0; i < nInodes && r.ok; i++) {
    In x;
    x.id = r.U64();
    x.lookups = r.U64();
    x.type = r.U32();
    x.rel = r.Str(kMaxPath);
    x.handle = r.Str(kMaxHandle);
    x.why = r.Str(kMaxReason);
    x.depth = static_cast<size_t>(std::count(x.rel.begin(), x.rel.end(), '/'));
    if (!x.handle.empty() &&
        (x.handle.size() < sizeof(file_handle) || reinterpret_cast<const file_handle*>(x.handle.data())->handle_bytes != x.handle.size() - sizeof(file_handle)))
      r.ok = false;
    ins.push_back(std::move(x));
  }
  for (uint32_t i = 0; i < nHandles && r.ok; i++) {
    Hd h;
    h.fh = r.U64();
    h.nodeid = r.U64();
    h.flags = r.U32();
    h.flock = r.U32();
    if (h.flock != 0 && h.flock != LOCK_SH && h.flock != LOCK_EX) r.ok = false;
    hds.push_back(h);
  }
  for (uint32_t i = 0; i < nLocks && r.ok; i++) {
    Lk l;
    l.nodeid = r.U64();
    l.owner = r.U64();
    uint32_t n = r.U32();
    // A range takes 20 bytes: a count the stream cannot hold is a lie, not an allocation.
    if (n > r.left / 20) r.ok = false;
    for (uint32_t k = 0; k < n && r.ok; k++) {
      LockRange x;
      x.start = static_cast<int64_t>(r.U64());
      x.end = static_cast<int64_t>(r.U64());
      x.type = static_cast<int>(r.U32());
      if (x.start < 0 || x.end < x.start || (x.type != F_RDLCK && x.type != F_WRLCK)) r.ok = false;
      l.ranges.push_back(x);
    }
    if (flags & kLockVia) {
      l.via.fh = r.U64();
      l.via.pid = r.U32();
    }
    lks.push_back(std::move(l));
  }
  if (!r.ok || r.left != 0) return ThrowType(env, "device state cut short, with bytes past its end or a value out of range");
  // The guest's session goes on here (a stream of a version before the flag lacks it).
  s->sessionFlags.store(session | kSessionStarted);
  Napi::Array lost = Napi::Array::New(env);
  uint32_t inodes = 0, handles = 0;
  std::string rootLink;
  if (!LinkOf(s, s->rootFd, &rootLink)) return ThrowType(env, "the share's own path cannot be read");
  // open_by_handle_at wants a descriptor of the file system (not O_PATH): the share's root.
  int mountFd = -1, mountErr = 0;
  if (flags & kByHandle) {
    mountFd = openat(s->procFd, std::to_string(s->rootFd).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mountFd < 0) mountErr = errno;
  }
  // By path, parents before children: a path whose directory this load already opened (by
  // a walk from the share, or this way) is opened from that directory, one step instead of a
  // walk from the share. The same steps, without following a symlink or '..'.
  std::unordered_map<std::string, uint64_t> dirIds;
  if (!(flags & kByHandle))
    std::stable_sort(ins.begin(), ins.end(), [](const In& a, const In& b) { return a.depth < b.depth; });
  auto walk = [&](const std::string& rel) -> int {
    size_t slash = rel.rfind('/');
    auto parent = slash == std::string::npos ? dirIds.end() : dirIds.find(rel.substr(0, slash));
    if (parent == dirIds.end()) return WalkFromRoot(s, rel);
    std::string name = rel.substr(slash + 1);
    if (!PlainName(name)) return -EINVAL;
    InodePin p(s, parent->second);
    return p.fd() < 0 ? p.fd() : OpenPath(p.fd(), name);
  };
  // Why each inode could not be put back (empty: it was).
  std::vector<std::string> whyNot(ins.size());
  auto loadOne = [&](size_t i) {
    const In& x = ins[i];
    int fd = -ENOENT;
    std::string& why = whyNot[i];
    InodeKey k;
    uint32_t type = 0;
    bool keyed = false;  // k and type are fd's (one statx for the checks below)
    if (!x.why.empty()) {
      why = "on the source: " + x.why;
    } else if (flags & kByHandle) {
      auto* fh = reinterpret_cast<file_handle*>(const_cast<char*>(x.handle.data()));
      if (x.handle.empty()) {
        fd = -EINVAL;
      } else if (mountFd < 0) {
        fd = -mountErr;
      } else {
        fd = open_by_handle_at(mountFd, fh, O_PATH | O_CLOEXEC);
        if (fd < 0) fd = -errno;
      }
      std::string link, rel;
      if (fd < 0) {
        why = std::string("its file handle opens nothing here: ") + strerror(-fd);
      } else if (!(keyed = KeyOf(fd, &k, &type))) {
        why = "its file cannot be looked at here";
      } else if (!LinkOf(s, fd, &link) || !LinkBelowRoot(rootLink, link, &rel) || !SameFileAt(s, k, link, rel)) {
        // A handle names a file anywhere on the file system: only the share's are ours.
        why = "its file handle names a file outside the share";
      }
    } else {
      fd = x.rel.empty() ? -EINVAL : walk(x.rel);
      if (fd < 0) why = "its path is not in the share here";
      else if (!x.handle.empty() && HandleOf(fd) != x.handle) why = "its path leads to another file here (file handles differ)";
    }
    if (why.empty() && !keyed) keyed = KeyOf(fd, &k, &type);
    if (why.empty() && (!keyed || type != x.type)) why = "its path names a file of another type here";
    if (!why.empty()) {
      if (fd >= 0) close(fd);
    } else if (!s->RefAt(x.id, fd, k, type, x.lookups)) {
      why = "its node id or file came twice";
    }
  };
  // In order, parents first: a directory is known (dirIds) before a path below it opens.
  // (On two threads, one depth at a time, it gained nothing measurable on the 2-core machine
  // of bench/results: the load's time goes to its openat and statx calls, and the threads
  // met on the shards' mutexes.)
  for (size_t i = 0; i < ins.size(); i++) {
    loadOne(i);
    if (!whyNot[i].empty()) continue;
    inodes++;
    if (ins[i].type == S_IFDIR && !(flags & kByHandle)) dirIds.emplace(ins[i].rel, ins[i].id);
  }
  for (size_t i = 0; i < ins.size(); i++)
    if (!whyNot[i].empty()) lost.Set(lost.Length(), Lost(env, ins[i].id, whyNot[i]));
  if (mountFd >= 0) close(mountFd);
  for (const Hd& h : hds) {
    int fd = -EBADF;
    {
      InodePin p(s, h.nodeid);
      // As OpenNode: O_NOFOLLOW (a CREATE's handle has it) would refuse the /proc link itself.
      int flags = static_cast<int>(h.flags) & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_NOFOLLOW);
      if (p.fd() >= 0 && (p.type() == S_IFREG || p.type() == S_IFDIR) && !(flags & kRefusedOpenFlags))
        fd = Reopen(s, p.fd(), p.type() == S_IFDIR ? flags | O_DIRECTORY : flags);
    }
    if (fd < 0) {
      lost.Set(lost.Length(), Lost(env, h.nodeid, "a handle that cannot be opened again (flags 0" + Octal(h.flags) + "): " + strerror(-fd)));
      continue;
    }
    if (h.flock && flock(fd, static_cast<int>(h.flock) | LOCK_NB) < 0) {
      lost.Set(lost.Length(), Lost(env, h.nodeid, std::string("a flock() lock: ") + strerror(errno)));
      close(fd);
      continue;
    }
    if (!s->InsertHandleAt(h.fh, fd, h.nodeid, static_cast<uint8_t>(h.flock))) {
      lost.Set(lost.Length(), Lost(env, h.nodeid, "a handle whose fh came twice"));
      continue;
    }
    handles++;
  }
  uint32_t locks = 0;
  for (const Lk& l : lks) {
    if (int r = TakeOwnersLocks(s, l.nodeid, l.owner, l.ranges, l.via); r < 0) {
      lost.Set(lost.Length(), Lost(env, l.nodeid, std::string("a POSIX lock: ") + strerror(-r)));
      continue;
    }
    locks++;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("inodes", Napi::Number::New(env, inodes));
  o.Set("handles", Napi::Number::New(env, handles));
  o.Set("locks", Napi::Number::New(env, locks));
  o.Set("lost", lost);
  return o;
}

}  // namespace

PreparedPaths TakeMigrationPrep(FsState* s) {
  std::unique_ptr<MigrationPrep> p;
  {
    std::lock_guard<std::mutex> g(s->prepMu);
    p.swap(s->prep);
  }
  if (!p) return {};
  p->stop.store(true, std::memory_order_relaxed);
  if (p->worker.joinable()) p->worker.join();
  return std::move(p->found);
}

void InitMigration(Napi::Env env, Napi::Object exports) {
  exports.Set("stateMigrationPrepare", Napi::Function::New(env, StateMigrationPrepare, "stateMigrationPrepare"));
  exports.Set("stateMigrationUnprepare", Napi::Function::New(env, StateMigrationUnprepare, "stateMigrationUnprepare"));
  exports.Set("stateSave", Napi::Function::New(env, StateSave, "stateSave"));
  exports.Set("stateLoad", Napi::Function::New(env, StateLoad, "stateLoad"));
  exports.Set("stateResume", Napi::Function::New(env, StateResume, "stateResume"));
}

}  // namespace vfsn
