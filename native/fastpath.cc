// The FUSE fast path: the requests a guest sends most, answered in native code on the
// queue's thread as the native virtqueue pops them, without a trip through JS. Through JS
// each costs a dozen N-API calls and as many objects; here it costs the system call. They are
// READ and WRITE (the data); GETATTR, LOOKUP and FORGET (three quarters of a metadata
// workload: stat, open and create each look a name up, and every name looked up is forgotten
// later); OPEN, FLUSH and RELEASE, which every open() and close() sends; SETATTR (touch,
// chmod, truncate); CREATE, MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR, RENAME and RENAME2
// (an editor's save); listing a directory: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, and
// READLINK (ls -l of a symlink); with --xattr GETXATTR, which Linux sends before every write
// it caches; and the requests that may take long in the kernel, so that they block only
// their own queue's thread (or a pool thread) and never the JS thread the queues share:
// FSYNC, FSYNCDIR, SYNCFS, FALLOCATE, COPY_FILE_RANGE, LSEEK and STATFS; and ACCESS (a
// shell's every executable test), GETLK, SETLK, and SETLKW unless it must wait (POSIX and
// flock locks are on by default), which would otherwise all queue for the one JS thread.
// When a queue has no kick thread (JS pops, and offers each chain here on its own thread),
// those that block for long go to JS instead, which runs them on libuv's pool
// (asyncops.cc). Attached to a queue as its ChainServer (chainserver.h) by the device
// (src/fs-device.ts), one per queue thread, the hiprio queue included (FORGETs come there).
//
// It serves only the plain case, and declines everything else to the FUSE server in JS,
// which answers as for any request: a request whose lengths disagree, an offset past 2^63, a
// reply buffer too small for the reply, a WRITE on a read-only share, a name that is not one
// plain component. What it serves it serves as src/fuse/server.ts and the passthrough file
// system would: the same inode and handle tables (state.cc), the same transfer (io.cc), the
// same reply with the same cache timeouts (src/cache/policy.ts), and with --thread-pool-size
// the same hand-over to the I/O pool (iopool.cc).
#include "chainserver.h"
#include "iopool.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <thread>

namespace vfsn {
namespace {

// include/uapi/linux/fuse.h
constexpr uint32_t kOpLookup = 1, kOpForget = 2, kOpGetattr = 3, kOpSetattr = 4, kOpReadlink = 5, kOpSymlink = 6, kOpMknod = 8, kOpMkdir = 9, kOpUnlink = 10, kOpRmdir = 11, kOpRename = 12, kOpLink = 13, kOpOpen = 14, kOpRead = 15,
                   kOpWrite = 16, kOpRelease = 18, kOpGetxattr = 22, kOpFlush = 25, kOpOpendir = 27, kOpReaddir = 28, kOpReleasedir = 29,
                   kOpCreate = 35, kOpReaddirplus = 44, kOpRename2 = 45, kOpStatfs = 17, kOpFsync = 20, kOpFsyncdir = 30,
                   kOpFallocate = 43, kOpLseek = 46, kOpCopyFileRange = 47, kOpSyncfs = 50, kOpGetlk = 31, kOpSetlk = 32,
                   kOpSetlkw = 33, kOpAccess = 34;
// fuse_lk_in.lk_flags
constexpr uint32_t kLkFlock = 1;
// fuse_fsync_in.fsync_flags
constexpr uint32_t kFsyncFdatasync = 1;
// fuse_open_out.open_flags
constexpr uint32_t kFopenKeepCache = 1 << 1;
// fuse_release_in.release_flags
constexpr uint32_t kReleaseFlockUnlock = 1 << 1;
// fuse_write_in.write_flags, fuse_open_in.open_flags and fuse_create_in.open_flags
constexpr uint32_t kWriteKillSuidgid = 1 << 2, kOpenKillSuidgid = 1 << 0;
constexpr uint64_t kRootNodeId = 1;
// fuse_in_header, then fuse_read_in or fuse_write_in (40 bytes each), fuse_forget_in, or
// fuse_release_in and fuse_flush_in (fh, then lock_owner at 16), fuse_create_in, fuse_open_in
constexpr uint32_t kInHeaderSize = 40, kRwInSize = 40, kArgsEnd = kInHeaderSize + kRwInSize, kForgetInSize = 8, kCloseInSize = 24,
                   kCreateInSize = 16, kOpenInSize = 8, kMknodInSize = 16, kMkdirInSize = 8, kSetattrInSize = 88,
                   kRenameInSize = 8, kRename2InSize = 16, kLinkInSize = 8, kGetxattrInSize = 8, kFsyncInSize = 16,
                   kFallocateInSize = 32, kLseekInSize = 24, kCopyFileRangeInSize = 56, kLkInSize = 48, kAccessInSize = 8;
// The largest integer a JS number holds exactly: larger sizes and times go to JS, whose
// answer for them is its own.
constexpr int64_t kMaxExactInJs = int64_t{1} << 53;
// fuse_out_header, fuse_write_out, fuse_attr, fuse_attr_out, fuse_entry_out, fuse_open_out
constexpr uint32_t kOutHeaderSize = 16, kWriteOutSize = 8, kGetxattrOutSize = 8, kLseekOutSize = 8, kStatfsOutSize = 80, kAttrSize = 88, kAttrOutSize = 16 + kAttrSize, kEntryOutSize = 40 + kAttrSize,
                   kOpenOutSize = 16, kLkOutSize = 24;
// The longest name a request may carry (NAME_MAX).
constexpr size_t kNameMax = 255;
// The largest extended attribute value JS reads (XATTR_SIZE_MAX in src/fuse/passthrough).
constexpr uint32_t kXattrSizeMax = 65536;
// The longest symlink target JS sends (longer ones are ENAMETOOLONG there).
constexpr uint32_t kMaxLinkTarget = 4095;
// The most a READDIR(PLUS) reply carries (MAX_OUT_BODY in src/fuse/server.ts).
constexpr uint32_t kMaxDirReply = 128 * 1024;
// The most argument bytes JS copies (MAX_IN_COPY in src/fuse/server.ts, which answers E2BIG
// beyond it); WRITE data does not count.
constexpr uint32_t kMaxArgs = 64 * 1024 + 8192;
constexpr napi_type_tag kFastPathTag = {0x6675736566617374ULL, 0x7061746876667364ULL};

inline void Store32(uint8_t* p, uint32_t v) { memcpy(p, &v, 4); }
inline void Store64(uint8_t* p, uint64_t v) { memcpy(p, &v, 8); }

// A cache timeout as FUSE carries it: whole seconds and nanoseconds.
struct Timeout {
  uint64_t sec = 0;
  uint32_t nsec = 0;
  static Timeout Of(double seconds) {
    double whole = std::floor(seconds);
    return Timeout{static_cast<uint64_t>(whole), static_cast<uint32_t>(std::lround((seconds - whole) * 1e9))};
  }
};

// fuse_attr (88 bytes at o) from attributes in StatxInto's layout (common.h).
void EncodeAttr(const double* st, uint8_t* o) {
  auto u64 = [](double v) { return static_cast<uint64_t>(v); };
  auto i64 = [](double v) { return static_cast<uint64_t>(static_cast<int64_t>(v)); };
  auto u32 = [](double v) { return static_cast<uint32_t>(v); };
  uint32_t major = u32(st[8]), minor = u32(st[9]);
  Store64(o, ExactIno(st));      // ino
  Store64(o + 8, u64(st[10]));   // size
  Store64(o + 16, u64(st[11]));  // blocks
  Store64(o + 24, i64(st[13]));  // atime
  Store64(o + 32, i64(st[15]));  // mtime
  Store64(o + 40, i64(st[17]));  // ctime
  Store32(o + 48, u32(st[14]));
  Store32(o + 52, u32(st[16]));
  Store32(o + 56, u32(st[18]));
  Store32(o + 60, u32(st[4]));  // mode
  Store32(o + 64, u32(st[5]));  // nlink
  Store32(o + 68, u32(st[6]));  // uid
  Store32(o + 72, u32(st[7]));  // gid
  // rdev as the kernel's new_encode_dev()
  Store32(o + 76, (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xffu) << 12));
  Store32(o + 80, u32(st[12]));  // blksize
  Store32(o + 84, static_cast<uint32_t>(st[kAttrFlagsField]));  // flags (FUSE_ATTR_SUBMOUNT)
}

// The host open flags for a guest's open flags: src/cache/policy.ts's hostOpenFlags. With the
// writeback cache the guest's page cache reads a file it opened write-only and does its own
// appending; O_DIRECT only when the cache options allow it.
int HostOpenFlags(int f, uint32_t session, bool allowDirectIo) {
  if (session & kSessionWriteback) {
    if ((f & O_ACCMODE) == O_WRONLY) f = (f & ~O_ACCMODE) | O_RDWR;
    f &= ~O_APPEND;
  }
  if (!allowDirectIo) f &= ~O_DIRECT;
  return f;
}

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

