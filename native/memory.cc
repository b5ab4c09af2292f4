// Guest memory: the process-wide tables of regions the front end shares with us, the
// translation of guest ranges into iovecs for the kernel, and memfd/mmap helpers for our
// own test front end.
//
// A memory table lives here, not in any one thread, so every queue's threads see the same
// regions. A change (SET_MEM_TABLE, ADD/REM_MEM_REG) maps the new regions first and then
// swaps in a new immutable region list; nothing is unmapped while anyone still holds it.
// Two kinds of readers:
//  - the I/O path (GuestIovecs): each thread keeps its own snapshot of a table, checked
//    against the table's generation with one atomic load per call, so translating a READ's
//    or WRITE's guest ranges takes no lock and touches no shared reference count;
//  - JS (memTableViews): Buffer views of the regions, each owning a reference to its
//    mapping, for the rings and the small request headers that JS reads itself.
//
// A front end may shrink a region's file after we mapped it (ftruncate): touching a page past
// the file's new end raises SIGBUS, which would kill the daemon, whichever thread touched it
// (a kick thread reading a descriptor, JS reading a header). Every mapping of front-end memory
// is registered here (GuardMapping), and a SIGBUS handler puts a zero page over a page of one
// that faults (as Wayland compositors do for their clients' shared memory), counts the fault
// and signals an eventfd, on which the connection logs it and closes itself
// (src/vhost/backend.ts). A SIGBUS anywhere else goes on to the handler before ours, or kills
// the process as it would have.
#include "common.h"
#include "dirtylog.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

namespace vfsn {
namespace {

// The mappings of front-end memory, for the SIGBUS handler to find without a lock: a slot
// is free while start is 0; end is set after start is claimed and cleared before it is freed.
constexpr int kMaxGuards = 4096;
struct Guard {
  std::atomic<uintptr_t> start{0}, end{0};
};
Guard gGuards[kMaxGuards];
std::atomic<uint64_t> gBusFaults{0};
std::atomic<uintptr_t> gLastFault{0};
std::atomic<int> gLastFaultCode{0};  // si_code: BUS_ADRERR for a page past a file's end
int gFaultFd = -1;  // eventfd, written once per fault handled
uintptr_t gPageSize = 4096;
struct sigaction gPrevBus;

// Puts a private zero page over the faulting page of a guarded mapping (or over the whole
// mapping where the page cannot be replaced alone, as in a mapping of huge pages).
void OnSigbus(int sig, siginfo_t* si, void* ctx) {
  int saved = errno;
  uintptr_t a = reinterpret_cast<uintptr_t>(si->si_addr);
  // Only a fault has an address (si_code > 0); a SIGBUS another process sent carries its
  // pid and uid in those bytes.
  int slots = si->si_code > 0 ? kMaxGuards : 0;
  for (int i = 0; i < slots; i++) {
    Guard& g = gGuards[i];
    uintptr_t s = g.start.load(std::memory_order_acquire), e = g.end.load(std::memory_order_acquire);
    // start read again: a slot freed and taken by another mapping between the two loads
    // would pair one mapping's start with the other's end.
    if (s == 0 || a < s || a >= e || g.start.load(std::memory_order_acquire) != s) continue;
    uintptr_t page = a & ~(gPageSize - 1);
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE;
    if (mmap(reinterpret_cast<void*>(page), gPageSize, PROT_READ | PROT_WRITE, flags, -1, 0) == MAP_FAILED &&
        mmap(reinterpret_cast<void*>(s), e - s, PROT_READ | PROT_WRITE, flags, -1, 0) == MAP_FAILED)
      break;
    gBusFaults.fetch_add(1, std::memory_order_relaxed);
    gLastFault.store(a, std::memory_order_relaxed);
    gLastFaultCode.store(si->si_code, std::memory_order_relaxed);
    uint64_t one = 1;
    if (gFaultFd >= 0 && write(gFaultFd, &one, sizeof one) < 0) {
      // The counter is full: the connection has been told already.
    }
    errno = saved;
    return;
  }
  errno = saved;
  // Not ours: what would have happened without us.
  if ((gPrevBus.sa_flags & SA_SIGINFO) && gPrevBus.sa_sigaction) {
    gPrevBus.sa_sigaction(sig, si, ctx);
  } else if (gPrevBus.sa_handler != SIG_DFL && gPrevBus.sa_handler != SIG_IGN) {
    gPrevBus.sa_handler(sig);
  } else {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &dfl, nullptr);
    // A fault happens again as the access is retried, and kills; a signal sent is sent again
    // (delivered once this handler returns).
    if (si->si_code <= 0) raise(SIGBUS);
  }
}

void InstallSigbusGuard() {
  static std::once_flag once;
  std::call_once(once, [] {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps > 0) gPageSize = static_cast<uintptr_t>(ps);
    gFaultFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct sigaction sa {};
    sa.sa_sigaction = OnSigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &gPrevBus);
  });
}

