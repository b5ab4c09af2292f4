// The shared file-system state (see state.cc for what it is and the rules around it):
// the inode and handle tables, the pin guards every operation uses, and how a native call
// finds its state. Included by state.cc, nodeops.cc and fileops.cc.
#pragma once
#include "common.h"

#include <fcntl.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace vfsn {

constexpr uint64_t kRootId = 1;
constexpr unsigned kShardBits = 4;
constexpr uint64_t kShards = 1u << kShardBits;
constexpr uint64_t kShardMask = kShards - 1;
// Node ids and handles stay below this (JS carries them as doubles, exact to 2^53); Ref and
// InsertHandle count up from 1, so only a migration stream could bring a larger one.
constexpr uint64_t kMaxStateId = 1ull << 53;

// FsState::sessionFlags (SessionFlags in src/cache/policy.ts): FUSE_WRITEBACK_CACHE,
// FUSE_SUBMOUNTS, FUSE_SETXATTR_EXT and FUSE_POSIX_ACL (with FUSE_DONT_MASK) negotiated.
constexpr uint32_t kSessionWriteback = 1, kSessionSubmounts = 2, kSessionSetxattrExt = 4, kSessionPosixAcl = 8,
                   kSessionStarted = 16;
// fuse_attr.flags
constexpr uint32_t kAttrSubmount = 1;

struct InodeKey {
  uint32_t devMajor, devMinor;
  uint64_t ino, mntId;
  bool operator==(const InodeKey& o) const {
    return devMajor == o.devMajor && devMinor == o.devMinor && ino == o.ino && mntId == o.mntId;
  }
};

struct KeyHash {
  size_t operator()(const InodeKey& k) const {
    uint64_t h = k.ino * 0x9E3779B97F4A7C15ull;
    h ^= (static_cast<uint64_t>(k.devMajor) << 32 | k.devMinor) + 0x632BE59BD9B4E019ull + (h << 6) + (h >> 2);
    h ^= k.mntId + 0x94D049BB133111EBull + (h << 6) + (h >> 2);
    return static_cast<size_t>(h ^ (h >> 31));
  }
};

// An inode kept as a file handle (--inode-file-handles): its O_PATH descriptor is open only
// while the inode is pinned, reopened with open_by_handle_at (FsState::Park).
struct FileHandleBytes {
  std::vector<unsigned char> bytes;  // struct file_handle, f_handle included
};
// fd's file handle (name_to_handle_at) into *out; false (errno set) when its file system
// gives none.
bool ReadFileHandle(int fd, FileHandleBytes* out);

struct Inode {
  int fd;  // -1 while parked and unpinned
  InodeKey key;
  uint32_t type;  // S_IFMT bits: an inode's type never changes
  uint64_t lookups;
  uint32_t pins;
  bool detached;  // dropped by a new session while pinned: closes at the last unpin
  // POSIX locks: one open file description per lock owner, holding that owner's OFD locks
  // (fileops.cc). Closed at the owner's FLUSH or when the inode goes.
  std::unordered_map<uint64_t, int> lockFds;
  // The file's size, mtime and ctime at its last open (cache auto's KEEP_CACHE, see
  // UnchangedSinceLastOpen); null while none is remembered, so an inode never opened costs
  // a pointer.
  struct OpenState {
    double size, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec;
    bool operator==(const OpenState& o) const {
      return size == o.size && mtimeSec == o.mtimeSec && mtimeNsec == o.mtimeNsec && ctimeSec == o.ctimeSec &&
             ctimeNsec == o.ctimeNsec;
    }
  };
  std::unique_ptr<OpenState> lastOpen;
  std::unique_ptr<FileHandleBytes> parked;  // set: a file-handle inode
  // Put back by a migration's destination under a node id of another shard than its key's
  // (ForeignInodes): found by key there, not in its shard's byKey.
  bool foreign = false;
  void CloseAll() {
    if (fd >= 0) close(fd);
    fd = -1;
    for (auto& kv : lockFds) close(kv.second);
    lockFds.clear();
  }
};

// How transfers through a handle may run (--thread-pool-size > 0, iopool.cc):
// - kNoWaitRead, kNoWaitWrite: first tried without blocking on the queue's thread
//   (RWF_NOWAIT). Not set for a handle opened O_DIRECT (a direct transfer waits for the
//   device even with RWF_NOWAIT) and cleared, per direction, once its file system refuses
//   RWF_NOWAIT (tmpfs; ext4's buffered writes).
// - kBuffered: not O_DIRECT. Buffered writes to one file take its inode lock in turn on
//   every local Linux file system, so the pool runs them one after another on one thread.
enum : uint8_t { kNoWaitRead = 1, kNoWaitWrite = 2, kBuffered = 4 };

struct Handle {
  int fd;
  uint64_t nodeid;
  uint32_t pins;
  bool released;
  uint8_t io;  // kNoWait*, kBuffered
  // The flock() lock the guest holds through this handle: LOCK_SH, LOCK_EX or 0 (FlockHandle);
  // carried: let go of for a migration's save, taken again if the source goes on (migration.cc).
  uint8_t flock = 0;
  bool flockCarried = false;
};

