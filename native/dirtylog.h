// Dirty-page logging for live migration (vhost-user VHOST_F_LOG_ALL over a LOG_SHMFD log):
// while the front end migrates, every byte the daemon writes into guest memory (replies,
// READ data, the used rings) must be marked in the log it shares with us, one bit per
// 4 KiB guest page, so that QEMU sends that page again. The bit is set after the write.
//
// One log per memory table (that is, per connection). When no connection logs, a write
// costs one relaxed atomic load.
#pragma once
#include <atomic>
#include <cstdint>

namespace vfsn {

extern std::atomic<int> gDirtyLogging;  // connections logging now

void LogDirtySlow(int64_t table, uint64_t gpa, uint64_t len);

// Marks [gpa, gpa + len) of table's guest memory dirty when that table's connection logs.
inline void LogDirty(int64_t table, uint64_t gpa, uint64_t len) {
  if (len == 0 || gDirtyLogging.load(std::memory_order_relaxed) == 0) return;
  LogDirtySlow(table, gpa, len);
}

inline bool DirtyLoggingAnywhere() { return gDirtyLogging.load(std::memory_order_relaxed) != 0; }

// The guest-physical address of front-end address uaddr in table, or false (memory.cc).
bool GuestUaddrToGpa(int64_t table, uint64_t uaddr, uint64_t* gpa);

}  // namespace vfsn
