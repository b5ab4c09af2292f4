/**
 * The passthrough filesystem: serves a host directory through the Filesystem interface.
 * Inodes are O_PATH descriptors held in the shared native inode table (native/state.cc),
 * keyed by (device, inode, mount id), so every queue worker sees the same nodeids, lookup
 * counts and open handles. Names are resolved one component at a time with openat and
 * O_NOFOLLOW relative to the parent's descriptor, so no host symlink is followed and no
 * path outside the shared directory is reachable.
 */
import { constants as fsc } from 'node:fs';
import { native, StatxField, STATX_FIELDS, type Segments } from '../../native';
import { cachePolicy, type CacheMode, type CachePolicy } from '../../cache/policy';
import { InitFlags } from '../abi';
import {
  check, E, FsError, NullFilesystem, type Attributes, type AttrReply, type Context, type Entry,
  type InitReply, type OpenReply, type StatfsReply,
} from '../filesystem';
import { statfsOf } from './statfs';

const O_PATH = 0o10000000;
const AT_EMPTY_PATH = 0x1000;
const AT_SYMLINK_NOFOLLOW = 0x100;
export const ROOT_ID = 1;

/** Options shared by every worker's instance; the native ids make them one filesystem. */
export interface PassthroughOptions {
  /** Native FsState id (inodes, handles). */
  stateId: number;
  sharedDir: string;
  cache: CacheMode;
  readonly: boolean;
  writeback: boolean;
}

/** Creates the shared state and registers the shared directory as nodeid 1. */
export function createSharedState(sharedDir: string): number {
  const id = native.stateCreate();
  setRoot(id, sharedDir);
  return id;
}

function setRoot(stateId: number, sharedDir: string): void {
  const fd = native.openat(-100, sharedDir, O_PATH | fsc.O_DIRECTORY);
  if (fd < 0) throw new FsError(-fd, `cannot open shared directory ${sharedDir}`);
  const st = new Float64Array(STATX_FIELDS);
  check(native.statx(fd, '', AT_EMPTY_PATH, st));
  native.inodeSetRoot(stateId, fd, st[StatxField.devMajor], st[StatxField.devMinor], st[StatxField.ino], st[StatxField.mntId]);
}