// The inodes a migration's destination put back (FsState::RefAt) under node ids whose shard is
// not their key's. A node id's shard is its key's when Ref hands it out, so that a lookup
// finds the inode under its shard's lock; but the source's keys differ from the destination's
// (another mount namespace, other mount ids), so on a destination most are elsewhere, and a
// lookup of such a file must still find the node id the guest holds. Empty but after a load.
// Its mutex is taken after a shard's, never before.
struct ForeignInodes {
  std::mutex mu;
  std::unordered_map<InodeKey, uint64_t, KeyHash> byKey;
  std::atomic<bool> any{false};
};

struct InodeShard {
  std::mutex mu;
  ForeignInodes* foreign = nullptr;  // the state's (FsState::foreign)
  std::unordered_map<uint64_t, Inode> byId;
  std::unordered_map<InodeKey, uint64_t, KeyHash> byKey;
  uint64_t nextSeq = 1;
  // Inodes of this shard whose O_PATH descriptor is open (changed under mu, summed without).
  std::atomic<int64_t> openFds{0};
  // Inodes of this shard kept as file handles.
  std::atomic<int64_t> parkedCount{0};
  // Lock owners' descriptors (Inode::lockFds) open in this shard, under mu: a shard without
  // any is skipped when all locks go (ReleaseAllLocks), without a look at each inode.
  int64_t lockFdsOpen = 0;
  std::atomic<int64_t>* lockFdsTotal = nullptr;  // the state's, over every shard

  // Closes an inode's descriptors and forgets its counts. Called with mu held.
  void Close(Inode& n) {
    if (n.fd >= 0) openFds.fetch_sub(1, std::memory_order_relaxed);
    if (n.parked) parkedCount.fetch_sub(1, std::memory_order_relaxed);
    lockFdsOpen -= static_cast<int64_t>(n.lockFds.size());
    lockFdsTotal->fetch_sub(static_cast<int64_t>(n.lockFds.size()), std::memory_order_relaxed);
    n.CloseAll();
  }

  // Drops the entry when nothing refers to it any more. Called with mu held.
  void MaybeDrop(std::unordered_map<uint64_t, Inode>::iterator it) {
    Inode& n = it->second;
    if (n.pins > 0 || it->first == kRootId) return;
    if (n.lookups > 0 && !n.detached) return;
    Close(n);
    if (n.foreign && !n.detached) {
      std::lock_guard<std::mutex> g(foreign->mu);
      foreign->byKey.erase(n.key);
      // The last one gone: lookups no longer take foreign->mu.
      if (foreign->byKey.empty()) foreign->any.store(false, std::memory_order_release);
    } else if (!n.detached) {
      byKey.erase(n.key);
    }
    byId.erase(it);
  }
};

struct HandleShard {
  std::mutex mu;
  std::unordered_map<uint64_t, Handle> byFh;
  uint64_t nextSeq = 1;

  void MaybeDrop(std::unordered_map<uint64_t, Handle>::iterator it) {
    if (!it->second.released || it->second.pins > 0) return;
    close(it->second.fd);
    byFh.erase(it);
  }
};

// POSIX lock bookkeeping for deadlock detection (fileops.cc). OFD locks, which carry the
// guest's locks on the host, have no deadlock detection of their own, so the granted ranges
// of each owner and what each waiting owner waits for are kept here, under one mutex.
struct LockRange {
  int64_t start, end;  // inclusive
  int type;            // F_RDLCK or F_WRLCK
};
struct LockWait {
  uint64_t nodeid;
  int64_t start, end;
  int type;
};
struct LockTable {
  // Also keeps a lock owner's descriptor (Inode::lockFds) open while a lock request uses it:
  // taken before an inode shard's mu, never after.
  std::mutex mu;
  // nodeid -> owner -> granted ranges
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, std::vector<LockRange>>> held;
  std::unordered_map<uint64_t, LockWait> waiting;  // owner -> what it waits for
  // nodeid -> owner -> the handle of the owner's last granted lock, and the guest process
  // that asked for it (what a GETLK that finds the lock reports). At that handle's RELEASE
  // an owner that still holds locks through it lets go of them (ReleaseLocksVia): a POSIX
  // owner's went at its FLUSH, so what is left is an open file description's lock
  // (F_OFD_SETLK in the guest), whose owner is the guest's file and which no FLUSH names.
  struct Via {
    uint64_t fh;
    uint32_t pid;
  };
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, Via>> via;
  // Whether held has anything, readable without mu: a RELEASE looks no further when not.
  std::atomic<bool> any{false};
  // The locks a migration's save let go of (migration.cc), taken again if the source goes on,
  // and the handle and process each owner's came through.
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, std::vector<LockRange>>> carried;
  std::unordered_map<uint64_t, std::unordered_map<uint64_t, Via>> carriedVia;
};

// --translate-uid / --translate-gid (src/fuse/passthrough/idmap.ts): how the IDs a guest
// sends (the caller of a request, a chown's target) become host IDs, and how host owners are
// shown to the guest. An ID no range covers stays as it is.
struct IdRange {
  enum Kind : uint8_t { kOneToOne, kSquash, kForbid } kind;
  uint32_t from, to;
  uint64_t count;
};
struct IdTranslation {
  std::vector<IdRange> toHost, toGuest;
  // The guest's id as a host id: false when the guest may not use it (forbid-guest).
  bool ToHost(uint32_t id, uint32_t* out) const;
  uint32_t ToGuest(uint32_t id) const;
};

