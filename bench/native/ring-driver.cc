// The benchmark's native ring driver: the driver side of one request queue run in a C++
// thread, so that the depth-16 and two-queue rows of `npm run bench` measure the daemon
// rather than our JavaScript front end (which takes 15-16 µs of CPU per request, against
// the daemons' 5-7).
//
// It does only the steady state. The JS front end (test/frontend/) negotiates, maps guest
// memory, builds the chains (descriptors, indirect tables, request bytes) and hands the
// queue over with no request in flight; the driver then keeps `depth` chains in flight for
// a given time, resubmitting each as it comes back, and hands the ring indices back. Per
// request it writes a fresh `unique` into the fuse_in_header and, for READ and WRITE, the
// file offset into the op's input; per reply it checks the fuse_out_header (unique, error
// 0, the expected length) as the JS client does.
//
// Notifications as Linux's virtio_ring.c with VIRTIO_RING_F_EVENT_IDX (or the flags
// without it): avail.idx is published with a release store once per batch of completions,
// a full fence, then a kick if avail_event says the device sleeps; before sleeping the
// driver sets used_event to what it consumed, fences, looks at used.idx again, and only
// then waits on the call eventfd.
#include <napi.h>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <poll.h>
#include <string>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace {

constexpr size_t kInHeaderSize = 40;
constexpr size_t kOutHeaderSize = 16;
// No completion for this long means the daemon stalled.
constexpr int64_t kStallNs = 30LL * 1000 * 1000 * 1000;

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

