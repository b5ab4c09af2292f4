// Shared helpers for the native addon: errno-carrying exceptions and argument checks.
//
// Two error conventions, chosen per function and documented in src/native.ts:
//  - setup calls (mmap, sockets, eventfds) throw an Error shaped like Node's own system
//    errors: {code: 'ENOENT', errno: -2, syscall: 'openat'};
//  - hot-path file-system calls return the result or -errno (the kernel's own convention),
//    so a failed LOOKUP costs no exception.
#pragma once
#include <napi.h>
#include <cerrno>
#include <cstring>
#include <string>
#include <sys/uio.h>
#include <unistd.h>
#include <memory>
#include <vector>

namespace vfsn {

const char* ErrnoCode(int err);

// Throws a Node-style system error (code, errno, syscall) as a pending JS exception.
inline Napi::Value ThrowErrno(Napi::Env env, int err, const char* syscall) {
  std::string msg = std::string(ErrnoCode(err)) + ": " + strerror(err) + ", " + syscall;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, ErrnoCode(err)));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

inline Napi::Value ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Little-endian loads from guest memory or a request's bytes, at any alignment (the
// host is little-endian, as virtio and FUSE-over-virtio are).
inline uint16_t Load16(const uint8_t* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}
inline uint32_t Load32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
inline uint64_t Load64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

inline Napi::Value ThrowRange(Napi::Env env, const char* msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

// Integer argument i as int64 (JS numbers up to 2^53 and BigInts are both accepted).
bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t* out);
bool ArgU64(const Napi::CallbackInfo& info, size_t i, uint64_t* out);

// Appends the iovecs for `npairs` guest ranges (guest-physical address, length), read from
// `pairs`, through memory table `tableId`. A range that crosses regions gives several
// iovecs. Returns 0, EBADF for an unknown table, or EFAULT for a range (or a value) outside
// guest memory. The iovecs stay valid until this thread next translates through a changed
// table (memory.cc keeps a per-thread snapshot of the mappings).
int GuestIovecs(int64_t tableId, const double* pairs, size_t npairs, std::vector<iovec>* iov);
// Copies the first n bytes of src over the ranges of iov in order, as far as they reach.
inline void CopyToIovecs(const std::vector<iovec>& iov, const uint8_t* src, size_t n) {
  size_t done = 0;
  for (const iovec& v : iov) {
    if (done == n) break;
    size_t take = std::min(v.iov_len, n - done);
    memcpy(v.iov_base, src + done, take);
    done += take;
  }
}
// An eventfd's counter read and cleared (a non-blocking fd: nothing happens when it is 0),
// and one added to it: a kick or call consumed, or given.
inline void DrainEventfd(int fd) {
  uint64_t v;
  while (read(fd, &v, 8) < 0 && errno == EINTR) {
  }
}
inline void PokeEventfd(int fd) {
  uint64_t one = 1;
  while (write(fd, &one, 8) < 0 && errno == EINTR) {
  }
}
// Runs the JS function fn with argv from a libuv callback on the function's thread, in the
// async context ctx; an exception it throws is reported as uncaught (events.cc).
void MakeCallback(Napi::Env env, napi_async_context ctx, const Napi::FunctionReference& fn, size_t argc, const napi_value* argv);
// GuestIovecs into this thread's own reused vector (valid until the thread's next call),
// for synchronous transfers: *out points at it. Returns what GuestIovecs returns.
int ThreadGuestIovecs(int64_t tableId, const double* pairs, size_t npairs, std::vector<iovec>** out);
// A reference to this thread's current snapshot of table tableId: whoever holds it keeps the
// mappings GuestIovecs pointed into alive (an I/O finishing on another thread), or nullptr.
std::shared_ptr<const void> KeepGuestMemory(int64_t tableId);

// For code that keeps host pointers into guest memory across calls (the native virtqueue):
// a reference to this thread's current snapshot of table tableId, and the generation it was
// taken at. Pointers found through it stay valid while the reference is held.
bool TakeGuestSnapshot(int64_t tableId, std::shared_ptr<const void>* keep, uint32_t* generation);
// The table's generation now (one atomic load); UINT32_MAX when the table is gone.
uint32_t GuestGeneration(int64_t tableId);

