/**
 * The passthrough filesystem: serves a host directory through the Filesystem interface.
 * Inodes are O_PATH descriptors held in the shared native inode table (native/state.cc),
 * keyed by (device, inode, mount id), so every queue worker sees the same nodeids, lookup
 * counts and open handles. This class names inodes and handles only by nodeid and fh; the
 * native calls pin the entry around each system call. Names are resolved one component at
 * a time with openat and O_NOFOLLOW relative to the parent's descriptor, so no host symlink
 * is followed and no path outside the shared directory is reachable.
 */
import { constants as fsc } from 'node:fs';
import { guestIo, native, StatxField, STATX_FIELDS, type GuestRanges } from '../../native';
import { cachePolicy, type CacheMode, type CachePolicy } from '../../cache/policy';
import { InitFlags } from '../abi';
import {
  check, E, FsError, NullFilesystem, type Attributes, type AttrReply, type Context, type Entry,
  type InitReply, type OpenReply, type StatfsReply,
} from '../filesystem';
import { statfsOf } from './statfs';

const O_PATH = 0o10000000;
const AT_EMPTY_PATH = 0x1000;
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

  constructor(private readonly opts: PassthroughOptions) {
    super();
    this.policy = cachePolicy(opts.cache);
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

  /** A new session: the kernel has forgotten every inode and handle (the root stays). */
  newSession(): void {
    native.stateClear(this.opts.stateId);
  }

  override destroy(): void {
    this.newSession();
  }

  override lookup(_ctx: Context, parent: number, name: Buffer): Entry {
    checkName(name);
    // '..' never leaves the shared directory: at the root it is the root.
    const target = parent === ROOT_ID && name.length === 2 && name[0] === 0x2e && name[1] === 0x2e ? '.' : name;
    const nodeid = check(native.nodeLookup(this.opts.stateId, parent, target, this.st));
    return { nodeid, generation: 0, attr: this.attrs(), entryTimeout: this.policy.entryTimeout, attrTimeout: this.policy.attrTimeout };
  }

  override forget(nodeid: number, nlookup: number): void {
    native.inodeForget(this.opts.stateId, nodeid, nlookup);
  }

  override getattr(_ctx: Context, nodeid: number, _fh: number | null): AttrReply {
    check(native.nodeStatx(this.opts.stateId, nodeid, this.st));
    return { attr: this.attrs(), attrTimeout: this.policy.attrTimeout };
  }

  override open(_ctx: Context, nodeid: number, flags: number): OpenReply {
    if (this.opts.readonly && (flags & (fsc.O_WRONLY | fsc.O_RDWR | fsc.O_TRUNC))) throw new FsError(E.EROFS);
    const fh = check(native.nodeOpen(this.opts.stateId, nodeid, cleanOpenFlags(flags)));
    return { fh, openFlags: this.policy.fileOpenFlags };
  }

  override opendir(_ctx: Context, nodeid: number, flags: number): OpenReply {
    const fh = check(native.nodeOpen(this.opts.stateId, nodeid, (cleanOpenFlags(flags) & ~(fsc.O_WRONLY | fsc.O_RDWR)) | fsc.O_DIRECTORY));
    return { fh, openFlags: this.policy.dirOpenFlags };
  }

  override read(_ctx: Context, _nodeid: number, fh: number, offset: number, _size: number, dst: GuestRanges): number {
    return check(guestIo.handleReadv(this.opts.stateId, fh, offset, dst));
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

  /** The attributes last read into this.st. */
  private attrs(): Attributes {
    const st = this.st;
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
/** Open flags from the guest without those that create, follow or truncate by name. */
function cleanOpenFlags(flags: number): number {
  return flags & ~(fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOCTTY | fsc.O_NOFOLLOW);
}

export function checkName(name: Buffer): void {
  if (name.length === 0) throw new FsError(E.EINVAL, 'empty name');
  if (name.length > 255) throw new FsError(E.ENAMETOOLONG);
  if (name.includes(0x2f)) throw new FsError(E.EINVAL, "name contains '/'");
}