// Views are split in chunks of at most this size: V8 refuses Buffers above 4 GiB and
// guests may have larger regions.
constexpr uint64_t kChunk = 1ull << 30;

struct Mapping {
  void* base = MAP_FAILED;
  size_t len = 0;
  ~Mapping() {
    if (base == MAP_FAILED) return;
    UnguardMapping(base);
    munmap(base, len);
  }
};

struct Region {
  uint64_t gpa, size, uaddr, mmapOffset;
  std::shared_ptr<Mapping> map;
  uint8_t* host() const { return static_cast<uint8_t*>(map->base) + mmapOffset; }
};

// An immutable snapshot of a table's regions. A change builds a new list; readers that hold
// the old one keep its mappings alive until they let go.
using RegionList = std::vector<Region>;

struct Table {
  std::mutex mu;  // serialises writers, and readers taking a new snapshot
  std::shared_ptr<const RegionList> regions = std::make_shared<RegionList>();
  std::atomic<uint32_t> generation{0};

  std::shared_ptr<const RegionList> Snapshot() {
    std::lock_guard<std::mutex> g(mu);
    return regions;
  }
  uint32_t Replace(RegionList rs) {
    std::lock_guard<std::mutex> g(mu);
    regions = std::make_shared<const RegionList>(std::move(rs));
    return generation.fetch_add(1, std::memory_order_release) + 1;
  }
};

// Tables live in a fixed array of slots, reached by id (slot + 1) with one atomic load: no
// lock and no reference count is touched on the I/O path. A slot is emptied only when the
// connection ends, after every queue thread stopped using it.
constexpr int kMaxTables = kMaxMemTables;
std::atomic<Table*> gTables[kMaxTables];
std::shared_ptr<Table> gOwners[kMaxTables];  // owned here; touched only under gRegistryMu
std::mutex gRegistryMu;

std::shared_ptr<Table> OwnerOf(int64_t id) {
  std::lock_guard<std::mutex> g(gRegistryMu);
  if (id < 1 || id > kMaxTables) return nullptr;
  return gOwners[id - 1];
}

std::shared_ptr<Table> FindTable(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return nullptr;
  return OwnerOf(id);
}

// Each thread's cached snapshot per table slot, refreshed when the generation moves.
struct CachedTable {
  Table* table = nullptr;
  uint32_t generation = 0;
  std::shared_ptr<Table> owner;
  std::shared_ptr<const RegionList> regions;
};
thread_local CachedTable tCache[kMaxTables];

const RegionList* CurrentRegions(int64_t id) {
  if (id < 1 || id > kMaxTables) return nullptr;
  Table* t = gTables[id - 1].load(std::memory_order_acquire);
  if (!t) return nullptr;
  CachedTable& c = tCache[id - 1];
  uint32_t gen = t->generation.load(std::memory_order_acquire);
  if (c.table != t || c.generation != gen || !c.regions) {
    std::shared_ptr<Table> owner = OwnerOf(id);
    if (!owner || owner.get() != t) return nullptr;
    c.owner = owner;
    c.table = t;
    c.regions = t->Snapshot();
    c.generation = gen;
  }
  return c.regions.get();
}

bool Overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return a < b + blen && b < a + alen;
}

