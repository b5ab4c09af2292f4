/**
 * The typed file-system interface the FUSE server dispatches to: one method per opcode,
 * each returning a typed reply or throwing an FsError (or a Node system error) that carries
 * an errno. NullFilesystem answers ENOSYS to everything; a real filesystem overrides what it
 * supports. The server owns the wire format; implementations never see a raw request.
 */
import { constants as os } from 'node:os';
import type { GuestRanges } from '../native';

/** The caller of a request, as the guest kernel reports it in fuse_in_header. */
export interface Context {
  uid: number;
  gid: number;
  pid: number;
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
  ino: number;
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
}

function nosys(): never {
  throw new FsError(E.ENOSYS);
}

export class NullFilesystem {
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
  open(_ctx: Context, _nodeid: number, _flags: number): OpenReply {
    return nosys();
  }
  /** Reads up to `size` bytes at `offset` straight into `dst` (guest memory); returns bytes read. */
  read(_ctx: Context, _nodeid: number, _fh: number, _offset: number, _size: number, _dst: GuestRanges): number {
    return nosys();
  }
  flush(_ctx: Context, _nodeid: number, _fh: number, _lockOwner: bigint): void {
    nosys();
  }
  release(_ctx: Context, _nodeid: number, _fh: number): void {
    nosys();
  }
  opendir(_ctx: Context, _nodeid: number, _flags: number): OpenReply {
    return nosys();
  }
  releasedir(_ctx: Context, _nodeid: number, _fh: number): void {
    nosys();
  }
  statfs(_ctx: Context, _nodeid: number): StatfsReply {
    return nosys();
  }
}

export type Filesystem = NullFilesystem;
