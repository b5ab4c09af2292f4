// File-system state shared by every queue's threads: the inode table and the handle table.
//
// Each queue's kick thread, the I/O pool's threads and the JS thread all serve requests, so
// these tables live here, in the process, and every thread reaches the same table through
// its numeric id (a slot of a fixed array: one atomic load,
// no lock, no reference count). The tables own the host file descriptors they hold, and JS
// never sees an inode's or a handle's descriptor: each operation below takes a nodeid or an
// fh, pins the entry, makes its system call and unpins it, all in one call. A FORGET,
// RELEASE or new session arriving on another queue meanwhile only marks the entry; the
// descriptor is closed by whoever drops the last pin. So a descriptor is never closed, and
// its number reused for another file, under a request that is still using it.
//
// Inode entries: nodeid -> {fd (O_PATH), key (dev, ino, mount id), lookups, pins}.
//   lookups counts the kernel's references (each LOOKUP/CREATE/MKNOD/... reply adds one,
//   FORGET n subtracts n); the entry goes when lookups and pins are both zero. The root
//   (nodeid 1) is never forgotten. A key maps to one nodeid, so hard links are one inode.
// Handle entries: fh -> {fd, nodeid, pins, released}; RELEASE marks, the last pin closes.
//
// Both tables are split into kShards shards, each with its own mutex, so queues working on
// different files do not contend. The low bits of a nodeid name its shard, chosen from the
// inode's key, so a lookup by key and a lookup by nodeid land in the same shard (but for
// inodes a migration's destination put back under the source's ids: ForeignInodes in
// state.h); handles are spread round-robin the same way. Lock order: at most one shard lock
// is held at a time, except in Clear(), which takes them in index order; ForeignInodes'
// mutex is taken alone or under a shard lock, never the other way round. The lock table's
// mutex (locks.mu, fileops.cc) is taken before a shard lock, never under one. No system call
// runs under a shard lock except close() of an entry being dropped and, under a handle
// shard's, the flock(LOCK_NB) of FlockHandle with the record of it. Under locks.mu run the
// lock requests' own calls: F_OFD_SETLK and F_OFD_GETLK (non-blocking), and the close of a
// lock owner's descriptor at a FLUSH; its first open of the file runs with locks.mu released.
#include "state.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>
#include <ctime>
#include <memory>