// /proc/self/fd/N: a path to what descriptor fd holds. For an O_PATH descriptor the magic
// link lands on the inode itself (a symlink included) without opening it, which is how
// extended attributes reach inodes.
inline std::string ProcPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// A live migration's preparation (migration.cc): from the moment QEMU turns dirty logging on
// (the precopy, while the guest still runs), a thread finds each inode's path below the share
// and checks that it leads back to the inode. The save, in the guest's downtime, then only
// has to see that the kernel still names each inode as it did then, and not even that for an
// inode whose directories all have the timestamps they had before its path was checked.
struct DirStamp {
  int64_t mtimeNs = 0, ctimeNs = 0;
  InodeKey key{};  // the directory's, as the inode table keys it
  // The same timestamps (whatever the key).
  bool operator==(const DirStamp& o) const { return mtimeNs == o.mtimeNs && ctimeNs == o.ctimeNs; }
};
struct PreparedPaths {
  // nodeid -> its path, checked during the precopy.
  std::unordered_map<uint64_t, std::string> paths;
  // nodeid of a directory (the root's included) -> its timestamps, taken before any path was
  // checked, for the directories whose timestamps can be trusted to move (DirStampOf).
  std::unordered_map<uint64_t, DirStamp> dirStamps;
};
struct MigrationPrep {
  std::thread worker;
  std::atomic<bool> stop{false};
  // Written by the worker alone, read once it was joined.
  PreparedPaths found;
};
struct FsState;
// Stops a preparation (joins its thread) and hands over what it found (migration.cc).
PreparedPaths TakeMigrationPrep(FsState* s);

struct FsState {
  FsState() {
    for (InodeShard& sh : inodes) {
      sh.foreign = &foreign;
      sh.lockFdsTotal = &lockFdsTotal;
    }
    alive.fetch_add(1, std::memory_order_relaxed);
  }
  // Holders of the state: the registry (until stateDestroy), each operation queued on
  // libuv's pool (asyncops.cc) or on the I/O pool (iopool.cc), and each FUSE fast path (for
  // as long as it lives: a kick thread may be serving through it), any of which may still
  // run after the daemon, or a test, destroyed the state; the last one to let go deletes it
  // (ReleaseState), on whatever thread that is.
  std::atomic<int> holds{1};
  // stateDestroy ran: the fast path declines from then on, and JS no longer finds the state.
  std::atomic<bool> destroyed{false};
  // States not yet deleted, in this process (statesAlive(), for the tests).
  static inline std::atomic<int> alive{0};
  ForeignInodes foreign;
  InodeShard inodes[kShards];
  LockTable locks;
  HandleShard handles[kShards];
  std::atomic<uint64_t> nextHandleShard{0};
  InodeKey rootKey{};
  bool hasRoot = false;
  int procFd = -1;  // /proc/self/fd, to reopen O_PATH descriptors for I/O
  int rootFd = -1;  // the shared directory's O_PATH descriptor (nodeid 1's, never parked)
  // A migration's preparation while one runs or has found paths (migration.cc), under prepMu.
  std::mutex prepMu;
  std::unique_ptr<MigrationPrep> prep;
  // --xattrmap storing security.capability under another host name: the host kernel clears
  // only the real name when a file is written, truncated or chowned, so the daemon removes the
  // mapped one then, as the Rust virtiofsd does. Set once at start; empty: no such map.
  std::string mappedCapabilityXattr;
  void DropMappedCapability(int fd) const {
    if (mappedCapabilityXattr.empty() || fd < 0) return;
    removexattr(ProcPath(fd).c_str(), mappedCapabilityXattr.c_str());  // ENODATA (none) is the usual answer
  }
  // What the current FUSE session negotiated that every queue thread must honour
  // (kSessionWriteback, kSessionSubmounts, kSessionPosixAcl, ...), set at INIT by whichever thread serves it; see
  // src/cache/policy.ts.
  std::atomic<uint32_t> sessionFlags{0};
  // Set once, before the first request (stateSetIdMaps), and only read after.
  IdTranslation uids, gids;
  // --inode-file-handles: once this many inode descriptors are open, new inodes of the
  // share's own mount are kept as file handles (Park); INT64_MAX: never (stateSetInodeFdBudget).
  int64_t inodeFdBudget = INT64_MAX;
  // Lock owners' descriptors open, and how many may be (stateSetLockFdBudget): each owner
  // that locks a file gets one, so past the budget a lock request gets ENOLCK rather than the
  // guest filling the daemon's descriptor table.
  std::atomic<int64_t> lockFdsTotal{0};
  int64_t lockFdBudget = INT64_MAX;
  // A descriptor of the share's mount that open_by_handle_at takes (O_PATH ones are refused):
  // opened at the first Park; -1 before, -2 when file handles cannot be used here.
  std::atomic<int> mountFd{-1};
  std::mutex mountMu;
  // Inodes ever kept as file handles, for the exit report.
  std::atomic<uint64_t> parkedTotal{0};

