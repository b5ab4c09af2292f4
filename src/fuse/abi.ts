/**
 * FUSE wire format: opcodes, flags and every struct a virtio-fs server exchanges with the
 * guest kernel, named as in Linux include/uapi/linux/fuse.h.
 *
 * We speak protocol 7.38 (FUSE_KERNEL_MINOR_VERSION below); the layouts added up to 7.42
 * (fuse_statx* from 7.39, open_out.backing_id and init_out.max_stack_depth from 7.40, the
 * later INIT flags) are defined too, so newer guests decode cleanly. All fields are
 * little-endian (virtio-fs is little-endian whatever the host).
 *
 * Naming: a struct `fuse_foo_bar` is interface `FooBar`, constant `FOO_BAR_SIZE`
 * (= sizeof), `decodeFooBar(buf, off)` and `encodeFooBar(buf, off, v)` (returns the bytes
 * written). Fields are camelCase of the fuse.h names (`entry_valid_nsec` -> `entryValidNsec`).
 * Pure padding fields (padding, dummy, unused, spare, reserved) are left out of the
 * interfaces; encoders write them as zero. An `enum` in fuse.h is a TS enum here; a group of
 * `#define` flags is a frozen object (`FopenFlags.KEEP_CACHE` is FOPEN_KEEP_CACHE).
 *
 * Number rule: every 64-bit field is a `bigint`, every field of 32 bits or less a `number`.
 * 64-bit fields are read unsigned, except timestamp seconds, which are read signed: the
 * kernel stores a time64_t in the uint64_t atime/mtime/ctime of fuse_attr and
 * fuse_setattr_in, and fuse_sx_time.tv_sec is int64_t. Encoders take any bigint in range.
 *
 * Bounds: every decoder and encoder checks `off + SIZE <= buf.length` first and throws
 * FuseAbiError otherwise, so a short request never causes an out-of-range read; the server
 * answers it with EINVAL. Decoders of variable-length records check the whole record.
 */

/** A malformed or truncated FUSE message (the server replies EINVAL). */
export class FuseAbiError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuseAbiError';
  }
}

function check(buf: Buffer, off: number, size: number, what: string): void {
  if (!Number.isSafeInteger(off) || off < 0 || off + size > buf.length) {
    throw new FuseAbiError(
      `${what}: needs ${size} bytes at offset ${off}, buffer holds ${buf.length}`,
    );
  }
}

// ---------------------------------------------------------------------------------------
// Versions and fixed values

/** Major version of the interface. */
export const FUSE_KERNEL_VERSION = 7;
/** Minor version this server speaks (negotiate min(kernel minor, this)). */
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** The node ID of the root inode. */
export const FUSE_ROOT_ID = 1n;
/** The read buffer is required to be at least 8k. */
export const FUSE_MIN_READ_BUFFER = 8192;
/** Maximum of in_iovecs + out_iovecs in an ioctl retry. */
export const FUSE_IOCTL_MAX_IOV = 256;
/** High bit of fuse_in_header.unique: the request is a resend (FUSE_HAS_RESEND, 7.40). */
export const FUSE_UNIQUE_RESEND = 1n << 63n;
/** uid/gid in fuse_in_header when an idmapped mount cannot map the caller (7.41). */
export const FUSE_INVALID_UIDGID = 0xffffffff;
/**
 * FUSE_REMOVEMAPPING_MAX_ENTRY is PAGE_SIZE / sizeof(fuse_removemapping_one) of the guest;
 * this is the value for 4 KiB pages. Do not treat it as a hard limit on `count`.
 */
export const FUSE_REMOVEMAPPING_MAX_ENTRY = 4096 / 16;

// Sizes of older layouts that the kernel may still send or accept.
export const FUSE_COMPAT_ENTRY_OUT_SIZE = 120;
export const FUSE_COMPAT_ATTR_OUT_SIZE = 96;
export const FUSE_COMPAT_MKNOD_IN_SIZE = 8;
export const FUSE_COMPAT_WRITE_IN_SIZE = 24;
export const FUSE_COMPAT_STATFS_SIZE = 48;
export const FUSE_COMPAT_SETXATTR_IN_SIZE = 8;
export const FUSE_COMPAT_INIT_OUT_SIZE = 8;
export const FUSE_COMPAT_22_INIT_OUT_SIZE = 24;
/** fuse_init_in before 7.36 (major, minor, max_readahead, flags); not a fuse.h macro. */
export const FUSE_COMPAT_INIT_IN_SIZE = 16;

// ---------------------------------------------------------------------------------------
// Opcodes and enums

/** enum fuse_opcode (FUSE_ prefix dropped). */
export enum Opcode {
  LOOKUP = 1,
  FORGET = 2, // no reply
  GETATTR = 3,
  SETATTR = 4,
  READLINK = 5,
  SYMLINK = 6,
  MKNOD = 8,
  MKDIR = 9,
  UNLINK = 10,
  RMDIR = 11,
  RENAME = 12,
  LINK = 13,
  OPEN = 14,
  READ = 15,
  WRITE = 16,
  STATFS = 17,
  RELEASE = 18,
  FSYNC = 20,
  SETXATTR = 21,
  GETXATTR = 22,
  LISTXATTR = 23,
  REMOVEXATTR = 24,
  FLUSH = 25,
  INIT = 26,
  OPENDIR = 27,
  READDIR = 28,
  RELEASEDIR = 29,
  FSYNCDIR = 30,
  GETLK = 31,
  SETLK = 32,
  SETLKW = 33,
  ACCESS = 34,
  CREATE = 35,
  INTERRUPT = 36,
  BMAP = 37,
  DESTROY = 38,
  IOCTL = 39,
  POLL = 40,
  NOTIFY_REPLY = 41,
  BATCH_FORGET = 42, // no reply
  FALLOCATE = 43,
  READDIRPLUS = 44,
  RENAME2 = 45,
  LSEEK = 46,
  COPY_FILE_RANGE = 47,
  SETUPMAPPING = 48,
  REMOVEMAPPING = 49,
  SYNCFS = 50,
  TMPFILE = 51,
  STATX = 52,
}

/** Name of an opcode for logs, `UNKNOWN(n)` for values fuse.h does not define. */
export function opcodeName(opcode: number): string {
  if (opcode === -1) return 'UNKNOWN'; // server.ts' UNKNOWN_OPCODES: every opcode not in the enum
  return Opcode[opcode] ?? `UNKNOWN(${opcode})`;
}

/** enum fuse_ext_type: type of a request extension (fuse_ext_header.type). */
export enum ExtType {
  /** Types 0..31 are a fuse_secctx_header; the type is its nr_secctx. */
  MAX_NR_SECCTX = 31,
  /** fuse_supp_groups extension. */
  GROUPS = 32,
}

// ---------------------------------------------------------------------------------------
// Flags

/**
 * INIT request/reply flags (FUSE_ prefix dropped), as one 64-bit set: bits 0..31 travel in
 * fuse_init_in/out.flags, bits 32..63 in flags2 (shifted down 32). See joinInitFlags and
 * splitInitFlags.
 */
export const InitFlags = Object.freeze({
  ASYNC_READ: 1n << 0n,
  POSIX_LOCKS: 1n << 1n,
  FILE_OPS: 1n << 2n,
  ATOMIC_O_TRUNC: 1n << 3n,
  EXPORT_SUPPORT: 1n << 4n,
  BIG_WRITES: 1n << 5n,
  DONT_MASK: 1n << 6n,
  SPLICE_WRITE: 1n << 7n,
  SPLICE_MOVE: 1n << 8n,
  SPLICE_READ: 1n << 9n,
  FLOCK_LOCKS: 1n << 10n,
  HAS_IOCTL_DIR: 1n << 11n,
  AUTO_INVAL_DATA: 1n << 12n,
  DO_READDIRPLUS: 1n << 13n,
  READDIRPLUS_AUTO: 1n << 14n,
  ASYNC_DIO: 1n << 15n,
  WRITEBACK_CACHE: 1n << 16n,
  NO_OPEN_SUPPORT: 1n << 17n,
  PARALLEL_DIROPS: 1n << 18n,
  HANDLE_KILLPRIV: 1n << 19n,
  POSIX_ACL: 1n << 20n,
  ABORT_ERROR: 1n << 21n,
  MAX_PAGES: 1n << 22n,
  CACHE_SYMLINKS: 1n << 23n,
  NO_OPENDIR_SUPPORT: 1n << 24n,
  EXPLICIT_INVAL_DATA: 1n << 25n,
  MAP_ALIGNMENT: 1n << 26n,
  SUBMOUNTS: 1n << 27n,
  HANDLE_KILLPRIV_V2: 1n << 28n,
  SETXATTR_EXT: 1n << 29n,
  INIT_EXT: 1n << 30n,
  INIT_RESERVED: 1n << 31n,
  // flags2
  SECURITY_CTX: 1n << 32n,
  HAS_INODE_DAX: 1n << 33n,
  CREATE_SUPP_GROUP: 1n << 34n,
  HAS_EXPIRE_ONLY: 1n << 35n,
  DIRECT_IO_ALLOW_MMAP: 1n << 36n,
  PASSTHROUGH: 1n << 37n,
  NO_EXPORT_SUPPORT: 1n << 38n,
  HAS_RESEND: 1n << 39n,
  ALLOW_IDMAP: 1n << 40n,
  OVER_IO_URING: 1n << 41n,
} as const);

/** Join the wire halves (u32 flags, u32 flags2) into one 64-bit INIT flag set. */
export function joinInitFlags(flags: number, flags2: number): bigint {
  return BigInt(flags >>> 0) | (BigInt(flags2 >>> 0) << 32n);
}

/** Split a 64-bit INIT flag set into its wire halves. */
export function splitInitFlags(all: bigint): { flags: number; flags2: number } {
  return {
    flags: Number(BigInt.asUintN(32, all)),
    flags2: Number(BigInt.asUintN(32, all >> 32n)),
  };
}

/**
 * The INIT flags a request carries: flags2 counts only when flags has INIT_EXT (as libfuse
 * reads it).
 */
export function initInFlags(v: InitIn): bigint {
  const ext = (BigInt(v.flags >>> 0) & InitFlags.INIT_EXT) !== 0n;
  return joinInitFlags(v.flags, ext ? v.flags2 : 0);
}

/** FATTR_*: bits of fuse_setattr_in.valid. */
export const FattrFlags = Object.freeze({
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  FH: 1 << 6,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  LOCKOWNER: 1 << 9,
  CTIME: 1 << 10,
  KILL_SUIDGID: 1 << 11,
} as const);

/** FOPEN_*: fuse_open_out.open_flags. */
export const FopenFlags = Object.freeze({
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  NONSEEKABLE: 1 << 2,
  CACHE_DIR: 1 << 3,
  STREAM: 1 << 4,
  NOFLUSH: 1 << 5,
  PARALLEL_DIRECT_WRITES: 1 << 6,
  PASSTHROUGH: 1 << 7,
} as const);