// Reads {gpa, size, uaddr, mmapOffset, fd} from a JS object and maps it.
// Returns false with a pending exception on error.
bool MapRegion(Napi::Env env, Napi::Value v, Region* out) {
  if (!v.IsObject()) {
    ThrowType(env, "region must be an object");
    return false;
  }
  Napi::Object o = v.As<Napi::Object>();
  const char* names[] = {"gpa", "size", "uaddr", "mmapOffset", "fd"};
  uint64_t vals[5];
  for (int i = 0; i < 5; i++) {
    Napi::Value f = o.Get(names[i]);
    double d;
    if (f.IsBigInt()) {
      bool lossless;
      vals[i] = f.As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) {
        ThrowRange(env, "region field out of range");
        return false;
      }
      continue;
    }
    if (!f.IsNumber() || (d = f.As<Napi::Number>().DoubleValue()) < 0 || d != d ||
        d > 9007199254740992.0) {
      ThrowType(env, "region fields must be non-negative integers");
      return false;
    }
    vals[i] = static_cast<uint64_t>(d);
  }
  uint64_t size = vals[1], off = vals[3];
  if (size == 0 || size + off < size || vals[0] + size < vals[0] || vals[2] + size < vals[2]) {
    ThrowRange(env, "region size is zero or wraps around");
    return false;
  }
  // A region that runs past the end of its file maps without complaint, but the first
  // touch beyond the end raises SIGBUS and would kill the daemon: refuse it here.
  struct stat st;
  if (fstat(static_cast<int>(vals[4]), &st) < 0) {
    ThrowErrno(env, errno, "fstat");
    return false;
  }
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) < size + off) {
    ThrowRange(env, "memory region runs past the end of its file");
    return false;
  }
  auto m = std::make_shared<Mapping>();
  m->len = size + off;
  m->base = mmap(nullptr, m->len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                 static_cast<int>(vals[4]), 0);
  if (m->base == MAP_FAILED) {
    ThrowErrno(env, errno, "mmap");
    return false;
  }
  if (!GuardMapping(m->base, m->len)) {
    munmap(m->base, m->len);
    m->base = MAP_FAILED;
    ThrowErrno(env, EMFILE, "too many mappings of front-end memory");
    return false;
  }
  *out = Region{vals[0], size, vals[2], off, m};
  return true;
}

bool CheckNoOverlap(Napi::Env env, const std::vector<Region>& rs) {
  for (size_t i = 0; i < rs.size(); i++)
    for (size_t j = i + 1; j < rs.size(); j++)
      if (Overlaps(rs[i].gpa, rs[i].size, rs[j].gpa, rs[j].size) ||
          Overlaps(rs[i].uaddr, rs[i].size, rs[j].uaddr, rs[j].size)) {
        ThrowRange(env, "memory regions overlap");
        return false;
      }
  return true;
}

Napi::Value MemTableCreate(const Napi::CallbackInfo& info) {
  std::lock_guard<std::mutex> g(gRegistryMu);
  for (int i = 0; i < kMaxTables; i++) {
    if (gOwners[i]) continue;
    gOwners[i] = std::make_shared<Table>();
    gTables[i].store(gOwners[i].get(), std::memory_order_release);
    return Napi::Number::New(info.Env(), i + 1);
  }
  return ThrowErrno(info.Env(), EMFILE, "memTableCreate");
}

// memTableDestroy(id): the connection is over and no thread uses the table any more.
Napi::Value MemTableDestroy(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id)) return ThrowType(info.Env(), "table id expected");
  std::lock_guard<std::mutex> g(gRegistryMu);
  if (id >= 1 && id <= kMaxTables) {
    gTables[id - 1].store(nullptr, std::memory_order_release);
    gOwners[id - 1].reset();
  }
  return info.Env().Undefined();
}

// memTableSet(id, regions[]): maps every region, then replaces the table at once.
Napi::Value MemTableSet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  if (!t) return ThrowType(env, "unknown memory table");
  if (!info[1].IsArray()) return ThrowType(env, "regions array expected");
  Napi::Array arr = info[1].As<Napi::Array>();
  RegionList rs;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Region r;
    if (!MapRegion(env, arr.Get(i), &r)) return env.Undefined();
    rs.push_back(std::move(r));
  }
  if (!CheckNoOverlap(env, rs)) return env.Undefined();
  return Napi::Number::New(env, t->Replace(std::move(rs)));
}