uint16_t LoadAcquire16(const uint8_t* p) {
  return __atomic_load_n(reinterpret_cast<const uint16_t*>(p), __ATOMIC_ACQUIRE);
}
void StoreRelease16(uint8_t* p, uint16_t v) {
  __atomic_store_n(reinterpret_cast<uint16_t*>(p), v, __ATOMIC_RELEASE);
}
uint32_t Get32(const uint8_t* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
uint64_t Get64(const uint8_t* p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}
void Put64(uint8_t* p, uint64_t v) { memcpy(p, &v, 8); }

// vring_need_event: notify when new_idx passed event_idx since old_idx (mod 2^16).
bool NeedEvent(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event_idx - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

struct DriveParams {
  uint8_t* avail = nullptr;  // flags, idx, ring[size], used_event
  uint8_t* used = nullptr;   // flags, idx, ring[size] of {id, len}, avail_event
  uint32_t size = 0;
  bool event_idx = false;
  uint16_t avail_idx = 0;
  uint16_t last_used = 0;
  int kick_fd = -1;
  int call_fd = -1;
  std::vector<uint16_t> heads;  // one chain per slot, built by the JS side
  uint8_t* requests = nullptr;  // slot k's request bytes at requests + k * request_stride
  size_t request_stride = 0;
  uint8_t* replies = nullptr;   // slot k's fuse_out_header at replies + k * reply_stride
  size_t reply_stride = 0;
  uint32_t expect_len = 0;      // the out header's len every reply must carry
  int64_t offset_at = -1;       // where the op's u64 file offset sits in a request, or -1
  uint64_t block_size = 0;      // offsets: ((n * 7919) % blocks) * block_size
  uint64_t blocks = 0;
  uint64_t first_serial = 0;    // n of the first request
  uint64_t unique_base = 0;
  double seconds = 0;
};

struct DriveResult {
  uint64_t ops = 0;
  double latency_ns = 0;
  uint64_t kicks = 0;
  uint64_t wakeups = 0;
  std::string error;
};

class Driver {
 public:
  explicit Driver(const DriveParams& p) : p_(p), slot_of_(p.size, -1), sent_at_(p.heads.size()), unique_(p.heads.size()) {
    for (size_t k = 0; k < p.heads.size(); k++) slot_of_[p.heads[k]] = static_cast<int>(k);
  }

  DriveResult Run() {
    const int64_t deadline = NowNs() + static_cast<int64_t>(p_.seconds * 1e9);
    // Kept in p_ as they move, so that a failed run hands back where it stopped.
    uint16_t& avail_idx = p_.avail_idx;
    uint16_t& last_used = p_.last_used;
    uint16_t published = avail_idx;
    size_t in_flight = 0;
    for (size_t k = 0; k < p_.heads.size(); k++) {
      Prepare(k);
      Push(k, &avail_idx);
      in_flight++;
    }
    int64_t last_progress = NowNs();
    for (;;) {
      if (avail_idx != published) {
        Publish(published, avail_idx);
        published = avail_idx;
      }
      if (in_flight == 0) break;
      uint16_t used_idx = LoadAcquire16(p_.used + 2);
      if (used_idx == last_used) {
        // Ask for a call at the next completion, then look once more before sleeping.
        ArmCall(last_used);
        used_idx = LoadAcquire16(p_.used + 2);
        if (used_idx == last_used) {
          pollfd pfd{p_.call_fd, POLLIN, 0};
          int r = poll(&pfd, 1, 100);
          if (r < 0 && errno != EINTR) return Fail(std::string("poll: ") + strerror(errno));
          if (r > 0) {
            eventfd_t v;
            if (eventfd_read(p_.call_fd, &v) == 0) r_.wakeups++;
          }
          if (NowNs() - last_progress > kStallNs) return Fail("no completion for 30 s: " + State(avail_idx, last_used));
          continue;
        }
      }
      uint16_t pending = static_cast<uint16_t>(used_idx - last_used);
      if (pending > p_.size) return Fail("used.idx ran ahead of the ring: " + State(avail_idx, last_used));
      const int64_t now = NowNs();
      last_progress = now;
      while (last_used != used_idx) {
        const uint8_t* elem = p_.used + 4 + 8 * (last_used % p_.size);
        uint32_t id = Get32(elem);
        if (id >= p_.size || slot_of_[id] < 0) return Fail("used id " + std::to_string(id) + " is no chain of ours");
        last_used++;
        size_t k = static_cast<size_t>(slot_of_[id]);
        std::string bad = CheckReply(k);
        if (!bad.empty() && r_.error.empty()) r_.error = bad;
        r_.ops++;
        r_.latency_ns += static_cast<double>(now - sent_at_[k]);
        // After a wrong reply, the chains still out are let come back, none resubmitted:
        // the queue is then handed back with nothing in flight.
        if (now < deadline && r_.error.empty()) {
          Prepare(k);
          Push(k, &avail_idx);
        } else {
          in_flight--;
        }
      }
    }
    return r_;
  }

  uint16_t AvailIdx() const { return p_.avail_idx; }
  uint16_t LastUsed() const { return p_.last_used; }

 private:
  void Prepare(size_t k) {
    uint8_t* req = p_.requests + k * p_.request_stride;
    uint64_t n = serial_++;
    unique_[k] = p_.unique_base + n;
    Put64(req + 8, unique_[k]);
    if (p_.offset_at >= 0) Put64(req + p_.offset_at, ((n * 7919) % p_.blocks) * p_.block_size);
    // A stale header must not pass for the reply.
    memset(p_.replies + k * p_.reply_stride, 0, kOutHeaderSize);
  }

  void Push(size_t k, uint16_t* avail_idx) {
    uint8_t* slot = p_.avail + 4 + 2 * (*avail_idx % p_.size);
    memcpy(slot, &p_.heads[k], 2);
    (*avail_idx)++;
    sent_at_[k] = NowNs();
  }

  void Publish(uint16_t old_idx, uint16_t new_idx) {
    StoreRelease16(p_.avail + 2, new_idx);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool kick = p_.event_idx ? NeedEvent(LoadAcquire16(p_.used + 4 + 8 * p_.size), new_idx, old_idx)
                             : (LoadAcquire16(p_.used) & 1) == 0;  // VIRTQ_USED_F_NO_NOTIFY
    if (kick) {
      eventfd_write(p_.kick_fd, 1);
      r_.kicks++;
    }
  }

  void ArmCall(uint16_t last_used) {
    if (p_.event_idx) {
      StoreRelease16(p_.avail + 4 + 2 * p_.size, last_used);
    } else {
      uint16_t flags;
      memcpy(&flags, p_.avail, 2);
      StoreRelease16(p_.avail, flags & ~1);  // clear VIRTQ_AVAIL_F_NO_INTERRUPT
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }

  std::string CheckReply(size_t k) const {
    const uint8_t* h = p_.replies + k * p_.reply_stride;
    uint32_t len = Get32(h);
    int32_t error;
    memcpy(&error, h + 4, 4);
    uint64_t unique = Get64(h + 8);
    if (unique != unique_[k] || error != 0 || len != p_.expect_len) {
      return "reply to unique " + std::to_string(unique_[k]) + ": out_header len " + std::to_string(len) + " error " +
             std::to_string(error) + " unique " + std::to_string(unique) + " (expected len " + std::to_string(p_.expect_len) +
             ", error 0)";
    }
    return "";
  }

  std::string State(uint16_t avail_idx, uint16_t last_used) const {
    return "avail.idx " + std::to_string(avail_idx) + ", used.idx " + std::to_string(LoadAcquire16(p_.used + 2)) +
           ", consumed " + std::to_string(last_used);
  }

  DriveResult Fail(const std::string& why) {
    r_.error = why;
    return r_;
  }

  DriveParams p_;
  DriveResult r_;
  std::vector<int> slot_of_;
  std::vector<int64_t> sent_at_;
  std::vector<uint64_t> unique_;
  uint64_t serial_ = p_.first_serial;
};

class DriveWorker : public Napi::AsyncWorker {
 public:
  DriveWorker(Napi::Env env, const DriveParams& p, Napi::Object keep)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), driver_(p) {
    keep_ = Napi::Persistent(keep);
  }
  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { result_ = driver_.Run(); }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("ops", Napi::Number::New(env, static_cast<double>(result_.ops)));
    o.Set("latencyNs", Napi::Number::New(env, result_.latency_ns));
    o.Set("kicks", Napi::Number::New(env, static_cast<double>(result_.kicks)));
    o.Set("wakeups", Napi::Number::New(env, static_cast<double>(result_.wakeups)));
    o.Set("availIdx", Napi::Number::New(env, driver_.AvailIdx()));
    o.Set("lastUsed", Napi::Number::New(env, driver_.LastUsed()));
    o.Set("error", result_.error.empty() ? env.Null() : Napi::String::New(env, result_.error));
    deferred_.Resolve(o);
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  Driver driver_;
  DriveResult result_;
};

bool GetBuffer(Napi::Object o, const char* name, uint8_t** data, size_t* len) {
  Napi::Value v = o.Get(name);
  if (!v.IsBuffer()) return false;
  Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
  *data = b.Data();
  *len = b.Length();
  return true;
}

double GetNumber(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
}

// driveQueue(options): Promise<{ops, latencyNs, kicks, wakeups, availIdx, lastUsed, error}>.
// The buffers named in options are kept alive until the promise settles.
Napi::Value DriveQueue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    Napi::TypeError::New(env, "driveQueue(options) expected").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  DriveParams p;
  size_t avail_len, used_len, requests_len, replies_len;
  auto bad = [&](const char* why) {
    Napi::RangeError::New(env, std::string("driveQueue: ") + why).ThrowAsJavaScriptException();
    return env.Undefined();
  };
  if (!GetBuffer(o, "avail", &p.avail, &avail_len) || !GetBuffer(o, "used", &p.used, &used_len) ||
      !GetBuffer(o, "requests", &p.requests, &requests_len) || !GetBuffer(o, "replies", &p.replies, &replies_len)) {
    return bad("avail, used, requests and replies must be Buffers");
  }
  p.size = static_cast<uint32_t>(GetNumber(o, "size"));
  p.event_idx = o.Get("eventIdx").ToBoolean();
  p.avail_idx = static_cast<uint16_t>(GetNumber(o, "availIdx"));
  p.last_used = static_cast<uint16_t>(GetNumber(o, "lastUsed"));
  p.kick_fd = static_cast<int>(GetNumber(o, "kickFd"));
  p.call_fd = static_cast<int>(GetNumber(o, "callFd"));
  p.request_stride = static_cast<size_t>(GetNumber(o, "requestStride"));
  p.reply_stride = static_cast<size_t>(GetNumber(o, "replyStride"));
  p.expect_len = static_cast<uint32_t>(GetNumber(o, "expectLen"));
  p.offset_at = static_cast<int64_t>(GetNumber(o, "offsetAt"));
  p.block_size = static_cast<uint64_t>(GetNumber(o, "blockSize"));
  p.blocks = static_cast<uint64_t>(GetNumber(o, "blocks"));
  p.first_serial = static_cast<uint64_t>(GetNumber(o, "firstSerial"));
  p.unique_base = static_cast<uint64_t>(GetNumber(o, "uniqueBase"));
  p.seconds = GetNumber(o, "seconds");
  Napi::Value heads = o.Get("heads");
  if (!heads.IsArray()) return bad("heads must be an array");
  Napi::Array ha = heads.As<Napi::Array>();
  for (uint32_t i = 0; i < ha.Length(); i++) p.heads.push_back(static_cast<uint16_t>(ha.Get(i).As<Napi::Number>().Uint32Value()));
  const size_t depth = p.heads.size();
  if (p.size == 0 || (p.size & (p.size - 1)) != 0 || p.size > 32768) return bad("size must be a power of two");
  if (avail_len < 6 + 2 * static_cast<size_t>(p.size) || used_len < 6 + 8 * static_cast<size_t>(p.size)) return bad("rings too small for size");
  if (depth == 0 || depth > p.size) return bad("heads: 1 to size chains");
  for (uint16_t h : p.heads) {
    if (h >= p.size) return bad("head outside the descriptor table");
  }
  if (p.kick_fd < 0 || p.call_fd < 0) return bad("kickFd and callFd needed");
  if (p.request_stride < kInHeaderSize || depth * p.request_stride > requests_len) return bad("requests too small");
  if (p.reply_stride < kOutHeaderSize || depth * p.reply_stride > replies_len) return bad("replies too small");
  if (p.offset_at >= 0 && (static_cast<size_t>(p.offset_at) + 8 > p.request_stride || p.blocks == 0)) return bad("bad offset field");
  if (!(p.seconds > 0)) return bad("seconds must be positive");
  DriveWorker* w = new DriveWorker(env, p, o);
  w->Queue();
  return w->Promise();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("driveQueue", Napi::Function::New(env, DriveQueue));
  return exports;
}

}  // namespace

NODE_API_MODULE(virtiofsd_bench, Init)
