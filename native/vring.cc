// The device side of a split virtqueue (virtio 1.2, 2.7), INDIRECT_DESC and EVENT_IDX
// included, in native code: one Vring object per served queue, made by the JS thread that
// hosts the queue (src/vhost/virtqueue.ts wraps it) and served by it or, once a kick thread
// has the ring (HandOffDeclined, below), by that thread, JS then only taking the chains
// queued for it and completing them.
//
// It does per request what would otherwise take a dozen JS buffer reads and N-API calls:
// pop() reads avail.idx with acquire ordering, walks the chain with every check on what
// the driver wrote, and hands back its (gpa, length) pairs and the first bytes of the
// request in buffers shared with JS; complete() puts the chain on the used ring, publishes used.idx with release
// ordering, decides whether the driver wants an interrupt and signals the call eventfd;
// pollAvail() spins for the next chain within an adaptive window before the thread sleeps
// (--poll-max-us).
//
// Everything the driver wrote is untrusted: indices are reduced modulo the queue size,
// every range is checked against guest memory, chains are bounded (a loop or a chain longer
// than its table is an error) and an indirect table inside an indirect table is refused. A
// malformed ring makes pop() return kBroken; the reason is in error().
//
// A native ChainServer (chainserver.h) may be attached: pop() offers it each chain first and
// returns only those it declines, so a device's commonest requests need no JS at all; and
// the queue's kick watcher then runs the whole loop here (ServeKick) and wakes JS only for
// a chain the server declines.
//
// With a kick thread (kickthread.cc, HandOffDeclined) the ring is that thread's alone: it
// pops every chain, and one the server declines is copied into a queue that JS empties with
// takeHandedOff() (same out/prefetch layout as pop()). JS then only completes chains, which
// goes through the UsedRing's mutex; pop(), sync() and the rest that touch the avail side
// are the kick thread's.
//
// The used ring's state lives in a UsedRing (usedring.h) that the I/O pool shares: a request
// finished on a pool thread goes on the used ring from there, under the ring's mutex.
//
// Guest memory is reached through this thread's snapshot of the memory table, held by the
// object, so ring pointers stay valid until the table changes; every call that touches the
// rings first compares the table's generation (one atomic load) and re-translates.
#include "chainserver.h"

#include <sched.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <deque>
#include <mutex>
#include <string>
#include <vector>
#include <cstdio>

namespace vfsn {
namespace {

constexpr uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;
constexpr uint32_t kMaxIndirect = 4096;
constexpr uint32_t kDescSize = 16;
// Layout of the shared Float64Array pop() fills (src/vhost/virtqueue.ts reads it).
constexpr size_t kOutReadable = 0, kOutWritable = 1, kOutReadableLen = 2, kOutWritableLen = 3,
                 kOutPrefetched = 4, kOutPairs = 5;
constexpr double kMaxSafe = 9007199254740992.0;  // 2^53
// Marks Vring objects, so that UsedRingOf can tell one from any other object.
constexpr napi_type_tag kVringTag = {0x7669727469667364ULL, 0x7473767269736e67ULL};

class Vring : public Napi::ObjectWrap<Vring>, public KickServer {
 public:
  static constexpr int kEmpty = -1, kBroken = -2;

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Vring",
                       {InstanceMethod("sync", &Vring::Sync), InstanceMethod("pop", &Vring::Pop),
                        InstanceMethod("push", &Vring::Push),
                        InstanceMethod("flush", &Vring::Flush), InstanceMethod("complete", &Vring::Complete),
                        InstanceMethod("enableNotification", &Vring::EnableNotification),
                        InstanceMethod("setPolling", &Vring::SetPolling),
                        InstanceMethod("pollAvail", &Vring::PollAvail),
                        InstanceMethod("pollStats", &Vring::PollStats),
                        InstanceMethod("lastAvail", &Vring::LastAvail), InstanceMethod("error", &Vring::Error),
                        InstanceMethod("setCallFd", &Vring::SetCallFd),
                        InstanceMethod("pending", &Vring::PendingOnPool), InstanceMethod("close", &Vring::Close),
                        InstanceMethod("setChainServer", &Vring::SetChainServer),
                        InstanceMethod("chainServerStats", &Vring::ChainServerStats),
                        InstanceMethod("setJsBusy", &Vring::SetJsBusy),
                        InstanceMethod("takeHandedOff", &Vring::TakeHandedOff)});
  }

