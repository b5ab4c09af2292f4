// The I/O pool (--thread-pool-size N > 0): N threads that run a queue's READ, WRITE and FSYNC
// requests when they might block, and complete them themselves: the FUSE reply header goes
// into guest memory, the chain onto the used ring and, when the driver asks, a signal to its
// call eventfd (usedring.h), all from the pool thread. A request so costs one hop, to the
// pool, as in the Rust virtiofsd; no Promise, no hop back to the queue's JS thread.
//
// The queue's thread prepares everything first (handleReadvQueued and friends): it pins the
// handle (state.h), translates the data and reply-header ranges into iovecs from its
// snapshot of guest memory and holds that snapshot (memory.cc), so the pool thread touches
// only memory that stays mapped and a descriptor that stays open. A READ or WRITE is first
// tried there without blocking (RWF_NOWAIT, io.cc); when that finishes it, the caller replies
// as for any other request and the pool is not involved.
//
// The queue counts the requests out on the pool (UsedRing::pending) so that stopping it
// waits for them. Threads start on demand up to the size and then stay, waiting on a
// condition variable. A thread that finishes a request takes the next one queued without
// sleeping, and at most one thread is being woken at a time: on this kind of host a wake-up
// costs more than a 4 KiB write, so a burst of requests that a running thread can serve
// does not wake sixteen. Buffered writes to one file go one after another on the thread
// that is writing it (the kernel would take the file's inode lock for each in turn anyway):
// a burst of sixteen writes to one file neither wakes sixteen threads nor has fifteen of them
// wait on that lock.
#include "iopool.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <thread>

namespace vfsn {
namespace {

enum class IoKind { kRead, kWrite, kFsync, kFdatasync };

struct IoJob {
  // A job queued holds the state (Submit): the daemon, or a test, may destroy it meanwhile.
  ~IoJob() { ReleaseState(state); }

  IoKind kind;
  FsState* state = nullptr;
  uint64_t fh;
  int fd;  // pinned
  int64_t pos;
  int64_t moved;  // bytes already moved on the queue's thread
  std::vector<iovec> data;
  std::vector<iovec> header;  // where the reply's header (and fuse_write_out) go
  std::shared_ptr<const void> keep;  // the guest memory data and header point into
  std::shared_ptr<UsedRing> ring;
  uint32_t head;
  uint64_t unique;
  uint64_t serial = 0;  // a buffered WRITE's inode: one such write per inode at a time
  bool killSuidgid = false;  // a WRITE that clears setuid/setgid (FsetidDropped)

  bool Serialized() const { return serial != 0; }

  // The transfer or sync, and the reply written into guest memory: the reply's length. The
  // chain is not on the used ring yet.
  uint32_t Execute() {
    int64_t r;
    switch (kind) {
      case IoKind::kRead:
      case IoKind::kWrite: {
        FsetidDropped f(killSuidgid);
        r = f.error() ? f.error() : FinishTransfer(fd, pos, moved, data, kind == IoKind::kWrite);
        break;
      }
      default:
        r = (kind == IoKind::kFdatasync ? fdatasync(fd) : fsync(fd)) < 0 ? -errno : 0;
    }
    state->UnpinHandle(fh);
    return Reply(r);
  }

  // Writes the reply for result r into guest memory; returns its length.
  uint32_t Reply(int64_t r) {
    ReplyBody body = kind == IoKind::kRead ? ReplyBody::kData : kind == IoKind::kWrite ? ReplyBody::kWriteOut : ReplyBody::kNone;
    return WriteFuseReply(header, body, unique, r);
  }
};

class IoPool {
 public:
  void SetSize(size_t n) {
    std::lock_guard<std::mutex> g(mu_);
    size_ = n;
  }

  void Submit(IoJob* job) {
    std::unique_lock<std::mutex> g(mu_);
    queue_.push_back(job);
    // A write to a file being written waits for the thread writing it.
    if (job->Serialized() && WritingLocked(job)) return;
    if (WakeOneLocked()) {
      g.unlock();
      cv_.notify_one();
    }
  }