/** The kernel's new_encode_dev(): the dev_t layout FUSE attributes carry. */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export class PassthroughFs extends NullFilesystem {
  private readonly st = new Float64Array(STATX_FIELDS);
  private readonly policy: CachePolicy;
  private readonly procFd: number;

  constructor(private readonly opts: PassthroughOptions) {
    super();
    this.policy = cachePolicy(opts.cache);
    this.procFd = check(native.openat(-100, '/proc/self/fd', O_PATH | fsc.O_DIRECTORY));
  }

  override init(_offered: bigint): InitReply {
    return {
      flags:
        InitFlags.ASYNC_READ | InitFlags.BIG_WRITES | InitFlags.MAX_PAGES | InitFlags.PARALLEL_DIROPS |
        InitFlags.ATOMIC_O_TRUNC | InitFlags.AUTO_INVAL_DATA | InitFlags.DONT_MASK,
      maxWrite: 1 << 20,
      maxPages: 256,
      timeGran: 1,
    };
  }

  /** A new session: the kernel has forgotten every inode and handle. */
  newSession(): void {
    native.stateClear(this.opts.stateId);
    setRoot(this.opts.stateId, this.opts.sharedDir);
  }

  override destroy(): void {
    this.newSession();
  }

  override lookup(_ctx: Context, parent: number, name: Buffer): Entry {
    checkName(name);
    const id = this.opts.stateId;
    const pfd = check(native.inodeAcquire(id, parent));
    try {
      let fd: number;
      if (name.length === 1 && name[0] === 0x2e) {
        fd = check(native.openat(pfd, '.', O_PATH | fsc.O_NOFOLLOW));
      } else if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) {
        // '..' never leaves the shared directory: at the root it is the root.
        fd = check(native.openat(pfd, parent === ROOT_ID ? '.' : '..', O_PATH | fsc.O_NOFOLLOW));
      } else {
        fd = check(native.openat(pfd, name, O_PATH | fsc.O_NOFOLLOW));
      }
      const attr = this.statFd(fd);
      const st = this.st;
      const nodeid = native.inodeRef(id, fd, st[StatxField.devMajor], st[StatxField.devMinor], st[StatxField.ino], st[StatxField.mntId]);
      return { nodeid, generation: 0, attr, entryTimeout: this.policy.entryTimeout, attrTimeout: this.policy.attrTimeout };
    } finally {
      native.inodeRelease(id, parent);
    }
  }

  override forget(nodeid: number, nlookup: number): void {
    native.inodeForget(this.opts.stateId, nodeid, nlookup);
  }

  override getattr(_ctx: Context, nodeid: number, _fh: number | null): AttrReply {
    const id = this.opts.stateId;
    const fd = check(native.inodeAcquire(id, nodeid));
    try {
      return { attr: this.statFd(fd), attrTimeout: this.policy.attrTimeout };
    } finally {
      native.inodeRelease(id, nodeid);
    }
  }

  override open(_ctx: Context, nodeid: number, flags: number): OpenReply {
    const fd = this.reopen(nodeid, flags);
    const fh = native.handleInsert(this.opts.stateId, fd, nodeid);
    return { fh, openFlags: this.policy.fileOpenFlags };
  }

  override opendir(_ctx: Context, nodeid: number, flags: number): OpenReply {
    const fd = this.reopen(nodeid, (flags & ~(fsc.O_WRONLY | fsc.O_RDWR)) | fsc.O_DIRECTORY);
    const fh = native.handleInsert(this.opts.stateId, fd, nodeid);
    return { fh, openFlags: this.policy.dirOpenFlags };
  }

  override read(_ctx: Context, _nodeid: number, fh: number, offset: number, _size: number, dst: Segments): number {
    const id = this.opts.stateId;
    const fd = check(native.handleAcquire(id, fh));
    try {
      return check(native.preadv(fd, offset, dst));
    } finally {
      native.handleRelease(id, fh);
    }
  }

  override flush(): void {}

  override release(_ctx: Context, _nodeid: number, fh: number): void {
    check(native.handleRemove(this.opts.stateId, fh));
  }

  override releasedir(_ctx: Context, _nodeid: number, fh: number): void {
    check(native.handleRemove(this.opts.stateId, fh));
  }

  override statfs(_ctx: Context, nodeid: number): StatfsReply {
    const id = this.opts.stateId;
    const fd = check(native.inodeAcquire(id, nodeid));
    try {
      return statfsOf(fd);
    } finally {
      native.inodeRelease(id, nodeid);
    }
  }

  /** Opens the inode behind an O_PATH descriptor for I/O, via /proc/self/fd. */
  private reopen(nodeid: number, flags: number): number {
    const id = this.opts.stateId;
    const pfd = check(native.inodeAcquire(id, nodeid));
    try {
      const clean = flags & ~(fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOCTTY | fsc.O_NOFOLLOW | fsc.O_TRUNC);
      if (this.opts.readonly && (flags & (fsc.O_WRONLY | fsc.O_RDWR | fsc.O_TRUNC))) throw new FsError(E.EROFS);
      return check(native.openat(this.procFd, String(pfd), clean));
    } finally {
      native.inodeRelease(id, nodeid);
    }
  }

  private statFd(fd: number): Attributes {
    const st = this.st;
    check(native.statx(fd, '', AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, st));
    return {
      ino: st[StatxField.ino],
      size: st[StatxField.size],
      blocks: st[StatxField.blocks],
      atime: st[StatxField.atimeSec],
      atimeNsec: st[StatxField.atimeNsec],
      mtime: st[StatxField.mtimeSec],
      mtimeNsec: st[StatxField.mtimeNsec],
      ctime: st[StatxField.ctimeSec],
      ctimeNsec: st[StatxField.ctimeNsec],
      mode: st[StatxField.mode],
      nlink: st[StatxField.nlink],
      uid: st[StatxField.uid],
      gid: st[StatxField.gid],
      rdev: encodeDev(st[StatxField.rdevMajor], st[StatxField.rdevMinor]),
      blksize: st[StatxField.blksize],
    };
  }
}

/** A name from the guest: one path component, not empty, no '/' (NUL was cut by the decoder). */
export function checkName(name: Buffer): void {
  if (name.length === 0) throw new FsError(E.EINVAL, 'empty name');
  if (name.length > 255) throw new FsError(E.ENAMETOOLONG);
  if (name.includes(0x2f)) throw new FsError(E.EINVAL, "name contains '/'");
}
