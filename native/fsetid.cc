// Dropping CAP_FSETID around one operation (FsetidDropped, common.h). The guest's kernel
// sets FUSE_WRITE_KILL_SUIDGID on a WRITE (and, with FUSE_HANDLE_KILLPRIV_V2,
// FUSE_OPEN_KILL_SUIDGID on an OPEN or CREATE that truncates, FATTR_KILL_SUIDGID on a
// SETATTR of size or owner) when the guest process lacks CAP_FSETID: a user writing to a
// setuid file must clear its setuid bit. The daemon usually runs as root, and a root write
// keeps the bits; without CAP_FSETID the host kernel clears them itself, exactly as it would
// for that user (setgid only with group execute, security.capability always). The system
// calls work on the calling thread alone (pid 0), so a queue thread, a pool thread or the
// JS thread drops it for the one operation and takes it back after.
#include "common.h"

#include <linux/capability.h>
#include <sys/syscall.h>

#include <cstring>

namespace vfsn {

namespace {

int CapGet(__user_cap_data_struct* data) {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capget, &h, data) < 0 ? -errno : 0;
}

int CapSet(const __user_cap_data_struct* data) {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  return syscall(SYS_capset, &h, data) < 0 ? -errno : 0;
}

constexpr uint32_t kFsetidBit = 1u << CAP_FSETID;  // CAP_FSETID is 4: the first word

using CapData = __user_cap_data_struct[_LINUX_CAPABILITY_U32S_3];
static_assert(sizeof(CapData) == 6 * sizeof(uint32_t), "FsetidDropped::saved_ holds one CapData");

}  // namespace

FsetidDropped::FsetidDropped(bool drop) {
  if (!drop) return;
  CapData data;
  error_ = CapGet(data);
  // Without CAP_FSETID the kernel clears the bits already.
  if (error_ || !(data[0].effective & kFsetidBit)) return;
  memcpy(saved_, data, sizeof data);
  data[0].effective &= ~kFsetidBit;
  error_ = CapSet(data);
  restore_ = error_ == 0;
}

FsetidDropped::~FsetidDropped() {
  if (!restore_) return;
  // Nothing else changes this thread's sets meanwhile, and the permitted set still holds
  // CAP_FSETID: putting the saved sets back cannot fail.
  CapData data;
  memcpy(data, saved_, sizeof data);
  CapSet(data);
}

}  // namespace vfsn