 private:
  // With mu_ held, work queued: makes sure one more thread is on its way to it, unless one
  // already is (a woken thread that takes a request wakes the next if more are queued, so a
  // burst wakes threads one by one, only as long as requests wait). True when the caller
  // must notify cv_ (after unlocking).
  bool WakeOneLocked() {
    if (waking_ > 0) return false;
    if (idle_ > 0) {
      waking_++;
      return true;
    }
    if (threads_ < std::max<size_t>(size_, 1)) {
      threads_++;
      waking_++;
      std::thread(&IoPool::Work, this).detach();
    }
    return false;
  }

  using FileKey = std::pair<const FsState*, uint64_t>;
  static FileKey KeyOf(const IoJob* job) { return {job->state, job->serial}; }

  // With mu_ held: whether another thread is running a serialized write to job's inode.
  bool WritingLocked(const IoJob* job) const {
    return std::find(writing_.begin(), writing_.end(), KeyOf(job)) != writing_.end();
  }

  // With mu_ held: the first queued job a thread may take now, or queue_.end().
  std::deque<IoJob*>::iterator NextLocked() {
    for (auto it = queue_.begin(); it != queue_.end(); ++it)
      if (!(*it)->Serialized() || !WritingLocked(*it)) return it;
    return queue_.end();
  }

  void Work() {
    std::unique_lock<std::mutex> g(mu_);
    if (waking_ > 0) waking_--;  // this thread was started for queued work
    for (;;) {
      auto next = NextLocked();
      while (next == queue_.end()) {
        idle_++;
        cv_.wait(g, [this] { return waking_ > 0; });
        waking_--;
        idle_--;
        next = NextLocked();
      }
      IoJob* job = *next;
      queue_.erase(next);
      bool serialized = job->Serialized();
      FileKey key = KeyOf(job);
      std::vector<IoJob*> batch{job};
      if (serialized) {
        writing_.push_back(key);
        // The file's next writes, queued behind this one for the same ring, would run on
        // this thread one by one anyway: run them now, in order, and put them on the used
        // ring together (one publish, at most one interrupt, instead of one each).
        for (auto it = queue_.begin(); it != queue_.end() && batch.size() < kMaxBatch;) {
          if ((*it)->Serialized() && KeyOf(*it) == key && (*it)->ring == job->ring) {
            batch.push_back(*it);
            it = queue_.erase(it);
          } else {
            ++it;
          }
        }
      }
      bool notify = NextLocked() != queue_.end() && WakeOneLocked();
      g.unlock();
      if (notify) cv_.notify_one();
      std::shared_ptr<UsedRing> ring = job->ring;
      if (batch.size() == 1) {
        ring->Complete(job->head, job->Execute());
      } else {
        std::vector<std::pair<uint32_t, uint32_t>> done;
        done.reserve(batch.size());
        for (IoJob* j : batch) done.emplace_back(j->head, j->Execute());
        ring->CompleteMany(done);
      }
      // Last: once pending drops to 0 the queue may stop and its state go.
      ring->pending.fetch_sub(static_cast<uint32_t>(batch.size()), std::memory_order_acq_rel);
      for (IoJob* j : batch) delete j;  // unlocked: dropping its snapshot may unmap guest memory
      g.lock();
      // This thread takes the file's next write, if one is queued, on its next turn.
      if (serialized) writing_.erase(std::find(writing_.begin(), writing_.end(), key));
    }
  }