// memTableAdd(id, region): maps one more region (ADD_MEM_REG).
Napi::Value MemTableAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  if (!t) return ThrowType(env, "unknown memory table");
  Region r;
  if (!MapRegion(env, info[1], &r)) return env.Undefined();
  RegionList rs = *t->Snapshot();
  rs.push_back(r);
  if (!CheckNoOverlap(env, rs)) return env.Undefined();
  return Napi::Number::New(env, t->Replace(std::move(rs)));
}

// memTableRemove(id, gpa, size): drops the region with exactly this gpa and size
// (REM_MEM_REG). Returns the new generation, or -1 when no region matched.
Napi::Value MemTableRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  uint64_t gpa, size;
  if (!t || !ArgU64(info, 1, &gpa) || !ArgU64(info, 2, &size))
    return ThrowType(env, "memTableRemove(id, gpa, size)");
  RegionList rs = *t->Snapshot();
  for (auto it = rs.begin(); it != rs.end(); ++it) {
    if (it->gpa == gpa && it->size == size) {
      rs.erase(it);
      return Napi::Number::New(env, t->Replace(std::move(rs)));
    }
  }
  return Napi::Number::New(env, -1);
}

Napi::Value MemTableGeneration(const Napi::CallbackInfo& info) {
  int64_t id;
  if (!ArgInt(info, 0, &id) || id < 1 || id > kMaxTables) return ThrowType(info.Env(), "unknown memory table");
  Table* t = gTables[id - 1].load(std::memory_order_acquire);
  if (!t) return ThrowType(info.Env(), "unknown memory table");
  return Napi::Number::New(info.Env(), t->generation.load(std::memory_order_acquire));
}

// memTableViews(id) -> {generation, regions: [{gpa, size, uaddr, chunks: Buffer[]}]}
// Each Buffer is a zero-copy view of at most kChunk bytes that keeps its mapping alive.
Napi::Value MemTableViews(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto t = FindTable(info);
  if (!t) return ThrowType(env, "unknown memory table");
  std::shared_ptr<const RegionList> rs;
  uint32_t gen;
  {
    std::lock_guard<std::mutex> g(t->mu);
    rs = t->regions;
    gen = t->generation.load(std::memory_order_relaxed);
  }
  Napi::Object res = Napi::Object::New(env);
  res.Set("generation", Napi::Number::New(env, gen));
  Napi::Array out = Napi::Array::New(env, rs->size());
  for (size_t i = 0; i < rs->size(); i++) {
    const Region& r = (*rs)[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("gpa", Napi::Number::New(env, static_cast<double>(r.gpa)));
    o.Set("size", Napi::Number::New(env, static_cast<double>(r.size)));
    o.Set("uaddr", Napi::Number::New(env, static_cast<double>(r.uaddr)));
    uint64_t nchunks = (r.size + kChunk - 1) / kChunk;
    Napi::Array chunks = Napi::Array::New(env, nchunks);
    for (uint64_t c = 0; c < nchunks; c++) {
      uint64_t len = std::min(kChunk, r.size - c * kChunk);
      // The view holds a heap-allocated shared_ptr to the mapping; the finalizer drops it.
      auto* keep = new std::shared_ptr<Mapping>(r.map);
      chunks.Set(c, Napi::Buffer<uint8_t>::New(
                        env, r.host() + c * kChunk, len,
                        [](Napi::Env, uint8_t*, std::shared_ptr<Mapping>* k) { delete k; }, keep));
    }
    o.Set("chunks", chunks);
    out.Set(i, o);
  }
  res.Set("regions", out);
  return res;
}

// memfdCreate(name, size) -> fd: anonymous shared memory, as QEMU's memory-backend-memfd.
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t size;
  if (!info[0].IsString() || !ArgInt(info, 1, &size) || size <= 0)
    return ThrowType(env, "memfdCreate(name, size)");
  std::string name = info[0].As<Napi::String>();
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ThrowErrno(env, errno, "memfd_create");
  if (ftruncate(fd, size) < 0) {
    int e = errno;
    close(fd);
    return ThrowErrno(env, e, "ftruncate");
  }
  return Napi::Number::New(env, fd);
}