namespace vfsn {

// States live in fixed slots (id = slot + 1). A slot is emptied only when the daemon is done
// with the state and no thread uses it any more (stateDestroy).
namespace {
constexpr int kMaxStates = 64;
std::atomic<FsState*> gStates[kMaxStates];
std::mutex gRegistryMu;
}  // namespace

FsState* StateById(int64_t id) {
  if (id < 1 || id > kMaxStates) return nullptr;
  return gStates[id - 1].load(std::memory_order_acquire);
}

FsState* StateArg(const Napi::CallbackInfo& info) {
  int64_t id;
  return ArgInt(info, 0, &id) ? StateById(id) : nullptr;
}

bool ReadFileHandle(int fd, FileHandleBytes* out) {
  out->bytes.resize(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(out->bytes.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mnt;
  if (name_to_handle_at(fd, "", fh, &mnt, AT_EMPTY_PATH) < 0) return false;
  out->bytes.resize(sizeof(file_handle) + fh->handle_bytes);
  return true;
}

std::unique_ptr<FileHandleBytes> FsState::ParkIfOverBudget(int fd, const InodeKey& k) {
  if (OpenInodeFds() < inodeFdBudget || k.mntId != rootKey.mntId || mountFd.load(std::memory_order_acquire) == -2) return nullptr;
  auto h = std::make_unique<FileHandleBytes>();
  if (!ReadFileHandle(fd, h.get())) return nullptr;
  auto* fh = reinterpret_cast<file_handle*>(h->bytes.data());
  if (mountFd.load(std::memory_order_acquire) == -1) {
    std::lock_guard<std::mutex> g(mountMu);
    if (mountFd.load() == -1) {
      // The share's root, opened for reading: open_by_handle_at refuses O_PATH descriptors.
      int m = openat(procFd, std::to_string(rootFd).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      // One trial: without CAP_DAC_READ_SEARCH (or on a file system without handles) every
      // inode keeps its descriptor, as with --inode-file-handles=never.
      int t = m < 0 ? -1 : open_by_handle_at(m, fh, O_PATH_ | O_CLOEXEC);
      if (t < 0) {
        if (m >= 0) close(m);
        mountFd.store(-2, std::memory_order_release);
        return nullptr;
      }
      close(t);
      mountFd.store(m, std::memory_order_release);
    }
  }
  return mountFd.load(std::memory_order_acquire) >= 0 ? std::move(h) : nullptr;
}

bool FsState::SameFileHandle(int fd, const FileHandleBytes& h) {
  FileHandleBytes now;
  return !ReadFileHandle(fd, &now) || now.bytes == h.bytes;
}

int FsState::Unpark(const FileHandleBytes& h) {
  auto* fh = reinterpret_cast<file_handle*>(const_cast<unsigned char*>(h.bytes.data()));
  int fd;
  do {
    fd = open_by_handle_at(mountFd.load(std::memory_order_acquire), fh, O_PATH_ | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}

bool IdTranslation::ToHost(uint32_t id, uint32_t* out) const {
  *out = id;
  for (const IdRange& r : toHost) {
    if (id < r.from || id - r.from >= r.count) continue;
    if (r.kind == IdRange::kForbid) return false;
    *out = r.kind == IdRange::kSquash ? r.to : r.to + (id - r.from);
    return true;
  }
  return true;
}

uint32_t IdTranslation::ToGuest(uint32_t id) const {
  for (const IdRange& r : toGuest)
    if (id >= r.from && id - r.from < r.count) return r.kind == IdRange::kSquash ? r.to : r.to + (id - r.from);
  return id;
}

void OwnerToGuest(const FsState* s, double* st) {
  if (!s->uids.toGuest.empty()) st[6] = s->uids.ToGuest(static_cast<uint32_t>(st[6]));
  if (!s->gids.toGuest.empty()) st[7] = s->gids.ToGuest(static_cast<uint32_t>(st[7]));
}

int64_t RegisterInode(FsState* s, int fd, double* out) {
  int r = StatxInto(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out);
  if (r < 0) {
    close(fd);
    return r;
  }
  OwnerToGuest(s, out);
  return static_cast<int64_t>(s->Ref(fd, KeyOfStatx(out), static_cast<uint32_t>(out[4]) & S_IFMT));
}

int StatxNode(FsState* s, uint64_t nodeid, double* out) {
  InodePin p(s, nodeid);
  if (p.fd() < 0) return p.fd();
  int r = StatxInto(p.fd(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out);
  if (r == 0) OwnerToGuest(s, out);
  return r;
}

int AccessNode(FsState* s, uint64_t nodeid, uint32_t uid, uint32_t gid, uint32_t mask, bool readOnly) {
  double st[kStatxFields];
  int r = StatxNode(s, nodeid, st);
  if (r < 0) return r;
  if ((mask & W_OK) && readOnly) return -EROFS;
  if (mask == 0) return 0;
  uint32_t mode = static_cast<uint32_t>(st[kModeField]);
  if (uid == 0) {
    // root may read and write anything; it may execute only what someone may execute.
    return (mask & X_OK) && (mode & S_IFMT) != S_IFDIR && (mode & 0111) == 0 ? -EACCES : 0;
  }
  // The owner as the guest sees it (OwnerToGuest), against the caller's ids.
  uint32_t bits = static_cast<double>(uid) == st[kUidField]   ? (mode >> 6) & 7
                  : static_cast<double>(gid) == st[kGidField] ? (mode >> 3) & 7
                                                              : mode & 7;
  uint32_t want = mask & (R_OK | W_OK | X_OK);
  return (bits & want) == want ? 0 : -EACCES;
}

int64_t LookupName(FsState* s, uint64_t parent, const char* name, double* out) {
  if (name[0] == '\0' || strchr(name, '/')) return -EINVAL;
  InodePin p(s, parent);
  if (p.fd() < 0) return p.fd();
  int fd;
  do {
    fd = openat(p.fd(), name, O_PATH_ | O_NOFOLLOW | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  int64_t nodeid = RegisterInode(s, fd, out);
  if (nodeid > 0) {
    double parentSt[kStatxFields];
    parentSt[0] = -1;
    MarkSubmount(s, p.fd(), name, out, parentSt);
  }
  return nodeid;
}

void MarkSubmount(FsState* s, int parentFd, const char* name, double* st, double* parentSt) {
  if (!(s->sessionFlags.load(std::memory_order_relaxed) & kSessionSubmounts)) return;
  if ((static_cast<uint32_t>(st[4]) & S_IFMT) != S_IFDIR) return;
  if (IsDotOrDotDot(name, strlen(name))) return;
  if (parentSt[0] < 0 && StatxInto(parentFd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, parentSt) < 0) {
    parentSt[0] = -1;
    return;
  }
  // devMajor, devMinor, mntId
  if (st[1] != parentSt[1] || st[2] != parentSt[2] || st[21] != parentSt[21])
    st[kAttrFlagsField] = static_cast<double>(static_cast<uint32_t>(st[kAttrFlagsField]) | kAttrSubmount);
}

int RemoveHandle(FsState* s, uint64_t fh) {
  uint64_t nodeid;
  {
    HandleShard& sh = s->HandleShardOf(fh);
    std::lock_guard<std::mutex> g(sh.mu);
    auto it = sh.byFh.find(fh);
    if (it == sh.byFh.end() || it->second.released) return -EBADF;
    it->second.released = true;
    nodeid = it->second.nodeid;
    sh.MaybeDrop(it);
  }
  // Locks of the guest's open file description (F_OFD_SETLK) end with it.
  ReleaseLocksVia(s, nodeid, fh);
  return 0;
}

void ForgetInode(FsState* s, uint64_t nodeid, uint64_t n) {
  if (nodeid == kRootId) return;
  InodeShard& sh = s->ShardOf(nodeid);
  std::lock_guard<std::mutex> g(sh.mu);
  auto it = sh.byId.find(nodeid);
  if (it == sh.byId.end()) return;
  it->second.lookups = it->second.lookups > n ? it->second.lookups - n : 0;
  sh.MaybeDrop(it);
}

// A state younger than this may hide a change made in the same timestamp tick.
constexpr double kTimestampSlackMs = 100;

bool UnchangedSinceLastOpen(FsState* s, uint64_t nodeid) {
  double st[kStatxFields];
  if (StatxNode(s, nodeid, st) < 0) return false;
  Inode::OpenState now{st[10], st[15], st[16], st[17], st[18]};
  timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  double ageMs = (static_cast<double>(t.tv_sec) - st[17]) * 1e3 + (static_cast<double>(t.tv_nsec) - st[18]) / 1e6;
  InodeShard& sh = s->ShardOf(nodeid);
  std::lock_guard<std::mutex> g(sh.mu);
  auto it = sh.byId.find(nodeid);
  if (it == sh.byId.end()) return false;
  Inode& n = it->second;
  bool same = n.lastOpen && *n.lastOpen == now;
  // ctime cannot be set from user space, so a change made and undone still counts.
  if (ageMs <= kTimestampSlackMs)
    n.lastOpen.reset();
  else if (n.lastOpen)
    *n.lastOpen = now;
  else
    n.lastOpen = std::make_unique<Inode::OpenState>(now);
  return same;
}

namespace {

bool KeyArgs(const Napi::CallbackInfo& info, size_t i, InodeKey* k) {
  int64_t a, b;
  uint64_t ino, mnt;
  if (!ArgInt(info, i, &a) || !ArgInt(info, i + 1, &b) || !ArgU64(info, i + 2, &ino) || !ArgU64(info, i + 3, &mnt))
    return false;
  *k = InodeKey{static_cast<uint32_t>(a), static_cast<uint32_t>(b), ino, mnt};
  return true;
}

// ---- life cycle ----------------------------------------------------------------------

Napi::Value StateCreate(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> g(gRegistryMu);
  for (int i = 0; i < kMaxStates; i++) {
    if (gStates[i].load()) continue;
    auto* s = new FsState();
    s->procFd = open("/proc/self/fd", O_PATH_ | O_DIRECTORY | O_CLOEXEC);
    if (s->procFd < 0) {
      int e = errno;
      delete s;
      return ThrowErrno(info.Env(), e, "open /proc/self/fd");
    }
    gStates[i].store(s, std::memory_order_release);
    return Num(info, i + 1);
  }
  return ThrowErrno(info.Env(), EMFILE, "stateCreate");
}

// stateDestroy(id): the daemon is done with the state; no thread may use it any more.
Napi::Value StateDestroy(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return ThrowType(info.Env(), "stateDestroy(id)");
  std::lock_guard<std::mutex> g(gRegistryMu);
  if (id < 1 || id > kMaxStates) return info.Env().Undefined();
  FsState* s = gStates[id - 1].exchange(nullptr);
  if (s) {
    s->destroyed.store(true, std::memory_order_release);
    ReleaseState(s);
  }
  return info.Env().Undefined();
}

// statesAlive() -> states not yet deleted (a destroyed state lives on while operations
// queued on a pool, or a fast path, hold it).
Napi::Value StatesAlive(const Napi::CallbackInfo& info) { return Num(info, FsState::alive.load()); }

// The ranges of one ID kind from JS: (kind, from, to, count) per range, kind as in
// src/fuse/passthrough/idmap.ts (0 guest, 1 host, 2 squash-guest, 3 squash-host, 4 map,
// 5 forbid-guest).
bool IdRanges(const Napi::Value& v, IdTranslation* t) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array) return false;
  Napi::Float64Array a = v.As<Napi::Float64Array>();
  if (a.ElementLength() % 4 != 0) return false;
  for (size_t i = 0; i < a.ElementLength(); i += 4) {
    int kind = static_cast<int>(a[i]);
    auto from = static_cast<uint32_t>(a[i + 1]), to = static_cast<uint32_t>(a[i + 2]);
    auto count = static_cast<uint64_t>(a[i + 3]);
    switch (kind) {
      case 0: t->toHost.push_back({IdRange::kOneToOne, from, to, count}); break;
      case 1: t->toGuest.push_back({IdRange::kOneToOne, from, to, count}); break;
      case 2: t->toHost.push_back({IdRange::kSquash, from, to, count}); break;
      case 3: t->toGuest.push_back({IdRange::kSquash, from, to, count}); break;
      case 4:
        t->toHost.push_back({IdRange::kOneToOne, from, to, count});
        t->toGuest.push_back({IdRange::kOneToOne, to, from, count});
        break;
      case 5: t->toHost.push_back({IdRange::kForbid, from, 0, count}); break;
      default: return false;
    }
  }
  return true;
}

// stateSetIdMaps(id, uidRanges, gidRanges): the --translate-uid/--translate-gid ranges, as
// Float64Arrays of (kind, from, to, count); before the first request.
Napi::Value StateSetIdMaps(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  IdTranslation uids, gids;
  if (!IdRanges(info[1], &uids) || !IdRanges(info[2], &gids))
    return ThrowType(info.Env(), "stateSetIdMaps(id, uidRanges, gidRanges): Float64Arrays of (kind, from, to, count)");
  s->uids = std::move(uids);
  s->gids = std::move(gids);
  return info.Env().Undefined();
}

// stateClear(id): a new FUSE session (INIT again, DESTROY): every inode but the root and
// every handle go.
Napi::Value StateClear(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  s->Clear();
  return info.Env().Undefined();
}

// stateSession(id[, flags]) -> the session flags (after setting them when given). INIT sets
// them; every thread's OPEN and CREATE read them.
Napi::Value StateSession(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t f;
  if (info.Length() > 1) {
    if (!ArgInt(info, 1, &f)) return ThrowType(info.Env(), "stateSession(id, flags?)");
    s->sessionFlags.store(static_cast<uint32_t>(f), std::memory_order_release);
  }
  return Num(info, s->sessionFlags.load(std::memory_order_acquire));
}

// stateSetInodeFdBudget(id, n): past n open inode descriptors, new inodes are kept as file
// handles (--inode-file-handles); n < 0: never. Before the first request.
Napi::Value StateSetInodeFdBudget(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t n;
  if (!ArgInt(info, 1, &n)) return ThrowType(info.Env(), "stateSetInodeFdBudget(id, n)");
  s->inodeFdBudget = n < 0 ? INT64_MAX : n;
  return info.Env().Undefined();
}

// stateSetLockFdBudget(id, n): at most n lock owners' descriptors open at once (past it a
// lock request that needs another gets ENOLCK); n < 0: no bound. Before the first request.
Napi::Value StateSetLockFdBudget(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t n;
  if (!ArgInt(info, 1, &n)) return ThrowType(info.Env(), "stateSetLockFdBudget(id, n)");
  s->lockFdBudget = n < 0 ? INT64_MAX : n;
  return info.Env().Undefined();
}

// stateSetMappedCapability(id, hostName): the host name --xattrmap gives security.capability
// (FsState::mappedCapabilityXattr); '' for none.
Napi::Value StateSetMappedCapability(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  if (info.Length() < 2 || !info[1].IsString()) return ThrowType(info.Env(), "stateSetMappedCapability(id, name)");
  s->mappedCapabilityXattr = info[1].As<Napi::String>().Utf8Value();
  return info.Env().Undefined();
}

// stateInodeFds(id) -> [inodes kept as file handles, inode descriptors open, inodes ever kept
// as file handles]
Napi::Value StateInodeFds(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  Napi::Array a = Napi::Array::New(info.Env(), 3);
  a.Set(0u, Num(info, static_cast<double>(s->ParkedInodes())));
  a.Set(1u, Num(info, static_cast<double>(s->OpenInodeFds())));
  a.Set(2u, Num(info, static_cast<double>(s->parkedTotal.load())));
  return a;
}

// stateCounts(id) -> [inodes, handles] (detached and released entries still pinned count)
Napi::Value StateCounts(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  double n = 0, h = 0;
  for (InodeShard& sh : s->inodes) {
    std::lock_guard<std::mutex> g(sh.mu);
    n += static_cast<double>(sh.byId.size());
  }
  for (HandleShard& sh : s->handles) {
    std::lock_guard<std::mutex> g(sh.mu);
    h += static_cast<double>(sh.byFh.size());
  }
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, Num(info, n));
  a.Set(1u, Num(info, h));
  return a;
}

// ---- inodes --------------------------------------------------------------------------

// inodeSetRoot(id, fd, devMajor, devMinor, ino, mntId): nodeid 1 is the shared directory.
// Called once, before any request.
Napi::Value InodeSetRoot(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t fd;
  InodeKey k;
  if (!ArgInt(info, 1, &fd) || !KeyArgs(info, 2, &k)) return ThrowType(info.Env(), "inodeSetRoot(id, fd, key...)");
  InodeShard& sh = s->ShardOf(kRootId);
  std::lock_guard<std::mutex> g(sh.mu);
  auto it = sh.byId.find(kRootId);
  if (it != sh.byId.end()) close(it->second.fd);
  sh.byId[kRootId] = Inode{static_cast<int>(fd), k, S_IFDIR, 1, 0, false, {}, {}, {}};
  s->rootFd = static_cast<int>(fd);
  s->rootKey = k;
  s->hasRoot = true;
  return Num(info, kRootId);
}

// inodeRef(id, fd, devMajor, devMinor, ino, mntId) -> nodeid. Takes ownership of fd.
Napi::Value InodeRef(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t fd;
  InodeKey k;
  if (!ArgInt(info, 1, &fd) || !KeyArgs(info, 2, &k)) return ThrowType(info.Env(), "inodeRef(id, fd, key...)");
  struct stat st;
  uint32_t type = fstat(static_cast<int>(fd), &st) == 0 ? (st.st_mode & S_IFMT) : 0;
  return Num(info, static_cast<double>(s->Ref(static_cast<int>(fd), k, type)));
}

// inodeAcquire(id, nodeid) -> pinned O_PATH fd, or -EBADF; pair with inodeRelease.
// For operations that have no fused form below.
Napi::Value InodeAcquire(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return Num(info, -EBADF);
  return Num(info, s->PinInode(nodeid));
}

Napi::Value InodeRelease(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (ArgU64(info, 1, &nodeid)) s->UnpinInode(nodeid);
  return info.Env().Undefined();
}

// inodeForget(id, nodeid, nlookup): the kernel dropped nlookup references (FORGET).
Napi::Value InodeForget(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, n;
  if (ArgU64(info, 1, &nodeid) && ArgU64(info, 2, &n)) ForgetInode(s, nodeid, n);
  return info.Env().Undefined();
}

// inodeLookups(id, nodeid) -> the lookup count, or -1 when the inode is unknown.
Napi::Value InodeLookups(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return Num(info, -1);
  InodeShard& sh = s->ShardOf(nodeid);
  std::lock_guard<std::mutex> g(sh.mu);
  auto it = sh.byId.find(nodeid);
  return Num(info, it == sh.byId.end() ? -1.0 : static_cast<double>(it->second.lookups));
}

// nodeStatx(id, nodeid, out) -> 0 or -errno: the inode's attributes, never following a link.
Napi::Value NodeStatx(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  double* out = ArgStatxOut(info, 2);
  if (!out) return info.Env().Undefined();
  if (!ArgU64(info, 1, &nodeid)) return Num(info, -EBADF);
  return Num(info, StatxNode(s, nodeid, out));
}

// nodeAccess(id, nodeid, uid, gid, mask, readOnly) -> 0 or -errno (AccessNode).
Napi::Value NodeAccess(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  int64_t uid, gid, mask;
  if (!ArgU64(info, 1, &nodeid) || !ArgInt(info, 2, &uid) || !ArgInt(info, 3, &gid) || !ArgInt(info, 4, &mask))
    return ThrowType(info.Env(), "nodeAccess(id, nodeid, uid, gid, mask, readOnly)");
  return Num(info, AccessNode(s, nodeid, static_cast<uint32_t>(uid), static_cast<uint32_t>(gid), static_cast<uint32_t>(mask),
                              info[5].ToBoolean()));
}

// nodeLookup(id, parent, name, out) -> nodeid or -errno (LookupName). The name must be one
// component (checked by the caller; a '/' here is refused too).
Napi::Value NodeLookup(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t parent;
  std::string name;
  double* out = ArgStatxOut(info, 3);
  if (!out || !PathArg(info, 2, &name)) return info.Env().Undefined();
  if (!ArgU64(info, 1, &parent)) return Num(info, -EBADF);
  if (name.find('\0') != std::string::npos) return Num(info, -EINVAL);
  return Num(info, static_cast<double>(LookupName(s, parent, name.c_str(), out)));
}

// nodeOpen(id, nodeid, flags, killSuidgid?) -> fh or -errno (OpenNode).
Napi::Value NodeOpen(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  int64_t flags;
  if (!ArgU64(info, 1, &nodeid) || !ArgInt(info, 2, &flags)) return ThrowType(info.Env(), "nodeOpen(id, nodeid, flags)");
  return Num(info, static_cast<double>(OpenNode(s, nodeid, static_cast<int>(flags), info[3].ToBoolean())));
}

// nodeOpenFile(id, nodeid, writable) -> a descriptor of the regular file nodeid (O_RDWR or
// O_RDONLY), which the caller closes, or -errno: EINVAL for anything but a regular file. For
// the DAX window (src/dax/window.ts), which sends it to the front end to map.
Napi::Value NodeOpenFile(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return ThrowType(info.Env(), "nodeOpenFile(id, nodeid, writable)");
  InodePin p(s, nodeid);
  if (p.fd() < 0) return Num(info, p.fd());
  if (p.type() != S_IFREG) return Num(info, -EINVAL);
  return Num(info, Reopen(s, p.fd(), (info[2].ToBoolean() ? O_RDWR : O_RDONLY) | O_NOCTTY | O_NONBLOCK));
}

// nodeUnchangedSinceLastOpen(id, nodeid) -> boolean (UnchangedSinceLastOpen).
Napi::Value NodeUnchangedSinceLastOpen(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return ThrowType(info.Env(), "nodeUnchangedSinceLastOpen(id, nodeid)");
  return Napi::Boolean::New(info.Env(), UnchangedSinceLastOpen(s, nodeid));
}

// ---- handles -------------------------------------------------------------------------

// handleInsert(id, fd, nodeid) -> fh. Takes ownership of fd.
Napi::Value HandleInsert(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t fd;
  uint64_t nodeid;
  if (!ArgInt(info, 1, &fd) || !ArgU64(info, 2, &nodeid)) return ThrowType(info.Env(), "handleInsert(id, fd, nodeid)");
  return Num(info, static_cast<double>(s->InsertHandle(static_cast<int>(fd), nodeid)));
}

// handleAcquire(id, fh) -> pinned fd, or -EBADF; pair with handleRelease.
Napi::Value HandleAcquire(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return Num(info, -EBADF);
  return Num(info, s->PinHandle(fh));
}

Napi::Value HandleRelease(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (ArgU64(info, 1, &fh)) s->UnpinHandle(fh);
  return info.Env().Undefined();
}

// handleRemove(id, fh) -> 0 or -EBADF: RELEASE. The fd closes once no request pins it.
Napi::Value HandleRemove(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return Num(info, -EBADF);
  return Num(info, RemoveHandle(s, fh));
}

}  // namespace

bool TryTransferNow(FsState* s, uint64_t fh, int64_t pos, std::vector<iovec>& iov, bool write, int* fd, int64_t* moved,
                    int64_t* result, uint64_t* serial) {
  uint8_t io = 0;
  uint64_t nodeid = 0;
  *moved = 0;
  *fd = s->PinHandle(fh, &io, &nodeid);
  if (*fd < 0) {
    *result = *fd;
    return true;
  }
  if (serial) *serial = io & kBuffered ? nodeid : 0;
  if (write) s->DropMappedCapability(*fd);
  uint8_t bit = write ? kNoWaitWrite : kNoWaitRead;
  if (!(io & bit)) return false;
  int r = TransferIovNoWait(*fd, pos, iov, write, moved);
  if (r == 1) {
    s->UnpinHandle(fh);
    *result = *moved;
    return true;
  }
  if (r == -EOPNOTSUPP || r == -EINVAL) s->ClearNoWait(fh, bit);
  return false;
}

namespace {

// handleReadv / handleWritev(id, fh, position, table, pairs, count, killSuidgid?) -> bytes or
// -errno: I/O through an open handle straight between the file and the guest ranges (see
// io.cc); a write with killSuidgid clears setuid/setgid as an unprivileged writer's would.
template <bool kWrite>
Napi::Value HandleRw(const Napi::CallbackInfo& info) {
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
  HandlePin p(s, fh);
  if (p.fd() < 0) return Num(info, p.fd());
  FsetidDropped f(kWrite && info[6].ToBoolean());
  if (f.error()) return Num(info, f.error());
  if (kWrite) s->DropMappedCapability(p.fd());
  return Num(info, static_cast<double>(TransferIov(p.fd(), pos, *iov, kWrite)));
}

}  // namespace

void InitState(Napi::Env env, Napi::Object exports) {
  exports.Set("stateCreate", Napi::Function::New(env, StateCreate));
  exports.Set("stateDestroy", Napi::Function::New(env, StateDestroy));
  exports.Set("stateSetLockFdBudget", Napi::Function::New(env, StateSetLockFdBudget));
  exports.Set("statesAlive", Napi::Function::New(env, StatesAlive));
  exports.Set("stateClear", Napi::Function::New(env, StateClear));
  exports.Set("stateSetIdMaps", Napi::Function::New(env, StateSetIdMaps));
  exports.Set("stateSetInodeFdBudget", Napi::Function::New(env, StateSetInodeFdBudget));
  exports.Set("stateInodeFds", Napi::Function::New(env, StateInodeFds));
  exports.Set("stateSetMappedCapability", Napi::Function::New(env, StateSetMappedCapability));
  exports.Set("stateSession", Napi::Function::New(env, StateSession));
  exports.Set("stateCounts", Napi::Function::New(env, StateCounts));
  exports.Set("inodeSetRoot", Napi::Function::New(env, InodeSetRoot));
  exports.Set("inodeRef", Napi::Function::New(env, InodeRef));
  exports.Set("inodeAcquire", Napi::Function::New(env, InodeAcquire));
  exports.Set("inodeRelease", Napi::Function::New(env, InodeRelease));
  exports.Set("inodeForget", Napi::Function::New(env, InodeForget));
  exports.Set("inodeLookups", Napi::Function::New(env, InodeLookups));
  exports.Set("nodeStatx", Napi::Function::New(env, NodeStatx));
  exports.Set("nodeAccess", Napi::Function::New(env, NodeAccess));
  exports.Set("nodeLookup", Napi::Function::New(env, NodeLookup));
  exports.Set("nodeOpen", Napi::Function::New(env, NodeOpen));
  exports.Set("nodeOpenFile", Napi::Function::New(env, NodeOpenFile));
  exports.Set("nodeUnchangedSinceLastOpen", Napi::Function::New(env, NodeUnchangedSinceLastOpen));
  exports.Set("handleInsert", Napi::Function::New(env, HandleInsert));
  exports.Set("handleAcquire", Napi::Function::New(env, HandleAcquire));
  exports.Set("handleRelease", Napi::Function::New(env, HandleRelease));
  exports.Set("handleRemove", Napi::Function::New(env, HandleRemove));
  exports.Set("handleReadv", Napi::Function::New(env, HandleRw<false>));
  exports.Set("handleWritev", Napi::Function::New(env, HandleRw<true>));
}

}  // namespace vfsn