/** FUSE_OPEN_*: fuse_open_in.open_flags and fuse_create_in.open_flags. */
export const OpenInFlags = Object.freeze({
  KILL_SUIDGID: 1 << 0,
} as const);

/** FUSE_RELEASE_*: fuse_release_in.release_flags. */
export const ReleaseFlags = Object.freeze({
  FLUSH: 1 << 0,
  FLOCK_UNLOCK: 1 << 1,
} as const);

/** FUSE_GETATTR_*: fuse_getattr_in.getattr_flags (and fuse_statx_in.getattr_flags). */
export const GetattrFlags = Object.freeze({
  FH: 1 << 0,
} as const);

/** FUSE_LK_*: fuse_lk_in.lk_flags. */
export const LkFlags = Object.freeze({
  FLOCK: 1 << 0,
} as const);

/** FUSE_WRITE_*: fuse_write_in.write_flags. */
export const WriteFlags = Object.freeze({
  CACHE: 1 << 0,
  LOCKOWNER: 1 << 1,
  KILL_SUIDGID: 1 << 2,
  /** Obsolete alias of KILL_SUIDGID. */
  KILL_PRIV: 1 << 2,
} as const);

/** FUSE_READ_*: fuse_read_in.read_flags. */
export const ReadFlags = Object.freeze({
  LOCKOWNER: 1 << 1,
} as const);

/** FUSE_IOCTL_*: fuse_ioctl_in.flags and fuse_ioctl_out.flags. */
export const IoctlFlags = Object.freeze({
  COMPAT: 1 << 0,
  UNRESTRICTED: 1 << 1,
  RETRY: 1 << 2,
  /** FUSE_IOCTL_32BIT. */
  _32BIT: 1 << 3,
  DIR: 1 << 4,
  COMPAT_X32: 1 << 5,
} as const);

/** FUSE_POLL_*: fuse_poll_in.flags. */
export const PollFlags = Object.freeze({
  SCHEDULE_NOTIFY: 1 << 0,
} as const);

/** FUSE_FSYNC_*: fuse_fsync_in.fsync_flags. */
export const FsyncFlags = Object.freeze({
  FDATASYNC: 1 << 0,
} as const);

/** FUSE_ATTR_*: fuse_attr.flags. */
export const AttrFlags = Object.freeze({
  SUBMOUNT: 1 << 0,
  DAX: 1 << 1,
} as const);

/** FUSE_SETXATTR_*: fuse_setxattr_in.setxattr_flags. */
export const SetxattrFlags = Object.freeze({
  ACL_KILL_SGID: 1 << 0,
} as const);

/** FUSE_SETUPMAPPING_FLAG_*: fuse_setupmapping_in.flags (a u64, hence bigint). */
export const SetupmappingFlags = Object.freeze({
  WRITE: 1n << 0n,
  READ: 1n << 1n,
} as const);

/** RENAME_* of linux/fs.h: fuse_rename2_in.flags. */
export const RenameFlags = Object.freeze({
  NOREPLACE: 1 << 0,
  EXCHANGE: 1 << 1,
  WHITEOUT: 1 << 2,
} as const);

/** Linux lock types carried in fuse_file_lock.type (F_* of asm-generic/fcntl.h). */
export const LockType = Object.freeze({
  F_RDLCK: 0,
  F_WRLCK: 1,
  F_UNLCK: 2,
} as const);

// ---------------------------------------------------------------------------------------
// Headers

/** struct fuse_in_header. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
  /** Length of the extensions at the end of the request, in 8-byte units (7.38). */
  totalExtlen: number;
}
export const IN_HEADER_SIZE = 40;
export function decodeInHeader(buf: Buffer, off: number): InHeader {
  check(buf, off, IN_HEADER_SIZE, 'fuse_in_header');
  return {
    len: buf.readUInt32LE(off),
    opcode: buf.readUInt32LE(off + 4),
    unique: buf.readBigUInt64LE(off + 8),
    nodeid: buf.readBigUInt64LE(off + 16),
    uid: buf.readUInt32LE(off + 24),
    gid: buf.readUInt32LE(off + 28),
    pid: buf.readUInt32LE(off + 32),
    totalExtlen: buf.readUInt16LE(off + 36),
  };
}
export function encodeInHeader(buf: Buffer, off: number, v: InHeader): number {
  check(buf, off, IN_HEADER_SIZE, 'fuse_in_header');
  buf.writeUInt32LE(v.len, off);
  buf.writeUInt32LE(v.opcode, off + 4);
  buf.writeBigUInt64LE(v.unique, off + 8);
  buf.writeBigUInt64LE(v.nodeid, off + 16);
  buf.writeUInt32LE(v.uid, off + 24);
  buf.writeUInt32LE(v.gid, off + 28);
  buf.writeUInt32LE(v.pid, off + 32);
  buf.writeUInt16LE(v.totalExtlen, off + 36);
  buf.writeUInt16LE(0, off + 38);
  return IN_HEADER_SIZE;
}

/** struct fuse_out_header. `error` is 0 or a negative errno. */
export interface OutHeader {
  len: number;
  error: number;
  unique: bigint;
}
export const OUT_HEADER_SIZE = 16;
export function decodeOutHeader(buf: Buffer, off: number): OutHeader {
  check(buf, off, OUT_HEADER_SIZE, 'fuse_out_header');
  return {
    len: buf.readUInt32LE(off),
    error: buf.readInt32LE(off + 4),
    unique: buf.readBigUInt64LE(off + 8),
  };
}
export function encodeOutHeader(buf: Buffer, off: number, v: OutHeader): number {
  check(buf, off, OUT_HEADER_SIZE, 'fuse_out_header');
  buf.writeUInt32LE(v.len, off);
  buf.writeInt32LE(v.error, off + 4);
  buf.writeBigUInt64LE(v.unique, off + 8);
  return OUT_HEADER_SIZE;
}

// ---------------------------------------------------------------------------------------
// Attributes

/** struct fuse_attr. atime/mtime/ctime are signed seconds (see the number rule). */
export interface Attr {
  ino: bigint;
  size: bigint;
  blocks: bigint;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  atimensec: number;
  mtimensec: number;
  ctimensec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
  /** AttrFlags. */
  flags: number;
}
export const ATTR_SIZE = 88;
export function decodeAttr(buf: Buffer, off: number): Attr {
  check(buf, off, ATTR_SIZE, 'fuse_attr');
  return {
    ino: buf.readBigUInt64LE(off),
    size: buf.readBigUInt64LE(off + 8),
    blocks: buf.readBigUInt64LE(off + 16),
    atime: buf.readBigInt64LE(off + 24),
    mtime: buf.readBigInt64LE(off + 32),
    ctime: buf.readBigInt64LE(off + 40),
    atimensec: buf.readUInt32LE(off + 48),
    mtimensec: buf.readUInt32LE(off + 52),
    ctimensec: buf.readUInt32LE(off + 56),
    mode: buf.readUInt32LE(off + 60),
    nlink: buf.readUInt32LE(off + 64),
    uid: buf.readUInt32LE(off + 68),
    gid: buf.readUInt32LE(off + 72),
    rdev: buf.readUInt32LE(off + 76),
    blksize: buf.readUInt32LE(off + 80),
    flags: buf.readUInt32LE(off + 84),
  };
}
export function encodeAttr(buf: Buffer, off: number, v: Attr): number {
  check(buf, off, ATTR_SIZE, 'fuse_attr');
  buf.writeBigUInt64LE(v.ino, off);
  buf.writeBigUInt64LE(v.size, off + 8);
  buf.writeBigUInt64LE(v.blocks, off + 16);
  buf.writeBigInt64LE(v.atime, off + 24);
  buf.writeBigInt64LE(v.mtime, off + 32);
  buf.writeBigInt64LE(v.ctime, off + 40);
  buf.writeUInt32LE(v.atimensec, off + 48);
  buf.writeUInt32LE(v.mtimensec, off + 52);
  buf.writeUInt32LE(v.ctimensec, off + 56);
  buf.writeUInt32LE(v.mode, off + 60);
  buf.writeUInt32LE(v.nlink, off + 64);
  buf.writeUInt32LE(v.uid, off + 68);
  buf.writeUInt32LE(v.gid, off + 72);
  buf.writeUInt32LE(v.rdev, off + 76);
  buf.writeUInt32LE(v.blksize, off + 80);
  buf.writeUInt32LE(v.flags, off + 84);
  return ATTR_SIZE;
}

/** struct fuse_entry_out: reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK (and in CREATE). */
export interface EntryOut {
  /** Inode ID; 0 makes a negative entry cached for entryValid. */
  nodeid: bigint;
  /** nodeid:generation must be unique for the filesystem's lifetime. */
  generation: bigint;
  entryValid: bigint;
  attrValid: bigint;
  entryValidNsec: number;
  attrValidNsec: number;
  attr: Attr;
}
export const ENTRY_OUT_SIZE = 128;
export function decodeEntryOut(buf: Buffer, off: number): EntryOut {
  check(buf, off, ENTRY_OUT_SIZE, 'fuse_entry_out');
  return {
    nodeid: buf.readBigUInt64LE(off),
    generation: buf.readBigUInt64LE(off + 8),
    entryValid: buf.readBigUInt64LE(off + 16),
    attrValid: buf.readBigUInt64LE(off + 24),
    entryValidNsec: buf.readUInt32LE(off + 32),
    attrValidNsec: buf.readUInt32LE(off + 36),
    attr: decodeAttr(buf, off + 40),
  };
}
export function encodeEntryOut(buf: Buffer, off: number, v: EntryOut): number {
  check(buf, off, ENTRY_OUT_SIZE, 'fuse_entry_out');
  buf.writeBigUInt64LE(v.nodeid, off);
  buf.writeBigUInt64LE(v.generation, off + 8);
  buf.writeBigUInt64LE(v.entryValid, off + 16);
  buf.writeBigUInt64LE(v.attrValid, off + 24);
  buf.writeUInt32LE(v.entryValidNsec, off + 32);
  buf.writeUInt32LE(v.attrValidNsec, off + 36);
  encodeAttr(buf, off + 40, v.attr);
  return ENTRY_OUT_SIZE;
}

/** struct fuse_getattr_in. */
export interface GetattrIn {
  /** GetattrFlags. */
  getattrFlags: number;
  fh: bigint;
}
export const GETATTR_IN_SIZE = 16;
export function decodeGetattrIn(buf: Buffer, off: number): GetattrIn {
  check(buf, off, GETATTR_IN_SIZE, 'fuse_getattr_in');
  return { getattrFlags: buf.readUInt32LE(off), fh: buf.readBigUInt64LE(off + 8) };
}
export function encodeGetattrIn(buf: Buffer, off: number, v: GetattrIn): number {
  check(buf, off, GETATTR_IN_SIZE, 'fuse_getattr_in');
  buf.writeUInt32LE(v.getattrFlags, off);
  buf.writeUInt32LE(0, off + 4);
  buf.writeBigUInt64LE(v.fh, off + 8);
  return GETATTR_IN_SIZE;
}