  int64_t OpenInodeFds() const {
    int64_t n = 0;
    for (const InodeShard& sh : inodes) n += sh.openFds.load(std::memory_order_relaxed);
    return n;
  }
  int64_t ParkedInodes() const {
    int64_t n = 0;
    for (const InodeShard& sh : inodes) n += sh.parkedCount.load(std::memory_order_relaxed);
    return n;
  }
  // A new inode's file handle when it should be parked (over the budget, on the share's
  // mount, file handles usable), else null (state.cc).
  std::unique_ptr<FileHandleBytes> ParkIfOverBudget(int fd, const InodeKey& k);
  // The O_PATH descriptor of a parked inode, or -errno (ESTALE: the file is gone).
  int Unpark(const FileHandleBytes& h);
  // Whether fd's file handle is h (true when fd's cannot be had: nothing to tell them apart).
  static bool SameFileHandle(int fd, const FileHandleBytes& h);

  InodeShard& ShardOf(uint64_t nodeid) { return inodes[nodeid & kShardMask]; }
  HandleShard& HandleShardOf(uint64_t fh) { return handles[fh & kShardMask]; }

  // Returns the pinned fd of nodeid (and its type), or -EBADF (-ESTALE for a parked inode
  // whose file is gone). A parked inode's descriptor is opened for as long as it is pinned.
  int PinInode(uint64_t nodeid, uint32_t* type = nullptr, InodeKey* key = nullptr) {
    InodeShard& sh = ShardOf(nodeid);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byId.find(nodeid);
    if (it == sh.byId.end() || it->second.detached) return -EBADF;
    if (it->second.fd < 0) {
      if (!it->second.parked) return -EBADF;
      int fd = Unpark(*it->second.parked);
      if (fd < 0) return fd;
      it->second.fd = fd;
      sh.openFds.fetch_add(1, std::memory_order_relaxed);
    }
    it->second.pins++;
    if (type) *type = it->second.type;
    if (key) *key = it->second.key;
    return it->second.fd;
  }
  void UnpinInode(uint64_t nodeid) {
    InodeShard& sh = ShardOf(nodeid);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byId.find(nodeid);
    if (it == sh.byId.end() || it->second.pins == 0) return;
    Inode& n = it->second;
    if (--n.pins == 0 && n.parked && n.fd >= 0) {
      close(n.fd);
      n.fd = -1;
      sh.openFds.fetch_sub(1, std::memory_order_relaxed);
    }
    sh.MaybeDrop(it);
  }
  int PinHandle(uint64_t fh, uint8_t* io = nullptr, uint64_t* nodeid = nullptr) {
    HandleShard& sh = HandleShardOf(fh);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byFh.find(fh);
    if (it == sh.byFh.end() || it->second.released) return -EBADF;
    it->second.pins++;
    if (io) *io = it->second.io;
    if (nodeid) *nodeid = it->second.nodeid;
    return it->second.fd;
  }
  void ClearNoWait(uint64_t fh, uint8_t bits) {
    HandleShard& sh = HandleShardOf(fh);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byFh.find(fh);
    if (it != sh.byFh.end()) it->second.io &= static_cast<uint8_t>(~bits);
  }
  void UnpinHandle(uint64_t fh) {
    HandleShard& sh = HandleShardOf(fh);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byFh.find(fh);
    if (it == sh.byFh.end() || it->second.pins == 0) return;
    it->second.pins--;
    sh.MaybeDrop(it);
  }

  // Takes ownership of fd: a known key gains a lookup (fd closed), else a new inode.
  uint64_t Ref(int fd, const InodeKey& k, uint32_t type) {
    if (hasRoot && k == rootKey) {
      close(fd);
      return kRootId;
    }
    if (foreign.any.load(std::memory_order_acquire)) {
      uint64_t id = 0;
      {
        std::lock_guard<std::mutex> g(foreign.mu);
        auto f = foreign.byKey.find(k);
        if (f != foreign.byKey.end()) id = f->second;
      }
      if (id != 0) {
        InodeShard& sh = ShardOf(id);
        std::lock_guard<std::mutex> g(sh.mu);
        auto it = sh.byId.find(id);
        // Gone meanwhile: the lookup makes a new inode, as for any file.
        if (it != sh.byId.end() && !it->second.detached && it->second.key == k) {
          it->second.lookups++;
          close(fd);
          return id;
        }
      }
    }
    uint64_t shard = KeyHash()(k) & kShardMask;
    InodeShard& sh = inodes[shard];
    std::lock_guard<std::mutex> g(sh.mu);
    auto kit = sh.byKey.find(k);
    if (kit != sh.byKey.end()) {
      auto it = sh.byId.find(kit->second);
      Inode& n = it->second;
      // A parked inode holds no descriptor, so its file may have gone and its inode number
      // been given to a new file: the same key, another file (its file handle differs). The
      // guest's old node id names a file that is gone: it is dropped (EBADF from now on, its
      // FORGET ignored), and the key is the new file's.
      if (n.parked && n.fd < 0 && !SameFileHandle(fd, *n.parked)) {
        sh.byKey.erase(kit);
        n.detached = true;  // its lookups no longer keep it; it goes at its next unpin or now
        sh.MaybeDrop(it);
      } else {
        n.lookups++;
        close(fd);
        return kit->second;
      }
    }
    uint64_t id = (sh.nextSeq++ << kShardBits) | shard;
    AddInodeLocked(sh, id, fd, k, type, 1);
    return id;
  }

