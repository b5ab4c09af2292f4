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

}  // namespace

FsetidDropped::FsetidDropped(bool drop) {
  if (!drop) return;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  error_ = CapGet(data);
  // Without CAP_FSETID the kernel clears the bits already.
  if (error_ || !(data[0].effective & kFsetidBit)) return;
  effective_[0] = data[0].effective;
  effective_[1] = data[1].effective;
  data[0].effective &= ~kFsetidBit;
  error_ = CapSet(data);
  restore_ = error_ == 0;
}

FsetidDropped::~FsetidDropped() {
  if (!restore_) return;
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
  // The permitted set still holds CAP_FSETID: raising it again cannot fail.
  if (CapGet(data) != 0) return;
  data[0].effective = effective_[0];
  data[1].effective = effective_[1];
  CapSet(data);
}

}  // namespace vfsn