/** struct fuse_attr_out: reply to GETATTR and SETATTR. */
export interface AttrOut {
  attrValid: bigint;
  attrValidNsec: number;
  attr: Attr;
}
export const ATTR_OUT_SIZE = 104;
export function decodeAttrOut(buf: Buffer, off: number): AttrOut {
  check(buf, off, ATTR_OUT_SIZE, 'fuse_attr_out');
  return {
    attrValid: buf.readBigUInt64LE(off),
    attrValidNsec: buf.readUInt32LE(off + 8),
    attr: decodeAttr(buf, off + 16),
  };
}
export function encodeAttrOut(buf: Buffer, off: number, v: AttrOut): number {
  check(buf, off, ATTR_OUT_SIZE, 'fuse_attr_out');
  buf.writeBigUInt64LE(v.attrValid, off);
  buf.writeUInt32LE(v.attrValidNsec, off + 8);
  buf.writeUInt32LE(0, off + 12);
  encodeAttr(buf, off + 16, v.attr);
  return ATTR_OUT_SIZE;
}

/** struct fuse_sx_time (statx timestamp). */
export interface SxTime {
  tvSec: bigint;
  tvNsec: number;
}
export const SX_TIME_SIZE = 16;
export function decodeSxTime(buf: Buffer, off: number): SxTime {
  check(buf, off, SX_TIME_SIZE, 'fuse_sx_time');
  return { tvSec: buf.readBigInt64LE(off), tvNsec: buf.readUInt32LE(off + 8) };
}
export function encodeSxTime(buf: Buffer, off: number, v: SxTime): number {
  check(buf, off, SX_TIME_SIZE, 'fuse_sx_time');
  buf.writeBigInt64LE(v.tvSec, off);
  buf.writeUInt32LE(v.tvNsec, off + 8);
  buf.writeInt32LE(0, off + 12);
  return SX_TIME_SIZE;
}

/** struct fuse_statx: bit-for-bit the statx(2) struct statx (7.39). */
export interface Statx {
  mask: number;
  blksize: number;
  attributes: bigint;
  nlink: number;
  uid: number;
  gid: number;
  /** u16. */
  mode: number;
  ino: bigint;
  size: bigint;
  blocks: bigint;
  attributesMask: bigint;
  atime: SxTime;
  btime: SxTime;
  ctime: SxTime;
  mtime: SxTime;
  rdevMajor: number;
  rdevMinor: number;
  devMajor: number;
  devMinor: number;
}
export const STATX_SIZE = 256;
export function decodeStatx(buf: Buffer, off: number): Statx {
  check(buf, off, STATX_SIZE, 'fuse_statx');
  return {
    mask: buf.readUInt32LE(off),
    blksize: buf.readUInt32LE(off + 4),
    attributes: buf.readBigUInt64LE(off + 8),
    nlink: buf.readUInt32LE(off + 16),
    uid: buf.readUInt32LE(off + 20),
    gid: buf.readUInt32LE(off + 24),
    mode: buf.readUInt16LE(off + 28),
    ino: buf.readBigUInt64LE(off + 32),
    size: buf.readBigUInt64LE(off + 40),
    blocks: buf.readBigUInt64LE(off + 48),
    attributesMask: buf.readBigUInt64LE(off + 56),
    atime: decodeSxTime(buf, off + 64),
    btime: decodeSxTime(buf, off + 80),
    ctime: decodeSxTime(buf, off + 96),
    mtime: decodeSxTime(buf, off + 112),
    rdevMajor: buf.readUInt32LE(off + 128),
    rdevMinor: buf.readUInt32LE(off + 132),
    devMajor: buf.readUInt32LE(off + 136),
    devMinor: buf.readUInt32LE(off + 140),
  };
}
export function encodeStatx(buf: Buffer, off: number, v: Statx): number {
  check(buf, off, STATX_SIZE, 'fuse_statx');
  buf.writeUInt32LE(v.mask, off);
  buf.writeUInt32LE(v.blksize, off + 4);
  buf.writeBigUInt64LE(v.attributes, off + 8);
  buf.writeUInt32LE(v.nlink, off + 16);
  buf.writeUInt32LE(v.uid, off + 20);
  buf.writeUInt32LE(v.gid, off + 24);
  buf.writeUInt16LE(v.mode, off + 28);
  buf.writeUInt16LE(0, off + 30);
  buf.writeBigUInt64LE(v.ino, off + 32);
  buf.writeBigUInt64LE(v.size, off + 40);
  buf.writeBigUInt64LE(v.blocks, off + 48);
  buf.writeBigUInt64LE(v.attributesMask, off + 56);
  encodeSxTime(buf, off + 64, v.atime);
  encodeSxTime(buf, off + 80, v.btime);
  encodeSxTime(buf, off + 96, v.ctime);
  encodeSxTime(buf, off + 112, v.mtime);
  buf.writeUInt32LE(v.rdevMajor, off + 128);
  buf.writeUInt32LE(v.rdevMinor, off + 132);
  buf.writeUInt32LE(v.devMajor, off + 136);
  buf.writeUInt32LE(v.devMinor, off + 140);
  buf.fill(0, off + 144, off + STATX_SIZE); // __spare2[14]
  return STATX_SIZE;
}

/** struct fuse_statx_in (7.39). */
export interface StatxIn {
  /** GetattrFlags. */
  getattrFlags: number;
  fh: bigint;
  /** AT_* flags of statx(2). */
  sxFlags: number;
  /** STATX_* mask of statx(2). */
  sxMask: number;
}
export const STATX_IN_SIZE = 24;
export function decodeStatxIn(buf: Buffer, off: number): StatxIn {
  check(buf, off, STATX_IN_SIZE, 'fuse_statx_in');
  return {
    getattrFlags: buf.readUInt32LE(off),
    fh: buf.readBigUInt64LE(off + 8),
    sxFlags: buf.readUInt32LE(off + 16),
    sxMask: buf.readUInt32LE(off + 20),
  };
}
export function encodeStatxIn(buf: Buffer, off: number, v: StatxIn): number {
  check(buf, off, STATX_IN_SIZE, 'fuse_statx_in');
  buf.writeUInt32LE(v.getattrFlags, off);
  buf.writeUInt32LE(0, off + 4);
  buf.writeBigUInt64LE(v.fh, off + 8);
  buf.writeUInt32LE(v.sxFlags, off + 16);
  buf.writeUInt32LE(v.sxMask, off + 20);
  return STATX_IN_SIZE;
}

/** struct fuse_statx_out (7.39). */
export interface StatxOut {
  attrValid: bigint;
  attrValidNsec: number;
  flags: number;
  stat: Statx;
}
export const STATX_OUT_SIZE = 288;
export function decodeStatxOut(buf: Buffer, off: number): StatxOut {
  check(buf, off, STATX_OUT_SIZE, 'fuse_statx_out');
  return {
    attrValid: buf.readBigUInt64LE(off),
    attrValidNsec: buf.readUInt32LE(off + 8),
    flags: buf.readUInt32LE(off + 12),
    stat: decodeStatx(buf, off + 32),
  };
}
export function encodeStatxOut(buf: Buffer, off: number, v: StatxOut): number {
  check(buf, off, STATX_OUT_SIZE, 'fuse_statx_out');
  buf.writeBigUInt64LE(v.attrValid, off);
  buf.writeUInt32LE(v.attrValidNsec, off + 8);
  buf.writeUInt32LE(v.flags, off + 12);
  buf.fill(0, off + 16, off + 32); // spare[2]
  encodeStatx(buf, off + 32, v.stat);
  return STATX_OUT_SIZE;
}