// The memory a request's host iovecs point into, for a request that translates more than
// once and moves its data later (on a pool thread): Take() before the first GuestIovecs,
// Unchanged() after the last. Each GuestIovecs looks at the table afresh, so a table replaced
// by the JS thread in between (SET_MEM_TABLE, ADD_MEM_REG) could leave some iovecs in a
// snapshot that this thread no longer holds, unmapped at the queue's next look at the table;
// when nothing changed, keep holds every mapping they point into.
struct GuestMemoryPin {
  int64_t table = 0;
  uint32_t generation = 0;
  std::shared_ptr<const void> keep;
  bool Take(int64_t tableId) {
    table = tableId;
    return TakeGuestSnapshot(tableId, &keep, &generation);
  }
  bool Unchanged() const { return keep && GuestGeneration(table) == generation; }
};
// The host address of [addr, addr + len) when it lies inside one region of the snapshot,
// addr being a front-end virtual address (byUaddr) or a guest-physical one; else nullptr.
uint8_t* SnapshotPtr(const void* snapshot, uint64_t addr, uint64_t len, bool byUaddr);
// The host address of guest-physical gpa and the bytes from there to its region's end, or 0.
uint64_t SnapshotRun(const void* snapshot, uint64_t gpa, uint8_t** host);
// Copies len bytes between buf and guest memory at gpa (which may span regions); stops at
// the first byte outside guest memory. Returns the bytes copied.
size_t SnapshotCopy(const void* snapshot, uint64_t gpa, uint8_t* buf, uint64_t len, bool toGuest);

// preadv/pwritev (write) of fd at pos (-1: the file position) through iov, looping over
// IOV_MAX batches and short transfers. Returns bytes moved, or -errno if nothing moved.
int64_t TransferIov(int fd, int64_t pos, std::vector<iovec>& iov, bool write);
// The same transfer tried without blocking (preadv2/pwritev2 with RWF_NOWAIT: a read only
// from the page cache, a write only when nothing needs a wait). *moved gets the bytes moved.
// Returns 1 when the transfer is finished (everything moved, or the end of the file), 0 when
// the rest would block, -errno when the attempt failed (-EOPNOTSUPP: the file system does
// not do RWF_NOWAIT). Unless it returns 1, iov holds what is left to move, at pos + *moved.
int TransferIovNoWait(int fd, int64_t pos, std::vector<iovec>& iov, bool write, int64_t* moved);
// The rest of a transfer after a TransferIovNoWait that moved `moved` bytes: TransferIov at
// pos + moved (the file position when pos < 0). Returns all bytes moved, or -errno if none.
int64_t FinishTransfer(int fd, int64_t pos, int64_t moved, std::vector<iovec>& iov, bool write);

// A scope in which the calling thread works without CAP_FSETID in its effective set, when
// drop is true, so that the host kernel clears a file's setuid and setgid bits (and
// security.capability) on a write, truncation or chown, as it does for an unprivileged
// process. The guest asks for this with its KILL_SUIDGID flags when the process behind a
// request lacks CAP_FSETID (fsetid.cc). Capabilities are per thread: nothing else changes.
class FsetidDropped {
 public:
  explicit FsetidDropped(bool drop);
  ~FsetidDropped();
  FsetidDropped(const FsetidDropped&) = delete;
  FsetidDropped& operator=(const FsetidDropped&) = delete;
  // 0, or -errno when the capability could not be dropped (the operation must not go on).
  int error() const { return error_; }

 private:
  bool restore_ = false;
  int error_ = 0;
  // The thread's capability sets as capget gave them (two __user_cap_data_struct: effective,
  // permitted, inheritable each), put back as they were when the scope ends.
  uint32_t saved_[6] = {};
};

// A scope in which the calling thread's umask is `mask`, when apply is true: with POSIX ACLs
// the guest sends a new file's mode unmasked with its caller's umask (FUSE_DONT_MASK), and
// the host kernel must apply that umask only when the parent has no default ACL, which it
// does itself when creating under this umask. The first use in a thread gives the thread an
// fs_struct of its own (unshare CLONE_FS), so other threads keep the process's umask, 0
// (umask.cc).
class ThreadUmask {
 public:
  ThreadUmask(bool apply, uint32_t mask);
  ~ThreadUmask();
  ThreadUmask(const ThreadUmask&) = delete;
  ThreadUmask& operator=(const ThreadUmask&) = delete;
  // 0, or -errno when the thread could not get a umask of its own (the creation must not go on).
  int error() const { return error_; }

