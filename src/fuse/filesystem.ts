/**
 * The typed file-system interface the FUSE server dispatches to: one method per opcode,
 * each returning a typed reply or throwing an FsError (or a Node system error) that carries
 * an errno. NullFilesystem answers ENOSYS to everything; a real filesystem overrides what it
 * supports. The server owns the wire format; implementations never see a raw request.
 */
import { constants as os } from 'node:os';
import type { GuestRanges, PoolReplied, PoolReply } from '../native';

/** The caller of a request, as the guest kernel reports it in fuse_in_header. */
export interface Context {
  uid: number;
  gid: number;
  pid: number;
  /**
   * READ, WRITE, FSYNC and FSYNCDIR, when the filesystem takes pool replies (replyOnPool) and
   * the transport is a virtqueue: where the I/O pool may put the reply itself. A method that
   * hands the request over returns REPLIED_BY_POOL and the server writes nothing.
   */
  reply?: PoolReply;
  /**
   * CREATE, MKNOD, MKDIR, SYMLINK and TMPFILE with FUSE_SECURITY_CTX: the label the guest's
   * LSM chose for the new file (an xattr name and value), to be stored with it.
   */
  securityContext?: { name: Buffer; value: Buffer };
}

/** An error with a positive errno, turned into a -errno reply by the server. */
export class FsError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? `errno ${errno}`);
    this.name = 'FsError';
  }
}

export const E = os.errno;

/** The positive errno an error stands for (FsError, Node system errors, native -errno). */
export function errnoOf(e: unknown): number {
  if (e instanceof FsError) return e.errno;
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.errno === 'number' && err.errno !== 0) return Math.abs(err.errno);
  if (err && typeof err.code === 'string' && err.code in os.errno) {
    return os.errno[err.code as keyof typeof os.errno];
  }
  return E.EIO;
}

/** Throws an FsError for a negative native return value; returns it otherwise. */
export function check(r: number): number {
  if (r < 0) throw new FsError(-r);
  return r;
}

/** Attributes of an inode, as fuse_attr needs them (u64 fields as JS numbers). */
export interface Attributes {
  ino: bigint;
  size: number;
  blocks: number;
  atime: number;
  atimeNsec: number;
  mtime: number;
  mtimeNsec: number;
  ctime: number;
  ctimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Device number in the kernel's new_encode_dev format. */
  rdev: number;
  blksize: number;
  /** fuse_attr.flags (AttrFlags); 0 when absent. */
  flags?: number;
}

export interface Entry {
  nodeid: number;
  generation: number;
  attr: Attributes;
  /** Seconds the guest may cache the name and the attributes. */
  entryTimeout: number;
  attrTimeout: number;
}

export interface AttrReply {
  attr: Attributes;
  attrTimeout: number;
}

/** STATX: the attributes with the birth time and the statx mask the host filled. */
export interface StatxReply extends AttrReply {
  /** STATX_* bits of what is valid. */
  mask: number;
  btime: number;
  btimeNsec: number;
  devMajor: number;
  devMinor: number;
}

export interface OpenReply {
  fh: number;
  /** FOPEN_* flags. */
  openFlags: number;
}

