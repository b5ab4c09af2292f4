// File-system state shared by every queue worker: the inode table and the handle table.
//
// Node workers share no heap, so these tables live here, in the process, behind a mutex,
// and every worker reaches the same table through its numeric id. The tables own the host
// file descriptors they hold. A worker that uses a descriptor pins it first (acquire) and
// unpins it after (release): a FORGET or RELEASE arriving on another queue meanwhile only
// marks the entry, and the descriptor is closed by whoever drops the last pin. So a
// descriptor number is never closed and reused under a request that is still using it.
//
// Inode entries: nodeid -> {fd (O_PATH), key (dev, ino, mount id), lookups, pins}.
//   lookups counts the kernel's references (each LOOKUP/CREATE/MKNOD/... reply adds one,
//   FORGET n subtracts n); the entry goes when lookups and pins are both zero. The root
//   (nodeid 1) is never forgotten. A key maps to one nodeid, so hard links are one inode.
// Handle entries: fh -> {fd, nodeid, pins}; RELEASE removes, the close waits for pins.
#include "common.h"

#include <unistd.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>

namespace vfsn {
namespace {

constexpr uint64_t kRootId = 1;

struct InodeKey {
  uint32_t devMajor, devMinor;
  uint64_t ino, mntId;
  bool operator<(const InodeKey& o) const {
    return std::tie(devMajor, devMinor, ino, mntId) < std::tie(o.devMajor, o.devMinor, o.ino, o.mntId);
  }
};

struct Inode {
  int fd;
  InodeKey key;
  uint64_t lookups;
  uint32_t pins;
};

struct Handle {
  int fd;
  uint64_t nodeid;
  uint32_t pins;
  bool released;
};

struct FsState {
  std::mutex mu;
  std::unordered_map<uint64_t, Inode> inodes;
  std::map<InodeKey, uint64_t> byKey;
  std::unordered_map<uint64_t, Handle> handles;
  uint64_t nextNode = 2, nextHandle = 1;

  // Drops the inode when nothing refers to it any more. Called with mu held.
  void MaybeDropInode(std::unordered_map<uint64_t, Inode>::iterator it) {
    Inode& n = it->second;
    if (n.lookups > 0 || n.pins > 0 || it->first == kRootId) return;
    close(n.fd);
    byKey.erase(n.key);
    inodes.erase(it);
  }

  void Clear() {
    for (auto& kv : inodes) close(kv.second.fd);
    for (auto& kv : handles) close(kv.second.fd);
    inodes.clear();
    byKey.clear();
    handles.clear();
  }

  ~FsState() { Clear(); }
};

std::mutex gMu;
std::unordered_map<int64_t, std::shared_ptr<FsState>> gStates;
int64_t gNextState = 1;

std::shared_ptr<FsState> Find(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return nullptr;
  std::lock_guard<std::mutex> g(gMu);
  auto it = gStates.find(id);
  return it == gStates.end() ? nullptr : it->second;
}

#define STATE_OR_THROW(s)                                                  \
  auto s = Find(info);                                                     \
  if (!s) return ThrowType(info.Env(), "unknown file-system state id");

Napi::Value StateCreate(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> g(gMu);
  int64_t id = gNextState++;
  gStates[id] = std::make_shared<FsState>();
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

Napi::Value StateDestroy(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return ThrowType(info.Env(), "stateDestroy(id)");
  std::shared_ptr<FsState> s;
  {
    std::lock_guard<std::mutex> g(gMu);
    auto it = gStates.find(id);
    if (it == gStates.end()) return info.Env().Undefined();
    s = it->second;
    gStates.erase(it);
  }
  return info.Env().Undefined();
}

// stateClear(id): a new FUSE session (INIT again, DESTROY): every inode and handle goes.
Napi::Value StateClear(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  std::lock_guard<std::mutex> g(s->mu);
  s->Clear();
  s->nextNode = 2;
  return info.Env().Undefined();
}

bool KeyArgs(const Napi::CallbackInfo& info, size_t i, InodeKey* k) {
  int64_t a, b;
  uint64_t ino, mnt;
  if (!ArgInt(info, i, &a) || !ArgInt(info, i + 1, &b) || !ArgU64(info, i + 2, &ino) || !ArgU64(info, i + 3, &mnt))
    return false;
  *k = InodeKey{static_cast<uint32_t>(a), static_cast<uint32_t>(b), ino, mnt};
  return true;
}

// inodeSetRoot(id, fd, devMajor, devMinor, ino, mntId): nodeid 1 is the shared directory.
Napi::Value InodeSetRoot(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t fd;
  InodeKey k;
  if (!ArgInt(info, 1, &fd) || !KeyArgs(info, 2, &k)) return ThrowType(info.Env(), "inodeSetRoot(id, fd, key...)");
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->inodes.find(kRootId);
  if (it != s->inodes.end()) {
    close(it->second.fd);
    s->byKey.erase(it->second.key);
  }
  s->inodes[kRootId] = Inode{static_cast<int>(fd), k, 1, 0};
  s->byKey[k] = kRootId;
  return Napi::Number::New(info.Env(), kRootId);
}

// inodeRef(id, fd, devMajor, devMinor, ino, mntId) -> nodeid.
// Takes ownership of fd. A known key gains one lookup and the new fd is closed; an unknown
// key becomes a new inode with one lookup.
Napi::Value InodeRef(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t fd;
  InodeKey k;
  if (!ArgInt(info, 1, &fd) || !KeyArgs(info, 2, &k)) return ThrowType(info.Env(), "inodeRef(id, fd, key...)");
  std::lock_guard<std::mutex> g(s->mu);
  auto kit = s->byKey.find(k);
  if (kit != s->byKey.end()) {
    Inode& n = s->inodes[kit->second];
    n.lookups++;
    close(static_cast<int>(fd));
    return Napi::Number::New(info.Env(), static_cast<double>(kit->second));
  }
  uint64_t id = s->nextNode++;
  s->inodes[id] = Inode{static_cast<int>(fd), k, 1, 0};
  s->byKey[k] = id;
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

// inodeAcquire(id, nodeid) -> pinned O_PATH fd, or -EBADF for an unknown nodeid.
Napi::Value InodeAcquire(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return Napi::Number::New(info.Env(), -EBADF);
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->inodes.find(nodeid);
  if (it == s->inodes.end()) return Napi::Number::New(info.Env(), -EBADF);
  it->second.pins++;
  return Napi::Number::New(info.Env(), it->second.fd);
}

// inodeRelease(id, nodeid): drops a pin taken by inodeAcquire.
Napi::Value InodeRelease(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return info.Env().Undefined();
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->inodes.find(nodeid);
  if (it == s->inodes.end() || it->second.pins == 0) return info.Env().Undefined();
  it->second.pins--;
  s->MaybeDropInode(it);
  return info.Env().Undefined();
}

// inodeForget(id, nodeid, nlookup): the kernel dropped nlookup references (FORGET).
Napi::Value InodeForget(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid, n;
  if (!ArgU64(info, 1, &nodeid) || !ArgU64(info, 2, &n)) return info.Env().Undefined();
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->inodes.find(nodeid);
  if (it == s->inodes.end() || nodeid == kRootId) return info.Env().Undefined();
  it->second.lookups = it->second.lookups > n ? it->second.lookups - n : 0;
  s->MaybeDropInode(it);
  return info.Env().Undefined();
}

// inodeLookups(id, nodeid) -> the lookup count, or -1 when the inode is unknown.
Napi::Value InodeLookups(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t nodeid;
  if (!ArgU64(info, 1, &nodeid)) return Napi::Number::New(info.Env(), -1);
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->inodes.find(nodeid);
  return Napi::Number::New(info.Env(), it == s->inodes.end() ? -1.0 : static_cast<double>(it->second.lookups));
}

// stateCounts(id) -> [inodes, handles]
Napi::Value StateCounts(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  std::lock_guard<std::mutex> g(s->mu);
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(s->inodes.size())));
  a.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(s->handles.size())));
  return a;
}