  // new Vring(tableId, size, descUaddr, availUaddr, usedUaddr, base, eventIdx, callFd,
  //           out: Float64Array, prefetch: Buffer)
  explicit Vring(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Vring>(info) {
    Napi::Env env = info.Env();
    int64_t table, size, desc, avail, used, base, callFd;
    if (!ArgInt(info, 0, &table) || !ArgInt(info, 1, &size) || !ArgInt(info, 2, &desc) || !ArgInt(info, 3, &avail) ||
        !ArgInt(info, 4, &used) || !ArgInt(info, 5, &base) || !ArgInt(info, 7, &callFd) || !info[8].IsTypedArray() ||
        info[8].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array || !info[9].IsBuffer()) {
      ThrowType(env, "new Vring(table, size, desc, avail, used, base, eventIdx, callFd, out, prefetch)");
      return;
    }
    if (size < 1 || size > 32768 || (size & (size - 1)) != 0 || desc < 0 || avail < 0 || used < 0) {
      ThrowRange(env, "bad queue size or ring address");
      return;
    }
    table_ = table;
    size_ = static_cast<uint32_t>(size);
    descUaddr_ = static_cast<uint64_t>(desc);
    availUaddr_ = static_cast<uint64_t>(avail);
    usedUaddr_ = static_cast<uint64_t>(used);
    lastAvail_ = static_cast<uint16_t>(base);
    eventIdx_ = info[6].ToBoolean();
    ring_->size = size_;
    ring_->table = table_;
    ring_->availUaddr = availUaddr_;
    ring_->usedUaddr = usedUaddr_;
    ring_->usedIdx = ring_->signalledUsed = lastAvail_;
    ring_->eventIdx = eventIdx_;
    ring_->callFd = static_cast<int>(callFd);
    ring_->writableOf.resize(size_);
    info.This().As<Napi::Object>().TypeTag(&kVringTag);
    Napi::Float64Array out = info[8].As<Napi::Float64Array>();
    // Room for the longest chain: a direct part up to the queue size plus one indirect table.
    outCap_ = (out.ElementLength() - kOutPairs) / 2;
    if (out.ElementLength() < kOutPairs || outCap_ < size_ + kMaxIndirect) {
      ThrowRange(env, "out array too small for the queue");
      return;
    }
    out_ = out.Data();
    outRef_ = Napi::Persistent(out.As<Napi::Object>());
    Napi::Buffer<uint8_t> pf = info[9].As<Napi::Buffer<uint8_t>>();
    prefetch_ = pf.Data();
    prefetchCap_ = pf.Length();
    prefetchRef_ = Napi::Persistent(pf.As<Napi::Object>());
  }

 private:
  // Fails the ring with a reason (kept for error()).
  int Fail(const char* fmt, ...) __attribute__((format(printf, 2, 3))) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    error_ = buf;
    return kBroken;
  }

  // Fails with why [addr, addr + len) has no host address: not mapped at all, or running past
  // the end of the region it starts in.
  int OutsideMemory(const void* snapshot, const char* what, uint64_t addr, uint64_t len, bool byUaddr) {
    auto a = static_cast<unsigned long long>(addr);
    if (!SnapshotPtr(snapshot, addr, 1, byUaddr)) return Fail("%s 0x%llx is not in guest memory", what, a);
    return Fail("%s 0x%llx + %llu bytes runs past the end of its memory region", what, a, static_cast<unsigned long long>(len));
  }