  // Takes ownership of fd as inode id with its lookup count, as a migration's destination
  // puts back the inodes of the source (migration.cc): false (fd closed) when the id or the
  // file is taken already or the id is not one Ref could have given (sequence 0, or past
  // kMaxStateId: a stream's id near 2^64 would run the shard's sequence past its end, and the
  // next Ref would wrap around to ids in use, the root's among them).
  bool RefAt(uint64_t id, int fd, const InodeKey& k, uint32_t type, uint64_t lookups) {
    InodeShard& keyShard = inodes[KeyHash()(k) & kShardMask];
    bool elsewhere = &keyShard != &ShardOf(id);
    bool taken = false;
    if (elsewhere) {
      std::lock_guard<std::mutex> g(keyShard.mu);
      taken = keyShard.byKey.count(k) != 0;
    }
    InodeShard& sh = ShardOf(id);
    std::lock_guard<std::mutex> g(sh.mu);
    if (taken || (id >> kShardBits) == 0 || id >= kMaxStateId || sh.byId.count(id) || (!elsewhere && sh.byKey.count(k)) || (hasRoot && k == rootKey)) {
      close(fd);
      return false;
    }
    {
      // The file may have come already under an id of another shard.
      std::lock_guard<std::mutex> f(foreign.mu);
      if (foreign.byKey.count(k) || (elsewhere && !foreign.byKey.emplace(k, id).second)) {
        close(fd);
        return false;
      }
      if (elsewhere) foreign.any.store(true, std::memory_order_release);
    }
    if (sh.nextSeq <= (id >> kShardBits)) sh.nextSeq = (id >> kShardBits) + 1;
    AddInodeLocked(sh, id, fd, k, type, lookups, elsewhere);
    return true;
  }

  uint64_t InsertHandle(int fd, uint64_t nodeid) {
    uint64_t shard = nextHandleShard.fetch_add(1, std::memory_order_relaxed) & kShardMask;
    HandleShard& sh = handles[shard];
    std::lock_guard<std::mutex> g(sh.mu);
    uint64_t fh = (sh.nextSeq++ << kShardBits) | shard;
    sh.byFh[fh] = Handle{fd, nodeid, 0, false, IoOf(fd)};
    return fh;
  }

  // Takes ownership of fd as handle fh (a migration's destination, migration.cc), with the
  // flock() lock it holds: false (fd closed) when fh is taken or not one InsertHandle could
  // have given (as RefAt's ids).
  bool InsertHandleAt(uint64_t fh, int fd, uint64_t nodeid, uint8_t flockHeld = 0) {
    HandleShard& sh = HandleShardOf(fh);
    std::lock_guard<std::mutex> g(sh.mu);
    if ((fh >> kShardBits) == 0 || fh >= kMaxStateId || sh.byFh.count(fh)) {
      close(fd);
      return false;
    }
    if (sh.nextSeq <= (fh >> kShardBits)) sh.nextSeq = (fh >> kShardBits) + 1;
    sh.byFh[fh] = Handle{fd, nodeid, 0, false, IoOf(fd), flockHeld};
    return true;
  }

  // A new session: every inode but the root and every handle go; pinned ones close when
  // their last pin drops. Sequence numbers go on, so no old id is handed out again. The
  // session flags go first: no fast path serves into the tables as they are emptied (INIT
  // sets the new session's after).
  void Clear() {
    sessionFlags.store(0, std::memory_order_release);
    // Paths found for a migration name the old session's inodes.
    TakeMigrationPrep(this);
    {
      std::lock_guard<std::mutex> g(locks.mu);
      locks.held.clear();
      locks.via.clear();
      locks.any.store(false, std::memory_order_release);
      locks.waiting.clear();
      // What a migration's save let go of belonged to the old session too.
      locks.carried.clear();
      locks.carriedVia.clear();
    }
    for (InodeShard& sh : inodes) {
      std::lock_guard<std::mutex> g(sh.mu);
      for (auto it = sh.byId.begin(); it != sh.byId.end();) {
        if (it->first == kRootId) {
          ++it;
          continue;
        }
        if (it->second.pins > 0) {
          it->second.detached = true;
          it->second.lookups = 0;
          ++it;
        } else {
          sh.Close(it->second);
          it = sh.byId.erase(it);
        }
      }
      sh.byKey.clear();
    }
    {
      std::lock_guard<std::mutex> f(foreign.mu);
      foreign.byKey.clear();
      foreign.any.store(false, std::memory_order_release);
    }
    for (HandleShard& sh : handles) {
      std::lock_guard<std::mutex> g(sh.mu);
      for (auto it = sh.byFh.begin(); it != sh.byFh.end();) {
        it->second.released = true;
        it->second.flockCarried = false;
        if (it->second.pins > 0) {
          ++it;
        } else {
          close(it->second.fd);
          it = sh.byFh.erase(it);
        }
      }
    }
  }