  // new FuseFastPath({stateId, readOnly, pool, posixLock, flock, xattr, entryTimeout, attrTimeout,
  // negativeTimeout, fileOpenFlags, dirOpenFlags, keepCacheIfUnchanged, allowDirectIo}): pool
  // is --thread-pool-size > 0, posixLock and flock whether POSIX and flock() locks are served, xattr whether
  // extended attributes are (--xattr); the timeouts (in
  // seconds), the FOPEN_* flags of a file and of a directory opened and whether an unchanged
  // file keeps the guest's cache at an open are the cache policy's.
  explicit FuseFastPath(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FuseFastPath>(info) {
    Napi::Value o = info[0];
    auto num = [&](const char* key, double* out) {
      Napi::Value v = o.As<Napi::Object>().Get(key);
      if (!v.IsNumber()) return false;
      *out = v.As<Napi::Number>().DoubleValue();
      return std::isfinite(*out) && *out >= 0 && *out < 9.2e18;  // fits a u64 of seconds
    };
    double id, entry, attr, negative, fopen, dopen;
    if (!o.IsObject() || !num("stateId", &id) || !num("entryTimeout", &entry) || !num("attrTimeout", &attr) ||
        !num("negativeTimeout", &negative) || !num("fileOpenFlags", &fopen) || fopen > UINT32_MAX ||
        !num("dirOpenFlags", &dopen) || dopen > UINT32_MAX ||
        !StateById(static_cast<int64_t>(id))) {
      ThrowType(info.Env(),
                "new FuseFastPath({stateId, readOnly, pool, posixLock, flock, xattr, killprivV2, entryTimeout, attrTimeout, negativeTimeout, fileOpenFlags, "
                "dirOpenFlags, keepCacheIfUnchanged, allowDirectIo})");
      return;
    }
    fileOpenFlags_ = static_cast<uint32_t>(fopen);
    dirOpenFlags_ = static_cast<uint32_t>(dopen);
    allowDirectIo_ = o.As<Napi::Object>().Get("allowDirectIo").ToBoolean();
    keepCacheIfUnchanged_ = o.As<Napi::Object>().Get("keepCacheIfUnchanged").ToBoolean();
    // Held for the fast path's life: a kick thread may serve through it until its queue stops.
    state_ = StateById(static_cast<int64_t>(id));
    HoldState(state_);
    readOnly_ = o.As<Napi::Object>().Get("readOnly").ToBoolean();
    pool_ = o.As<Napi::Object>().Get("pool").ToBoolean();
    posixLock_ = o.As<Napi::Object>().Get("posixLock").ToBoolean();
    flock_ = o.As<Napi::Object>().Get("flock").ToBoolean();
    xattr_ = o.As<Napi::Object>().Get("xattr").ToBoolean();
    killprivV2_ = o.As<Napi::Object>().Get("killprivV2").ToBoolean();
    entryTimeout_ = Timeout::Of(entry);
    attrTimeout_ = Timeout::Of(attr);
    negativeTimeout_ = Timeout::Of(negative);
    info.This().As<Napi::Object>().TypeTag(&kFastPathTag);
  }

  ~FuseFastPath() override { ReleaseState(state_); }

  Result Serve(const ChainView& c) override {
    if (c.prefetched < kInHeaderSize) return kDeclined;
    const uint8_t* p = c.prefetch;
    uint32_t len = Load32(p), opcode = Load32(p + 4);
    if (len < kInHeaderSize || len > c.readableLen) return kDeclined;
    if (opcode != kOpWrite && len - kInHeaderSize > kMaxArgs) return kDeclined;
    FsState* s = state_;
    if (s->destroyed.load(std::memory_order_acquire)) return kDeclined;
    // No session (before INIT, after DESTROY): JS answers EIO, as libfuse does.
    if (!(s->sessionFlags.load(std::memory_order_relaxed) & kSessionStarted)) return kDeclined;
    switch (opcode) {
      case kOpRead:
      case kOpWrite:
        return ServeTransfer(c, s, len, opcode == kOpWrite);
      case kOpGetattr:
        return ServeGetattr(c, s);
      case kOpLookup:
        return ServeLookup(c, s, len);
      case kOpForget:
        return ServeForget(c, s, len);
      case kOpFlush:
      case kOpRelease:
        return ServeClose(c, s, len, opcode == kOpRelease);
      case kOpUnlink:
      case kOpRmdir:
        return ServeUnlink(c, s, len, opcode == kOpRmdir);
      case kOpCreate:
        return ServeCreate(c, s, len);
      case kOpMknod:
        return ServeMake(c, s, len, MakeKind::kMknod);
      case kOpMkdir:
        return ServeMake(c, s, len, MakeKind::kMkdir);
      case kOpSymlink:
        return ServeMake(c, s, len, MakeKind::kSymlink);
      case kOpOpen:
      case kOpOpendir:
        return ServeOpen(c, s, len, opcode == kOpOpendir);
      case kOpReaddir:
      case kOpReaddirplus:
        return ServeReaddir(c, s, len, opcode == kOpReaddirplus);
      case kOpReleasedir:
        return ServeReleasedir(c, s, len);
      case kOpSetattr:
        return ServeSetattr(c, s, len);
      case kOpRename:
      case kOpRename2:
        return ServeRename(c, s, len, opcode == kOpRename2);
      case kOpLink:
        return ServeLink(c, s, len);
      case kOpReadlink:
        return ServeReadlink(c, s);
      case kOpGetxattr:
        return ServeGetxattr(c, s, len);
      case kOpFsync:
      case kOpFsyncdir:
        return ServeFsync(c, s, len, opcode == kOpFsyncdir);
      case kOpSyncfs:
        return ServeSyncfs(c, s);
      case kOpFallocate:
        return ServeFallocate(c, s, len);
      case kOpCopyFileRange:
        return ServeCopyRange(c, s, len);
      case kOpLseek:
        return ServeLseek(c, s, len);
      case kOpStatfs:
        return ServeStatfs(c, s);
      case kOpGetlk:
        return ServeGetlk(c, s, len);
      case kOpSetlk:
      case kOpSetlkw:
        return ServeSetlk(c, s, len, opcode == kOpSetlkw);
      case kOpAccess:
        return ServeAccess(c, s, len);
      default:
        return kDeclined;
    }
  }

 private:
  Result ServeTransfer(const ChainView& c, FsState* s, uint32_t len, bool write) {
    if (len < kArgsEnd || c.prefetched < kArgsEnd) return kDeclined;
    const uint8_t* p = c.prefetch;
    uint64_t unique = Load64(p + 8), fh = Load64(p + kInHeaderSize), offset = Load64(p + kInHeaderSize + 8);
    uint64_t size = Load32(p + kInHeaderSize + 16);
    // fuse_write_in.write_flags: the writer lacks CAP_FSETID, setuid and setgid must go.
    bool kill = write && (Load32(p + kInHeaderSize + 20) & kWriteKillSuidgid);
    uint64_t replyLen = write ? kOutHeaderSize + kWriteOutSize : kOutHeaderSize;
    if (offset > static_cast<uint64_t>(INT64_MAX) || c.writableLen < replyLen) return kDeclined;
    // A WRITE's data is what the header's length leaves after its arguments (len <= readableLen).
    if (write && (readOnly_ || size > len - kArgsEnd)) return kDeclined;
    // A READ's reply length (header and data) must fit the u32 of the used ring.
    if (!write) size = std::min<uint64_t>({size, c.writableLen - kOutHeaderSize, UINT32_MAX - kOutHeaderSize});
    // WRITE data follows its arguments; READ data goes after the reply header.
    const double* writable = c.pairs + 2 * c.nr;
    if (write)
      SlicePairs(c.pairs, c.nr, kArgsEnd, size, &data_);
    else
      SlicePairs(writable, c.nw, kOutHeaderSize, size, &data_);
    // The header's and the data's iovecs come from one snapshot of guest memory, which the
    // pool's job holds until its reply is written (GuestMemoryPin). A table replaced while
    // they were translated (the JS thread applying SET_MEM_TABLE) declines the chain: JS
    // serves it against the new table. A walked chain is otherwise always in guest memory.
    GuestMemoryPin mem;
    std::vector<iovec>* iov;
    if (!mem.Take(c.table) || !ReplyIovecs(c, replyLen) || ThreadGuestIovecs(c.table, data_.data(), data_.size() / 2, &iov) ||
        !mem.Unchanged())
      return kDeclined;
    (write ? writes_ : reads_)++;
    int64_t r;
    auto pos = static_cast<int64_t>(offset);
    if (pool_) {
      if (!TransferOrQueue(s, fh, pos, *iov, std::vector<iovec>(header_), write, kill, std::move(mem.keep), c.ring, c.head, unique,
                           &r))
        return kPooled;
    } else {
      HandlePin pin(s, fh);
      FsetidDropped f(kill && pin.fd() >= 0);
      if (write) s->DropMappedCapability(pin.fd());
      r = pin.fd() < 0 ? pin.fd() : f.error() ? f.error() : TransferIov(pin.fd(), pos, *iov, write);
    }
    c.ring->Complete(c.head, WriteFuseReply(header_, write ? ReplyBody::kWriteOut : ReplyBody::kData, unique, r));
    return kCompleted;
  }

  // GETATTR: the node's attributes (the handle fuse_getattr_in may name is not needed: the
  // node's O_PATH descriptor describes the same file).
  Result ServeGetattr(const ChainView& c, FsState* s) {
    if (c.writableLen < kOutHeaderSize + kAttrOutSize) return kDeclined;
    double st[kStatxFields];
    int r = StatxNode(s, Load64(c.prefetch + 16), st);
    getattrs_++;
    return AttrReply(c, r, st);
  }

  // SETATTR (not on a read-only share): the changes made as JS makes them (SetAttributes),
  // the reply the attributes afterwards. Sizes and times beyond what a JS number holds
  // exactly go to JS.
  Result ServeSetattr(const ChainView& c, FsState* s, uint32_t len) {
    if (readOnly_ || len < kInHeaderSize + kSetattrInSize || c.prefetched < kInHeaderSize + kSetattrInSize ||
        c.writableLen < kOutHeaderSize + kAttrOutSize)
      return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    SetattrArgs args;
    args.valid = Load32(a);
    args.fh = Load64(a + 8);
    args.size = static_cast<int64_t>(Load64(a + 16));
    args.atime = static_cast<int64_t>(Load64(a + 32));
    args.mtime = static_cast<int64_t>(Load64(a + 40));
    args.atimeNsec = Load32(a + 56);
    args.mtimeNsec = Load32(a + 60);
    args.mode = Load32(a + 68);
    args.uid = Load32(a + 76);
    args.gid = Load32(a + 80);
    auto exact = [](int64_t v) { return v >= -kMaxExactInJs && v <= kMaxExactInJs; };
    if (((args.valid & kFattrSize) && !exact(args.size)) || ((args.valid & kFattrAtime) && !exact(args.atime)) ||
        ((args.valid & kFattrMtime) && !exact(args.mtime)))
      return kDeclined;
    double st[kStatxFields];
    int r = SetAttributes(s, Load64(c.prefetch + 16), args, st);
    setattrs_++;
    return AttrReply(c, r, st);
  }

  // fuse_attr_out of st with the policy's attribute timeout, or error r.
  Result AttrReply(const ChainView& c, int r, const double* st) {
    if (r < 0) return Reply(c, r, 0);
    uint8_t* b = reply_ + kOutHeaderSize;
    Store64(b, attrTimeout_.sec);
    Store32(b + 8, attrTimeout_.nsec);
    Store32(b + 12, 0);
    EncodeAttr(st, b + 16);
    return Reply(c, 0, kAttrOutSize);
  }

  // fuse_entry_out for nodeid with attributes st, or error nodeid (a -errno).
  Result EntryReply(const ChainView& c, int64_t nodeid, const double* st) {
    if (nodeid < 0) return Reply(c, static_cast<int32_t>(nodeid), 0);
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kEntryOutSize);
    EncodeEntry(b, static_cast<uint64_t>(nodeid), st);
    return Reply(c, 0, kEntryOutSize);
  }