  // The most of one file's queued writes a thread runs before it puts them on the ring.
  static constexpr size_t kMaxBatch = 16;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<IoJob*> queue_;
  std::vector<FileKey> writing_;  // the files whose serialized writes are being run
  // The most threads, those started, those waiting for work, and those woken or started
  // that have not yet looked at the queue.
  size_t size_ = 0, threads_ = 0, idle_ = 0, waking_ = 0;
};

// Never destroyed: detached pool threads may still wait on it while the process exits.
IoPool& Pool() {
  static IoPool* pool = new IoPool();
  return *pool;
}

}  // namespace

uint32_t WriteFuseReply(const std::vector<iovec>& header, ReplyBody body, uint64_t unique, int64_t r) {
  // fuse_out_header and fuse_write_out (include/uapi/linux/fuse.h)
  constexpr uint32_t kOutHeaderSize = 16, kWriteOutSize = 8;
  uint8_t buf[kOutHeaderSize + kWriteOutSize] = {};
  uint32_t len = kOutHeaderSize;
  int32_t error = 0;
  if (r < 0) {
    error = static_cast<int32_t>(r);
  } else if (body == ReplyBody::kData) {
    len += static_cast<uint32_t>(r);
  } else if (body == ReplyBody::kWriteOut) {
    uint32_t size = static_cast<uint32_t>(r);
    memcpy(buf + kOutHeaderSize, &size, 4);
    len += kWriteOutSize;
  }
  memcpy(buf, &len, 4);
  memcpy(buf + 4, &error, 4);
  memcpy(buf + 8, &unique, 8);
  size_t want = error == 0 && body == ReplyBody::kWriteOut ? sizeof buf : kOutHeaderSize;
  // A reply buffer too small for the reply, as the JS server treats it: EINVAL when the
  // header fits, else nothing written (an error the guest left no room for).
  size_t room = 0;
  for (const iovec& v : header) room += v.iov_len;
  if (room < want) {
    if (room < kOutHeaderSize) return 0;
    len = kOutHeaderSize;
    error = -EINVAL;
    memcpy(buf, &len, 4);
    memcpy(buf + 4, &error, 4);
    want = kOutHeaderSize;
  }
  CopyToIovecs(header, buf, want);
  return len;
}

namespace {

// Hands job (its handle pinned, its kind and transfer set) to the pool, with where its reply
// goes: the ring's count of requests out on the pool grows until the pool completes it.
void Submit(std::unique_ptr<IoJob> job, FsState* s, uint64_t fh, std::vector<iovec>&& header, std::shared_ptr<const void> memory,
            std::shared_ptr<UsedRing> ring, uint32_t head, uint64_t unique) {
  HoldState(s);
  job->state = s;
  job->fh = fh;
  job->header = std::move(header);
  job->keep = std::move(memory);
  job->ring = std::move(ring);
  job->head = head;
  job->unique = unique;
  job->ring->pending.fetch_add(1, std::memory_order_acq_rel);
  Pool().Submit(job.release());
}

}  // namespace

bool TransferOrQueue(FsState* s, uint64_t fh, int64_t pos, std::vector<iovec>& data, std::vector<iovec>&& header, bool write,
                     bool killSuidgid, std::shared_ptr<const void> memory, std::shared_ptr<UsedRing> ring, uint32_t head,
                     uint64_t unique, int64_t* result) {
  auto job = std::make_unique<IoJob>();
  {
    FsetidDropped f(killSuidgid);
    if (f.error()) {
      *result = f.error();
      return true;
    }
    if (TryTransferNow(s, fh, pos, data, write, &job->fd, &job->moved, result, write ? &job->serial : nullptr)) return true;
  }
  job->killSuidgid = killSuidgid;
  job->kind = write ? IoKind::kWrite : IoKind::kRead;
  job->pos = pos;
  job->data = data;
  Submit(std::move(job), s, fh, std::move(header), std::move(memory), std::move(ring), head, unique);
  return false;
}

bool SyncOrQueue(FsState* s, uint64_t fh, bool datasync, std::vector<iovec>&& header, std::shared_ptr<const void> memory,
                 std::shared_ptr<UsedRing> ring, uint32_t head, uint64_t unique, int64_t* result) {
  auto job = std::make_unique<IoJob>();
  job->fd = s->PinHandle(fh);
  if (job->fd < 0) {
    *result = job->fd;
    return true;
  }
  job->kind = datasync ? IoKind::kFdatasync : IoKind::kFsync;
  job->pos = job->moved = 0;
  Submit(std::move(job), s, fh, std::move(header), std::move(memory), std::move(ring), head, unique);
  return false;
}

namespace {

// The arguments every queued call shares: (..., ring, head, unique) at info[i..i+2].
bool ArgCompletion(const Napi::CallbackInfo& info, size_t i, std::shared_ptr<UsedRing>* ring, uint32_t* head, uint64_t* unique) {
  int64_t h;
  if (!ArgInt(info, i + 1, &h) || h < 0 || !ArgU64(info, i + 2, unique)) return false;
  *head = static_cast<uint32_t>(h);
  *ring = UsedRingOf(info[i]);
  return *ring != nullptr;
}

// handleReadvQueued / handleWritevQueued(id, fh, position, table, pairs, count, headerCount,
//   ring, head, unique, killSuidgid?) -> bytes or -errno when finished at once (the caller
//   replies), or undefined: the pool replies. pairs holds count (gpa, len) pairs: the data's,
//   then the headerCount of the reply header's.
template <bool kWrite>
Napi::Value HandleRwQueued(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh, unique;
  int64_t pos, table, hcount;
  std::shared_ptr<UsedRing> ring;
  uint32_t head;
  const double* pairs;
  size_t n;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 2, &pos) || !ArgInt(info, 3, &table) || !ArgInt(info, 6, &hcount) ||
      !ArgCompletion(info, 7, &ring, &head, &unique))
    return ThrowType(info.Env(), "(id, fh, position, table, pairs, count, headerCount, ring, head, unique)");
  if (!ArgPairs(info, 4, &pairs, &n)) return info.Env().Undefined();
  if (hcount < 1 || static_cast<size_t>(hcount) > n) return ThrowType(info.Env(), "headerCount outside the pairs");
  size_t ndata = n - static_cast<size_t>(hcount);
  // On the JS thread, which alone changes the table: the pin cannot go stale here.
  GuestMemoryPin mem;
  if (!mem.Take(table)) return Num(info, -EFAULT);
  std::vector<iovec> header;
  int e = GuestIovecs(table, pairs + 2 * ndata, static_cast<size_t>(hcount), &header);
  std::vector<iovec>* iov;
  if (!e) e = ThreadGuestIovecs(table, pairs, ndata, &iov);
  if (e) return Num(info, -e);
  int64_t result;
  if (TransferOrQueue(s, fh, pos, *iov, std::move(header), kWrite, kWrite && info[10].ToBoolean(), std::move(mem.keep),
                      std::move(ring), head, unique, &result))
    return Num(info, static_cast<double>(result));
  return info.Env().Undefined();
}