// handleInsert(id, fd, nodeid) -> fh. Takes ownership of fd.
Napi::Value HandleInsert(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  int64_t fd;
  uint64_t nodeid;
  if (!ArgInt(info, 1, &fd) || !ArgU64(info, 2, &nodeid)) return ThrowType(info.Env(), "handleInsert(id, fd, nodeid)");
  std::lock_guard<std::mutex> g(s->mu);
  uint64_t fh = s->nextHandle++;
  s->handles[fh] = Handle{static_cast<int>(fd), nodeid, 0, false};
  return Napi::Number::New(info.Env(), static_cast<double>(fh));
}

// handleAcquire(id, fh) -> pinned fd, or -EBADF for an unknown or released handle.
Napi::Value HandleAcquire(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return Napi::Number::New(info.Env(), -EBADF);
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->handles.find(fh);
  if (it == s->handles.end() || it->second.released) return Napi::Number::New(info.Env(), -EBADF);
  it->second.pins++;
  return Napi::Number::New(info.Env(), it->second.fd);
}

void DropHandleIfDone(FsState* s, std::unordered_map<uint64_t, Handle>::iterator it) {
  if (!it->second.released || it->second.pins > 0) return;
  close(it->second.fd);
  s->handles.erase(it);
}

// handleRelease(id, fh): drops a pin taken by handleAcquire.
Napi::Value HandleRelease(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return info.Env().Undefined();
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->handles.find(fh);
  if (it == s->handles.end() || it->second.pins == 0) return info.Env().Undefined();
  it->second.pins--;
  DropHandleIfDone(s.get(), it);
  return info.Env().Undefined();
}

// handleRemove(id, fh) -> 0 or -EBADF: RELEASE. The fd closes once no request pins it.
Napi::Value HandleRemove(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh;
  if (!ArgU64(info, 1, &fh)) return Napi::Number::New(info.Env(), -EBADF);
  std::lock_guard<std::mutex> g(s->mu);
  auto it = s->handles.find(fh);
  if (it == s->handles.end() || it->second.released) return Napi::Number::New(info.Env(), -EBADF);
  it->second.released = true;
  DropHandleIfDone(s.get(), it);
  return Napi::Number::New(info.Env(), 0);
}

}  // namespace

void InitState(Napi::Env env, Napi::Object exports) {
  exports.Set("stateCreate", Napi::Function::New(env, StateCreate));
  exports.Set("stateDestroy", Napi::Function::New(env, StateDestroy));
  exports.Set("stateClear", Napi::Function::New(env, StateClear));
  exports.Set("stateCounts", Napi::Function::New(env, StateCounts));
  exports.Set("inodeSetRoot", Napi::Function::New(env, InodeSetRoot));
  exports.Set("inodeRef", Napi::Function::New(env, InodeRef));
  exports.Set("inodeAcquire", Napi::Function::New(env, InodeAcquire));
  exports.Set("inodeRelease", Napi::Function::New(env, InodeRelease));
  exports.Set("inodeForget", Napi::Function::New(env, InodeForget));
  exports.Set("inodeLookups", Napi::Function::New(env, InodeLookups));
  exports.Set("handleInsert", Napi::Function::New(env, HandleInsert));
  exports.Set("handleAcquire", Napi::Function::New(env, HandleAcquire));
  exports.Set("handleRelease", Napi::Function::New(env, HandleRelease));
  exports.Set("handleRemove", Napi::Function::New(env, HandleRemove));
}

}  // namespace vfsn
