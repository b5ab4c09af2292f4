// What the I/O pool (iopool.cc) offers native callers that prepare a request without JS
// (fastpath.cc): a READ or WRITE tried at once and otherwise run and replied on the pool, an
// FSYNC run and replied there, and the FUSE reply header both write into guest memory.
#pragma once

#include "state.h"
#include "usedring.h"

namespace vfsn {

// What follows a reply's fuse_out_header: the data read (READ), a fuse_write_out (WRITE),
// or nothing (FSYNC, and every error).
enum class ReplyBody { kData, kWriteOut, kNone };

// Writes the reply for result r (bytes moved, or -errno) of request `unique` into the
// reply's first bytes (header: their host iovecs); returns the reply's length.
uint32_t WriteFuseReply(const std::vector<iovec>& header, ReplyBody body, uint64_t unique, int64_t r);

// A READ (write false) or WRITE through handle fh at pos, between the file and data (host
// iovecs into the snapshot of guest memory that `memory` holds: GuestMemoryPin). Tried at once without
// blocking (TryTransferNow): true when that finished it, *result being the bytes moved or
// -errno, for the caller to reply. Else false: the request is on the pool, which moves the
// rest, writes the reply into header and puts chain `head` on ring. A WRITE with
// killSuidgid is done without CAP_FSETID (FsetidDropped) on whichever thread does it.
bool TransferOrQueue(FsState* s, uint64_t fh, int64_t pos, std::vector<iovec>& data, std::vector<iovec>&& header, bool write,
                     bool killSuidgid, std::shared_ptr<const void> memory, std::shared_ptr<UsedRing> ring, uint32_t head,
                     uint64_t unique, int64_t* result);

// An FSYNC (fdatasync with datasync) of handle fh run and replied on the pool, as
// TransferOrQueue's queued half: true when it could not be queued, *result the -errno (an
// unknown handle) for the caller to reply; else false: the pool replies into header and puts
// chain `head` on ring.
bool SyncOrQueue(FsState* s, uint64_t fh, bool datasync, std::vector<iovec>&& header, std::shared_ptr<const void> memory,
                 std::shared_ptr<UsedRing> ring, uint32_t head, uint64_t unique, int64_t* result);

}  // namespace vfsn