// handleFsyncQueued(id, fh, datasync, table, pairs, count, ring, head, unique) -> undefined
// (the pool replies) or -errno (the caller replies). pairs: the reply header's ranges.
Napi::Value HandleFsyncQueued(const Napi::CallbackInfo& info) {
  STATE_OR_THROW(s);
  uint64_t fh, unique;
  int64_t table;
  std::shared_ptr<UsedRing> ring;
  uint32_t head;
  const double* pairs;
  size_t n;
  if (!ArgU64(info, 1, &fh) || !ArgInt(info, 3, &table) || !ArgCompletion(info, 6, &ring, &head, &unique))
    return ThrowType(info.Env(), "handleFsyncQueued(id, fh, datasync, table, pairs, count, ring, head, unique)");
  if (!ArgPairs(info, 4, &pairs, &n)) return info.Env().Undefined();
  GuestMemoryPin mem;
  if (!mem.Take(table)) return Num(info, -EFAULT);
  std::vector<iovec> header;
  int e = GuestIovecs(table, pairs, n, &header);
  if (e) return Num(info, -e);
  int64_t result;
  if (SyncOrQueue(s, fh, info[2].ToBoolean(), std::move(header), std::move(mem.keep), std::move(ring), head, unique, &result))
    return Num(info, static_cast<double>(result));
  return info.Env().Undefined();
}

// ioPoolSetSize(n): how many threads the pool may start (--thread-pool-size).
Napi::Value IoPoolSetSize(const Napi::CallbackInfo& info) {
  int64_t n;
  if (!ArgInt(info, 0, &n) || n < 0) return ThrowType(info.Env(), "ioPoolSetSize(n)");
  Pool().SetSize(static_cast<size_t>(n));
  return info.Env().Undefined();
}

}  // namespace

void InitIoPool(Napi::Env env, Napi::Object exports) {
  exports.Set("handleReadvQueued", Napi::Function::New(env, HandleRwQueued<false>));
  exports.Set("handleWritevQueued", Napi::Function::New(env, HandleRwQueued<true>));
  exports.Set("handleFsyncQueued", Napi::Function::New(env, HandleFsyncQueued));
  exports.Set("ioPoolSetSize", Napi::Function::New(env, IoPoolSetSize));
}

}  // namespace vfsn