// mmapShared(fd, size, offset=0) -> Buffer: a shared read-write view, unmapped when collected.
Napi::Value MmapShared(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int64_t fd, size, off = 0;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &size) || size <= 0 ||
      static_cast<uint64_t>(size) > kChunk * 4 || (info.Length() > 2 && !ArgInt(info, 2, &off)))
    return ThrowType(env, "mmapShared(fd, size, offset?, readOnly?)");
  int prot = info.Length() > 3 && info[3].ToBoolean() ? PROT_READ : PROT_READ | PROT_WRITE;
  void* p = mmap(nullptr, size, prot, MAP_SHARED, fd, off);
  if (p == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  return Napi::Buffer<uint8_t>::New(
      env, static_cast<uint8_t*>(p), size,
      [](Napi::Env, uint8_t* d, size_t* len) {
        munmap(d, *len);
        delete len;
      },
      new size_t(size));
}

}  // namespace

std::shared_ptr<const void> KeepGuestMemory(int64_t tableId) {
  if (!CurrentRegions(tableId)) return nullptr;
  return tCache[tableId - 1].regions;
}

bool TakeGuestSnapshot(int64_t tableId, std::shared_ptr<const void>* keep, uint32_t* generation) {
  if (tableId < 1 || tableId > kMaxTables) return false;
  Table* t = gTables[tableId - 1].load(std::memory_order_acquire);
  if (!t) return false;
  // The generation is read first: a change racing with the snapshot makes the next check
  // see a newer generation and take the snapshot again, never miss it.
  *generation = t->generation.load(std::memory_order_acquire);
  if (!CurrentRegions(tableId)) return false;
  *keep = tCache[tableId - 1].regions;
  return true;
}

uint32_t GuestGeneration(int64_t tableId) {
  if (tableId < 1 || tableId > kMaxTables) return UINT32_MAX;
  Table* t = gTables[tableId - 1].load(std::memory_order_acquire);
  return t ? t->generation.load(std::memory_order_acquire) : UINT32_MAX;
}

uint8_t* SnapshotPtr(const void* snapshot, uint64_t addr, uint64_t len, bool byUaddr) {
  const RegionList& rs = *static_cast<const RegionList*>(snapshot);
  for (const Region& r : rs) {
    uint64_t start = byUaddr ? r.uaddr : r.gpa;
    if (addr >= start && addr - start < r.size) {
      uint64_t rel = addr - start;
      if (len > r.size - rel) return nullptr;
      return r.host() + rel;
    }
  }
  return nullptr;
}

bool GuestUaddrToGpa(int64_t table, uint64_t uaddr, uint64_t* gpa) {
  const RegionList* rs = CurrentRegions(table);
  if (!rs) return false;
  for (const Region& r : *rs)
    if (uaddr >= r.uaddr && uaddr - r.uaddr < r.size) {
      *gpa = r.gpa + (uaddr - r.uaddr);
      return true;
    }
  return false;
}

uint64_t SnapshotRun(const void* snapshot, uint64_t gpa, uint8_t** host) {
  const RegionList& rs = *static_cast<const RegionList*>(snapshot);
  for (const Region& r : rs)
    if (gpa >= r.gpa && gpa - r.gpa < r.size) {
      *host = r.host() + (gpa - r.gpa);
      return r.size - (gpa - r.gpa);
    }
  return 0;
}

size_t SnapshotCopy(const void* snapshot, uint64_t gpa, uint8_t* buf, uint64_t len, bool toGuest) {
  size_t done = 0;
  while (len > 0) {
    uint8_t* host;
    uint64_t take = std::min(len, SnapshotRun(snapshot, gpa, &host));
    if (take == 0) break;
    if (toGuest)
      memcpy(host, buf + done, take);
    else
      memcpy(buf + done, host, take);
    done += take;
    gpa += take;
    len -= take;
  }
  return done;
}