 private:
  bool restore_ = false;
  int error_ = 0;
};

// Whether the n-byte name is "." or "..".
inline bool IsDotOrDotDot(const char* name, size_t n) { return name[0] == '.' && (n == 1 || (n == 2 && name[1] == '.')); }

// Reads info[i] as a Float64Array of (gpa, len) pairs and info[i+1] as how many pairs of
// it to use; false (with a pending exception) when they do not fit.
bool ArgPairs(const Napi::CallbackInfo& info, size_t i, const double** pairs, size_t* npairs);

// statx with the fields the FUSE attributes need, written into o[0..kStatxFields) in the
// order of StatxField (src/native.ts), the last being fuse_attr.flags (0 here; see
// MarkSubmount in state.h). Returns 0 or -errno.
// The inode number is also there exactly, as two 32-bit halves (kInoHighField, kInoLowField):
// as a double (field 3) it is rounded past 2^53, where overlayfs (xino), network file systems
// and others put theirs, and two files would share one key (ExactIno).
constexpr size_t kStatxFields = 25;
constexpr size_t kModeField = 4, kUidField = 6, kGidField = 7, kAttrFlagsField = 22, kInoHighField = 23, kInoLowField = 24;
inline uint64_t ExactIno(const double* st) {
  return (static_cast<uint64_t>(st[kInoHighField]) << 32) | static_cast<uint64_t>(st[kInoLowField]);
}
int StatxInto(int dirfd, const char* path, int flags, double* o);
// info[i] as a Float64Array of at least kStatxFields, or nullptr with a pending exception.
double* ArgStatxOut(const Napi::CallbackInfo& info, size_t i);
// info[i] as a path (string or Buffer); false with a pending exception.
bool PathArg(const Napi::CallbackInfo& info, size_t i, std::string* out);

// O_PATH, spelled out: the flag's value is the kernel's ABI, whatever the C library headers
// in use declare.
constexpr int O_PATH_ = 010000000;

// Open flags a guest's OPEN or CREATE may not carry (EINVAL): O_PATH would make the
// "opened" file a path descriptor (and drop O_CREAT and O_EXCL), __O_TMPFILE an unnamed file
// made as the daemon rather than the caller (FUSE_TMPFILE is the request for that). Linux's
// virtio-fs never sends either.
constexpr int kRefusedOpenFlags = O_PATH_ | 020000000 /* __O_TMPFILE */;

// Memory tables (one per connection) live in this many slots, ids 1..kMaxMemTables
// (memory.cc); per-table state elsewhere (dirtylog.cc) is sized by it too.
constexpr int kMaxMemTables = 64;

void InitMemory(Napi::Env env, Napi::Object exports);
// Registers (and forgets) a mapping of front-end memory, whose pages past a file the front
// end shrank read as zeros instead of killing the process with SIGBUS (memory.cc).
// GuardMapping is false when every slot is taken (the caller then refuses the mapping).
bool GuardMapping(void* base, size_t len);
void UnguardMapping(void* base);
void InitSocket(Napi::Env env, Napi::Object exports);
void InitEvents(Napi::Env env, Napi::Object exports);
void InitRing(Napi::Env env, Napi::Object exports);
void InitVring(Napi::Env env, Napi::Object exports);
void InitIo(Napi::Env env, Napi::Object exports);
void InitFsOps(Napi::Env env, Napi::Object exports);
void InitState(Napi::Env env, Napi::Object exports);
void InitNodeOps(Napi::Env env, Napi::Object exports);
void InitFileOps(Napi::Env env, Napi::Object exports);
void InitAsyncOps(Napi::Env env, Napi::Object exports);
void InitIoPool(Napi::Env env, Napi::Object exports);
void InitFastPath(Napi::Env env, Napi::Object exports);
void InitKickThread(Napi::Env env, Napi::Object exports);
void InitSandbox(Napi::Env env, Napi::Object exports);
void InitSeccomp(Napi::Env env, Napi::Object exports);
void InitDirtyLog(Napi::Env env, Napi::Object exports);
void InitMigration(Napi::Env env, Napi::Object exports);

}  // namespace vfsn