/** struct fuse_setattr_in. atime/mtime/ctime are signed seconds. */
export interface SetattrIn {
  /** FattrFlags: which of the fields below are set. */
  valid: number;
  fh: bigint;
  size: bigint;
  lockOwner: bigint;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  atimensec: number;
  mtimensec: number;
  ctimensec: number;
  mode: number;
  uid: number;
  gid: number;
}
export const SETATTR_IN_SIZE = 88;
export function decodeSetattrIn(buf: Buffer, off: number): SetattrIn {
  check(buf, off, SETATTR_IN_SIZE, 'fuse_setattr_in');
  return {
    valid: buf.readUInt32LE(off),
    fh: buf.readBigUInt64LE(off + 8),
    size: buf.readBigUInt64LE(off + 16),
    lockOwner: buf.readBigUInt64LE(off + 24),
    atime: buf.readBigInt64LE(off + 32),
    mtime: buf.readBigInt64LE(off + 40),
    ctime: buf.readBigInt64LE(off + 48),
    atimensec: buf.readUInt32LE(off + 56),
    mtimensec: buf.readUInt32LE(off + 60),
    ctimensec: buf.readUInt32LE(off + 64),
    mode: buf.readUInt32LE(off + 68),
    uid: buf.readUInt32LE(off + 76),
    gid: buf.readUInt32LE(off + 80),
  };
}
export function encodeSetattrIn(buf: Buffer, off: number, v: SetattrIn): number {
  check(buf, off, SETATTR_IN_SIZE, 'fuse_setattr_in');
  buf.writeUInt32LE(v.valid, off);
  buf.writeUInt32LE(0, off + 4);
  buf.writeBigUInt64LE(v.fh, off + 8);
  buf.writeBigUInt64LE(v.size, off + 16);
  buf.writeBigUInt64LE(v.lockOwner, off + 24);
  buf.writeBigInt64LE(v.atime, off + 32);
  buf.writeBigInt64LE(v.mtime, off + 40);
  buf.writeBigInt64LE(v.ctime, off + 48);
  buf.writeUInt32LE(v.atimensec, off + 56);
  buf.writeUInt32LE(v.mtimensec, off + 60);
  buf.writeUInt32LE(v.ctimensec, off + 64);
  buf.writeUInt32LE(v.mode, off + 68);
  buf.writeUInt32LE(0, off + 72);
  buf.writeUInt32LE(v.uid, off + 76);
  buf.writeUInt32LE(v.gid, off + 80);
  buf.writeUInt32LE(0, off + 84);
  return SETATTR_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// Inode lifetime

/** struct fuse_forget_in. */
export interface ForgetIn {
  nlookup: bigint;
}
export const FORGET_IN_SIZE = 8;
export function decodeForgetIn(buf: Buffer, off: number): ForgetIn {
  check(buf, off, FORGET_IN_SIZE, 'fuse_forget_in');
  return { nlookup: buf.readBigUInt64LE(off) };
}
export function encodeForgetIn(buf: Buffer, off: number, v: ForgetIn): number {
  check(buf, off, FORGET_IN_SIZE, 'fuse_forget_in');
  buf.writeBigUInt64LE(v.nlookup, off);
  return FORGET_IN_SIZE;
}

/** struct fuse_forget_one: element of BATCH_FORGET. */
export interface ForgetOne {
  nodeid: bigint;
  nlookup: bigint;
}
export const FORGET_ONE_SIZE = 16;
export function decodeForgetOne(buf: Buffer, off: number): ForgetOne {
  check(buf, off, FORGET_ONE_SIZE, 'fuse_forget_one');
  return { nodeid: buf.readBigUInt64LE(off), nlookup: buf.readBigUInt64LE(off + 8) };
}
export function encodeForgetOne(buf: Buffer, off: number, v: ForgetOne): number {
  check(buf, off, FORGET_ONE_SIZE, 'fuse_forget_one');
  buf.writeBigUInt64LE(v.nodeid, off);
  buf.writeBigUInt64LE(v.nlookup, off + 8);
  return FORGET_ONE_SIZE;
}

/** struct fuse_batch_forget_in, followed by `count` fuse_forget_one. */
export interface BatchForgetIn {
  count: number;
}
export const BATCH_FORGET_IN_SIZE = 8;
export function decodeBatchForgetIn(buf: Buffer, off: number): BatchForgetIn {
  check(buf, off, BATCH_FORGET_IN_SIZE, 'fuse_batch_forget_in');
  return { count: buf.readUInt32LE(off) };
}
export function encodeBatchForgetIn(buf: Buffer, off: number, v: BatchForgetIn): number {
  check(buf, off, BATCH_FORGET_IN_SIZE, 'fuse_batch_forget_in');
  buf.writeUInt32LE(v.count, off);
  buf.writeUInt32LE(0, off + 4);
  return BATCH_FORGET_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// Namespace operations

/** struct fuse_mknod_in, followed by the name. */
export interface MknodIn {
  mode: number;
  rdev: number;
  umask: number;
}
export const MKNOD_IN_SIZE = 16;
export function decodeMknodIn(buf: Buffer, off: number): MknodIn {
  check(buf, off, MKNOD_IN_SIZE, 'fuse_mknod_in');
  return {
    mode: buf.readUInt32LE(off),
    rdev: buf.readUInt32LE(off + 4),
    umask: buf.readUInt32LE(off + 8),
  };
}
export function encodeMknodIn(buf: Buffer, off: number, v: MknodIn): number {
  check(buf, off, MKNOD_IN_SIZE, 'fuse_mknod_in');
  buf.writeUInt32LE(v.mode, off);
  buf.writeUInt32LE(v.rdev, off + 4);
  buf.writeUInt32LE(v.umask, off + 8);
  buf.writeUInt32LE(0, off + 12);
  return MKNOD_IN_SIZE;
}

/** struct fuse_mkdir_in, followed by the name. */
export interface MkdirIn {
  mode: number;
  umask: number;
}
export const MKDIR_IN_SIZE = 8;
export function decodeMkdirIn(buf: Buffer, off: number): MkdirIn {
  check(buf, off, MKDIR_IN_SIZE, 'fuse_mkdir_in');
  return { mode: buf.readUInt32LE(off), umask: buf.readUInt32LE(off + 4) };
}
export function encodeMkdirIn(buf: Buffer, off: number, v: MkdirIn): number {
  check(buf, off, MKDIR_IN_SIZE, 'fuse_mkdir_in');
  buf.writeUInt32LE(v.mode, off);
  buf.writeUInt32LE(v.umask, off + 4);
  return MKDIR_IN_SIZE;
}

/** struct fuse_rename_in, followed by the old and the new name. */
export interface RenameIn {
  newdir: bigint;
}
export const RENAME_IN_SIZE = 8;
export function decodeRenameIn(buf: Buffer, off: number): RenameIn {
  check(buf, off, RENAME_IN_SIZE, 'fuse_rename_in');
  return { newdir: buf.readBigUInt64LE(off) };
}
export function encodeRenameIn(buf: Buffer, off: number, v: RenameIn): number {
  check(buf, off, RENAME_IN_SIZE, 'fuse_rename_in');
  buf.writeBigUInt64LE(v.newdir, off);
  return RENAME_IN_SIZE;
}

/** struct fuse_rename2_in, followed by the old and the new name. */
export interface Rename2In {
  newdir: bigint;
  /** RenameFlags. */
  flags: number;
}
export const RENAME2_IN_SIZE = 16;
export function decodeRename2In(buf: Buffer, off: number): Rename2In {
  check(buf, off, RENAME2_IN_SIZE, 'fuse_rename2_in');
  return { newdir: buf.readBigUInt64LE(off), flags: buf.readUInt32LE(off + 8) };
}
export function encodeRename2In(buf: Buffer, off: number, v: Rename2In): number {
  check(buf, off, RENAME2_IN_SIZE, 'fuse_rename2_in');
  buf.writeBigUInt64LE(v.newdir, off);
  buf.writeUInt32LE(v.flags, off + 8);
  buf.writeUInt32LE(0, off + 12);
  return RENAME2_IN_SIZE;
}

/** struct fuse_link_in, followed by the new name. */
export interface LinkIn {
  oldnodeid: bigint;
}
export const LINK_IN_SIZE = 8;
export function decodeLinkIn(buf: Buffer, off: number): LinkIn {
  check(buf, off, LINK_IN_SIZE, 'fuse_link_in');
  return { oldnodeid: buf.readBigUInt64LE(off) };
}
export function encodeLinkIn(buf: Buffer, off: number, v: LinkIn): number {
  check(buf, off, LINK_IN_SIZE, 'fuse_link_in');
  buf.writeBigUInt64LE(v.oldnodeid, off);
  return LINK_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// Open files

/** struct fuse_open_in (OPEN, OPENDIR). */
export interface OpenIn {
  /** open(2) flags. */
  flags: number;
  /** OpenInFlags. */
  openFlags: number;
}
export const OPEN_IN_SIZE = 8;
export function decodeOpenIn(buf: Buffer, off: number): OpenIn {
  check(buf, off, OPEN_IN_SIZE, 'fuse_open_in');
  return { flags: buf.readUInt32LE(off), openFlags: buf.readUInt32LE(off + 4) };
}
export function encodeOpenIn(buf: Buffer, off: number, v: OpenIn): number {
  check(buf, off, OPEN_IN_SIZE, 'fuse_open_in');
  buf.writeUInt32LE(v.flags, off);
  buf.writeUInt32LE(v.openFlags, off + 4);
  return OPEN_IN_SIZE;
}

/** struct fuse_create_in (CREATE, TMPFILE), followed by the name. */
export interface CreateIn {
  flags: number;
  mode: number;
  umask: number;
  /** OpenInFlags. */
  openFlags: number;
}
export const CREATE_IN_SIZE = 16;
export function decodeCreateIn(buf: Buffer, off: number): CreateIn {
  check(buf, off, CREATE_IN_SIZE, 'fuse_create_in');
  return {
    flags: buf.readUInt32LE(off),
    mode: buf.readUInt32LE(off + 4),
    umask: buf.readUInt32LE(off + 8),
    openFlags: buf.readUInt32LE(off + 12),
  };
}
export function encodeCreateIn(buf: Buffer, off: number, v: CreateIn): number {
  check(buf, off, CREATE_IN_SIZE, 'fuse_create_in');
  buf.writeUInt32LE(v.flags, off);
  buf.writeUInt32LE(v.mode, off + 4);
  buf.writeUInt32LE(v.umask, off + 8);
  buf.writeUInt32LE(v.openFlags, off + 12);
  return CREATE_IN_SIZE;
}

/** struct fuse_open_out (OPEN, OPENDIR; after entry_out in CREATE). */
export interface OpenOut {
  fh: bigint;
  /** FopenFlags. */
  openFlags: number;
  /** Passthrough backing file (7.40); i32, 0 when unused. */
  backingId: number;
}
export const OPEN_OUT_SIZE = 16;
export function decodeOpenOut(buf: Buffer, off: number): OpenOut {
  check(buf, off, OPEN_OUT_SIZE, 'fuse_open_out');
  return {
    fh: buf.readBigUInt64LE(off),
    openFlags: buf.readUInt32LE(off + 8),
    backingId: buf.readInt32LE(off + 12),
  };
}
export function encodeOpenOut(buf: Buffer, off: number, v: OpenOut): number {
  check(buf, off, OPEN_OUT_SIZE, 'fuse_open_out');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeUInt32LE(v.openFlags, off + 8);
  buf.writeInt32LE(v.backingId, off + 12);
  return OPEN_OUT_SIZE;
}

/** struct fuse_release_in (RELEASE, RELEASEDIR). */
export interface ReleaseIn {
  fh: bigint;
  flags: number;
  /** ReleaseFlags. */
  releaseFlags: number;
  lockOwner: bigint;
}
export const RELEASE_IN_SIZE = 24;
export function decodeReleaseIn(buf: Buffer, off: number): ReleaseIn {
  check(buf, off, RELEASE_IN_SIZE, 'fuse_release_in');
  return {
    fh: buf.readBigUInt64LE(off),
    flags: buf.readUInt32LE(off + 8),
    releaseFlags: buf.readUInt32LE(off + 12),
    lockOwner: buf.readBigUInt64LE(off + 16),
  };
}
export function encodeReleaseIn(buf: Buffer, off: number, v: ReleaseIn): number {
  check(buf, off, RELEASE_IN_SIZE, 'fuse_release_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeUInt32LE(v.flags, off + 8);
  buf.writeUInt32LE(v.releaseFlags, off + 12);
  buf.writeBigUInt64LE(v.lockOwner, off + 16);
  return RELEASE_IN_SIZE;
}

/** struct fuse_flush_in. */
export interface FlushIn {
  fh: bigint;
  lockOwner: bigint;
}
export const FLUSH_IN_SIZE = 24;
export function decodeFlushIn(buf: Buffer, off: number): FlushIn {
  check(buf, off, FLUSH_IN_SIZE, 'fuse_flush_in');
  return { fh: buf.readBigUInt64LE(off), lockOwner: buf.readBigUInt64LE(off + 16) };
}
export function encodeFlushIn(buf: Buffer, off: number, v: FlushIn): number {
  check(buf, off, FLUSH_IN_SIZE, 'fuse_flush_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeUInt32LE(0, off + 8);
  buf.writeUInt32LE(0, off + 12);
  buf.writeBigUInt64LE(v.lockOwner, off + 16);
  return FLUSH_IN_SIZE;
}

/** struct fuse_read_in (READ, READDIR, READDIRPLUS). */
export interface ReadIn {
  fh: bigint;
  offset: bigint;
  size: number;
  /** ReadFlags. */
  readFlags: number;
  lockOwner: bigint;
  /** open(2) flags of the file. */
  flags: number;
}
export const READ_IN_SIZE = 40;
export function decodeReadIn(buf: Buffer, off: number): ReadIn {
  check(buf, off, READ_IN_SIZE, 'fuse_read_in');
  return {
    fh: buf.readBigUInt64LE(off),
    offset: buf.readBigUInt64LE(off + 8),
    size: buf.readUInt32LE(off + 16),
    readFlags: buf.readUInt32LE(off + 20),
    lockOwner: buf.readBigUInt64LE(off + 24),
    flags: buf.readUInt32LE(off + 32),
  };
}
export function encodeReadIn(buf: Buffer, off: number, v: ReadIn): number {
  check(buf, off, READ_IN_SIZE, 'fuse_read_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.offset, off + 8);
  buf.writeUInt32LE(v.size, off + 16);
  buf.writeUInt32LE(v.readFlags, off + 20);
  buf.writeBigUInt64LE(v.lockOwner, off + 24);
  buf.writeUInt32LE(v.flags, off + 32);
  buf.writeUInt32LE(0, off + 36);
  return READ_IN_SIZE;
}

/** struct fuse_write_in, followed by `size` bytes of data. */
export interface WriteIn {
  fh: bigint;
  offset: bigint;
  size: number;
  /** WriteFlags. */
  writeFlags: number;
  lockOwner: bigint;
  /** open(2) flags of the file. */
  flags: number;
}
export const WRITE_IN_SIZE = 40;
export function decodeWriteIn(buf: Buffer, off: number): WriteIn {
  check(buf, off, WRITE_IN_SIZE, 'fuse_write_in');
  return {
    fh: buf.readBigUInt64LE(off),
    offset: buf.readBigUInt64LE(off + 8),
    size: buf.readUInt32LE(off + 16),
    writeFlags: buf.readUInt32LE(off + 20),
    lockOwner: buf.readBigUInt64LE(off + 24),
    flags: buf.readUInt32LE(off + 32),
  };
}
export function encodeWriteIn(buf: Buffer, off: number, v: WriteIn): number {
  check(buf, off, WRITE_IN_SIZE, 'fuse_write_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.offset, off + 8);
  buf.writeUInt32LE(v.size, off + 16);
  buf.writeUInt32LE(v.writeFlags, off + 20);
  buf.writeBigUInt64LE(v.lockOwner, off + 24);
  buf.writeUInt32LE(v.flags, off + 32);
  buf.writeUInt32LE(0, off + 36);
  return WRITE_IN_SIZE;
}

/** struct fuse_write_out. */
export interface WriteOut {
  size: number;
}
export const WRITE_OUT_SIZE = 8;
export function decodeWriteOut(buf: Buffer, off: number): WriteOut {
  check(buf, off, WRITE_OUT_SIZE, 'fuse_write_out');
  return { size: buf.readUInt32LE(off) };
}
export function encodeWriteOut(buf: Buffer, off: number, v: WriteOut): number {
  check(buf, off, WRITE_OUT_SIZE, 'fuse_write_out');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(0, off + 4);
  return WRITE_OUT_SIZE;
}

/** struct fuse_fsync_in (FSYNC, FSYNCDIR). */
export interface FsyncIn {
  fh: bigint;
  /** FsyncFlags. */
  fsyncFlags: number;
}
export const FSYNC_IN_SIZE = 16;
export function decodeFsyncIn(buf: Buffer, off: number): FsyncIn {
  check(buf, off, FSYNC_IN_SIZE, 'fuse_fsync_in');
  return { fh: buf.readBigUInt64LE(off), fsyncFlags: buf.readUInt32LE(off + 8) };
}
export function encodeFsyncIn(buf: Buffer, off: number, v: FsyncIn): number {
  check(buf, off, FSYNC_IN_SIZE, 'fuse_fsync_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeUInt32LE(v.fsyncFlags, off + 8);
  buf.writeUInt32LE(0, off + 12);
  return FSYNC_IN_SIZE;
}

/** struct fuse_fallocate_in. */
export interface FallocateIn {
  fh: bigint;
  offset: bigint;
  length: bigint;
  /** fallocate(2) FALLOC_FL_* mode. */
  mode: number;
}
export const FALLOCATE_IN_SIZE = 32;
export function decodeFallocateIn(buf: Buffer, off: number): FallocateIn {
  check(buf, off, FALLOCATE_IN_SIZE, 'fuse_fallocate_in');
  return {
    fh: buf.readBigUInt64LE(off),
    offset: buf.readBigUInt64LE(off + 8),
    length: buf.readBigUInt64LE(off + 16),
    mode: buf.readUInt32LE(off + 24),
  };
}
export function encodeFallocateIn(buf: Buffer, off: number, v: FallocateIn): number {
  check(buf, off, FALLOCATE_IN_SIZE, 'fuse_fallocate_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.offset, off + 8);
  buf.writeBigUInt64LE(v.length, off + 16);
  buf.writeUInt32LE(v.mode, off + 24);
  buf.writeUInt32LE(0, off + 28);
  return FALLOCATE_IN_SIZE;
}

/** struct fuse_lseek_in. */
export interface LseekIn {
  fh: bigint;
  offset: bigint;
  /** SEEK_* of lseek(2). */
  whence: number;
}
export const LSEEK_IN_SIZE = 24;
export function decodeLseekIn(buf: Buffer, off: number): LseekIn {
  check(buf, off, LSEEK_IN_SIZE, 'fuse_lseek_in');
  return {
    fh: buf.readBigUInt64LE(off),
    offset: buf.readBigUInt64LE(off + 8),
    whence: buf.readUInt32LE(off + 16),
  };
}
export function encodeLseekIn(buf: Buffer, off: number, v: LseekIn): number {
  check(buf, off, LSEEK_IN_SIZE, 'fuse_lseek_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.offset, off + 8);
  buf.writeUInt32LE(v.whence, off + 16);
  buf.writeUInt32LE(0, off + 20);
  return LSEEK_IN_SIZE;
}

/** struct fuse_lseek_out. */
export interface LseekOut {
  offset: bigint;
}
export const LSEEK_OUT_SIZE = 8;
export function decodeLseekOut(buf: Buffer, off: number): LseekOut {
  check(buf, off, LSEEK_OUT_SIZE, 'fuse_lseek_out');
  return { offset: buf.readBigUInt64LE(off) };
}
export function encodeLseekOut(buf: Buffer, off: number, v: LseekOut): number {
  check(buf, off, LSEEK_OUT_SIZE, 'fuse_lseek_out');
  buf.writeBigUInt64LE(v.offset, off);
  return LSEEK_OUT_SIZE;
}

/** struct fuse_copy_file_range_in (the source is the request's nodeid). */
export interface CopyFileRangeIn {
  fhIn: bigint;
  offIn: bigint;
  nodeidOut: bigint;
  fhOut: bigint;
  offOut: bigint;
  len: bigint;
  flags: bigint;
}
export const COPY_FILE_RANGE_IN_SIZE = 56;
export function decodeCopyFileRangeIn(buf: Buffer, off: number): CopyFileRangeIn {
  check(buf, off, COPY_FILE_RANGE_IN_SIZE, 'fuse_copy_file_range_in');
  return {
    fhIn: buf.readBigUInt64LE(off),
    offIn: buf.readBigUInt64LE(off + 8),
    nodeidOut: buf.readBigUInt64LE(off + 16),
    fhOut: buf.readBigUInt64LE(off + 24),
    offOut: buf.readBigUInt64LE(off + 32),
    len: buf.readBigUInt64LE(off + 40),
    flags: buf.readBigUInt64LE(off + 48),
  };
}
export function encodeCopyFileRangeIn(buf: Buffer, off: number, v: CopyFileRangeIn): number {
  check(buf, off, COPY_FILE_RANGE_IN_SIZE, 'fuse_copy_file_range_in');
  buf.writeBigUInt64LE(v.fhIn, off);
  buf.writeBigUInt64LE(v.offIn, off + 8);
  buf.writeBigUInt64LE(v.nodeidOut, off + 16);
  buf.writeBigUInt64LE(v.fhOut, off + 24);
  buf.writeBigUInt64LE(v.offOut, off + 32);
  buf.writeBigUInt64LE(v.len, off + 40);
  buf.writeBigUInt64LE(v.flags, off + 48);
  return COPY_FILE_RANGE_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// Filesystem

/** struct fuse_kstatfs. */
export interface Kstatfs {
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  bsize: number;
  namelen: number;
  frsize: number;
}
export const KSTATFS_SIZE = 80;
export function decodeKstatfs(buf: Buffer, off: number): Kstatfs {
  check(buf, off, KSTATFS_SIZE, 'fuse_kstatfs');
  return {
    blocks: buf.readBigUInt64LE(off),
    bfree: buf.readBigUInt64LE(off + 8),
    bavail: buf.readBigUInt64LE(off + 16),
    files: buf.readBigUInt64LE(off + 24),
    ffree: buf.readBigUInt64LE(off + 32),
    bsize: buf.readUInt32LE(off + 40),
    namelen: buf.readUInt32LE(off + 44),
    frsize: buf.readUInt32LE(off + 48),
  };
}
export function encodeKstatfs(buf: Buffer, off: number, v: Kstatfs): number {
  check(buf, off, KSTATFS_SIZE, 'fuse_kstatfs');
  buf.writeBigUInt64LE(v.blocks, off);
  buf.writeBigUInt64LE(v.bfree, off + 8);
  buf.writeBigUInt64LE(v.bavail, off + 16);
  buf.writeBigUInt64LE(v.files, off + 24);
  buf.writeBigUInt64LE(v.ffree, off + 32);
  buf.writeUInt32LE(v.bsize, off + 40);
  buf.writeUInt32LE(v.namelen, off + 44);
  buf.writeUInt32LE(v.frsize, off + 48);
  buf.fill(0, off + 52, off + KSTATFS_SIZE); // padding, spare[6]
  return KSTATFS_SIZE;
}

/** struct fuse_statfs_out. */
export interface StatfsOut {
  st: Kstatfs;
}
export const STATFS_OUT_SIZE = 80;
export function decodeStatfsOut(buf: Buffer, off: number): StatfsOut {
  check(buf, off, STATFS_OUT_SIZE, 'fuse_statfs_out');
  return { st: decodeKstatfs(buf, off) };
}
export function encodeStatfsOut(buf: Buffer, off: number, v: StatfsOut): number {
  check(buf, off, STATFS_OUT_SIZE, 'fuse_statfs_out');
  encodeKstatfs(buf, off, v.st);
  return STATFS_OUT_SIZE;
}

/** struct fuse_syncfs_in: only padding. */
export type SyncfsIn = Record<string, never>;
export const SYNCFS_IN_SIZE = 8;
export function decodeSyncfsIn(buf: Buffer, off: number): SyncfsIn {
  check(buf, off, SYNCFS_IN_SIZE, 'fuse_syncfs_in');
  return {};
}
export function encodeSyncfsIn(buf: Buffer, off: number, _v: SyncfsIn): number {
  check(buf, off, SYNCFS_IN_SIZE, 'fuse_syncfs_in');
  buf.writeBigUInt64LE(0n, off);
  return SYNCFS_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// Extended attributes

/**
 * struct fuse_setxattr_in, followed by the name and the value. It is 16 bytes only when
 * INIT negotiated SETXATTR_EXT (7.33); otherwise the 8-byte compat layout
 * (FUSE_COMPAT_SETXATTR_IN_SIZE) without setxattrFlags. Hence the `ext` argument.
 */
export interface SetxattrIn {
  size: number;
  /** XATTR_CREATE / XATTR_REPLACE. */
  flags: number;
  /** SetxattrFlags; 0 in the compat layout. */
  setxattrFlags: number;
}
export const SETXATTR_IN_SIZE = 16;
/** Size of fuse_setxattr_in on the wire for the negotiated layout. */
export function setxattrInSize(ext: boolean): number {
  return ext ? SETXATTR_IN_SIZE : FUSE_COMPAT_SETXATTR_IN_SIZE;
}
export function decodeSetxattrIn(buf: Buffer, off: number, ext: boolean): SetxattrIn {
  check(buf, off, setxattrInSize(ext), 'fuse_setxattr_in');
  return {
    size: buf.readUInt32LE(off),
    flags: buf.readUInt32LE(off + 4),
    setxattrFlags: ext ? buf.readUInt32LE(off + 8) : 0,
  };
}
export function encodeSetxattrIn(
  buf: Buffer,
  off: number,
  v: SetxattrIn,
  ext: boolean,
): number {
  const size = setxattrInSize(ext);
  check(buf, off, size, 'fuse_setxattr_in');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(v.flags, off + 4);
  if (ext) {
    buf.writeUInt32LE(v.setxattrFlags, off + 8);
    buf.writeUInt32LE(0, off + 12);
  }
  return size;
}

/** struct fuse_getxattr_in (GETXATTR followed by the name; LISTXATTR). */
export interface GetxattrIn {
  size: number;
}
export const GETXATTR_IN_SIZE = 8;
export function decodeGetxattrIn(buf: Buffer, off: number): GetxattrIn {
  check(buf, off, GETXATTR_IN_SIZE, 'fuse_getxattr_in');
  return { size: buf.readUInt32LE(off) };
}
export function encodeGetxattrIn(buf: Buffer, off: number, v: GetxattrIn): number {
  check(buf, off, GETXATTR_IN_SIZE, 'fuse_getxattr_in');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(0, off + 4);
  return GETXATTR_IN_SIZE;
}

/** struct fuse_getxattr_out: the reply when the request's size was 0. */
export interface GetxattrOut {
  size: number;
}
export const GETXATTR_OUT_SIZE = 8;
export function decodeGetxattrOut(buf: Buffer, off: number): GetxattrOut {
  check(buf, off, GETXATTR_OUT_SIZE, 'fuse_getxattr_out');
  return { size: buf.readUInt32LE(off) };
}
export function encodeGetxattrOut(buf: Buffer, off: number, v: GetxattrOut): number {
  check(buf, off, GETXATTR_OUT_SIZE, 'fuse_getxattr_out');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(0, off + 4);
  return GETXATTR_OUT_SIZE;
}

// ---------------------------------------------------------------------------------------
// Locks

/** struct fuse_file_lock. */
export interface FileLock {
  start: bigint;
  end: bigint;
  /** LockType. */
  type: number;
  /** tgid. */
  pid: number;
}
export const FILE_LOCK_SIZE = 24;
export function decodeFileLock(buf: Buffer, off: number): FileLock {
  check(buf, off, FILE_LOCK_SIZE, 'fuse_file_lock');
  return {
    start: buf.readBigUInt64LE(off),
    end: buf.readBigUInt64LE(off + 8),
    type: buf.readUInt32LE(off + 16),
    pid: buf.readUInt32LE(off + 20),
  };
}
export function encodeFileLock(buf: Buffer, off: number, v: FileLock): number {
  check(buf, off, FILE_LOCK_SIZE, 'fuse_file_lock');
  buf.writeBigUInt64LE(v.start, off);
  buf.writeBigUInt64LE(v.end, off + 8);
  buf.writeUInt32LE(v.type, off + 16);
  buf.writeUInt32LE(v.pid, off + 20);
  return FILE_LOCK_SIZE;
}

/** struct fuse_lk_in (GETLK, SETLK, SETLKW). */
export interface LkIn {
  fh: bigint;
  owner: bigint;
  lk: FileLock;
  /** LkFlags. */
  lkFlags: number;
}
export const LK_IN_SIZE = 48;
export function decodeLkIn(buf: Buffer, off: number): LkIn {
  check(buf, off, LK_IN_SIZE, 'fuse_lk_in');
  return {
    fh: buf.readBigUInt64LE(off),
    owner: buf.readBigUInt64LE(off + 8),
    lk: decodeFileLock(buf, off + 16),
    lkFlags: buf.readUInt32LE(off + 40),
  };
}
export function encodeLkIn(buf: Buffer, off: number, v: LkIn): number {
  check(buf, off, LK_IN_SIZE, 'fuse_lk_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.owner, off + 8);
  encodeFileLock(buf, off + 16, v.lk);
  buf.writeUInt32LE(v.lkFlags, off + 40);
  buf.writeUInt32LE(0, off + 44);
  return LK_IN_SIZE;
}

/** struct fuse_lk_out (GETLK reply). */
export interface LkOut {
  lk: FileLock;
}
export const LK_OUT_SIZE = 24;
export function decodeLkOut(buf: Buffer, off: number): LkOut {
  check(buf, off, LK_OUT_SIZE, 'fuse_lk_out');
  return { lk: decodeFileLock(buf, off) };
}
export function encodeLkOut(buf: Buffer, off: number, v: LkOut): number {
  check(buf, off, LK_OUT_SIZE, 'fuse_lk_out');
  encodeFileLock(buf, off, v.lk);
  return LK_OUT_SIZE;
}

/** struct fuse_access_in. */
export interface AccessIn {
  /** R_OK | W_OK | X_OK (F_OK = 0). */
  mask: number;
}
export const ACCESS_IN_SIZE = 8;
export function decodeAccessIn(buf: Buffer, off: number): AccessIn {
  check(buf, off, ACCESS_IN_SIZE, 'fuse_access_in');
  return { mask: buf.readUInt32LE(off) };
}
export function encodeAccessIn(buf: Buffer, off: number, v: AccessIn): number {
  check(buf, off, ACCESS_IN_SIZE, 'fuse_access_in');
  buf.writeUInt32LE(v.mask, off);
  buf.writeUInt32LE(0, off + 4);
  return ACCESS_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// Session

/**
 * struct fuse_init_in. Kernels since 7.36 send the 64-byte layout; older ones send only the
 * first FUSE_COMPAT_INIT_IN_SIZE bytes. decodeInitIn accepts both: it reads flags2 only when
 * the buffer holds the full layout from `off`, so pass a buffer that ends where the request
 * ends. Use initInFlags() for the effective 64-bit flag set.
 */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
}
export const INIT_IN_SIZE = 64;
export function decodeInitIn(buf: Buffer, off: number): InitIn {
  check(buf, off, FUSE_COMPAT_INIT_IN_SIZE, 'fuse_init_in');
  const full = off + INIT_IN_SIZE <= buf.length;
  return {
    major: buf.readUInt32LE(off),
    minor: buf.readUInt32LE(off + 4),
    maxReadahead: buf.readUInt32LE(off + 8),
    flags: buf.readUInt32LE(off + 12),
    flags2: full ? buf.readUInt32LE(off + 16) : 0,
  };
}
export function encodeInitIn(buf: Buffer, off: number, v: InitIn): number {
  check(buf, off, INIT_IN_SIZE, 'fuse_init_in');
  buf.writeUInt32LE(v.major, off);
  buf.writeUInt32LE(v.minor, off + 4);
  buf.writeUInt32LE(v.maxReadahead, off + 8);
  buf.writeUInt32LE(v.flags, off + 12);
  buf.writeUInt32LE(v.flags2, off + 16);
  buf.fill(0, off + 20, off + INIT_IN_SIZE); // unused[11]
  return INIT_IN_SIZE;
}

/**
 * struct fuse_init_out. The reply is the full 64 bytes for minor >= 23
 * (FUSE_COMPAT_22_INIT_OUT_SIZE before, FUSE_COMPAT_INIT_OUT_SIZE before 7.5).
 */
export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  /** u16. */
  maxBackground: number;
  /** u16. */
  congestionThreshold: number;
  maxWrite: number;
  /** Timestamp granularity in ns (1 = full nanosecond precision). */
  timeGran: number;
  /** u16; honoured with InitFlags.MAX_PAGES. */
  maxPages: number;
  /** u16, log2 of the DAX mapping alignment; honoured with InitFlags.MAP_ALIGNMENT. */
  mapAlignment: number;
  /** Upper INIT flags; honoured with InitFlags.INIT_EXT. */
  flags2: number;
  /** Passthrough stacking depth (7.40). */
  maxStackDepth: number;
}
export const INIT_OUT_SIZE = 64;
export function decodeInitOut(buf: Buffer, off: number): InitOut {
  check(buf, off, INIT_OUT_SIZE, 'fuse_init_out');
  return {
    major: buf.readUInt32LE(off),
    minor: buf.readUInt32LE(off + 4),
    maxReadahead: buf.readUInt32LE(off + 8),
    flags: buf.readUInt32LE(off + 12),
    maxBackground: buf.readUInt16LE(off + 16),
    congestionThreshold: buf.readUInt16LE(off + 18),
    maxWrite: buf.readUInt32LE(off + 20),
    timeGran: buf.readUInt32LE(off + 24),
    maxPages: buf.readUInt16LE(off + 28),
    mapAlignment: buf.readUInt16LE(off + 30),
    flags2: buf.readUInt32LE(off + 32),
    maxStackDepth: buf.readUInt32LE(off + 36),
  };
}
export function encodeInitOut(buf: Buffer, off: number, v: InitOut): number {
  check(buf, off, INIT_OUT_SIZE, 'fuse_init_out');
  buf.writeUInt32LE(v.major, off);
  buf.writeUInt32LE(v.minor, off + 4);
  buf.writeUInt32LE(v.maxReadahead, off + 8);
  buf.writeUInt32LE(v.flags, off + 12);
  buf.writeUInt16LE(v.maxBackground, off + 16);
  buf.writeUInt16LE(v.congestionThreshold, off + 18);
  buf.writeUInt32LE(v.maxWrite, off + 20);
  buf.writeUInt32LE(v.timeGran, off + 24);
  buf.writeUInt16LE(v.maxPages, off + 28);
  buf.writeUInt16LE(v.mapAlignment, off + 30);
  buf.writeUInt32LE(v.flags2, off + 32);
  buf.writeUInt32LE(v.maxStackDepth, off + 36);
  buf.fill(0, off + 40, off + INIT_OUT_SIZE); // unused[6]
  return INIT_OUT_SIZE;
}

/** struct fuse_interrupt_in. */
export interface InterruptIn {
  unique: bigint;
}
export const INTERRUPT_IN_SIZE = 8;
export function decodeInterruptIn(buf: Buffer, off: number): InterruptIn {
  check(buf, off, INTERRUPT_IN_SIZE, 'fuse_interrupt_in');
  return { unique: buf.readBigUInt64LE(off) };
}
export function encodeInterruptIn(buf: Buffer, off: number, v: InterruptIn): number {
  check(buf, off, INTERRUPT_IN_SIZE, 'fuse_interrupt_in');
  buf.writeBigUInt64LE(v.unique, off);
  return INTERRUPT_IN_SIZE;
}

// ---------------------------------------------------------------------------------------
// BMAP, IOCTL, POLL

/** struct fuse_bmap_in. */
export interface BmapIn {
  block: bigint;
  blocksize: number;
}
export const BMAP_IN_SIZE = 16;
export function decodeBmapIn(buf: Buffer, off: number): BmapIn {
  check(buf, off, BMAP_IN_SIZE, 'fuse_bmap_in');
  return { block: buf.readBigUInt64LE(off), blocksize: buf.readUInt32LE(off + 8) };
}
export function encodeBmapIn(buf: Buffer, off: number, v: BmapIn): number {
  check(buf, off, BMAP_IN_SIZE, 'fuse_bmap_in');
  buf.writeBigUInt64LE(v.block, off);
  buf.writeUInt32LE(v.blocksize, off + 8);
  buf.writeUInt32LE(0, off + 12);
  return BMAP_IN_SIZE;
}

/** struct fuse_bmap_out. */
export interface BmapOut {
  block: bigint;
}
export const BMAP_OUT_SIZE = 8;
export function decodeBmapOut(buf: Buffer, off: number): BmapOut {
  check(buf, off, BMAP_OUT_SIZE, 'fuse_bmap_out');
  return { block: buf.readBigUInt64LE(off) };
}
export function encodeBmapOut(buf: Buffer, off: number, v: BmapOut): number {
  check(buf, off, BMAP_OUT_SIZE, 'fuse_bmap_out');
  buf.writeBigUInt64LE(v.block, off);
  return BMAP_OUT_SIZE;
}

/** struct fuse_ioctl_in, followed by in_size bytes of input. */
export interface IoctlIn {
  fh: bigint;
  /** IoctlFlags. */
  flags: number;
  cmd: number;
  arg: bigint;
  inSize: number;
  outSize: number;
}
export const IOCTL_IN_SIZE = 32;
export function decodeIoctlIn(buf: Buffer, off: number): IoctlIn {
  check(buf, off, IOCTL_IN_SIZE, 'fuse_ioctl_in');
  return {
    fh: buf.readBigUInt64LE(off),
    flags: buf.readUInt32LE(off + 8),
    cmd: buf.readUInt32LE(off + 12),
    arg: buf.readBigUInt64LE(off + 16),
    inSize: buf.readUInt32LE(off + 24),
    outSize: buf.readUInt32LE(off + 28),
  };
}
export function encodeIoctlIn(buf: Buffer, off: number, v: IoctlIn): number {
  check(buf, off, IOCTL_IN_SIZE, 'fuse_ioctl_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeUInt32LE(v.flags, off + 8);
  buf.writeUInt32LE(v.cmd, off + 12);
  buf.writeBigUInt64LE(v.arg, off + 16);
  buf.writeUInt32LE(v.inSize, off + 24);
  buf.writeUInt32LE(v.outSize, off + 28);
  return IOCTL_IN_SIZE;
}

/** struct fuse_ioctl_iovec (unrestricted ioctl retry). */
export interface IoctlIovec {
  base: bigint;
  len: bigint;
}
export const IOCTL_IOVEC_SIZE = 16;
export function decodeIoctlIovec(buf: Buffer, off: number): IoctlIovec {
  check(buf, off, IOCTL_IOVEC_SIZE, 'fuse_ioctl_iovec');
  return { base: buf.readBigUInt64LE(off), len: buf.readBigUInt64LE(off + 8) };
}
export function encodeIoctlIovec(buf: Buffer, off: number, v: IoctlIovec): number {
  check(buf, off, IOCTL_IOVEC_SIZE, 'fuse_ioctl_iovec');
  buf.writeBigUInt64LE(v.base, off);
  buf.writeBigUInt64LE(v.len, off + 8);
  return IOCTL_IOVEC_SIZE;
}

/** struct fuse_ioctl_out, followed by the output data. */
export interface IoctlOut {
  /** i32 return value of the ioctl. */
  result: number;
  /** IoctlFlags. */
  flags: number;
  inIovs: number;
  outIovs: number;
}
export const IOCTL_OUT_SIZE = 16;
export function decodeIoctlOut(buf: Buffer, off: number): IoctlOut {
  check(buf, off, IOCTL_OUT_SIZE, 'fuse_ioctl_out');
  return {
    result: buf.readInt32LE(off),
    flags: buf.readUInt32LE(off + 4),
    inIovs: buf.readUInt32LE(off + 8),
    outIovs: buf.readUInt32LE(off + 12),
  };
}
export function encodeIoctlOut(buf: Buffer, off: number, v: IoctlOut): number {
  check(buf, off, IOCTL_OUT_SIZE, 'fuse_ioctl_out');
  buf.writeInt32LE(v.result, off);
  buf.writeUInt32LE(v.flags, off + 4);
  buf.writeUInt32LE(v.inIovs, off + 8);
  buf.writeUInt32LE(v.outIovs, off + 12);
  return IOCTL_OUT_SIZE;
}

/** struct fuse_poll_in. */
export interface PollIn {
  fh: bigint;
  kh: bigint;
  /** PollFlags. */
  flags: number;
  events: number;
}
export const POLL_IN_SIZE = 24;
export function decodePollIn(buf: Buffer, off: number): PollIn {
  check(buf, off, POLL_IN_SIZE, 'fuse_poll_in');
  return {
    fh: buf.readBigUInt64LE(off),
    kh: buf.readBigUInt64LE(off + 8),
    flags: buf.readUInt32LE(off + 16),
    events: buf.readUInt32LE(off + 20),
  };
}
export function encodePollIn(buf: Buffer, off: number, v: PollIn): number {
  check(buf, off, POLL_IN_SIZE, 'fuse_poll_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.kh, off + 8);
  buf.writeUInt32LE(v.flags, off + 16);
  buf.writeUInt32LE(v.events, off + 20);
  return POLL_IN_SIZE;
}

/** struct fuse_poll_out. */
export interface PollOut {
  revents: number;
}
export const POLL_OUT_SIZE = 8;
export function decodePollOut(buf: Buffer, off: number): PollOut {
  check(buf, off, POLL_OUT_SIZE, 'fuse_poll_out');
  return { revents: buf.readUInt32LE(off) };
}
export function encodePollOut(buf: Buffer, off: number, v: PollOut): number {
  check(buf, off, POLL_OUT_SIZE, 'fuse_poll_out');
  buf.writeUInt32LE(v.revents, off);
  buf.writeUInt32LE(0, off + 4);
  return POLL_OUT_SIZE;
}

// ---------------------------------------------------------------------------------------
// DAX mappings

/** struct fuse_setupmapping_in. fh is ~0 when the kernel maps by nodeid. */
export interface SetupmappingIn {
  fh: bigint;
  /** Offset into the file. */
  foffset: bigint;
  len: bigint;
  /** SetupmappingFlags. */
  flags: bigint;
  /** Offset in the DAX window. */
  moffset: bigint;
}
export const SETUPMAPPING_IN_SIZE = 40;
export function decodeSetupmappingIn(buf: Buffer, off: number): SetupmappingIn {
  check(buf, off, SETUPMAPPING_IN_SIZE, 'fuse_setupmapping_in');
  return {
    fh: buf.readBigUInt64LE(off),
    foffset: buf.readBigUInt64LE(off + 8),
    len: buf.readBigUInt64LE(off + 16),
    flags: buf.readBigUInt64LE(off + 24),
    moffset: buf.readBigUInt64LE(off + 32),
  };
}
export function encodeSetupmappingIn(buf: Buffer, off: number, v: SetupmappingIn): number {
  check(buf, off, SETUPMAPPING_IN_SIZE, 'fuse_setupmapping_in');
  buf.writeBigUInt64LE(v.fh, off);
  buf.writeBigUInt64LE(v.foffset, off + 8);
  buf.writeBigUInt64LE(v.len, off + 16);
  buf.writeBigUInt64LE(v.flags, off + 24);
  buf.writeBigUInt64LE(v.moffset, off + 32);
  return SETUPMAPPING_IN_SIZE;
}

/**
 * struct fuse_removemapping_in: 4 bytes, and the `count` fuse_removemapping_one follow
 * directly at offset 4 (the kernel sends them as a separate argument, unpadded).
 */
export interface RemovemappingIn {
  count: number;
}
export const REMOVEMAPPING_IN_SIZE = 4;
export function decodeRemovemappingIn(buf: Buffer, off: number): RemovemappingIn {
  check(buf, off, REMOVEMAPPING_IN_SIZE, 'fuse_removemapping_in');
  return { count: buf.readUInt32LE(off) };
}
export function encodeRemovemappingIn(buf: Buffer, off: number, v: RemovemappingIn): number {
  check(buf, off, REMOVEMAPPING_IN_SIZE, 'fuse_removemapping_in');
  buf.writeUInt32LE(v.count, off);
  return REMOVEMAPPING_IN_SIZE;
}

/** struct fuse_removemapping_one. */
export interface RemovemappingOne {
  moffset: bigint;
  len: bigint;
}
export const REMOVEMAPPING_ONE_SIZE = 16;
export function decodeRemovemappingOne(buf: Buffer, off: number): RemovemappingOne {
  check(buf, off, REMOVEMAPPING_ONE_SIZE, 'fuse_removemapping_one');
  return { moffset: buf.readBigUInt64LE(off), len: buf.readBigUInt64LE(off + 8) };
}
export function encodeRemovemappingOne(
  buf: Buffer,
  off: number,
  v: RemovemappingOne,
): number {
  check(buf, off, REMOVEMAPPING_ONE_SIZE, 'fuse_removemapping_one');
  buf.writeBigUInt64LE(v.moffset, off);
  buf.writeBigUInt64LE(v.len, off + 8);
  return REMOVEMAPPING_ONE_SIZE;
}

// ---------------------------------------------------------------------------------------
// Directory entries

/** FUSE_REC_ALIGN: round a record length up to 8 bytes (arithmetic, safe above 2^31). */
export function recAlign(n: number): number {
  return Math.ceil(n / 8) * 8;
}

/** offsetof(struct fuse_dirent, name). */
export const FUSE_NAME_OFFSET = 24;
/** offsetof(struct fuse_direntplus, dirent.name). */
export const FUSE_NAME_OFFSET_DIRENTPLUS = ENTRY_OUT_SIZE + FUSE_NAME_OFFSET;

/** struct fuse_dirent. `name` is raw bytes without NUL; namelen is name.length. */
export interface Dirent {
  ino: bigint;
  /** Cookie of the next entry (the offset to pass to continue after this one). */
  off: bigint;
  /** DT_* type, (mode & S_IFMT) >> 12. */
  type: number;
  name: Buffer;
}

/** DT_* directory entry type for a st_mode. */
export function direntTypeFromMode(mode: number): number {
  return (mode >>> 12) & 0xf;
}

/** FUSE_DIRENT_SIZE: bytes a dirent with a name of nameLen bytes takes, padding included. */
export function direntSize(nameLen: number): number {
  return recAlign(FUSE_NAME_OFFSET + nameLen);
}

/** Write a fuse_dirent and its zeroed padding; returns direntSize(name.length). */
export function encodeDirent(buf: Buffer, off: number, d: Dirent): number {
  const size = direntSize(d.name.length);
  check(buf, off, size, 'fuse_dirent');
  buf.writeBigUInt64LE(d.ino, off);
  buf.writeBigUInt64LE(d.off, off + 8);
  buf.writeUInt32LE(d.name.length, off + 16);
  buf.writeUInt32LE(d.type, off + 20);
  d.name.copy(buf, off + FUSE_NAME_OFFSET);
  buf.fill(0, off + FUSE_NAME_OFFSET + d.name.length, off + size);
  return size;
}

/** Read a fuse_dirent (the whole padded record must be in the buffer). name is a view. */
export function decodeDirent(buf: Buffer, off: number): Dirent {
  check(buf, off, FUSE_NAME_OFFSET, 'fuse_dirent');
  const namelen = buf.readUInt32LE(off + 16);
  check(buf, off, direntSize(namelen), 'fuse_dirent');
  return {
    ino: buf.readBigUInt64LE(off),
    off: buf.readBigUInt64LE(off + 8),
    type: buf.readUInt32LE(off + 20),
    name: buf.subarray(off + FUSE_NAME_OFFSET, off + FUSE_NAME_OFFSET + namelen),
  };
}

/** struct fuse_direntplus: entry_out followed by a dirent. */
export interface Direntplus {
  entryOut: EntryOut;
  dirent: Dirent;
}

/** FUSE_DIRENTPLUS_SIZE: bytes a direntplus with a name of nameLen bytes takes. */
export function direntplusSize(nameLen: number): number {
  return recAlign(FUSE_NAME_OFFSET_DIRENTPLUS + nameLen);
}

/** Write a fuse_direntplus and its zeroed padding; returns direntplusSize(name.length). */
export function encodeDirentplus(buf: Buffer, off: number, d: Direntplus): number {
  const size = direntplusSize(d.dirent.name.length);
  check(buf, off, size, 'fuse_direntplus');
  encodeEntryOut(buf, off, d.entryOut);
  encodeDirent(buf, off + ENTRY_OUT_SIZE, d.dirent);
  return size;
}

/** Read a fuse_direntplus (the whole padded record must be in the buffer). */
export function decodeDirentplus(buf: Buffer, off: number): Direntplus {
  check(buf, off, FUSE_NAME_OFFSET_DIRENTPLUS, 'fuse_direntplus');
  return { entryOut: decodeEntryOut(buf, off), dirent: decodeDirent(buf, off + ENTRY_OUT_SIZE) };
}

// ---------------------------------------------------------------------------------------
// Request extensions (7.36 security context, 7.38 extension headers)

/**
 * struct fuse_ext_header. Extensions sit at the end of a request: the last
 * in_header.totalExtlen * 8 bytes. `size` includes this header and is a multiple of 8.
 */
export interface ExtHeader {
  size: number;
  /** ExtType; 0..31 means a fuse_secctx_header with that many contexts. */
  type: number;
}
export const EXT_HEADER_SIZE = 8;
export function decodeExtHeader(buf: Buffer, off: number): ExtHeader {
  check(buf, off, EXT_HEADER_SIZE, 'fuse_ext_header');
  return { size: buf.readUInt32LE(off), type: buf.readUInt32LE(off + 4) };
}
export function encodeExtHeader(buf: Buffer, off: number, v: ExtHeader): number {
  check(buf, off, EXT_HEADER_SIZE, 'fuse_ext_header');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(v.type, off + 4);
  return EXT_HEADER_SIZE;
}

/** One request extension: its type and the bytes after its header (a view). */
export interface Extension {
  type: number;
  data: Buffer;
}

/**
 * Split the extension area buf[off, off + len) into extensions. Throws FuseAbiError when a
 * header is short, its size is below 8, not a multiple of 8, or runs past the area.
 */
export function parseExtensions(buf: Buffer, off: number, len: number): Extension[] {
  check(buf, off, len, 'request extensions');
  const end = off + len;
  const out: Extension[] = [];
  let p = off;
  while (p < end) {
    if (end - p < EXT_HEADER_SIZE) {
      throw new FuseAbiError(`request extensions: ${end - p} trailing bytes at offset ${p}`);
    }
    const h = decodeExtHeader(buf, p);
    if (h.size < EXT_HEADER_SIZE || h.size % 8 !== 0 || h.size > end - p) {
      throw new FuseAbiError(
        `request extensions: bad size ${h.size} at offset ${p} (${end - p} bytes left)`,
      );
    }
    out.push({ type: h.type, data: buf.subarray(p + EXT_HEADER_SIZE, p + h.size) });
    p += h.size;
  }
  return out;
}

/** struct fuse_supp_groups (extension GROUPS): nr_groups then nr_groups u32 gids. */
export interface SuppGroups {
  groups: number[];
}
/** sizeof(struct fuse_supp_groups), the fixed part. */
export const SUPP_GROUPS_SIZE = 4;
/** Bytes a fuse_supp_groups with n groups takes (before extension padding). */
export function suppGroupsSize(n: number): number {
  return SUPP_GROUPS_SIZE + 4 * n;
}
export function decodeSuppGroups(buf: Buffer, off: number): SuppGroups {
  check(buf, off, SUPP_GROUPS_SIZE, 'fuse_supp_groups');
  const n = buf.readUInt32LE(off);
  if (n > (buf.length - off - SUPP_GROUPS_SIZE) / 4) {
    throw new FuseAbiError(
      `fuse_supp_groups: ${n} groups do not fit in ${buf.length - off} bytes at offset ${off}`,
    );
  }
  const groups: number[] = [];
  for (let i = 0; i < n; i++) groups.push(buf.readUInt32LE(off + 4 + 4 * i));
  return { groups };
}
export function encodeSuppGroups(buf: Buffer, off: number, v: SuppGroups): number {
  const size = suppGroupsSize(v.groups.length);
  check(buf, off, size, 'fuse_supp_groups');
  buf.writeUInt32LE(v.groups.length, off);
  v.groups.forEach((g, i) => buf.writeUInt32LE(g, off + 4 + 4 * i));
  return size;
}

/** struct fuse_secctx_header: `size` covers all contexts including this header. */
export interface SecctxHeader {
  size: number;
  nrSecctx: number;
}
export const SECCTX_HEADER_SIZE = 8;
export function decodeSecctxHeader(buf: Buffer, off: number): SecctxHeader {
  check(buf, off, SECCTX_HEADER_SIZE, 'fuse_secctx_header');
  return { size: buf.readUInt32LE(off), nrSecctx: buf.readUInt32LE(off + 4) };
}
export function encodeSecctxHeader(buf: Buffer, off: number, v: SecctxHeader): number {
  check(buf, off, SECCTX_HEADER_SIZE, 'fuse_secctx_header');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(v.nrSecctx, off + 4);
  return SECCTX_HEADER_SIZE;
}

/**
 * struct fuse_secctx: one security context, followed by its NUL-terminated xattr name and
 * `size` bytes of context, the whole record padded to 8 (recAlign).
 */
export interface Secctx {
  size: number;
}
export const SECCTX_SIZE = 8;
export function decodeSecctx(buf: Buffer, off: number): Secctx {
  check(buf, off, SECCTX_SIZE, 'fuse_secctx');
  return { size: buf.readUInt32LE(off) };
}
export function encodeSecctx(buf: Buffer, off: number, v: Secctx): number {
  check(buf, off, SECCTX_SIZE, 'fuse_secctx');
  buf.writeUInt32LE(v.size, off);
  buf.writeUInt32LE(0, off + 4);
  return SECCTX_SIZE;
}

/** A security context the guest sends with a new file (FUSE_SECURITY_CTX): an xattr name and its value. */
export interface SecurityContext {
  name: Buffer;
  value: Buffer;
}

/**
 * The security context among a creating request's extensions (the last totalExtlen * 8 bytes
 * of its arguments `args`), or null when it carries none (no extensions, or a
 * fuse_secctx_header with no context). Throws FuseAbiError for a malformed area, more than one
 * context (the kernel sends at most one), an empty or unterminated name, or a value that
 * runs past its record.
 */
export function securityContextOf(args: Buffer, totalExtlen: number): SecurityContext | null {
  if (totalExtlen === 0) return null;
  const len = totalExtlen * 8;
  if (len > args.length) throw new FuseAbiError(`request extensions: ${len} bytes in arguments of ${args.length}`);
  for (const ext of parseExtensions(args, args.length - len, len)) {
    if (ext.type > ExtType.MAX_NR_SECCTX) continue;
    if (ext.type === 0) return null;
    if (ext.type > 1) throw new FuseAbiError(`fuse_secctx_header: ${ext.type} contexts (at most 1)`);
    const { size } = decodeSecctx(ext.data, 0);
    const { value: name, next } = readCString(ext.data, SECCTX_SIZE);
    if (name.length === 0) throw new FuseAbiError('fuse_secctx: empty name');
    if (size > ext.data.length - next) throw new FuseAbiError(`fuse_secctx: a value of ${size} bytes past its record`);
    return { name, value: ext.data.subarray(next, next + size) };
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// Names

/**
 * Read a NUL-terminated string from buf[off, end): returns the bytes before the NUL (a view,
 * without it) and the offset just past the NUL, where a following name starts. Throws
 * FuseAbiError when the range is invalid or holds no NUL. Checking the bytes (empty, '/',
 * '.', '..') is the caller's business: a symlink target may contain '/'.
 */
export function readCString(
  buf: Buffer,
  off: number,
  end: number = buf.length,
): { value: Buffer; next: number } {
  if (
    !Number.isSafeInteger(off) ||
    !Number.isSafeInteger(end) ||
    off < 0 ||
    end > buf.length ||
    off > end
  ) {
    throw new FuseAbiError(`name: bad range [${off}, ${end}) in a buffer of ${buf.length}`);
  }
  const nul = buf.subarray(off, end).indexOf(0);
  if (nul < 0) {
    throw new FuseAbiError(`name: no NUL terminator in ${end - off} bytes at offset ${off}`);
  }
  return { value: buf.subarray(off, off + nul), next: off + nul + 1 };
}
