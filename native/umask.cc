// A thread's own umask for one creation (ThreadUmask, common.h). The daemon runs with a
// umask of 0: without POSIX ACLs the guest masks a new file's mode itself. With them
// (FUSE_POSIX_ACL and FUSE_DONT_MASK) it sends the mode unmasked and its caller's umask, and
// whether that umask applies depends on the parent directory: a default ACL replaces it. The
// host kernel makes that choice when it creates the file under the caller's umask, so the
// creating thread takes that umask for the one system call. umask is per fs_struct, which
// the threads of a process share; each thread that needs one unshares its own first (the
// daemon never changes its working directory or root, the other things an fs_struct holds).
#include "common.h"

#include <sched.h>
#include <sys/stat.h>

namespace vfsn {

namespace {
thread_local bool ownFsStruct = false;
}

ThreadUmask::ThreadUmask(bool apply, uint32_t mask) {
  if (!apply) return;
  if (!ownFsStruct) {
    if (unshare(CLONE_FS) < 0) {
      error_ = -errno;
      return;
    }
    ownFsStruct = true;
  }
  umask(static_cast<mode_t>(mask & 0777));
  restore_ = true;
}

ThreadUmask::~ThreadUmask() {
  if (restore_) umask(0);
}

}  // namespace vfsn
