// The used-ring half of a served virtqueue, shared between the queue's thread (vring.cc) and
// the I/O pool's threads (iopool.cc), which put a request they finish on the used ring
// and signal the driver themselves instead of handing the completion back to JS.
//
// One mutex orders every completion. Pointers into guest memory are set by the queue's
// thread (Vring::SyncMemory) under the mutex, together with the memory snapshot that keeps
// them mapped and its generation; a pool thread that finds the memory table changed since
// translates the rings again itself (the queue's thread may be asleep), so it always writes
// where the driver's rings are now, through a live mapping.
#pragma once

#include "common.h"
#include "dirtylog.h"

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

namespace vfsn {

// Bytes of the avail ring (flags, idx, ring, used_event) and of the used ring (flags, idx,
// elements, avail_event) of a queue of `size` entries (virtio 1.2, 2.7.6 and 2.7.8).
inline uint64_t AvailRingBytes(uint32_t size) { return 6 + 2ull * size; }
inline uint64_t UsedRingBytes(uint32_t size) { return 6 + 8ull * size; }

// Whether the rings' host addresses have the alignment virtio asks of the guest's (desc 16,
// avail 2, used 4; desc may be null): the index loads and stores are atomic accesses.
inline bool HostAligned(const uint8_t* desc, const uint8_t* avail, const uint8_t* used) {
  return reinterpret_cast<uintptr_t>(desc) % 16 == 0 && reinterpret_cast<uintptr_t>(avail) % 2 == 0 &&
         reinterpret_cast<uintptr_t>(used) % 4 == 0;
}

struct UsedRing {
  std::mutex mu;
  int64_t table = 0;                  // the memory table the ring addresses go through
  uint64_t availUaddr = 0, usedUaddr = 0;  // front-end virtual addresses
  uint32_t generation = 0;            // of the snapshot used and avail come from
  uint8_t* used = nullptr;         // the used ring (flags, idx, elements, avail_event)
  const uint8_t* avail = nullptr;  // the avail ring (flags, used_event)
  std::shared_ptr<const void> mem;  // keeps used and avail mapped
  uint32_t size = 0;
  bool eventIdx = false;
  uint16_t usedIdx = 0, signalledUsed = 0;
  int callFd = -1;
  // Set when the queue is broken or stopped for good: completions are dropped.
  bool closed = false;
  // Requests taken by the pool whose completion has not reached the ring yet.
  std::atomic<uint32_t> pending{0};
  // For dirty-page logging (dirtylog.h): the used ring's guest-physical address, and each
  // chain's writable (gpa, len) pairs, kept from its pop to its completion (written by the
  // queue's thread at the pop and read at the completion, both under mu).
  uint64_t usedGpa = 0;
  std::vector<std::vector<double>> writableOf;

  void RememberWritable(uint32_t head, const std::vector<double>& pairs) {
    if (head < writableOf.size()) writableOf[head].assign(pairs.begin(), pairs.end());
  }

  // After the bytes are in guest memory: marks the first len bytes of head's writable
  // buffers, and a used-ring range, dirty when the connection logs.
  void LogCompletion(uint32_t head, uint32_t len) {
    if (!DirtyLoggingAnywhere() || head >= writableOf.size()) return;
    uint64_t left = len;
    const std::vector<double>& w = writableOf[head];
    for (size_t i = 0; i + 1 < w.size() && left > 0; i += 2) {
      uint64_t take = std::min<uint64_t>(left, static_cast<uint64_t>(w[i + 1]));
      LogDirty(table, static_cast<uint64_t>(w[i]), take);
      left -= take;
    }
  }
  void LogUsed(uint64_t offset, uint64_t len) { LogDirty(table, usedGpa + offset, len); }

  // With mu held: the rings as translated through snapshot keep (generation g), and the used
  // ring's guest address for the dirty log.
  void SetRingsLocked(uint8_t* a, uint8_t* u, std::shared_ptr<const void> keep, uint32_t g) {
    avail = a;
    used = u;
    mem = std::move(keep);
    generation = g;
    GuestUaddrToGpa(table, usedUaddr, &usedGpa);
  }

  // With mu held: one used element (visible after Publish).
  void PushLocked(uint32_t head, uint32_t len) {
    uint8_t* e = used + 4 + 8 * static_cast<size_t>(usedIdx % size);
    memcpy(e, &head, 4);
    memcpy(e + 4, &len, 4);
    LogCompletion(head, len);
    LogUsed(4 + 8 * static_cast<size_t>(usedIdx % size), 8);
    usedIdx++;
  }

  // With mu held: publishes the used index; true when the driver wants an interrupt.
  bool PublishLocked() {
    // Release: the used elements become visible before the new index.
    __atomic_store_n(reinterpret_cast<uint16_t*>(used + 2), usedIdx, __ATOMIC_RELEASE);
    LogUsed(2, 2);
    if (usedIdx == signalledUsed) return false;
    // Full barrier: used.idx must be visible before we read used_event or the flags.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    uint16_t old = signalledUsed, now = usedIdx;
    signalledUsed = now;
    if (eventIdx) {
      uint16_t usedEvent;
      memcpy(&usedEvent, avail + 4 + 2 * static_cast<size_t>(size), 2);
      return static_cast<uint16_t>(now - usedEvent - 1) < static_cast<uint16_t>(now - old);
    }
    uint16_t flags;
    memcpy(&flags, avail, 2);
    return (flags & 1 /* VRING_AVAIL_F_NO_INTERRUPT */) == 0;
  }

  // With mu held: signals the call eventfd.
  void NotifyLocked() {
    if (callFd < 0) return;
    PokeEventfd(callFd);
  }

  // With mu held: re-translates the rings if the memory table changed since they were.
  // False when they are no longer in guest memory (the queue's thread will find the ring
  // broken when it next looks).
  bool RefreshLocked() {
    if (used && GuestGeneration(table) == generation) return true;
    std::shared_ptr<const void> keep;
    uint32_t g;
    if (!TakeGuestSnapshot(table, &keep, &g)) return false;
    uint8_t* a = SnapshotPtr(keep.get(), availUaddr, AvailRingBytes(size), true);
    uint8_t* u = SnapshotPtr(keep.get(), usedUaddr, UsedRingBytes(size), true);
    if (!a || !u || !HostAligned(nullptr, a, u)) return false;
    SetRingsLocked(a, u, std::move(keep), g);
    return true;
  }

  // push + publish + notify (from any thread); true when the driver was signalled.
  bool Complete(uint32_t head, uint32_t len) {
    std::lock_guard<std::mutex> g(mu);
    if (closed || !RefreshLocked()) return false;
    PushLocked(head, len);
    if (!PublishLocked()) return false;
    NotifyLocked();
    return callFd >= 0;
  }

  // Several (head, len) completions at once: pushed, then published and signalled once, as
  // the driver's event index allows for the whole range.
  bool CompleteMany(const std::vector<std::pair<uint32_t, uint32_t>>& done) {
    std::lock_guard<std::mutex> g(mu);
    if (closed || !RefreshLocked()) return false;
    for (const auto& [head, len] : done) PushLocked(head, len);
    if (!PublishLocked()) return false;
    NotifyLocked();
    return callFd >= 0;
  }
};

// The UsedRing of a Vring object (vring.cc), or nullptr when v is not one.
std::shared_ptr<UsedRing> UsedRingOf(const Napi::Value& v);

}  // namespace vfsn