  // Re-translates the rings when the memory table changed. 0 or kBroken.
  int SyncMemory() {
    uint32_t gen = GuestGeneration(table_);
    if (mem_ && gen == generation_) return 0;
    std::shared_ptr<const void> keep;
    uint32_t g;
    if (!TakeGuestSnapshot(table_, &keep, &g)) return Fail("ring outside guest memory: no memory table");
    if (descUaddr_ % 16 || availUaddr_ % 2 || usedUaddr_ % 4) return Fail("misaligned ring address");
    uint8_t* d = SnapshotPtr(keep.get(), descUaddr_, uint64_t{kDescSize} * size_, true);
    uint8_t* a = SnapshotPtr(keep.get(), availUaddr_, AvailRingBytes(size_), true);
    uint8_t* u = SnapshotPtr(keep.get(), usedUaddr_, UsedRingBytes(size_), true);
    if (!d) return OutsideMemory(keep.get(), "ring outside guest memory: front-end address", descUaddr_, uint64_t{kDescSize} * size_, true);
    if (!a) return OutsideMemory(keep.get(), "ring outside guest memory: front-end address", availUaddr_, AvailRingBytes(size_), true);
    if (!u) return OutsideMemory(keep.get(), "ring outside guest memory: front-end address", usedUaddr_, UsedRingBytes(size_), true);
    // A region's mmap offset may be any number: aligned front-end addresses can still land
    // on misaligned host addresses, where the atomic index accesses are undefined.
    if (!HostAligned(d, a, u)) return Fail("ring misaligned in host memory (a region's mmap offset)");
    desc_ = d;
    avail_ = a;
    used_ = u;
    {
      std::lock_guard<std::mutex> lock(ring_->mu);
      ring_->SetRingsLocked(a, u, keep, g);
    }
    mem_ = std::move(keep);
    generation_ = g;
    return 0;
  }

  // Chains available and not yet popped, or kBroken for an impossible avail index.
  int Pending() {
    uint16_t idx = __atomic_load_n(reinterpret_cast<uint16_t*>(avail_ + 2), __ATOMIC_ACQUIRE);
    uint32_t n = static_cast<uint16_t>(idx - lastAvail_);
    if (n > size_) return Fail("avail index %u is %u entries ahead of %u", idx, n, lastAvail_);
    return static_cast<int>(n);
  }

  // Walks the chain at head into out_ (writable pairs gathered in writable_, then appended).
  int Walk(uint32_t head) {
    if (head >= size_) return Fail("chain head %u outside a queue of %u", head, size_);
    const uint8_t* table = desc_;
    uint32_t tableSize = size_;
    bool indirect = false;
    uint32_t i = head, count = 0;
    // Pairs go to out_ in two passes' worth of room: readable ones first, writable ones
    // collected aside and appended (a chain is all readable descriptors, then all writable).
    double* pairs = out_ + kOutPairs;
    size_t nr = 0;
    std::vector<double>& w = writable_;
    w.clear();
    uint64_t rlen = 0, wlen = 0;
    for (;;) {
      if (i >= tableSize) return Fail("descriptor %u outside a table of %u", i, tableSize);
      if (++count > tableSize) return Fail("descriptor chain from head %u loops or exceeds its table", head);
      const uint8_t* d = table + static_cast<size_t>(i) * kDescSize;
      uint64_t addr = Load64(d);
      uint32_t len = Load32(d + 8);
      uint16_t flags = Load16(d + 12), next = Load16(d + 14);
      if (addr >= (1ull << 53)) return Fail("descriptor address 0x%llx out of range", static_cast<unsigned long long>(addr));
      if (flags & kDescIndirect) {
        if (indirect) return Fail("indirect table inside an indirect table");
        if (flags & kDescNext) return Fail("indirect descriptor with NEXT set");
        if (len == 0 || len % kDescSize != 0 || len / kDescSize > kMaxIndirect) return Fail("indirect table of %u bytes", len);
        const uint8_t* t = SnapshotPtr(mem_.get(), addr, len, false);
        if (!t) return OutsideMemory(mem_.get(), "indirect table: guest address", addr, len, false);
        table = t;
        tableSize = len / kDescSize;
        indirect = true;
        i = 0;
        count = 0;
        continue;
      }
      if (len > 0 && !Covered(addr, len))
        return Fail("descriptor %u: guest range 0x%llx+%u is not in guest memory", i, static_cast<unsigned long long>(addr), len);
      if (flags & kDescWrite) {
        w.push_back(static_cast<double>(addr));
        w.push_back(len);
        wlen += len;
      } else {
        if (wlen > 0) return Fail("readable descriptor after a writable one");
        if (nr + w.size() / 2 >= outCap_) return Fail("descriptor chain from head %u is too long", head);
        pairs[2 * nr] = static_cast<double>(addr);
        pairs[2 * nr + 1] = len;
        nr++;
        rlen += len;
      }
      if (!(flags & kDescNext)) break;
      i = next;
    }
    size_t nw = w.size() / 2;
    if (nr + nw > outCap_) return Fail("descriptor chain from head %u is too long", head);
    {
      // Under the mutex: a guest may make a head available again while it is in flight, and
      // its completion (the pool's, JS's) reads the entry.
      std::lock_guard<std::mutex> g(ring_->mu);
      ring_->RememberWritable(head, w);
    }
    memcpy(pairs + 2 * nr, w.data(), w.size() * sizeof(double));
    out_[kOutReadable] = static_cast<double>(nr);
    out_[kOutWritable] = static_cast<double>(nw);
    out_[kOutReadableLen] = static_cast<double>(rlen);
    out_[kOutWritableLen] = static_cast<double>(wlen);
    // The request's first bytes (FUSE header and arguments) into the prefetch buffer.
    size_t copied = 0;
    for (size_t k = 0; k < nr && copied < prefetchCap_; k++) {
      uint64_t take = std::min<uint64_t>(static_cast<uint64_t>(pairs[2 * k + 1]), prefetchCap_ - copied);
      size_t got = SnapshotCopy(mem_.get(), static_cast<uint64_t>(pairs[2 * k]), prefetch_ + copied, take, false);
      copied += got;
      if (got < take) break;
    }
    out_[kOutPrefetched] = static_cast<double>(copied);
    return static_cast<int>(head);
  }