  // A new inode in shard sh (mu held), kept as a file handle when over the fd budget.
  void AddInodeLocked(InodeShard& sh, uint64_t id, int fd, const InodeKey& k, uint32_t type, uint64_t lookups, bool foreignKey = false) {
    Inode& n = sh.byId[id] = Inode{fd, k, type, lookups, 0, false, {}, {}, {}, foreignKey};
    if (!foreignKey) sh.byKey[k] = id;
    n.parked = ParkIfOverBudget(fd, k);
    if (n.parked) {
      close(fd);
      n.fd = -1;
      sh.parkedCount.fetch_add(1, std::memory_order_relaxed);
      parkedTotal.fetch_add(1, std::memory_order_relaxed);
    } else {
      sh.openFds.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // How transfers through a new handle's descriptor may run (kNoWait*, kBuffered).
  static uint8_t IoOf(int fd) {
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && !(fl & O_DIRECT) ? (kNoWaitRead | kNoWaitWrite | kBuffered) : 0;
  }

  ~FsState() {
    alive.fetch_sub(1, std::memory_order_relaxed);
    TakeMigrationPrep(this);
    for (InodeShard& sh : inodes)
      for (auto& kv : sh.byId) kv.second.CloseAll();
    if (mountFd.load() >= 0) close(mountFd.load());
    for (HandleShard& sh : handles)
      for (auto& kv : sh.byFh) close(kv.second.fd);
    if (procFd >= 0) close(procFd);
  }
};

// One more holder of s, which must already be held (by the registry, or by the caller).
inline void HoldState(FsState* s) { s->holds.fetch_add(1, std::memory_order_relaxed); }
// A holder lets go; the last deletes the state.
inline void ReleaseState(FsState* s) {
  if (s && s->holds.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
}

// Whether the session negotiated POSIX ACLs: new files are then made under the caller's umask
// (ThreadUmask), since the guest no longer applies it.
inline bool PosixAclSession(const FsState* s) { return s->sessionFlags.load(std::memory_order_relaxed) & kSessionPosixAcl; }

// Pins an inode for the length of a scope.
class InodePin {
 public:
  InodePin(FsState* s, uint64_t nodeid) : s_(s), id_(nodeid), fd_(s->PinInode(nodeid, &type_)) {}
  ~InodePin() {
    if (fd_ >= 0) s_->UnpinInode(id_);
  }
  int fd() const { return fd_; }  // -EBADF when the nodeid is unknown
  uint32_t type() const { return type_; }
  InodePin(const InodePin&) = delete;
  InodePin& operator=(const InodePin&) = delete;

 private:
  FsState* s_;
  uint64_t id_;
  uint32_t type_ = 0;
  int fd_;
};

class HandlePin {
 public:
  HandlePin(FsState* s, uint64_t fh) : s_(s), fh_(fh), fd_(s->PinHandle(fh, nullptr, &nodeid_)) {}
  ~HandlePin() {
    if (fd_ >= 0) s_->UnpinHandle(fh_);
  }
  int fd() const { return fd_; }
  // The node id the handle was opened on (0 when fd() < 0).
  uint64_t nodeid() const { return nodeid_; }
  HandlePin(const HandlePin&) = delete;
  HandlePin& operator=(const HandlePin&) = delete;

 private:
  FsState* s_;
  uint64_t fh_;
  uint64_t nodeid_ = 0;
  int fd_;
};

// The queue-thread half of a READ or WRITE that may go on to a pool thread (asyncops.cc,
// iopool.cc): pins handle fh and, unless the handle rules it out, tries the transfer through
// iov at once with RWF_NOWAIT (io.cc). Returns true when that finished it: *result is the
// bytes moved or -errno, and nothing stays pinned. Else the handle stays pinned, *fd is its
// descriptor, *moved what the try moved and iov what is left (see FinishTransfer), and, when
// serial is given, *serial is the handle's inode for a buffered handle and 0 otherwise.
bool TryTransferNow(FsState* s, uint64_t fh, int64_t pos, std::vector<iovec>& iov, bool write, int* fd, int64_t* moved,
                    int64_t* result, uint64_t* serial = nullptr);

// name (one component) in directory dirfd opened O_PATH without following a symlink: the
// descriptor or -errno (nodeops.cc).
int OpenPath(int dirfd, const std::string& name);
// The inode behind O_PATH descriptor pathFd opened again with flags (through /proc/self/fd):
// the descriptor or -errno (nodeops.cc).
int Reopen(FsState* s, int pathFd, int flags);

// The state with this id, or nullptr.
FsState* StateById(int64_t id);
// The state a call names by its first argument, or nullptr.
FsState* StateArg(const Napi::CallbackInfo& info);

#define STATE_OR_THROW(s)      \
  FsState* s = StateArg(info); \
  if (!s) return ThrowType(info.Env(), "unknown file-system state id");

inline Napi::Value Num(const Napi::CallbackInfo& info, double v) { return Napi::Number::New(info.Env(), v); }

// The attributes' key fields (out[1], out[2], out[3], out[21]) as an inode key.
inline InodeKey KeyOfStatx(const double* st) {
  return InodeKey{static_cast<uint32_t>(st[1]), static_cast<uint32_t>(st[2]), ExactIno(st), static_cast<uint64_t>(st[21])};
}

// Takes fd (an O_PATH descriptor of a new or known inode), reads its attributes into out
// and registers it: the nodeid (one lookup reference taken), or -errno (fd closed).
int64_t RegisterInode(FsState* s, int fd, double* out);

// The operations both JS (state.cc's wrappers) and the native fast path (fastpath.cc) serve:
// - the inode's attributes into out (never following a link): 0 or -errno;
int StatxNode(FsState* s, uint64_t nodeid, double* out);
// - ACCESS: whether the caller uid/gid may do mask (R_OK | W_OK | X_OK; 0: the node exists),
//   judged from the node's mode and owner as the guest sees them; W_OK on a read-only share
//   is EROFS: 0 or -errno;
int AccessNode(FsState* s, uint64_t nodeid, uint32_t uid, uint32_t gid, uint32_t mask, bool readOnly);
// - the owner in attributes st (StatxField order) as the guest sees it (--translate-*);
void OwnerToGuest(const FsState* s, double* st);
// - the inode (a regular file or a directory) opened for I/O with flags (host open flags;
//   O_CREAT, O_EXCL, O_NOCTTY and O_NOFOLLOW are dropped) and registered as a handle: the
//   fh or -errno (nodeops.cc); with killSuidgid a truncating open clears the file's setuid
//   and setgid bits as for an unprivileged opener (FUSE_OPEN_KILL_SUIDGID, FsetidDropped);
int64_t OpenNode(FsState* s, uint64_t nodeid, int flags, bool killSuidgid = false);
// - cache auto's KEEP_CACHE at an open: whether the file's size, mtime and ctime are what
//   the previous open of the inode (on any queue) saw; the state now is remembered for the
//   next one unless it is younger than the timestamps' resolution may hide (state.cc);
bool UnchangedSinceLastOpen(FsState* s, uint64_t nodeid);
// - name (one component, NUL-terminated, no '/') in parent: opened O_PATH without following
//   a symlink, its attributes into out and one lookup reference taken: the nodeid or -errno;
int64_t LookupName(FsState* s, uint64_t parent, const char* name, double* out);
// - with the session's FUSE_SUBMOUNTS (--announce-submounts): st, the attributes of entry
//   `name` (not '.' or '..') of directory parentFd, gets FUSE_ATTR_SUBMOUNT when it is a
//   directory on another mount or device than parentFd. The guest then mounts it as a
//   submount with its own st_dev, so the inode numbers of two host file systems never meet
//   in one guest file system. parentSt caches parentFd's attributes across calls (set its
//   [0] to -1 before the first).
void MarkSubmount(FsState* s, int parentFd, const char* name, double* st, double* parentSt);
// - name (one plain component) created in parent as a regular file and opened with flags
//   (host open flags; with O_EXCL an existing name is EEXIST, else an existing regular file
//   is opened), as uid/gid: the nodeid (one lookup reference taken) or -errno, attributes
//   into out and the new handle's fh into out[kStatxFields] (nodeops.cc); killSuidgid as
//   for OpenNode, when an existing file is opened with O_TRUNC; umask is the caller's, applied
//   by the host kernel in a POSIX ACL session (ThreadUmask) and ignored otherwise (the guest
//   masked the mode); *created (if given) says whether the file was made or existed (opened as
//   the caller then);
int64_t CreateName(FsState* s, uint64_t parent, const char* name, int flags, uint32_t mode, uint32_t uid, uint32_t gid,
                   double* out, bool killSuidgid = false, uint32_t umask = 0, bool* created = nullptr);
// - name (one plain component) made in parent as uid/gid: a node of mode (any S_IFMT, rdev
//   for a device) with kMknod, a directory with kMkdir, a symlink to target with kSymlink;
//   the nodeid (one lookup reference taken) or -errno, attributes into out (nodeops.cc);
//   umask as for CreateName;
enum class MakeKind { kMknod = 0, kMkdir = 1, kSymlink = 2 };
int64_t MakeNode(FsState* s, uint64_t parent, const char* name, MakeKind kind, uint32_t mode, uint64_t rdev, const char* target,
                 uint32_t uid, uint32_t gid, double* out, uint32_t umask = 0);
// - inode nodeid (not a directory) linked as name (one plain component) in parent: the
//   nodeid (one more lookup reference) or -errno, attributes into out (nodeops.cc);
int64_t LinkName(FsState* s, uint64_t nodeid, uint64_t parent, const char* name, double* out);
// - symlink nodeid's target into buf (at most cap bytes, no NUL): its length (cap when it
//   may be cut short) or -errno, EINVAL for a node that is not a symlink (nodeops.cc);
int64_t ReadLinkNode(FsState* s, uint64_t nodeid, char* buf, size_t cap);
// - the value of extended attribute name of nodeid into buf (at most cap bytes; with cap 0
//   only its size): its size or -errno (nodeops.cc);
int64_t GetXattrNode(FsState* s, uint64_t nodeid, const char* name, char* buf, size_t cap);
// - name (one plain component) removed from parent, a directory with rmdir: 0 or -errno
//   (nodeops.cc);
int UnlinkName(FsState* s, uint64_t parent, const char* name, bool rmdir);
// - oldName in oldParent renamed to newName in newParent (plain components), renameat2
//   flags: 0 or -errno (nodeops.cc);
int RenameName(FsState* s, uint64_t oldParent, const char* oldName, uint64_t newParent, const char* newName, uint32_t flags);
// - SETATTR: the changes fuse_setattr_in asks for (FATTR_* bits in valid; size and times
//   through handle fh with FATTR_FH), then the attributes into out: 0 or -errno (nodeops.cc);
//   FATTR_* bits of fuse_setattr_in.valid:
constexpr uint32_t kFattrMode = 1, kFattrUid = 2, kFattrGid = 4, kFattrSize = 8, kFattrAtime = 16, kFattrMtime = 32,
                   kFattrFh = 64, kFattrAtimeNow = 128, kFattrMtimeNow = 256, kFattrKillSuidgid = 1 << 11;
struct SetattrArgs {
  uint32_t valid = 0, mode = 0, uid = 0, gid = 0, atimeNsec = 0, mtimeNsec = 0;
  uint64_t fh = 0;
  int64_t size = 0, atime = 0, mtime = 0;
};
int SetAttributes(FsState* s, uint64_t nodeid, const SetattrArgs& a, double* out);
// - the kernel dropped n lookup references (FORGET); the root is never forgotten;
void ForgetInode(FsState* s, uint64_t nodeid, uint64_t n);
// - the guest released handle fh (RELEASE): 0, or -EBADF when it is unknown or released;
int RemoveHandle(FsState* s, uint64_t fh);
// - flock(op | LOCK_NB) on handle fh's descriptor: 0 or -errno (fileops.cc);
int FlockHandle(FsState* s, uint64_t fh, int op);
// - READDIR (READDIRPLUS with plus) of directory handle fh from offset (a getdents cookie):
//   fuse_dirent (fuse_direntplus) records into out, at most cap bytes, each entry of a
//   READDIRPLUS taking a lookup reference ("." and ".." excepted), with timeouts [entry s,
//   entry ns, attr s, attr ns]: the bytes written (0: the end) or -errno (fileops.cc);
int64_t ReadDirectory(FsState* s, uint64_t fh, int64_t offset, uint8_t* out, size_t cap, bool plus, const double* timeouts);
// - owner closed a descriptor of the file (FLUSH): as POSIX wants, all its POSIX locks on
//   the file go (fileops.cc).
void UnlockOwner(FsState* s, uint64_t nodeid, uint64_t owner);
// RELEASE of handle fh of nodeid: the lock owners whose last granted lock came through fh
// and that still hold locks on the file let go of them (LockTable::via).
void ReleaseLocksVia(FsState* s, uint64_t nodeid, uint64_t fh);
// - owner's POSIX lock of type (F_RDLCK, F_WRLCK) on [start, end] (inclusive, INT64_MAX: to
//   the end) of nodeid, taken without waiting and recorded as a SETLK's: 0 or -errno
//   (fileops.cc; a migration puts the guest's locks back with it);
int TakeLock(FsState* s, uint64_t nodeid, uint64_t owner, int type, int64_t start, int64_t end, bool writable = false);
// - SETLK and the attempts of a SETLKW: owner's POSIX lock of type (F_RDLCK, F_WRLCK,
//   F_UNLCK) on [start, end] of nodeid, through a descriptor of owner's own (fh: a handle of
//   the file, whose access mode serves when the file cannot be opened read-write), never
//   waiting: 0, -EAGAIN while another owner holds a conflicting lock, -EDEADLK when waiting
//   for it would never end, or -errno. mode 0: SETLK; 1: an attempt of a SETLKW (the owner is
//   recorded as waiting, for the deadlock check); 2: the SETLKW was given up (fileops.cc);
//   pid: the guest process asking, which a GETLK that finds the lock reports;
int SetlkNode(FsState* s, uint64_t nodeid, uint64_t fh, uint64_t owner, int type, int64_t start, int64_t end, int mode, uint32_t pid = 0);
// - GETLK: the first lock of another owner that conflicts with type on [start, end], in *fl
//   (l_type F_UNLCK when there is none; l_pid the guest process that took it, 0 for a lock
//   of the host's or one whose taker is not known): 0 or -errno (fileops.cc);
int GetlkNode(FsState* s, uint64_t nodeid, uint64_t fh, uint64_t owner, int type, int64_t start, int64_t end, struct flock* fl);
// - fsync (fdatasync with datasync) of handle fh's descriptor: 0 or -errno (FSYNC and
//   FSYNCDIR; fileops.cc);
int SyncHandle(FsState* s, uint64_t fh, bool datasync);
// - fallocate(mode, offset, length) on handle fh: 0 or -errno (fileops.cc); killSuidgid:
//   without CAP_FSETID, so that the host clears setuid and setgid (FsetidDropped);
int FallocateHandle(FsState* s, uint64_t fh, int mode, int64_t offset, int64_t length, bool killSuidgid);
// - lseek(offset, whence) on handle fh (SEEK_DATA, SEEK_HOLE): the offset or -errno
//   (fileops.cc);
int64_t SeekHandle(FsState* s, uint64_t fh, int64_t offset, int whence);
// - copy_file_range of length bytes from handle fhIn at offIn to fhOut at offOut: the bytes
//   copied or -errno (fileops.cc); killSuidgid as for FallocateHandle;
int64_t CopyRangeHandles(FsState* s, uint64_t fhIn, int64_t offIn, uint64_t fhOut, int64_t offOut, uint64_t length,
                         unsigned flags, bool killSuidgid);
// - the statfs of the file system holding nodeid into out: 0 or -errno (nodeops.cc);
int StatfsNode(FsState* s, uint64_t nodeid, struct statfs* out);
// - syncfs of the file system holding nodeid: 0 or -errno (nodeops.cc);
int SyncfsNode(FsState* s, uint64_t nodeid);
// - every POSIX lock the daemon holds for the guest let go of, the lock table emptied
//   (fileops.cc; a migration's source, for the destination to take them).
void ReleaseAllLocks(FsState* s);

}  // namespace vfsn