int GuestIovecs(int64_t tableId, const double* pairs, size_t npairs, std::vector<iovec>* iov) {
  const RegionList* rs = CurrentRegions(tableId);
  if (!rs) return EBADF;
  iov->reserve(iov->size() + npairs);
  for (size_t i = 0; i < npairs; i++) {
    double dg = pairs[2 * i], dl = pairs[2 * i + 1];
    // Reject NaN, negatives, fractions and values past 2^53 before converting.
    if (!(dg >= 0 && dl >= 0 && dg <= 9007199254740992.0 && dl <= 9007199254740992.0)) return EFAULT;
    uint64_t gpa = static_cast<uint64_t>(dg), len = static_cast<uint64_t>(dl);
    if (static_cast<double>(gpa) != dg || static_cast<double>(len) != dl) return EFAULT;
    while (len > 0) {
      const Region* hit = nullptr;
      for (const Region& r : *rs)
        if (gpa >= r.gpa && gpa - r.gpa < r.size) {
          hit = &r;
          break;
        }
      if (!hit) return EFAULT;
      uint64_t take = std::min(len, hit->size - (gpa - hit->gpa));
      // Safe: [gpa, gpa + take) lies inside this region, which this thread's snapshot keeps
      // mapped for as long as the snapshot is current.
      iov->push_back(iovec{hit->host() + (gpa - hit->gpa), static_cast<size_t>(take)});
      gpa += take;
      len -= take;
    }
  }
  return 0;
}

bool GuardMapping(void* base, size_t len) {
  uintptr_t s = reinterpret_cast<uintptr_t>(base);
  for (Guard& g : gGuards) {
    uintptr_t free = 0;
    if (g.start.compare_exchange_strong(free, s, std::memory_order_acq_rel)) {
      g.end.store(s + len, std::memory_order_release);
      return true;
    }
  }
  return false;  // every slot taken: the caller maps nothing it cannot guard
}

void UnguardMapping(void* base) {
  uintptr_t s = reinterpret_cast<uintptr_t>(base);
  for (Guard& g : gGuards) {
    if (g.start.load(std::memory_order_acquire) != s) continue;
    g.end.store(0, std::memory_order_release);
    g.start.store(0, std::memory_order_release);
    return;
  }
}

namespace {

// memFaultFd() -> the eventfd that counts SIGBUS faults on front-end memory (see the top).
Napi::Value MemFaultFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), gFaultFd); }

// memTakeFaults() -> [faults since the last call, address of the last one, its si_code]:
// reads the eventfd, so that it is quiet until the next fault.
Napi::Value MemTakeFaults(const Napi::CallbackInfo& info) {
  uint64_t n = 0;
  if (gFaultFd >= 0 && read(gFaultFd, &n, sizeof n) != sizeof n) n = 0;
  Napi::Array r = Napi::Array::New(info.Env(), 3);
  r.Set(0u, Napi::Number::New(info.Env(), static_cast<double>(n)));
  r.Set(1u, Napi::Number::New(info.Env(), static_cast<double>(gLastFault.load(std::memory_order_relaxed))));
  r.Set(2u, Napi::Number::New(info.Env(), gLastFaultCode.load(std::memory_order_relaxed)));
  return r;
}

}  // namespace

void InitMemory(Napi::Env env, Napi::Object exports) {
  InstallSigbusGuard();
  exports.Set("memFaultFd", Napi::Function::New(env, MemFaultFd));
  exports.Set("memTakeFaults", Napi::Function::New(env, MemTakeFaults));
  exports.Set("memTableCreate", Napi::Function::New(env, MemTableCreate));
  exports.Set("memTableDestroy", Napi::Function::New(env, MemTableDestroy));
  exports.Set("memTableSet", Napi::Function::New(env, MemTableSet));
  exports.Set("memTableAdd", Napi::Function::New(env, MemTableAdd));
  exports.Set("memTableRemove", Napi::Function::New(env, MemTableRemove));
  exports.Set("memTableGeneration", Napi::Function::New(env, MemTableGeneration));
  exports.Set("memTableViews", Napi::Function::New(env, MemTableViews));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate));
  exports.Set("mmapShared", Napi::Function::New(env, MmapShared));
}

}  // namespace vfsn