  // Whether every byte of [gpa, gpa + len) is guest memory (the range may span regions).
  bool Covered(uint64_t gpa, uint64_t len) {
    while (len > 0) {
      uint8_t* host;
      uint64_t run = SnapshotRun(mem_.get(), gpa, &host);
      if (run == 0) return false;
      if (run >= len) return true;
      gpa += run;
      len -= run;
    }
    return true;
  }

  // sync() -> 0, or kBroken (reason in error()): picks up a changed memory table.
  Napi::Value Sync(const Napi::CallbackInfo& info) {
    // With a kick thread the rings are its to translate (a completion refreshes the UsedRing).
    return Napi::Number::New(info.Env(), handOff_ ? 0 : SyncMemory());
  }

  // For the calls that work the avail side, which is the kick thread's once it has the ring.
  bool KickThreadOwns(const Napi::CallbackInfo& info, const char* call) {
    if (!handOff_) return false;
    ThrowType(info.Env(), (std::string(call) + ": a kick thread serves this ring (takeHandedOff)").c_str());
    return true;
  }

  // pop() -> head, kEmpty, or kBroken. On a head, out and prefetch describe the chain.
  // Chains the attached ChainServer serves are not returned: pop() goes on to the next, for
  // at most kServeBudgetNs: then it answers kEmpty with chains still there, so that its
  // caller looks at its own budget and at a stop (a guest that makes chains available as
  // fast as they are served would otherwise keep it here for good, and a queue's stop, the
  // GET_VRING_BASE waiting for it, and SIGTERM with them, would never end).
  Napi::Value Pop(const Napi::CallbackInfo& info) {
    if (KickThreadOwns(info, "pop()")) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), PopServing());
  }

  int PopServing() {
    if (brokenInKick_) {
      brokenInKick_ = false;
      return kBroken;
    }
    int64_t start = 0;
    for (uint32_t n = 0;; n++) {
      if (n % 16 == 15) {
        int64_t now = NowNs();
        if (start == 0) start = now;
        else if (now - start >= kServeBudgetNs) return kEmpty;
      }
      int r = SyncMemory();
      if (r == 0) r = Pending();
      if (r == 0) {
        NoteEmpty();
        return kEmpty;
      }
      if (r < 0) return r;
      NoteArrival();
      uint16_t head = Load16(avail_ + 4 + 2 * (lastAvail_ % size_));
      lastAvail_++;
      int h = Walk(head);
      if (h < 0 || !server_) return h;
      ChainView view{static_cast<uint32_t>(h), out_ + kOutPairs, static_cast<size_t>(out_[kOutReadable]),
                     static_cast<size_t>(out_[kOutWritable]), static_cast<uint64_t>(out_[kOutReadableLen]),
                     static_cast<uint64_t>(out_[kOutWritableLen]), prefetch_, static_cast<size_t>(out_[kOutPrefetched]), table_, ring_};
      ChainServer::Result served = server_->Serve(view);
      if (served == ChainServer::kDeclined) return h;
      serverServed_++;
      if (served == ChainServer::kPooled) serverPooled_++;
    }
  }

  // The kick watcher's native loop (KickServer, chainserver.h): the JS loop of
  // src/vhost/queue-runner.ts (pop, poll, enable notifications), run here while the server
  // takes every chain. A chain it declines goes back on the ring for JS's pop(); a broken
  // ring is reported by JS's next pop(). On a kick thread (HandOffDeclined) a declined chain
  // is queued for JS instead, and a broken ring reported by takeHandedOff().
  Outcome ServeKick() override {
    if (!server_) return handOff_ ? Broken("no chain server") : kToJs;
    if (!handOff_ && jsBusy_) return kToJs;
    int64_t start = NowNs();
    for (;;) {
      int r = PopServing();
      if (r >= 0) {
        if (handOff_) return QueueForJs(static_cast<uint32_t>(r)) ? kHandedOff : Broken(nullptr);
        lastAvail_--;  // declined: nothing was consumed, JS pops it again
        return kToJs;
      }
      if (r == kBroken) return Broken(nullptr);
      r = PollOnce();
      if (r == 0) {
        r = Rearm();
        if (r == 1) {
          // A kick that handed JS a chain did not go without JS.
          if (!handedThisKick_) kicksServed_++;
          handedThisKick_ = false;
          return kDone;
        }
      }
      if (r == kBroken) return Broken(nullptr);
      // More chains came, while spinning or as notifications were enabled: serve them, unless
      // the loop has run its time; then they are served after the yield.
      if (NowNs() - start >= kServeBudgetNs) {
        yields_++;
        return kYield;
      }
    }
  }

  // The ring is found broken (the reason in error_), or the loop cannot serve it: reported
  // by JS's next pop(), or after a hand-off by takeHandedOff() once the chains queued before
  // it are taken.
  Outcome Broken(const char* why) {
    if (why && error_.empty()) error_ = why;
    if (!handOff_) {
      brokenInKick_ = true;
      return kToJs;
    }
    std::lock_guard<std::mutex> g(handedMu_);
    handedBroken_ = true;
    return kToJs;
  }

  void HandOffEnded(const char* why) override {
    if (handOff_) Broken(why);
  }

  void HandOffDeclined() override {
    if (handOff_) return;
    // The kick thread walks into buffers of its own; JS's (the constructor's) receive the
    // chains it takes.
    jsOut_ = out_;
    jsPrefetch_ = prefetch_;
    kickOut_.assign(kOutPairs + 2 * outCap_, 0);
    kickPrefetch_.assign(prefetchCap_, 0);
    out_ = kickOut_.data();
    prefetch_ = kickPrefetch_.data();
    handOff_ = true;
  }

  // On the kick thread: the chain Walk() just described, copied for JS.
  // False (the ring broken) when the queue already holds as many chains as the ring has
  // entries: a driver that makes heads available again while they are in flight.
  bool QueueForJs(uint32_t head) {
    {
      std::lock_guard<std::mutex> g(handedMu_);
      if (handed_.size() >= size_) {
        Fail("%zu chains wait for JS in a queue of %u: the driver reuses heads in flight", handed_.size(), size_);
        return false;
      }
    }
    HandedChain h;
    h.head = head;
    for (size_t k = 0; k < kOutPairs; k++) h.meta[k] = out_[k];
    size_t pairs = 2 * (static_cast<size_t>(out_[kOutReadable]) + static_cast<size_t>(out_[kOutWritable]));
    h.pairs.assign(out_ + kOutPairs, out_ + kOutPairs + pairs);
    h.prefetch.assign(prefetch_, prefetch_ + static_cast<size_t>(out_[kOutPrefetched]));
    handedThisKick_ = true;
    std::lock_guard<std::mutex> g(handedMu_);
    handed_.push_back(std::move(h));
    return true;
  }

  // takeHandedOff() -> head (out and prefetch describe it, as after pop()), kEmpty, or
  // kBroken once the queued chains are taken and the kick thread found the ring broken.
  Napi::Value TakeHandedOff(const Napi::CallbackInfo& info) {
    HandedChain h;
    {
      std::lock_guard<std::mutex> g(handedMu_);
      if (handed_.empty()) return Napi::Number::New(info.Env(), handedBroken_ ? kBroken : kEmpty);
      h = std::move(handed_.front());
      handed_.pop_front();
    }
    for (size_t k = 0; k < kOutPairs; k++) jsOut_[k] = h.meta[k];
    memcpy(jsOut_ + kOutPairs, h.pairs.data(), h.pairs.size() * sizeof(double));
    memcpy(jsPrefetch_, h.prefetch.data(), h.prefetch.size());
    return Napi::Number::New(info.Env(), h.head);
  }

  // setJsBusy(busy): JS has requests of its own in flight (their completions need its event
  // loop), so kicks go to JS, which does not spin meanwhile.
  Napi::Value SetJsBusy(const Napi::CallbackInfo& info) {
    jsBusy_ = info[0].ToBoolean();
    return info.Env().Undefined();
  }

  // setChainServer(server | null): the native server pop() offers each chain to first.
  Napi::Value SetChainServer(const Napi::CallbackInfo& info) {
    ChainServer* s = ChainServerOf(info[0]);
    if (!s && !info[0].IsNull()) return ThrowType(info.Env(), "setChainServer(server | null)");
    server_ = s;
    if (s)
      serverRef_ = Napi::Persistent(info[0].As<Napi::Object>());
    else
      serverRef_.Reset();
    return info.Env().Undefined();
  }

  // chainServerStats() -> [chains the ChainServer served, of which it gave the I/O pool,
  // kicks served to the end without JS, times the kick loop yielded to the event loop]
  Napi::Value ChainServerStats(const Napi::CallbackInfo& info) {
    Napi::Array a = Napi::Array::New(info.Env(), 4);
    a.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(serverServed_)));
    a.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(serverPooled_)));
    a.Set(2u, Napi::Number::New(info.Env(), static_cast<double>(kicksServed_)));
    a.Set(3u, Napi::Number::New(info.Env(), static_cast<double>(yields_)));
    return a;
  }

  // push(head, len): a used element, visible to the driver after flush().
  Napi::Value Push(const Napi::CallbackInfo& info) {
    if (KickThreadOwns(info, "push()")) return info.Env().Undefined();
    int64_t head, len;
    if (!ArgInt(info, 0, &head) || !ArgInt(info, 1, &len)) return ThrowType(info.Env(), "push(head, len)");
    if (SyncMemory() == 0) {
      std::lock_guard<std::mutex> g(ring_->mu);
      ring_->PushLocked(static_cast<uint32_t>(head), static_cast<uint32_t>(len));
    }
    return info.Env().Undefined();
  }

  // flush() -> true when the driver wants an interrupt (the caller signals it).
  Napi::Value Flush(const Napi::CallbackInfo& info) {
    if (KickThreadOwns(info, "flush()")) return info.Env().Undefined();
    if (SyncMemory() != 0) return Napi::Boolean::New(info.Env(), false);
    std::lock_guard<std::mutex> g(ring_->mu);
    return Napi::Boolean::New(info.Env(), ring_->PublishLocked());
  }

  // complete(head, len) -> 1 when the call eventfd was signalled, else 0: push, publish and
  // notify in one call.
  Napi::Value Complete(const Napi::CallbackInfo& info) {
    int64_t head, len;
    if (!ArgInt(info, 0, &head) || !ArgInt(info, 1, &len)) return ThrowType(info.Env(), "complete(head, len)");
    // With a kick thread this object's rings are that thread's; the UsedRing refreshes its own.
    if (!handOff_ && SyncMemory() != 0) return Napi::Number::New(info.Env(), 0);
    return Napi::Number::New(info.Env(), ring_->Complete(static_cast<uint32_t>(head), static_cast<uint32_t>(len)) ? 1 : 0);
  }

  // enableNotification() -> 1 when the ring is empty (safe to sleep until the next kick), 0
  // when chains arrived meanwhile, kBroken. With EVENT_IDX it asks for a kick at the next
  // avail index; without, it clears NO_NOTIFY.
  Napi::Value EnableNotification(const Napi::CallbackInfo& info) {
    if (KickThreadOwns(info, "enableNotification()")) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), Rearm());
  }

  int Rearm() {
    if (SyncMemory() != 0) return kBroken;
    uint16_t v = eventIdx_ ? lastAvail_ : 0;
    size_t at = eventIdx_ ? 4 + 8 * static_cast<size_t>(size_) : 0;
    memcpy(used_ + at, &v, 2);
    if (DirtyLoggingAnywhere()) {
      std::lock_guard<std::mutex> g(ring_->mu);
      ring_->LogUsed(at, 2);
    }
    // Store-load barrier: the driver must see avail_event before we re-read avail.idx, or a
    // kick it decided to skip could be lost (virtio 1.2, 2.7.10).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    int n = Pending();
    return n < 0 ? n : n == 0 ? 1 : 0;
  }

  // setPolling(maxNs): how long pollAvail() may spin at most (0: never).
  Napi::Value SetPolling(const Napi::CallbackInfo& info) {
    int64_t ns;
    if (!ArgInt(info, 0, &ns) || ns < 0) return ThrowType(info.Env(), "setPolling(maxNs)");
    pollMaxNs_ = ns;
    pollNs_ = 0;
    return info.Env().Undefined();
  }

  // pollAvail() -> 1 when a chain arrived while spinning, 0 when the window closed first (the
  // caller then enables notifications and sleeps until a kick), kBroken. The window counts
  // from the moment the ring was found empty and adapts as QEMU's iothreads do: it grows
  // (4 µs, doubling up to the maximum) while the next chain keeps arriving within the
  // maximum, and halves when one takes longer (to 0 below 4 µs): one late chain (a pause
  // of the driver's) does not undo it, a guest gone idle closes it in a few gaps.
  Napi::Value PollAvail(const Napi::CallbackInfo& info) {
    if (KickThreadOwns(info, "pollAvail()")) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), PollOnce());
  }

  int PollOnce() {
    if (pollNs_ == 0 || idleSince_ == 0) return 0;
    if (SyncMemory() != 0) return kBroken;
    int64_t until = idleSince_ + pollNs_;
    long switches = InvoluntarySwitches();
    for (unsigned spin = 0;;) {
      int n = Pending();
      if (n != 0) {
        if (n > 0) pollHits_++;
        return n < 0 ? n : 1;
      }
      CpuRelax();
      if ((++spin & 63) != 0) continue;
      // The ring is looked at once more after the window closed: this thread may have been
      // off the CPU for a while since the last look.
      int64_t now = NowNs();
      if (now >= until && Pending() == 0) break;
      // Politely: when a thread waits for this CPU (a vCPU of the guest, on a host with few
      // cores), sched_yield() lets it run; alone on the CPU it returns at once (1-2 µs).
      sched_yield();
      // Back only after a long while, and this thread was switched out: another thread
      // needed this CPU for real work (a long yield without a switch is the hypervisor's
      // doing). The spin then gives way, and the window halves each time it happens: on a
      // host whose cores are all busy, spinning takes from the guest more than it saves.
      if (NowNs() - now > kGiveWayNs && InvoluntarySwitches() != switches && Pending() == 0) {
        pollGiveWays_++;
        ShrinkWindow();
        break;
      }
    }
    pollMisses_++;
    return 0;
  }

  // pollStats() -> [hits, misses, window ns, give-ways]: how often pollAvail() caught the
  // next chain, how long it would spin now, and how many of the misses gave the CPU away.
  Napi::Value PollStats(const Napi::CallbackInfo& info) {
    Napi::Array a = Napi::Array::New(info.Env(), 4);
    a.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(pollHits_)));
    a.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(pollMisses_)));
    a.Set(2u, Napi::Number::New(info.Env(), static_cast<double>(pollNs_)));
    a.Set(3u, Napi::Number::New(info.Env(), static_cast<double>(pollGiveWays_)));
    return a;
  }

  // A spin-wait hint to the CPU (x86 PAUSE, Arm YIELD); nothing elsewhere.
  static void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  // Times this thread was switched out while runnable (a sched_yield() that let another run
  // counts here).
  static long InvoluntarySwitches() {
    rusage u;
    return getrusage(RUSAGE_THREAD, &u) == 0 ? u.ru_nivcsw : 0;
  }

  static int64_t NowNs() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec;
  }

  void ShrinkWindow() {
    pollNs_ /= 2;
    if (pollNs_ < kPollStartNs) pollNs_ = 0;
  }

  // The ring was found empty (idle starts) or a chain arrived (idle ends: adapt the window).
  void NoteEmpty() {
    if (pollMaxNs_ > 0 && idleSince_ == 0) idleSince_ = NowNs();
  }
  void NoteArrival() {
    if (idleSince_ == 0) return;
    int64_t idle = NowNs() - idleSince_;
    idleSince_ = 0;
    if (idle <= pollNs_) return;  // caught while spinning
    if (idle > pollMaxNs_) {
      ShrinkWindow();
    } else if (pollNs_ < pollMaxNs_) {
      pollNs_ = pollNs_ ? pollNs_ * 2 : kPollStartNs;
      if (pollNs_ > pollMaxNs_) pollNs_ = pollMaxNs_;
    }
  }

  Napi::Value LastAvail(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), lastAvail_); }
  Napi::Value Error(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), error_); }
  Napi::Value SetCallFd(const Napi::CallbackInfo& info) {
    int64_t fd;
    if (!ArgInt(info, 0, &fd)) return ThrowType(info.Env(), "setCallFd(fd)");
    std::lock_guard<std::mutex> g(ring_->mu);
    ring_->callFd = static_cast<int>(fd);
    return info.Env().Undefined();
  }

  // pending() -> requests of this queue the I/O pool has not completed yet.
  Napi::Value PendingOnPool(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), ring_->pending.load(std::memory_order_acquire));
  }

  // close(): the queue is broken; completions still to come from the pool are dropped.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> g(ring_->mu);
    ring_->closed = true;
    return info.Env().Undefined();
  }

 public:
  std::shared_ptr<UsedRing> ring() const { return ring_; }

 private:

  int64_t table_ = 0;
  uint32_t size_ = 0;
  uint64_t descUaddr_ = 0, availUaddr_ = 0, usedUaddr_ = 0;
  uint16_t lastAvail_ = 0;
  bool eventIdx_ = false;
  std::shared_ptr<UsedRing> ring_ = std::make_shared<UsedRing>();
  std::shared_ptr<const void> mem_;
  uint32_t generation_ = 0;
  uint8_t *desc_ = nullptr, *avail_ = nullptr, *used_ = nullptr;
  double* out_ = nullptr;
  size_t outCap_ = 0;
  uint8_t* prefetch_ = nullptr;
  size_t prefetchCap_ = 0;
  Napi::ObjectReference outRef_, prefetchRef_;
  // The native server offered each chain first (setChainServer), kept alive by serverRef_,
  // and how many chains it served, of which it handed how many to the I/O pool.
  ChainServer* server_ = nullptr;
  Napi::ObjectReference serverRef_;
  uint64_t serverServed_ = 0, serverPooled_ = 0, kicksServed_ = 0, yields_ = 0;
  // Whether JS has requests in flight (setJsBusy); a ring found broken in ServeKick, for
  // JS's next pop() to report.
  bool jsBusy_ = false, brokenInKick_ = false;
  // With a kick thread (HandOffDeclined, set before it starts): the buffers it walks into,
  // JS's own (the constructor's, for takeHandedOff), and the chains queued for JS with
  // whether the ring was found broken after them, under handedMu_.
  struct HandedChain {
    uint32_t head = 0;
    double meta[kOutPairs] = {};
    std::vector<double> pairs;
    std::vector<uint8_t> prefetch;
  };
  bool handOff_ = false;
  std::vector<double> kickOut_;
  std::vector<uint8_t> kickPrefetch_;
  double* jsOut_ = nullptr;
  uint8_t* jsPrefetch_ = nullptr;
  std::mutex handedMu_;
  std::deque<HandedChain> handed_;
  bool handedBroken_ = false;
  // Whether the kick being served handed JS a chain (it is then not one served without JS).
  bool handedThisKick_ = false;
  // Walk()'s scratch for the writable pairs, appended to out_ after the readable ones.
  std::vector<double> writable_;
  std::string error_;
  // Adaptive polling (pollAvail): the longest and the current window, when the ring was last
  // found empty (0: not idle), and how often a spin caught the next chain.
  static constexpr int64_t kPollStartNs = 4000;
  // A sched_yield() that took longer than this gave the CPU to another thread.
  static constexpr int64_t kGiveWayNs = 50000;
  int64_t pollMaxNs_ = 0, pollNs_ = 0, idleSince_ = 0;
  uint64_t pollHits_ = 0, pollMisses_ = 0, pollGiveWays_ = 0;
};

}  // namespace

KickServer* KickServerOf(const Napi::Value& v) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kVringTag)) return nullptr;
  return Vring::Unwrap(v.As<Napi::Object>());
}

std::shared_ptr<UsedRing> UsedRingOf(const Napi::Value& v) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kVringTag)) return nullptr;
  return Vring::Unwrap(v.As<Napi::Object>())->ring();
}

void InitVring(Napi::Env env, Napi::Object exports) { exports.Set("Vring", Vring::Define(env)); }

}  // namespace vfsn