export interface StatfsReply {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

/** What the filesystem wants from INIT, given what the kernel offers (a 64-bit flag set). */
export interface InitReply {
  /** INIT flags wanted; the server keeps only those the kernel offered. */
  flags: bigint;
  maxWrite: number;
  maxPages: number;
  timeGran: number;
  /** log2 of the alignment DAX mappings must have (sent with InitFlags.MAP_ALIGNMENT); 0 without a window. */
  mapAlignment?: number;
}

/** SETATTR: what to change (FATTR_* bits in valid) and the new values. */
export interface SetattrRequest {
  valid: number;
  fh: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atime: number;
  atimeNsec: number;
  mtime: number;
  mtimeNsec: number;
}

/** CREATE and TMPFILE: the new inode and its open handle. */
export interface CreateReply {
  entry: Entry;
  open: OpenReply;
}

/** GETXATTR / LISTXATTR: the value, or only its size when the caller asked for size 0. */
export type XattrReply = { value: Buffer } | { size: number };

/** A byte-range lock (fuse_file_lock); end is inclusive, 2^63-1 means "to the end". */
export interface Lock {
  start: bigint;
  end: bigint;
  /** F_RDLCK, F_WRLCK or F_UNLCK. */
  type: number;
  pid: number;
}

function nosys(): never {
  throw new FsError(E.ENOSYS);
}

/**
 * One method per FUSE opcode. Every method of this base answers ENOSYS (the kernel then
 * stops asking for most of them), so a subclass overrides what it supports and this class
 * on its own is the null filesystem used to fuzz the server. Methods that may block (read,
 * write, fsync, fallocate, copyFileRange, syncfs) may return a Promise: the request then
 * completes when it settles, and the queue goes on meanwhile.
 */
export class NullFilesystem {
  /** Whether READ, WRITE and FSYNC may be handed to the I/O pool with Context.reply. */
  get replyOnPool(): boolean {
    return false;
  }
  /**
   * Whether a session is on (an INIT began it and no DESTROY ended it), seen alike by every
   * queue's thread: without one the server answers EIO to all but INIT, as libfuse does.
   */
  get sessionStarted(): boolean {
    return true;
  }
  /** A new session begins (INIT); `offered` is the kernel's INIT flag set. */
  init(_offered: bigint): InitReply {
    return { flags: 0n, maxWrite: 1 << 20, maxPages: 256, timeGran: 1 };
  }
  destroy(): void {}
  lookup(_ctx: Context, _parent: number, _name: Buffer): Entry {
    return nosys();
  }
  forget(_nodeid: number, _nlookup: number): void {}
  getattr(_ctx: Context, _nodeid: number, _fh: number | null): AttrReply {
    return nosys();
  }
  /** STATX (sent by kernels from FUSE 7.39 on, when asked for fields GETATTR lacks). */
  statx(_ctx: Context, _nodeid: number, _fh: number | null, _mask: number): StatxReply {
    return nosys();
  }
  setattr(_ctx: Context, _nodeid: number, _req: SetattrRequest): AttrReply {
    return nosys();
  }
  readlink(_ctx: Context, _nodeid: number): Buffer {
    return nosys();
  }
  symlink(_ctx: Context, _parent: number, _name: Buffer, _target: Buffer): Entry {
    return nosys();
  }
  /**
   * umask (MKNOD, MKDIR, CREATE, TMPFILE): the caller's. The mode arrives already masked
   * unless the session negotiated FUSE_DONT_MASK; then the filesystem applies it.
   */
  mknod(_ctx: Context, _parent: number, _name: Buffer, _mode: number, _rdev: number, _umask = 0): Entry {
    return nosys();
  }
  mkdir(_ctx: Context, _parent: number, _name: Buffer, _mode: number, _umask = 0): Entry {
    return nosys();
  }
  unlink(_ctx: Context, _parent: number, _name: Buffer): void {
    nosys();
  }
  rmdir(_ctx: Context, _parent: number, _name: Buffer): void {
    nosys();
  }
  /** RENAME (flags 0) and RENAME2 (RENAME_NOREPLACE, _EXCHANGE, _WHITEOUT). */
  rename(_ctx: Context, _parent: number, _name: Buffer, _newParent: number, _newName: Buffer, _flags: number): void {
    nosys();
  }
  link(_ctx: Context, _nodeid: number, _newParent: number, _newName: Buffer): Entry {
    return nosys();
  }
  /** openInFlags: FUSE_OPEN_* (OpenInFlags) of fuse_open_in, as for create. */
  open(_ctx: Context, _nodeid: number, _flags: number, _openInFlags = 0): OpenReply {
    return nosys();
  }
  create(_ctx: Context, _parent: number, _name: Buffer, _flags: number, _mode: number, _openInFlags = 0, _umask = 0): CreateReply {
    return nosys();
  }
  tmpfile(_ctx: Context, _parent: number, _flags: number, _mode: number, _umask = 0): CreateReply {
    return nosys();
  }
  /** Reads up to `size` bytes at `offset` straight into `dst` (guest memory); returns bytes read. */
  read(_ctx: Context, _nodeid: number, _fh: number, _offset: number, _size: number, _dst: GuestRanges): number | Promise<number> | PoolReplied {
    return nosys();
  }
  /** Writes the bytes of `src` (guest memory) at `offset`; returns bytes written. */
  write(_ctx: Context, _nodeid: number, _fh: number, _offset: number, _src: GuestRanges, _writeFlags: number): number | Promise<number> | PoolReplied {
    return nosys();
  }
  flush(_ctx: Context, _nodeid: number, _fh: number, _lockOwner: bigint): void {
    nosys();
  }
  release(_ctx: Context, _nodeid: number, _fh: number, _releaseFlags: number, _lockOwner: bigint): void {
    nosys();
  }
  fsync(_ctx: Context, _nodeid: number, _fh: number, _datasync: boolean): void | Promise<void> | PoolReplied {
    nosys();
  }
  opendir(_ctx: Context, _nodeid: number, _flags: number): OpenReply {
    return nosys();
  }
  /**
   * Fills `out` with fuse_dirent (plus: fuse_direntplus) records from `offset` (a cookie from
   * an earlier record, 64 bits); returns bytes, 0 at the end.
   */
  readdir(_ctx: Context, _nodeid: number, _fh: number, _offset: bigint, _out: Buffer, _plus: boolean): number {
    return nosys();
  }
  releasedir(_ctx: Context, _nodeid: number, _fh: number): void {
    nosys();
  }
  fsyncdir(_ctx: Context, _nodeid: number, _fh: number, _datasync: boolean): void | Promise<void> | PoolReplied {
    nosys();
  }
  statfs(_ctx: Context, _nodeid: number): StatfsReply {
    return nosys();
  }
  access(_ctx: Context, _nodeid: number, _mask: number): void {
    nosys();
  }
  /**
   * Whether the session's SETXATTR requests carry the 16-byte fuse_setxattr_in
   * (FUSE_SETXATTR_EXT negotiated); asked at each SETXATTR, since the INIT that negotiated
   * it may have gone through another queue's thread.
   */
  get setxattrExtended(): boolean {
    return false;
  }
  /** setxattrFlags: SetxattrFlags (ACL_KILL_SGID), 0 without FUSE_SETXATTR_EXT. */
  setxattr(_ctx: Context, _nodeid: number, _name: Buffer, _value: Buffer, _flags: number, _setxattrFlags = 0): void {
    nosys();
  }
  getxattr(_ctx: Context, _nodeid: number, _name: Buffer, _size: number): XattrReply {
    return nosys();
  }
  listxattr(_ctx: Context, _nodeid: number, _size: number): XattrReply {
    return nosys();
  }
  removexattr(_ctx: Context, _nodeid: number, _name: Buffer): void {
    nosys();
  }
  fallocate(_ctx: Context, _nodeid: number, _fh: number, _offset: number, _length: number, _mode: number): void | Promise<void> {
    nosys();
  }
  lseek(_ctx: Context, _nodeid: number, _fh: number, _offset: number, _whence: number): number {
    return nosys();
  }
  copyFileRange(_ctx: Context, _fhIn: number, _offIn: number, _fhOut: number, _offOut: number, _len: number, _flags: number): number | Promise<number> {
    return nosys();
  }
  syncfs(_ctx: Context, _nodeid: number): void | Promise<void> {
    nosys();
  }
  /** SETUPMAPPING: len bytes of nodeid's file from foffset at moffset of the DAX window. */
  setupMapping(_ctx: Context, _nodeid: number, _foffset: number, _len: number, _moffset: number, _write: boolean): Promise<void> {
    return nosys();
  }
  /** REMOVEMAPPING: the mappings in these ranges of the DAX window go. */
  removeMapping(_ctx: Context, _ranges: Array<{ moffset: number; len: number }>): Promise<void> {
    return nosys();
  }
  /** GETLK: the first lock that would conflict with `lock`, or one of type F_UNLCK. */
  getlk(_ctx: Context, _nodeid: number, _fh: number, _owner: bigint, _lock: Lock): Lock {
    return nosys();
  }
  /** SETLK/SETLKW (flock: a BSD flock() on the handle). With wait, may resolve later. */
  setlk(_ctx: Context, _nodeid: number, _fh: number, _owner: bigint, _lock: Lock, _flock: boolean, _wait: boolean): void | Promise<void> {
    nosys();
  }
  /** The queue stops: requests still waiting (a SETLKW) give up now, with EINTR. */
  cancelWaits(): void {}
}

export type Filesystem = NullFilesystem;