  // RENAME and RENAME2 (renameat2's flags) of plain names other than '.' and '..' (not on
  // a read-only share).
  Result ServeRename(const ChainView& c, FsState* s, uint32_t len, bool two) {
    uint32_t at = kInHeaderSize + (two ? kRename2InSize : kRenameInSize);
    if (readOnly_ || len < at || c.prefetched < at || c.writableLen < kOutHeaderSize) return kDeclined;
    size_t n1, n2;
    const char* oldName = PlainName(c, len, &n1, at);
    if (!oldName || IsDotOrDotDot(oldName, n1)) return kDeclined;
    const char* newName = PlainName(c, len, &n2, at + static_cast<uint32_t>(n1) + 1);
    if (!newName || IsDotOrDotDot(newName, n2)) return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    int r = RenameName(s, Load64(c.prefetch + 16), oldName, Load64(a), newName, two ? Load32(a + 8) : 0);
    (two ? rename2s_ : renames_)++;
    return Reply(c, r, 0);
  }

  // LINK of the node fuse_link_in names as a plain name other than '.' and '..' in the
  // request's node (not on a read-only share): the new entry, one more lookup reference.
  Result ServeLink(const ChainView& c, FsState* s, uint32_t len) {
    uint32_t at = kInHeaderSize + kLinkInSize;
    if (readOnly_ || len < at || c.prefetched < at || c.writableLen < kOutHeaderSize + kEntryOutSize) return kDeclined;
    size_t n;
    const char* name = PlainName(c, len, &n, at);
    if (!name || IsDotOrDotDot(name, n)) return kDeclined;
    double st[kStatxFields];
    int64_t nodeid = LinkName(s, Load64(c.prefetch + kInHeaderSize), Load64(c.prefetch + 16), name, st);
    links_++;
    return EntryReply(c, nodeid, st);
  }

