// Dirty-page logging (see dirtylog.h): the log areas the front end shares through
// SET_LOG_BASE, one per memory table, and the bit setting every write into guest memory
// goes through while its connection migrates.
//
// A log the front end replaces (it grows the log when guest memory grows) stays mapped
// until the connection ends, since a queue thread may still be setting bits in it; the
// front end reads both anyway until it has switched.
#include "common.h"
#include "dirtylog.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <mutex>

namespace vfsn {

std::atomic<int> gDirtyLogging{0};

namespace {

constexpr uint64_t kLogPage = 4096;  // VHOST_LOG_PAGE
constexpr size_t kMaxLogAreas = 1024;  // dirty logs one connection may map (DirtyLogMap)

struct LogArea {
  void* map = MAP_FAILED;
  size_t mapLen = 0;
  uint8_t* bits = nullptr;  // map + offset
  uint64_t size = 0;        // bytes of bitmap
};

struct TableLog {
  std::mutex mu;                       // serialises changes
  std::atomic<LogArea*> area{nullptr};  // the current log, or null
  std::atomic<bool> on{false};          // VHOST_F_LOG_ALL acked
  std::vector<LogArea*> all;            // every area mapped for this table (current and replaced)
};

TableLog gLogs[kMaxMemTables];

TableLog* LogOf(int64_t table) { return table >= 1 && table <= kMaxMemTables ? &gLogs[table - 1] : nullptr; }

// With t->mu held: keeps gDirtyLogging equal to the number of tables logging.
void SetLogging(TableLog* t, bool on, LogArea* area) {
  bool was = t->on.load() && t->area.load();
  t->area.store(area, std::memory_order_release);
  t->on.store(on, std::memory_order_release);
  bool now = on && area;
  if (now != was) gDirtyLogging.fetch_add(now ? 1 : -1);
}

bool TableArg(const Napi::CallbackInfo& info, TableLog** t) {
  int64_t id;
  if (!ArgInt(info, 0, &id) || !(*t = LogOf(id))) {
    ThrowType(info.Env(), "memory table id expected");
    return false;
  }
  return true;
}

// dirtyLogMap(table, fd, size, offset): maps the log the front end shares (fd stays the
// caller's to close) and makes it the table's log.
Napi::Value DirtyLogMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  TableLog* t;
  if (!TableArg(info, &t)) return env.Undefined();
  int64_t fd, size, offset;
  if (!ArgInt(info, 1, &fd) || !ArgInt(info, 2, &size) || !ArgInt(info, 3, &offset))
    return ThrowType(env, "dirtyLogMap(table, fd, size, offset)");
  // QEMU's log is a bit per 4 KiB page of guest memory: even 16 TiB of guest takes 512 MiB.
  if (size <= 0 || size > (int64_t{1} << 30) || offset < 0 || offset > (int64_t{1} << 40))
    return ThrowRange(env, "dirty log size or offset out of range");
  struct stat st;
  if (fstat(static_cast<int>(fd), &st) < 0) return ThrowErrno(env, errno, "fstat");
  if (S_ISREG(st.st_mode) && st.st_size < size + offset) return ThrowErrno(env, EINVAL, "dirty log beyond the end of its file");
  {
    // Every log ever mapped stays mapped until the connection ends (a thread may still be
    // writing into a replaced one): a front end sending logs without end would exhaust the
    // process's mappings. QEMU sends one per migration attempt, a few more if memory changes.
    std::lock_guard<std::mutex> g(t->mu);
    if (t->all.size() >= kMaxLogAreas) return ThrowErrno(env, EMFILE, "dirty logs mapped on this connection");
  }
  // mmap wants a page-aligned offset: map from the page it starts in.
  uint64_t pageOff = static_cast<uint64_t>(offset) & ~(uint64_t{4095});
  size_t len = static_cast<size_t>(size + (offset - pageOff));
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, static_cast<int>(fd), static_cast<off_t>(pageOff));
  if (p == MAP_FAILED) return ThrowErrno(env, errno, "mmap");
  if (!GuardMapping(p, len)) {
    munmap(p, len);
    return ThrowErrno(env, EMFILE, "too many mappings of front-end memory");
  }
  auto* a = new LogArea{p, len, static_cast<uint8_t*>(p) + (offset - pageOff), static_cast<uint64_t>(size)};
  std::lock_guard<std::mutex> g(t->mu);
  t->all.push_back(a);
  SetLogging(t, t->on.load(), a);
  return env.Undefined();
}

// dirtyLogEnable(table, on): VHOST_F_LOG_ALL acked or not (the table logs once a log is
// mapped too).
Napi::Value DirtyLogEnable(const Napi::CallbackInfo& info) {
  TableLog* t;
  if (!TableArg(info, &t)) return info.Env().Undefined();
  std::lock_guard<std::mutex> g(t->mu);
  bool on = info[1].ToBoolean();
  SetLogging(t, on, t->area.load());
  return info.Env().Undefined();
}

// dirtyLogReset(table): the connection is over and no thread writes for it any more.
Napi::Value DirtyLogReset(const Napi::CallbackInfo& info) {
  TableLog* t;
  if (!TableArg(info, &t)) return info.Env().Undefined();
  std::lock_guard<std::mutex> g(t->mu);
  SetLogging(t, false, nullptr);
  for (LogArea* a : t->all) {
    UnguardMapping(a->map);
    munmap(a->map, a->mapLen);
    delete a;
  }
  t->all.clear();
  return info.Env().Undefined();
}

}  // namespace

void LogDirtySlow(int64_t table, uint64_t gpa, uint64_t len) {
  TableLog* t = LogOf(table);
  if (!t || !t->on.load(std::memory_order_acquire)) return;
  LogArea* a = t->area.load(std::memory_order_acquire);
  if (!a) return;
  uint64_t last = (gpa + len - 1) / kLogPage;
  for (uint64_t page = gpa / kLogPage; page <= last; page++) {
    uint64_t byte = page / 8;
    if (byte >= a->size) break;  // beyond the log QEMU sized for its memory
    // Release: the guest bytes written before are visible to whoever sees the bit.
    __atomic_fetch_or(a->bits + byte, static_cast<uint8_t>(1u << (page % 8)), __ATOMIC_RELEASE);
  }
}

void InitDirtyLog(Napi::Env env, Napi::Object exports) {
  exports.Set("dirtyLogMap", Napi::Function::New(env, DirtyLogMap));
  exports.Set("dirtyLogEnable", Napi::Function::New(env, DirtyLogEnable));
  exports.Set("dirtyLogReset", Napi::Function::New(env, DirtyLogReset));
}

}  // namespace vfsn
