// A native server of descriptor chains: an object the native virtqueue (vring.cc) offers
// each chain it pops before handing it to JS; and the virtqueue's side of serving a kick
// without JS at all. A device attaches one to serve its commonest requests without a trip
// through JS (fastpath.cc: FUSE READ, WRITE and the commonest metadata requests); whatever
// it declines goes to the queue's JS handler as before.
#pragma once

#include "common.h"
#include "usedring.h"

namespace vfsn {

// One chain as the virtqueue walked it: every range already checked to be guest memory.
struct ChainView {
  uint32_t head;
  const double* pairs;  // nr readable (gpa, len) pairs, then nw writable ones
  size_t nr, nw;
  uint64_t readableLen, writableLen;
  const uint8_t* prefetch;  // the request's first bytes
  size_t prefetched;
  int64_t table;  // the memory table the ranges go through
  const std::shared_ptr<UsedRing>& ring;
};

class ChainServer {
 public:
  enum Result { kDeclined, kCompleted, kPooled };
  virtual ~ChainServer() = default;
  // Serves the chain or declines it (kDeclined: untouched, JS serves it). kCompleted: the
  // reply is in guest memory, the chain on the used ring and the driver signalled as it
  // asked (UsedRing::Complete); kPooled: the I/O pool does all of that.
  virtual Result Serve(const ChainView& chain) = 0;
};

// The ChainServer a JS object wraps, or nullptr when it wraps none.
ChainServer* ChainServerOf(const Napi::Value& v);

// What a queue's kick thread (kickthread.cc), or its kick watcher (events.cc), runs before
// JS: a virtqueue with a ChainServer serves what the driver made available, polls and goes
// back to sleep without JS when the server takes every chain (vring.cc).
class KickServer {
 public:
  virtual ~KickServer() = default;
  enum Outcome {
    // The ring was served to empty and notifications are enabled again: nothing is left.
    kDone,
    // JS must run its loop: a chain declined (left on the ring), a broken ring, no server,
    // or requests of JS's own in flight. After HandOffDeclined(): a broken ring only.
    kToJs,
    // Chains keep coming but the loop has run its time (kServeBudgetNs): a watcher on a JS
    // thread's loop (events.cc) kicks itself and returns to the event loop, so what else
    // that thread serves gets its turn first; a kick thread (kickthread.cc), which serves
    // nothing else, goes on.
    kYield,
    // Only after HandOffDeclined(): a declined chain was popped and queued for JS (the
    // caller wakes JS and calls again; the ring stays the caller's).
    kHandedOff,
  };
  virtual Outcome ServeKick() = 0;
  // From now on ServeKick runs on a thread of its own (a kick thread) and keeps the ring:
  // a chain the server declines is popped and queued for JS to take (kHandedOff), and a
  // broken ring is reported there too (kToJs, then nothing more is served). Called on the
  // JS thread before that thread starts; for the life of the ring.
  virtual void HandOffDeclined() = 0;
  // The kick thread stopped serving the ring for a reason of its own (its kick descriptor
  // failed): JS learns of it as of a broken ring, from takeHandedOff(), with why.
  virtual void HandOffEnded(const char* why) = 0;
};

// How long a queue thread serves one ring without returning to its event loop (the JS loop
// of src/vhost/queue-runner.ts keeps the same budget).
constexpr int64_t kServeBudgetNs = 500000;

// The KickServer a JS object (a Vring) is, or nullptr.
KickServer* KickServerOf(const Napi::Value& v);

}  // namespace vfsn