  // READLINK: the target, without a NUL. One longer than JS sends, or longer than the
  // guest's reply buffer, goes to JS, which answers it.
  Result ServeReadlink(const ChainView& c, FsState* s) {
    if (dirReply_.size() < kOutHeaderSize + kMaxLinkTarget + 1) dirReply_.resize(kOutHeaderSize + kMaxLinkTarget + 1);
    int64_t n = ReadLinkNode(s, Load64(c.prefetch + 16), reinterpret_cast<char*>(dirReply_.data() + kOutHeaderSize),
                             kMaxLinkTarget + 1);
    if (n > kMaxLinkTarget || (n >= 0 && c.writableLen < kOutHeaderSize + static_cast<uint64_t>(n))) return kDeclined;
    readlinks_++;
    if (n < 0) return Reply(c, static_cast<int32_t>(n), 0);
    return Send(c, dirReply_.data(), 0, static_cast<uint32_t>(n));
  }

  // GETXATTR, with --xattr (without it JS answers ENOSYS, and the guest asks no more): the
  // value, or with size 0 its size. Linux asks for security.capability before every write
  // to a file it caches, so this is as common as WRITE there. A name that is not a plain
  // string of 1 to 255 bytes, or a value longer than the reply buffer, goes to JS.
  Result ServeGetxattr(const ChainView& c, FsState* s, uint32_t len) {
    uint32_t at = kInHeaderSize + kGetxattrInSize;
    if (!xattr_ || len < at || c.prefetched < at) return kDeclined;
    uint32_t size = std::min(Load32(c.prefetch + kInHeaderSize), kXattrSizeMax);
    if (c.writableLen < kOutHeaderSize + (size == 0 ? kGetxattrOutSize : 0)) return kDeclined;
    size_t n;
    const char* name = PlainName(c, len, &n, at);
    if (!name) return kDeclined;
    if (dirReply_.size() < kOutHeaderSize + kXattrSizeMax) dirReply_.resize(kOutHeaderSize + kXattrSizeMax);
    int64_t r = GetXattrNode(s, Load64(c.prefetch + 16), name, reinterpret_cast<char*>(dirReply_.data() + kOutHeaderSize), size);
    if (r >= 0 && size > 0 && c.writableLen < kOutHeaderSize + static_cast<uint64_t>(r)) return kDeclined;
    getxattrs_++;
    if (r < 0) return Reply(c, static_cast<int32_t>(r), 0);
    if (size > 0) return Send(c, dirReply_.data(), 0, static_cast<uint32_t>(r));
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kGetxattrOutSize);
    Store32(b, static_cast<uint32_t>(r));
    return Reply(c, 0, kGetxattrOutSize);
  }

  // LOOKUP of a plain name: one component, 1 to 255 bytes, no '/'; at the root '..' is the
  // root itself. A missing name is cached as missing for the policy's negative timeout.
  Result ServeLookup(const ChainView& c, FsState* s, uint32_t len) {
    if (c.writableLen < kOutHeaderSize + kEntryOutSize) return kDeclined;
    size_t n;
    const char* name = PlainName(c, len, &n);
    if (!name) return kDeclined;
    uint64_t parent = Load64(c.prefetch + 16);
    if (parent == kRootNodeId && n == 2 && name[0] == '.' && name[1] == '.') name = ".";
    double st[kStatxFields];
    int64_t nodeid = LookupName(s, parent, name, st);
    lookups_++;
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kEntryOutSize);
    if (nodeid == -ENOENT && (negativeTimeout_.sec > 0 || negativeTimeout_.nsec > 0)) {
      // A negative entry: nodeid 0, no attributes, remembered for the negative timeout.
      Store64(b + 16, negativeTimeout_.sec);
      Store32(b + 32, negativeTimeout_.nsec);
      return Reply(c, 0, kEntryOutSize);
    }
    if (nodeid < 0) return Reply(c, static_cast<int32_t>(nodeid), 0);
    EncodeEntry(b, static_cast<uint64_t>(nodeid), st);
    return Reply(c, 0, kEntryOutSize);
  }

  // UNLINK and RMDIR of a plain name other than '.' and '..' (JS refuses those, and every
  // change on a read-only share).
  Result ServeUnlink(const ChainView& c, FsState* s, uint32_t len, bool rmdir) {
    if (readOnly_ || c.writableLen < kOutHeaderSize) return kDeclined;
    size_t n;
    const char* name = PlainName(c, len, &n);
    if (!name || IsDotOrDotDot(name, n)) return kDeclined;
    int r = UnlinkName(s, Load64(c.prefetch + 16), name, rmdir);
    (rmdir ? rmdirs_ : unlinks_)++;
    return Reply(c, r, 0);
  }

  // The request's name (the arguments of LOOKUP, UNLINK, RMDIR; after fuse_create_in for
  // CREATE, at offset at) when it is one plain path component: 1 to 255 bytes, no '/',
  // NUL-terminated within the request, all prefetched. nullptr otherwise (JS answers those).
  static const char* PlainName(const ChainView& c, uint32_t len, size_t* n, uint32_t at = kInHeaderSize) {
    if (len > c.prefetched || len <= at) return nullptr;
    const char* name = reinterpret_cast<const char*>(c.prefetch + at);
    const void* nul = memchr(name, '\0', len - at);
    if (!nul) return nullptr;
    *n = static_cast<const char*>(nul) - name;
    if (*n == 0 || *n > kNameMax || memchr(name, '/', *n)) return nullptr;
    return name;
  }

  // CREATE of a plain name other than '.' and '..' (not on a read-only share): a regular file
  // made and opened as the guest's caller, with the host open flags JS would use; the reply
  // is the new entry and the handle, opened with the cache policy's FOPEN_* flags. Requests
  // with extensions after their arguments (total_extlen) go to JS.
  Result ServeCreate(const ChainView& c, FsState* s, uint32_t len) {
    if (readOnly_ || c.writableLen < kOutHeaderSize + kEntryOutSize + kOpenOutSize) return kDeclined;
    const uint8_t* p = c.prefetch;
    if (Load16(p + 36) != 0) return kDeclined;
    size_t n;
    const char* name = PlainName(c, len, &n, kInHeaderSize + kCreateInSize);
    if (!name || IsDotOrDotDot(name, n)) return kDeclined;
    // CreateName drops O_CREAT, O_NOCTTY and O_NOFOLLOW and keeps O_EXCL's meaning, which
    // HostOpenFlags does not touch.
    int flags = HostOpenFlags(static_cast<int>(Load32(p + kInHeaderSize)), s->sessionFlags.load(std::memory_order_relaxed),
                              allowDirectIo_);
    uint32_t mode = Load32(p + kInHeaderSize + 4);
    double st[kStatxFields + 1];
    bool kill = Load32(p + kInHeaderSize + 12) & kOpenKillSuidgid;
    // fuse_create_in.umask: applied by the host only in a POSIX ACL session (ThreadUmask).
    int64_t nodeid = CreateName(s, Load64(p + 16), name, flags, mode, Load32(p + 24), Load32(p + 28), st, kill,
                                Load32(p + kInHeaderSize + 8));
    creates_++;
    if (nodeid < 0) return Reply(c, static_cast<int32_t>(nodeid), 0);
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kEntryOutSize + kOpenOutSize);
    EncodeEntry(b, static_cast<uint64_t>(nodeid), st);
    Store64(b + kEntryOutSize, static_cast<uint64_t>(st[kStatxFields]));
    Store32(b + kEntryOutSize + 8, fileOpenFlags_);
    return Reply(c, 0, kEntryOutSize + kOpenOutSize);
  }

  // MKNOD, MKDIR and SYMLINK of a plain name other than '.' and '..' (not on a read-only
  // share), made as the guest's caller with the mode (and device) the guest asks; a SYMLINK's
  // target is the NUL-terminated string after the name, and an empty one goes to JS
  // (ENOENT), as do requests with extensions (total_extlen).
  Result ServeMake(const ChainView& c, FsState* s, uint32_t len, MakeKind kind) {
    if (readOnly_ || c.writableLen < kOutHeaderSize + kEntryOutSize) return kDeclined;
    const uint8_t* p = c.prefetch;
    if (c.prefetched < kInHeaderSize || Load16(p + 36) != 0) return kDeclined;
    uint32_t at = kInHeaderSize + (kind == MakeKind::kMknod ? kMknodInSize : kind == MakeKind::kMkdir ? kMkdirInSize : 0);
    size_t n;
    const char* name = PlainName(c, len, &n, at);
    if (!name || IsDotOrDotDot(name, n)) return kDeclined;
    const char* target = "";
    uint32_t mode = 0777, rdev = 0, umask = 0;
    if (kind == MakeKind::kSymlink) {
      uint32_t t = at + static_cast<uint32_t>(n) + 1;
      if (t >= len) return kDeclined;
      target = reinterpret_cast<const char*>(p + t);
      if (target[0] == '\0' || !memchr(target, '\0', len - t)) return kDeclined;
    } else {
      mode = Load32(p + kInHeaderSize);
      // fuse_mknod_in: mode, rdev, umask; fuse_mkdir_in: mode, umask.
      if (kind == MakeKind::kMknod) rdev = Load32(p + kInHeaderSize + 4);
      umask = Load32(p + kInHeaderSize + (kind == MakeKind::kMknod ? 8 : 4));
    }
    double st[kStatxFields];
    int64_t nodeid = MakeNode(s, Load64(p + 16), name, kind, mode, rdev, target, Load32(p + 24), Load32(p + 28), st, umask);
    makes_[static_cast<int>(kind)]++;
    return EntryReply(c, nodeid, st);
  }

  // OPEN of a file: opened with the host open flags JS would use, the reply carries the
  // cache policy's FOPEN_* flags, plus KEEP_CACHE in cache auto when the file is unchanged
  // since its last open. On a read-only share an open for writing or truncating goes to JS
  // (EROFS). OPENDIR: the directory opened read-only, whatever the guest asks, with the
  // policy's FOPEN_* flags for directories.
  Result ServeOpen(const ChainView& c, FsState* s, uint32_t len, bool dir) {
    if (len < kInHeaderSize + kOpenInSize || c.prefetched < kInHeaderSize + kOpenInSize ||
        c.writableLen < kOutHeaderSize + kOpenOutSize)
      return kDeclined;
    int guest = static_cast<int>(Load32(c.prefetch + kInHeaderSize));
    if (!dir && readOnly_ && (guest & (O_WRONLY | O_RDWR | O_TRUNC))) return kDeclined;
    uint64_t nodeid = Load64(c.prefetch + 16);
    int flags = HostOpenFlags(guest, s->sessionFlags.load(std::memory_order_relaxed), allowDirectIo_);
    if (dir) flags = (flags & ~(O_WRONLY | O_RDWR)) | O_DIRECTORY;
    // fuse_open_in.open_flags: a truncating opener without CAP_FSETID (FUSE_HANDLE_KILLPRIV_V2).
    int64_t fh = OpenNode(s, nodeid, flags, !dir && (Load32(c.prefetch + kInHeaderSize + 4) & kOpenKillSuidgid));
    (dir ? opendirs_ : opens_)++;
    if (fh < 0) return Reply(c, static_cast<int32_t>(fh), 0);
    uint32_t fopen = dir ? dirOpenFlags_ : fileOpenFlags_;
    if (!dir && keepCacheIfUnchanged_ && UnchangedSinceLastOpen(s, nodeid)) fopen |= kFopenKeepCache;
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kOpenOutSize);
    Store64(b, static_cast<uint64_t>(fh));
    Store32(b + 8, fopen);
    return Reply(c, 0, kOpenOutSize);
  }

  // READDIR and READDIRPLUS: the records ReadDirectory encodes (fileops.cc, as for JS), at
  // most what the guest asked for, its reply buffer holds and JS would send; built in a
  // buffer of this server's and copied into the reply.
  Result ServeReaddir(const ChainView& c, FsState* s, uint32_t len, bool plus) {
    if (len < kArgsEnd || c.prefetched < kArgsEnd || c.writableLen < kOutHeaderSize) return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    uint32_t size = std::min<uint64_t>({Load32(a + 16), c.writableLen - kOutHeaderSize, kMaxDirReply});
    dirReply_.resize(kOutHeaderSize + kMaxDirReply);
    double timeouts[4] = {static_cast<double>(entryTimeout_.sec), static_cast<double>(entryTimeout_.nsec),
                          static_cast<double>(attrTimeout_.sec), static_cast<double>(attrTimeout_.nsec)};
    int64_t n = ReadDirectory(s, Load64(a), static_cast<int64_t>(Load64(a + 8)), dirReply_.data() + kOutHeaderSize, size, plus,
                              timeouts);
    (plus ? readdirpluses_ : readdirs_)++;
    if (n < 0) return Reply(c, static_cast<int32_t>(n), 0);
    return Send(c, dirReply_.data(), 0, static_cast<uint32_t>(n));
  }

  // RELEASEDIR: the directory handle is dropped once no request pins it.
  Result ServeReleasedir(const ChainView& c, FsState* s, uint32_t len) {
    if (len < kInHeaderSize + kCloseInSize || c.prefetched < kInHeaderSize + kCloseInSize || c.writableLen < kOutHeaderSize)
      return kDeclined;
    int r = RemoveHandle(s, Load64(c.prefetch + kInHeaderSize));
    releasedirs_++;
    return Reply(c, r, 0);
  }

  // FSYNC and FSYNCDIR of a handle: on the I/O pool when there is one (which replies), else
  // on this queue's kick thread.
  Result ServeFsync(const ChainView& c, FsState* s, uint32_t len, bool dir) {
    if (len < kInHeaderSize + kFsyncInSize || c.prefetched < kInHeaderSize + kFsyncInSize || c.writableLen < kOutHeaderSize ||
        (!pool_ && OnJsThread()))
      return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    uint64_t fh = Load64(a);
    bool datasync = Load32(a + 8) & kFsyncFdatasync;
    if (pool_) {
      GuestMemoryPin mem;  // as ServeTransfer's: the pool writes the reply into header_
      if (!mem.Take(c.table) || !ReplyIovecs(c, kOutHeaderSize) || !mem.Unchanged()) return kDeclined;
      (dir ? fsyncdirs_ : fsyncs_)++;
      int64_t r;
      if (!SyncOrQueue(s, fh, datasync, std::vector<iovec>(header_), std::move(mem.keep), c.ring, c.head, Load64(c.prefetch + 8),
                       &r))
        return kPooled;
      return Reply(c, static_cast<int32_t>(r), 0);
    }
    (dir ? fsyncdirs_ : fsyncs_)++;
    return Reply(c, SyncHandle(s, fh, datasync), 0);
  }

  // SYNCFS: the file system holding the node (fuse_syncfs_in is only padding).
  Result ServeSyncfs(const ChainView& c, FsState* s) {
    if (c.writableLen < kOutHeaderSize || OnJsThread()) return kDeclined;
    syncfses_++;
    return Reply(c, SyncfsNode(s, Load64(c.prefetch + 16)), 0);
  }

  // Whether a FALLOCATE or COPY_FILE_RANGE runs without CAP_FSETID: with FUSE_HANDLE_KILLPRIV_V2
  // the guest leaves clearing setuid and setgid to us, and these two requests carry no flag
  // saying whether the caller may keep them; a caller other than root is taken to lack
  // CAP_FSETID (what a local fallocate or copy_file_range by that user would do).
  bool KillsSuidgid(const ChainView& c) const { return killprivV2_ && Load32(c.prefetch + 24) != 0; }

  // FALLOCATE (not on a read-only share, which JS refuses), whatever its offset and length:
  // an XFS or btrfs file may reach 8 EiB (JS, which carries them as doubles, refuses those
  // past 2^53 with EOVERFLOW).
  Result ServeFallocate(const ChainView& c, FsState* s, uint32_t len) {
    if (readOnly_ || len < kInHeaderSize + kFallocateInSize || c.prefetched < kInHeaderSize + kFallocateInSize ||
        c.writableLen < kOutHeaderSize || OnJsThread())
      return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    uint64_t offset = Load64(a + 8), length = Load64(a + 16);
    fallocates_++;
    return Reply(c, FallocateHandle(s, Load64(a), static_cast<int>(Load32(a + 24)), static_cast<int64_t>(offset),
                                    static_cast<int64_t>(length), KillsSuidgid(c)),
                 0);
  }

  // COPY_FILE_RANGE (not on a read-only share): the bytes copied as fuse_write_out, whatever
  // the offsets. Lengths and flags past 32 bits go to JS.
  Result ServeCopyRange(const ChainView& c, FsState* s, uint32_t len) {
    if (readOnly_ || len < kInHeaderSize + kCopyFileRangeInSize || c.prefetched < kInHeaderSize + kCopyFileRangeInSize ||
        c.writableLen < kOutHeaderSize + kWriteOutSize || OnJsThread())
      return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    uint64_t offIn = Load64(a + 8), offOut = Load64(a + 32), length = Load64(a + 40), flags = Load64(a + 48);
    if (length > UINT32_MAX || flags > UINT32_MAX) return kDeclined;
    copyRanges_++;
    int64_t r = CopyRangeHandles(s, Load64(a), static_cast<int64_t>(offIn), Load64(a + 24), static_cast<int64_t>(offOut), length,
                                 static_cast<unsigned>(flags), KillsSuidgid(c));
    if (r < 0) return Reply(c, static_cast<int32_t>(r), 0);
    Store32(reply_ + kOutHeaderSize, static_cast<uint32_t>(r));
    Store32(reply_ + kOutHeaderSize + 4, 0);
    return Reply(c, 0, kWriteOutSize);
  }

  // LSEEK (SEEK_DATA and SEEK_HOLE: Linux answers the others itself): the offset found,
  // exactly, from any offset.
  Result ServeLseek(const ChainView& c, FsState* s, uint32_t len) {
    if (len < kInHeaderSize + kLseekInSize || c.prefetched < kInHeaderSize + kLseekInSize ||
        c.writableLen < kOutHeaderSize + kLseekOutSize)
      return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    uint64_t offset = Load64(a + 8);
    lseeks_++;
    int64_t r = SeekHandle(s, Load64(a), static_cast<int64_t>(offset), static_cast<int>(Load32(a + 16)));
    if (r < 0) return Reply(c, static_cast<int32_t>(r), 0);
    Store64(reply_ + kOutHeaderSize, static_cast<uint64_t>(r));
    return Reply(c, 0, kLseekOutSize);
  }

  // STATFS: the file system holding the node, as fuse_kstatfs. Counts are sent exactly as
  // the host has them (JS, which carries them as doubles, rounds those past 2^53, and fails
  // on a count near 2^64, as some network file systems report free inodes: EIO).
  Result ServeStatfs(const ChainView& c, FsState* s) {
    if (c.writableLen < kOutHeaderSize + kStatfsOutSize) return kDeclined;
    struct statfs st;
    int r = StatfsNode(s, Load64(c.prefetch + 16), &st);
    statfses_++;
    if (r < 0) return Reply(c, r, 0);
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kStatfsOutSize);
    Store64(b, st.f_blocks);
    Store64(b + 8, st.f_bfree);
    Store64(b + 16, st.f_bavail);
    Store64(b + 24, st.f_files);
    Store64(b + 32, st.f_ffree);
    Store32(b + 40, static_cast<uint32_t>(st.f_bsize));
    Store32(b + 44, static_cast<uint32_t>(st.f_namelen));
    Store32(b + 48, static_cast<uint32_t>(st.f_frsize));
    return Reply(c, 0, kStatfsOutSize);
  }

  // The fuse_lk_in of a lock request the fast path can serve as JS would (a handle a JS number
  // holds, a range within int64), or nullptr.
  const uint8_t* LockArgs(const ChainView& c, uint32_t len) const {
    if (len < kInHeaderSize + kLkInSize || c.prefetched < kInHeaderSize + kLkInSize || c.writableLen < kOutHeaderSize)
      return nullptr;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    if (Load64(a) >= static_cast<uint64_t>(kMaxExactInJs) || Load64(a + 16) > INT64_MAX || Load64(a + 24) > INT64_MAX) return nullptr;
    return a;
  }

  // GETLK (with POSIX locks on): the first lock of another owner in the way, as fuse_lk_out.
  Result ServeGetlk(const ChainView& c, FsState* s, uint32_t len) {
    const uint8_t* a = LockArgs(c, len);
    if (!a || !posixLock_ || c.writableLen < kOutHeaderSize + kLkOutSize) return kDeclined;
    struct flock fl;
    int r = GetlkNode(s, Load64(c.prefetch + 16), Load64(a), Load64(a + 8), static_cast<int>(Load32(a + 32)),
                      static_cast<int64_t>(Load64(a + 16)), static_cast<int64_t>(Load64(a + 24)), &fl);
    getlks_++;
    if (r < 0) return Reply(c, r, 0);
    uint8_t* b = reply_ + kOutHeaderSize;
    memset(b, 0, kLkOutSize);
    Store32(b + 16, static_cast<uint32_t>(static_cast<int32_t>(fl.l_type)));
    if (fl.l_type != F_UNLCK) {
      // l_len 0: to the end of the file, which FUSE says with OFFSET_MAX.
      int64_t end = fl.l_len == 0 ? INT64_MAX : fl.l_start + fl.l_len - 1;
      Store64(b, static_cast<uint64_t>(fl.l_start));
      Store64(b + 8, static_cast<uint64_t>(end));
      Store32(b + 20, fl.l_pid > 0 ? static_cast<uint32_t>(fl.l_pid) : 0);  // the guest process that took it (TakerOf), or 0
    }
    return Reply(c, 0, kLkOutSize);
  }

  // SETLK, and a SETLKW whose lock is free: the lock taken (or dropped) without waiting, an
  // flock() lock with FUSE_LK_FLOCK (each only when its kind is served); an error (EINVAL,
  // EBADF, ...) answered as JS would. A SETLKW whose lock is taken goes to JS, which checks
  // for a deadlock and waits holding no thread (src/fuse/passthrough/locks.ts); so its
  // attempt here is a plain SETLK's, which records no wait.
  Result ServeSetlk(const ChainView& c, FsState* s, uint32_t len, bool wait) {
    const uint8_t* a = LockArgs(c, len);
    if (!a) return kDeclined;
    bool flock = Load32(a + 40) & kLkFlock;
    if (flock ? !flock_ : !posixLock_) return kDeclined;
    uint32_t type = Load32(a + 32);
    int r;
    if (flock) {
      r = FlockHandle(s, Load64(a), type == F_UNLCK ? LOCK_UN : type == F_WRLCK ? LOCK_EX : LOCK_SH);
    } else if (type != F_RDLCK && type != F_WRLCK && type != F_UNLCK) {
      r = -EINVAL;
    } else {
      r = SetlkNode(s, Load64(c.prefetch + 16), Load64(a), Load64(a + 8), static_cast<int>(type), static_cast<int64_t>(Load64(a + 16)),
                    static_cast<int64_t>(Load64(a + 24)), 0, Load32(a + 36));
    }
    bool busy = r == -EAGAIN || r == -EWOULDBLOCK || r == -EACCES;
    if (wait && busy) return kDeclined;
    (wait ? setlkws_ : setlks_)++;
    return Reply(c, busy ? -EAGAIN : r, 0);
  }

  // ACCESS: whether the caller (the request's uid and gid) may read, write or execute the
  // node (AccessNode, which JS's ACCESS calls too).
  Result ServeAccess(const ChainView& c, FsState* s, uint32_t len) {
    if (len < kInHeaderSize + kAccessInSize || c.prefetched < kInHeaderSize + kAccessInSize || c.writableLen < kOutHeaderSize)
      return kDeclined;
    const uint8_t* p = c.prefetch;
    accesses_++;
    return Reply(c, AccessNode(s, Load64(p + 16), Load32(p + 24), Load32(p + 28), Load32(p + kInHeaderSize), readOnly_), 0);
  }

  // fuse_entry_out for nodeid (generation 0, the policy's timeouts) at b, which is zeroed.
  void EncodeEntry(uint8_t* b, uint64_t nodeid, const double* st) const {
    Store64(b, nodeid);
    Store64(b + 16, entryTimeout_.sec);
    Store64(b + 24, attrTimeout_.sec);
    Store32(b + 32, entryTimeout_.nsec);
    Store32(b + 36, attrTimeout_.nsec);
    EncodeAttr(st, b + 40);
  }

  // FORGET: no reply; the chain goes back to the driver empty.
  Result ServeForget(const ChainView& c, FsState* s, uint32_t len) {
    if (len < kInHeaderSize + kForgetInSize || c.prefetched < kInHeaderSize + kForgetInSize) return kDeclined;
    ForgetInode(s, Load64(c.prefetch + 16), Load64(c.prefetch + kInHeaderSize));
    forgets_++;
    c.ring->Complete(c.head, 0);
    return kCompleted;
  }

  // FLUSH (a close() in the guest: with POSIX locks on, the closing owner's locks on the
  // file go) and RELEASE (the last close of the handle: an flock it holds goes if the guest
  // asks, and the handle is dropped once no request pins it).
  Result ServeClose(const ChainView& c, FsState* s, uint32_t len, bool release) {
    if (len < kInHeaderSize + kCloseInSize || c.prefetched < kInHeaderSize + kCloseInSize || c.writableLen < kOutHeaderSize)
      return kDeclined;
    const uint8_t* a = c.prefetch + kInHeaderSize;
    uint64_t fh = Load64(a);
    int r = 0;
    if (release) {
      if (Load32(a + 12) & kReleaseFlockUnlock) FlockHandle(s, fh, LOCK_UN);
      r = RemoveHandle(s, fh);
      releases_++;
    } else {
      if (posixLock_) UnlockOwner(s, Load64(c.prefetch + 16), Load64(a + 16));
      flushes_++;
    }
    return Reply(c, r, 0);
  }

  // header_: the iovecs of the first len bytes of the chain's reply buffer (the reply header
  // and what follows it in the reply); false when they are not guest memory, which cannot
  // happen for a walked chain.
  bool ReplyIovecs(const ChainView& c, uint64_t len) {
    SlicePairs(c.pairs + 2 * c.nr, c.nw, 0, len, &headerPairs_);
    header_.clear();
    return GuestIovecs(c.table, headerPairs_.data(), headerPairs_.size() / 2, &header_) == 0;
  }

  // Writes fuse_out_header (error: 0 or -errno) and, without an error, the bodyLen bytes
  // built at reply_ + kOutHeaderSize into the chain's reply buffer, and completes the chain.
  // The caller checked that the reply fits.
  Result Reply(const ChainView& c, int32_t error, uint32_t bodyLen) { return Send(c, reply_, error, error == 0 ? bodyLen : 0); }

  // The same from buf, whose body of bodyLen bytes follows room for the header.
  Result Send(const ChainView& c, uint8_t* buf, int32_t error, uint32_t bodyLen) {
    uint32_t len = kOutHeaderSize + bodyLen;
    // A reply buffer too small for the reply, as the JS server treats it: EINVAL when the
    // header fits, else nothing written (an error the guest left no room for).
    if (c.writableLen < len) {
      if (bodyLen > 0 && c.writableLen >= kOutHeaderSize) return Send(c, buf, -EINVAL, 0);
      c.ring->Complete(c.head, 0);
      return kCompleted;
    }
    Store32(buf, len);
    Store32(buf + 4, static_cast<uint32_t>(error));
    Store64(buf + 8, Load64(c.prefetch + 8));
    // Cannot fail for a walked chain; were it to, the request is already served, so the
    // chain still goes back (empty) rather than to JS.
    if (!ReplyIovecs(c, len)) len = 0;
    CopyToIovecs(header_, buf, len);
    c.ring->Complete(c.head, len);
    return kCompleted;
  }

  // counts() -> {opcode: requests served here}
  Napi::Value Counts(const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    const std::pair<uint32_t, uint64_t> counts[] = {
        {kOpRead, reads_},     {kOpWrite, writes_},   {kOpGetattr, getattrs_}, {kOpLookup, lookups_},
        {kOpForget, forgets_}, {kOpFlush, flushes_}, {kOpRelease, releases_}, {kOpUnlink, unlinks_},
        {kOpRmdir, rmdirs_},   {kOpCreate, creates_}, {kOpOpen, opens_},         {kOpOpendir, opendirs_},
        {kOpReaddir, readdirs_}, {kOpReaddirplus, readdirpluses_}, {kOpReleasedir, releasedirs_},
        {kOpMknod, makes_[0]}, {kOpMkdir, makes_[1]}, {kOpSymlink, makes_[2]}, {kOpSetattr, setattrs_},
        {kOpRename, renames_}, {kOpRename2, rename2s_}, {kOpLink, links_}, {kOpReadlink, readlinks_},
        {kOpGetxattr, getxattrs_}, {kOpFsync, fsyncs_}, {kOpFsyncdir, fsyncdirs_}, {kOpSyncfs, syncfses_},
        {kOpFallocate, fallocates_}, {kOpCopyFileRange, copyRanges_}, {kOpLseek, lseeks_}, {kOpStatfs, statfses_},
        {kOpGetlk, getlks_}, {kOpSetlk, setlks_}, {kOpSetlkw, setlkws_}, {kOpAccess, accesses_}};
    for (const auto& [op, n] : counts)
      if (n > 0) o.Set(op, Napi::Number::New(info.Env(), static_cast<double>(n)));
    return o;
  }

  // Whether this call came from JS's pop() (a queue without a kick thread, whose ring JS's
  // loop serves) rather than a kick thread.
  bool OnJsThread() const { return std::this_thread::get_id() == jsThread_; }

  FsState* state_ = nullptr;  // held (HoldState) from construction to the destructor
  // The JS thread, where this object was made.
  std::thread::id jsThread_ = std::this_thread::get_id();
  bool readOnly_ = false, pool_ = false, posixLock_ = false, flock_ = false, allowDirectIo_ = false, keepCacheIfUnchanged_ = false, xattr_ = false,
       killprivV2_ = false;
  Timeout entryTimeout_, attrTimeout_, negativeTimeout_;
  uint32_t fileOpenFlags_ = 0, dirOpenFlags_ = 0;
  uint64_t reads_ = 0, writes_ = 0, getattrs_ = 0, lookups_ = 0, forgets_ = 0, flushes_ = 0, releases_ = 0, unlinks_ = 0, rmdirs_ = 0,
           creates_ = 0, opens_ = 0, opendirs_ = 0, readdirs_ = 0, readdirpluses_ = 0, releasedirs_ = 0,
           setattrs_ = 0, renames_ = 0, rename2s_ = 0, links_ = 0, readlinks_ = 0,
           getxattrs_ = 0, fsyncs_ = 0, fsyncdirs_ = 0, syncfses_ = 0, fallocates_ = 0, copyRanges_ = 0, lseeks_ = 0, statfses_ = 0,
           getlks_ = 0, setlks_ = 0, setlkws_ = 0, accesses_ = 0;
  uint64_t makes_[3] = {0, 0, 0};  // by MakeKind
  // Scratch, reused: the data's and the reply header's guest ranges, the header's iovecs,
  // a metadata reply as it is built.
  std::vector<double> data_, headerPairs_;
  std::vector<iovec> header_;
  std::vector<uint8_t> dirReply_;
  uint8_t reply_[kOutHeaderSize + kEntryOutSize + kOpenOutSize];
};

}  // namespace

ChainServer* ChainServerOf(const Napi::Value& v) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kFastPathTag)) return nullptr;
  return FuseFastPath::Unwrap(v.As<Napi::Object>());
}

void InitFastPath(Napi::Env env, Napi::Object exports) { exports.Set("FuseFastPath", FuseFastPath::Define(env)); }

}  // namespace vfsn
