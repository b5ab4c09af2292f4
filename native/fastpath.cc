// The FUSE fast path: READ and WRITE answered in native code on the queue's thread, as the
// native virtqueue pops them, without a trip through JS. They are most of what a guest
// sends under load, and through JS each costs a dozen N-API calls and as many objects; here
// it costs the system call. Attached to a queue as its ChainServer (chainserver.h) by the
// device (src/fs-device.ts), one per queue thread.
//
// It serves only the plain case, and declines everything else to the FUSE server in JS,
// which answers as for any request: a request whose lengths disagree, an offset past 2^63, a
// reply buffer too small for the reply, a WRITE on a read-only share. What it serves it
// serves as src/fuse/server.ts and the passthrough file system would: the same handle
// table, the same transfer (io.cc), the same reply, and with --thread-pool-size the same
// hand-over to the I/O pool (iopool.cc).
#include "chainserver.h"
#include "iopool.h"

#include <climits>

namespace vfsn {
namespace {

// include/uapi/linux/fuse.h
constexpr uint32_t kOpRead = 15, kOpWrite = 16;
// fuse_in_header, then fuse_read_in or fuse_write_in (40 bytes each)
constexpr uint32_t kInHeaderSize = 40, kRwInSize = 40, kArgsEnd = kInHeaderSize + kRwInSize;
// fuse_out_header, fuse_write_out
constexpr uint32_t kOutHeaderSize = 16, kWriteOutSize = 8;
constexpr napi_type_tag kFastPathTag = {0x6675736566617374ULL, 0x7061746876667364ULL};

// The (gpa, len) pairs of bytes [skip, skip + len) of the n ranges in pairs, into out.
void SlicePairs(const double* pairs, size_t n, uint64_t skip, uint64_t len, std::vector<double>* out) {
  out->clear();
  for (size_t i = 0; i < n && len > 0; i++) {
    uint64_t gpa = static_cast<uint64_t>(pairs[2 * i]), plen = static_cast<uint64_t>(pairs[2 * i + 1]);
    if (skip >= plen) {
      skip -= plen;
      continue;
    }
    uint64_t take = std::min(plen - skip, len);
    out->push_back(static_cast<double>(gpa + skip));
    out->push_back(static_cast<double>(take));
    skip = 0;
    len -= take;
  }
}

class FuseFastPath : public Napi::ObjectWrap<FuseFastPath>, public ChainServer {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "FuseFastPath", {InstanceMethod("counts", &FuseFastPath::Counts)});
  }

  // new FuseFastPath(stateId, readOnly, pool): pool is --thread-pool-size > 0.
  explicit FuseFastPath(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FuseFastPath>(info) {
    if (!ArgInt(info, 0, &state_) || !StateById(state_)) {
      ThrowType(info.Env(), "new FuseFastPath(stateId, readOnly, pool)");
      return;
    }
    readOnly_ = info[1].ToBoolean();
    pool_ = info[2].ToBoolean();
    info.This().As<Napi::Object>().TypeTag(&kFastPathTag);
  }

  Result Serve(const ChainView& c) override {
    if (c.prefetched < kArgsEnd) return kDeclined;
    const uint8_t* p = c.prefetch;
    uint32_t len = Load32(p), opcode = Load32(p + 4);
    if (opcode != kOpRead && opcode != kOpWrite) return kDeclined;
    bool write = opcode == kOpWrite;
    uint64_t unique = Load64(p + 8), fh = Load64(p + kInHeaderSize), offset = Load64(p + kInHeaderSize + 8);
    uint64_t size = Load32(p + kInHeaderSize + 16);
    uint64_t replyLen = write ? kOutHeaderSize + kWriteOutSize : kOutHeaderSize;
    if (len < kArgsEnd || len > c.readableLen || offset > static_cast<uint64_t>(INT64_MAX) || c.writableLen < replyLen) return kDeclined;
    if (write && (readOnly_ || size > c.readableLen - kArgsEnd)) return kDeclined;
    if (!write) size = std::min<uint64_t>(size, c.writableLen - kOutHeaderSize);
    FsState* s = StateById(state_);
    if (!s) return kDeclined;
    // WRITE data follows its arguments; READ data goes after the reply header.
    const double* writable = c.pairs + 2 * c.nr;
    if (write)
      SlicePairs(c.pairs, c.nr, kArgsEnd, size, &data_);
    else
      SlicePairs(writable, c.nw, kOutHeaderSize, size, &data_);
    SlicePairs(writable, c.nw, 0, replyLen, &headerPairs_);
    header_.clear();
    std::vector<iovec>* iov;
    if (GuestIovecs(c.table, headerPairs_.data(), headerPairs_.size() / 2, &header_) ||
        ThreadGuestIovecs(c.table, data_.data(), data_.size() / 2, &iov))
      return kDeclined;  // cannot happen for a walked chain; JS would answer EFAULT
    (write ? writes_ : reads_)++;
    int64_t r;
    auto pos = static_cast<int64_t>(offset);
    if (pool_) {
      if (!TransferOrQueue(s, fh, pos, *iov, std::vector<iovec>(header_), write, c.table, c.ring, c.head, unique, &r)) return kPooled;
    } else {
      HandlePin pin(s, fh);
      r = pin.fd() < 0 ? pin.fd() : TransferIov(pin.fd(), pos, *iov, write);
    }
    c.ring->Complete(c.head, WriteFuseReply(header_, write ? ReplyBody::kWriteOut : ReplyBody::kData, unique, r));
    return kCompleted;
  }

 private:
  // counts() -> [READs, WRITEs] served here.
  Napi::Value Counts(const Napi::CallbackInfo& info) {
    Napi::Array a = Napi::Array::New(info.Env(), 2);
    a.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(reads_)));
    a.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(writes_)));
    return a;
  }

  int64_t state_ = 0;
  bool readOnly_ = false, pool_ = false;
  uint64_t reads_ = 0, writes_ = 0;
  // Scratch, reused: the data's and the reply header's guest ranges, the header's iovecs.
  std::vector<double> data_, headerPairs_;
  std::vector<iovec> header_;
};

}  // namespace

ChainServer* ChainServerOf(const Napi::Value& v) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kFastPathTag)) return nullptr;
  return FuseFastPath::Unwrap(v.As<Napi::Object>());
}

void InitFastPath(Napi::Env env, Napi::Object exports) { exports.Set("FuseFastPath", FuseFastPath::Define(env)); }

}  // namespace vfsn
