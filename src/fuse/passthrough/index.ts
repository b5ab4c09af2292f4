/**
 * The passthrough filesystem: serves a host directory through the Filesystem interface.
 * Inodes are O_PATH descriptors held in the shared native inode table (native/state.cc),
 * keyed by (device, inode, mount id), so every queue sees the same nodeids, lookup
 * counts, open handles and locks. This class names inodes and handles only by nodeid and
 * fh; the native calls pin the entry around each system call (native/nodeops.cc for inodes,
 * native/fileops.cc for handles). Names are resolved one component at a time with openat and
 * O_NOFOLLOW relative to the parent's descriptor, so no host symlink is followed and no path
 * outside the shared directory is reachable; '..' at the root is the root.
 *
 * Semantics follow the Rust virtiofsd where it has them (ANCHORS.md): new files belong to
 * the calling guest user, xattrs only with --xattr (ENOSYS otherwise), --readonly refuses
 * every change with EROFS. Beyond it: POSIX and flock locks held on the host (locks.ts).
 */
import { constants as fsc } from 'node:fs';
import { CREATED_SLOT, exactIno, FH_SLOT, guestIo, native, REPLIED_BY_POOL, StatxField, STATX_FIELDS, type GuestRanges, type PoolReplied } from '../../native';
import { cachePolicy, hostOpenFlags, SessionFlags, sessionFlagsOf, type CacheOptions, type CachePolicy } from '../../cache/policy';
import { FopenFlags, InitFlags, OpenInFlags, ReleaseFlags, SetxattrFlags, WriteFlags } from '../abi';
import {
  check, E, FsError, NullFilesystem, type AttrReply, type Context, type CreateReply, type Entry, type InitReply,
  type Lock, type OpenReply, type SetattrRequest, type StatfsReply, type StatxReply, type XattrReply,
} from '../filesystem';
import { attrsOf } from './attrs';
import { getLock, LockWaits } from './locks';
import type { Logger } from '../../log';
import { DaxError, DAX_ALIGNMENT_SHIFT, type DaxWindow } from '../../dax/window';
import { XattrMap, type MappedName, type XattrRule } from './xattrmap';

const O_PATH = 0o10000000;
const AT_EMPTY_PATH = 0x1000;
export const ROOT_ID = 1;
/** Largest xattr value or name list we hand back (the kernel's XATTR_SIZE_MAX). */
const XATTR_SIZE_MAX = 65536;
const ACL_ACCESS = Buffer.from('system.posix_acl_access');

/** Options shared by every queue's instance; the native ids make them one filesystem. */
export interface PassthroughOptions {
  /** Native FsState id (inodes, handles, locks). */
  stateId: number;
  sharedDir: string;
  /** What the guest may cache (src/cache/policy.ts). */
  cache: CacheOptions;
  readonly: boolean;
  xattr: boolean;
  /**
   * Offer FUSE_HANDLE_KILLPRIV_V2: the guest leaves clearing setuid, setgid and
   * security.capability on write, truncation and chown to the daemon, and stops asking for
   * security.capability before each write it caches.
   */
  killprivV2: boolean;
  /**
   * --posix-acl: offer FUSE_POSIX_ACL with FUSE_DONT_MASK and FUSE_SETXATTR_EXT. The guest
   * then checks permissions itself against the ACLs it reads through GETXATTR, sends new
   * files' modes unmasked with the caller's umask (applied here unless the parent has a
   * default ACL), and flags ACL changes that must clear setgid.
   */
  posixAcl: boolean;
  /**
   * --security-label: offer FUSE_SECURITY_CTX. The guest's LSM (SELinux) then sends the label
   * of each new file with the request that makes it, and the file is stored with it (under
   * the name --xattrmap gives it) before the reply, or not made at all.
   */
  securityLabel: boolean;
  /** --xattrmap: how xattr names from the guest and from the host are mapped (xattrmap.ts). */
  xattrMap?: XattrRule[];
  /** Offer FUSE_SUBMOUNTS and mark the entries that are another host mount's root. */
  announceSubmounts: boolean;
  posixLock: boolean;
  flock: boolean;
  /** --thread-pool-size > 0: READ, WRITE and FSYNC run on the thread pool (native/asyncops.cc). */
  threadPool: boolean;
  /** --dax-window-size: the DAX window SETUPMAPPING and REMOVEMAPPING manage (src/dax/window.ts); one for every queue. */
  dax?: DaxWindow;
}

/** Creates the shared state and registers the shared directory as nodeid 1. */
export function createSharedState(sharedDir: string): number {
  const id = native.stateCreate();
  const fd = native.openat(-100, sharedDir, O_PATH | fsc.O_DIRECTORY);
  if (fd < 0) {
    native.stateDestroy(id);
    throw new FsError(-fd, `cannot open shared directory ${sharedDir}`);
  }
  const st = new Float64Array(STATX_FIELDS);
  check(native.statx(fd, '', AT_EMPTY_PATH, st));
  native.inodeSetRoot(id, fd, st[StatxField.devMajor], st[StatxField.devMinor], exactIno(st), st[StatxField.mntId]);
  return id;
}

export class PassthroughFs extends NullFilesystem {
  /** Attributes of the last inode a native call described (plus the fh slot of CREATE). */
  private readonly st = new Float64Array(STATX_FIELDS + 2);
  private readonly policy: CachePolicy;
  private readonly timeouts: Float64Array;
  private readonly id: number;
  private readonly lockWaits = new LockWaits();
  private labelFailed = false;
  private readonly negativeEntry: Entry;
  private readonly xattrMap: XattrMap | null;

  constructor(
    private readonly opts: PassthroughOptions,
    private readonly log?: Logger,
  ) {
    super();
    this.policy = cachePolicy(opts.cache);
    this.id = opts.stateId;
    this.xattrMap = opts.xattrMap ? new XattrMap(opts.xattrMap) : null;
    const p = this.policy;
    this.timeouts = Float64Array.of(Math.floor(p.entryTimeout), nsec(p.entryTimeout), Math.floor(p.attrTimeout), nsec(p.attrTimeout));
    this.negativeEntry = Object.freeze({ nodeid: 0, generation: 0, attr: attrsOf(new Float64Array(STATX_FIELDS)), entryTimeout: p.negativeTimeout, attrTimeout: 0 });
  }

  override init(offered: bigint): InitReply {
    // A new session: whatever the kernel knew of the last one (inodes, handles) is gone.
    native.stateClear(this.id);
    // ASYNC_DIO: without it the guest serves an asynchronous direct I/O (libaio, io_uring)
    // one request at a time; seen as libaio at depth 16 running at a depth-1 rate.
    // AUTO_INVAL_DATA: the guest drops cached data of a file whose mtime or size it sees
    // change (how auto shows host-side changes after its timeout).
    let flags =
      InitFlags.ASYNC_READ | InitFlags.ASYNC_DIO | InitFlags.BIG_WRITES | InitFlags.MAX_PAGES |
      InitFlags.ATOMIC_O_TRUNC | InitFlags.AUTO_INVAL_DATA | this.policy.initFlags;
    if (this.opts.posixLock) flags |= InitFlags.POSIX_LOCKS;
    if (this.opts.killprivV2) flags |= InitFlags.HANDLE_KILLPRIV_V2;
    // A directory on another host mount becomes a submount in the guest, with its own st_dev.
    if (this.opts.announceSubmounts) flags |= InitFlags.SUBMOUNTS;
    if (this.opts.flock) flags |= InitFlags.FLOCK_LOCKS;
    if (this.opts.posixAcl) {
      // All three or none: ACLs without DONT_MASK would lose default ACLs to the guest's
      // umask, and without SETXATTR_EXT a chmod-like ACL change could not clear setgid.
      const acl = InitFlags.POSIX_ACL | InitFlags.DONT_MASK | InitFlags.SETXATTR_EXT;
      if ((offered & acl) === acl) {
        flags |= acl;
        this.log?.info('POSIX ACLs enabled');
      } else {
        this.log?.error('POSIX ACLs not enabled: the guest kernel does not offer FUSE_POSIX_ACL, FUSE_DONT_MASK and FUSE_SETXATTR_EXT');
      }
    }
    if (this.opts.securityLabel) {
      if (offered & InitFlags.SECURITY_CTX) {
        flags |= InitFlags.SECURITY_CTX;
        this.log?.info('security labels enabled: new files are stored with the label the guest gives them');
      } else {
        this.log?.error('security labels not enabled: the guest kernel does not offer FUSE_SECURITY_CTX');
      }
    }
    // Every queue thread opens files the way the session's writeback cache needs.
    native.stateSession(this.id, sessionFlagsOf(flags & offered) | SessionFlags.STARTED);
    const dax = this.opts.dax;
    if (dax) {
      // Linux mounts with -o dax only where the device has a window; MAP_ALIGNMENT tells it
      // the 2 MiB ranges the window is managed in.
      flags |= InitFlags.MAP_ALIGNMENT;
      dax.sessionStart().catch((e: unknown) => this.log?.warn({ err: e }, 'DAX: the last session\'s mappings could not all be removed'));
    }
    return { flags, maxWrite: 1 << 20, maxPages: 256, timeGran: 1, mapAlignment: dax ? DAX_ALIGNMENT_SHIFT : 0 };
  }

  override destroy(): void {
    // (Ends the session too: stateClear drops its flags first.)
    native.stateClear(this.id);
  }

  override get sessionStarted(): boolean {
    return (native.stateSession(this.id) & SessionFlags.STARTED) !== 0;
  }

  // ---- names -------------------------------------------------------------------------

  override lookup(_ctx: Context, parent: number, name: Buffer): Entry {
    checkName(name);
    // '..' never leaves the shared directory: at the root it is the root.
    const target = parent === ROOT_ID && isDotDot(name) ? '.' : name;
    const r = native.nodeLookup(this.id, parent, target, this.st);
    // A negative entry (nodeid 0): the guest may remember that the name is missing.
    if (r === -E.ENOENT && this.policy.negativeTimeout > 0) return this.negativeEntry;
    return this.entry(check(r));
  }

  override forget(nodeid: number, nlookup: number): void {
    native.inodeForget(this.id, nodeid, nlookup);
  }

  override mknod(ctx: Context, parent: number, name: Buffer, mode: number, rdev: number, umask = 0): Entry {
    this.writable();
    checkNewName(name);
    return this.labelled(ctx, parent, name, check(native.nodeMake(this.id, parent, name, 0, mode, rdev, '', ctx.uid, ctx.gid, this.st, umask)));
  }

  override mkdir(ctx: Context, parent: number, name: Buffer, mode: number, umask = 0): Entry {
    this.writable();
    checkNewName(name);
    return this.labelled(ctx, parent, name, check(native.nodeMake(this.id, parent, name, 1, mode, 0, '', ctx.uid, ctx.gid, this.st, umask)), true);
  }

  override symlink(ctx: Context, parent: number, name: Buffer, target: Buffer): Entry {
    this.writable();
    checkNewName(name);
    if (target.length === 0) throw new FsError(E.ENOENT);
    return this.labelled(ctx, parent, name, check(native.nodeMake(this.id, parent, name, 2, 0o777, 0, target, ctx.uid, ctx.gid, this.st)));
  }

  override link(_ctx: Context, nodeid: number, newParent: number, newName: Buffer): Entry {
    this.writable();
    checkNewName(newName);
    return this.entry(check(native.nodeLink(this.id, nodeid, newParent, newName, this.st)));
  }

  override unlink(_ctx: Context, parent: number, name: Buffer): void {
    this.writable();
    checkNewName(name);
    check(native.nodeUnlink(this.id, parent, name, false));
  }

  override rmdir(_ctx: Context, parent: number, name: Buffer): void {
    this.writable();
    checkNewName(name);
    check(native.nodeUnlink(this.id, parent, name, true));
  }

  override rename(_ctx: Context, parent: number, name: Buffer, newParent: number, newName: Buffer, flags: number): void {
    this.writable();
    checkNewName(name);
    checkNewName(newName);
    check(native.nodeRename(this.id, parent, name, newParent, newName, flags));
  }

  override readlink(_ctx: Context, nodeid: number): Buffer {
    const buf = Buffer.allocUnsafe(4096);
    const n = check(native.nodeReadlink(this.id, nodeid, buf));
    if (n >= buf.length) throw new FsError(E.ENAMETOOLONG);
    return buf.subarray(0, n);
  }

  // ---- attributes --------------------------------------------------------------------

  override getattr(_ctx: Context, nodeid: number, _fh: number | null): AttrReply {
    check(native.nodeStatx(this.id, nodeid, this.st));
    return { attr: attrsOf(this.st), attrTimeout: this.policy.attrTimeout };
  }

  override statx(_ctx: Context, nodeid: number, _fh: number | null, _mask: number): StatxReply {
    const st = this.st;
    check(native.nodeStatx(this.id, nodeid, st));
    return {
      attr: attrsOf(st),
      attrTimeout: this.policy.attrTimeout,
      mask: st[StatxField.mask],
      btime: st[StatxField.btimeSec],
      btimeNsec: st[StatxField.btimeNsec],
      devMajor: st[StatxField.devMajor],
      devMinor: st[StatxField.devMinor],
    };
  }

  override setattr(_ctx: Context, nodeid: number, r: SetattrRequest): AttrReply {
    this.writable();
    check(
      native.nodeSetattr(this.id, nodeid, r.fh, r.valid, r.mode, r.uid, r.gid, r.size, r.atime, r.atimeNsec, r.mtime, r.mtimeNsec, this.st),
    );
    return { attr: attrsOf(this.st), attrTimeout: this.policy.attrTimeout };
  }

  override access(ctx: Context, nodeid: number, mask: number): void {
    check(native.nodeAccess(this.id, nodeid, ctx.uid, ctx.gid, mask, this.opts.readonly));
  }

  override statfs(_ctx: Context, nodeid: number): StatfsReply {
    const o = new Float64Array(8);
    check(native.nodeStatfs(this.id, nodeid, o));
    return { blocks: o[0], bfree: o[1], bavail: o[2], files: o[3], ffree: o[4], bsize: o[5], namelen: o[6], frsize: o[7] };
  }

  // ---- files -------------------------------------------------------------------------

  override open(_ctx: Context, nodeid: number, flags: number, openInFlags = 0): OpenReply {
    if (this.opts.readonly && (flags & (fsc.O_WRONLY | fsc.O_RDWR | fsc.O_TRUNC))) throw new FsError(E.EROFS);
    const fh = check(native.nodeOpen(this.id, nodeid, this.openFlags(flags), (openInFlags & OpenInFlags.KILL_SUIDGID) !== 0));
    let openFlags = this.policy.fileOpenFlags;
    // Auto: the guest keeps what it cached while the file is as it was at its last open.
    if (this.policy.keepCacheIfUnchanged && native.nodeUnchangedSinceLastOpen(this.id, nodeid)) openFlags |= FopenFlags.KEEP_CACHE;
    return { fh, openFlags };
  }

  override create(ctx: Context, parent: number, name: Buffer, flags: number, mode: number, openInFlags = 0, umask = 0): CreateReply {
    this.writable();
    checkNewName(name);
    // O_EXCL stays: CREATE must fail on an existing name then.
    const kill = (openInFlags & OpenInFlags.KILL_SUIDGID) !== 0;
    const nodeid = check(native.nodeCreate(this.id, parent, name, this.openFlags(flags) | (flags & fsc.O_EXCL), mode, ctx.uid, ctx.gid, this.st, kill, umask));
    const fh = this.st[FH_SLOT];
    // A name that existed is opened, not made: its label is not the new file's to set, and a
    // failure to set one must not remove it.
    if (this.st[CREATED_SLOT] !== 1) return { entry: this.entry(nodeid), open: { fh, openFlags: this.policy.fileOpenFlags } };
    return { entry: this.labelled(ctx, parent, name, nodeid, false, fh), open: { fh, openFlags: this.policy.fileOpenFlags } };
  }

  override tmpfile(ctx: Context, parent: number, flags: number, mode: number, umask = 0): CreateReply {
    this.writable();
    const nodeid = check(native.nodeTmpfile(this.id, parent, this.openFlags(flags), mode, ctx.uid, ctx.gid, this.st, umask));
    const fh = this.st[FH_SLOT];
    return { entry: this.labelled(ctx, parent, null, nodeid, false, fh), open: { fh, openFlags: this.policy.fileOpenFlags } };
  }

  override get replyOnPool(): boolean {
    return this.opts.threadPool;
  }

  override read(ctx: Context, _nodeid: number, fh: number, offset: number, _size: number, dst: GuestRanges): number | Promise<number> | PoolReplied {
    if (ctx.reply) return settledOnPool(guestIo.handleReadvQueued(this.id, fh, offset, dst, ctx.reply));
    if (this.opts.threadPool) return settled(guestIo.handleReadvAsync(this.id, fh, offset, dst));
    return check(guestIo.handleReadv(this.id, fh, offset, dst));
  }

  override write(ctx: Context, _nodeid: number, fh: number, offset: number, src: GuestRanges, writeFlags: number): number | Promise<number> | PoolReplied {
    this.writable();
    // The writer lacks CAP_FSETID: the write clears setuid and setgid, as on a local file.
    const kill = (writeFlags & WriteFlags.KILL_SUIDGID) !== 0;
    if (ctx.reply) return settledOnPool(guestIo.handleWritevQueued(this.id, fh, offset, src, ctx.reply, kill));
    if (this.opts.threadPool) return settled(guestIo.handleWritevAsync(this.id, fh, offset, src, kill));
    return check(guestIo.handleWritev(this.id, fh, offset, src, kill));
  }

  override flush(_ctx: Context, nodeid: number, _fh: number, lockOwner: bigint): void {
    // close() in the guest: as POSIX wants, the closing process's locks on the file go.
    if (this.opts.posixLock) native.nodeUnlockOwner(this.id, nodeid, lockOwner);
  }

  override release(_ctx: Context, _nodeid: number, fh: number, releaseFlags: number, _lockOwner: bigint): void {
    if (releaseFlags & ReleaseFlags.FLOCK_UNLOCK) native.handleFlock(this.id, fh, 8 /* LOCK_UN */);
    check(native.handleRemove(this.id, fh));
  }

  override fsync(ctx: Context, _nodeid: number, fh: number, datasync: boolean): void | Promise<void> | PoolReplied {
    if (ctx.reply) {
      const r = guestIo.handleFsyncQueued(this.id, fh, datasync, ctx.reply);
      if (r === REPLIED_BY_POOL) return r;
      check(r);
      return;
    }
    // Off the JS thread, which every queue shares (the fast path serves an FSYNC on the
    // queue's own thread; JS gets one when a queue has no kick thread, or at trace level).
    return native.handleFsyncAsync(this.id, fh, datasync).then((r) => void check(r));
  }

  override fallocate(ctx: Context, _nodeid: number, fh: number, offset: number, length: number, mode: number): Promise<void> {
    this.writable();
    return native.handleFallocateAsync(this.id, fh, mode, offset, length, this.killsSuidgid(ctx)).then((r) => void check(r));
  }

  override lseek(_ctx: Context, _nodeid: number, fh: number, offset: number, whence: number): number {
    return check(native.handleLseek(this.id, fh, offset, whence));
  }

  override copyFileRange(ctx: Context, fhIn: number, offIn: number, fhOut: number, offOut: number, len: number, flags: number): Promise<number> {
    this.writable();
    return native.handleCopyRangeAsync(this.id, fhIn, offIn, fhOut, offOut, len, flags, this.killsSuidgid(ctx)).then(check);
  }

  /**
   * Whether a FALLOCATE or COPY_FILE_RANGE runs without CAP_FSETID. With
   * FUSE_HANDLE_KILLPRIV_V2 the guest leaves clearing setuid and setgid to us, and these two
   * requests carry no flag telling whether the caller may keep them: a caller other than
   * root is taken to lack CAP_FSETID, as a local fallocate by that user would (the fast
   * path's KillsSuidgid decides the same).
   */
  private killsSuidgid(ctx: Context): boolean {
    return this.opts.killprivV2 && ctx.uid !== 0;
  }

  override async setupMapping(_ctx: Context, nodeid: number, foffset: number, len: number, moffset: number, write: boolean): Promise<void> {
    const dax = this.opts.dax;
    if (!dax) throw new FsError(E.ENOSYS);
    if (write) this.writable();
    const fd = check(native.nodeOpenFile(this.id, nodeid, write));
    try {
      await dax.map(fd, foffset, len, moffset, write);
    } catch (e) {
      throw daxFailure(e, this.log);
    } finally {
      native.close(fd);
    }
  }

  override async removeMapping(_ctx: Context, ranges: Array<{ moffset: number; len: number }>): Promise<void> {
    const dax = this.opts.dax;
    if (!dax) throw new FsError(E.ENOSYS);
    try {
      for (const r of ranges) await dax.remove(r.moffset, r.len);
    } catch (e) {
      throw daxFailure(e, this.log);
    }
  }

  override syncfs(_ctx: Context, nodeid: number): Promise<void> {
    return native.nodeSyncfsAsync(this.id, nodeid).then((r) => void check(r));
  }

  // ---- directories -------------------------------------------------------------------

  override opendir(_ctx: Context, nodeid: number, flags: number): OpenReply {
    const fh = check(native.nodeOpen(this.id, nodeid, (this.openFlags(flags) & ~(fsc.O_WRONLY | fsc.O_RDWR)) | fsc.O_DIRECTORY));
    return { fh, openFlags: this.policy.dirOpenFlags };
  }

  override readdir(_ctx: Context, _nodeid: number, fh: number, offset: bigint, out: Buffer, plus: boolean): number {
    // Directory offsets are the host file system's cookies: 64-bit (ext4 hashes), signed.
    return check(native.handleReaddir(this.id, fh, BigInt.asIntN(64, offset), out, plus, this.timeouts));
  }

  override releasedir(_ctx: Context, _nodeid: number, fh: number): void {
    check(native.handleRemove(this.id, fh));
  }

  override fsyncdir(ctx: Context, nodeid: number, fh: number, datasync: boolean): void | Promise<void> | PoolReplied {
    return this.fsync(ctx, nodeid, fh, datasync);
  }

  // ---- extended attributes -----------------------------------------------------------

  override getxattr(_ctx: Context, nodeid: number, name: Buffer, size: number): XattrReply {
    const host = this.hostXattrName(name);
    if (size === 0) return { size: check(native.nodeGetxattr(this.id, nodeid, host, Buffer.alloc(0))) };
    const buf = Buffer.allocUnsafe(Math.min(size, XATTR_SIZE_MAX));
    return { value: buf.subarray(0, check(native.nodeGetxattr(this.id, nodeid, host, buf))) };
  }

  override listxattr(_ctx: Context, nodeid: number, size: number): XattrReply {
    this.xattrs();
    if (this.xattrMap) {
      // The guest's list is the host's, mapped: its size is known only once mapped.
      const all = Buffer.allocUnsafe(XATTR_SIZE_MAX);
      const list = this.xattrMap.listToGuest(all.subarray(0, check(native.nodeListxattr(this.id, nodeid, all))));
      if (size === 0) return { size: list.length };
      if (list.length > size) throw new FsError(E.ERANGE);
      return { value: list };
    }
    if (size === 0) return { size: check(native.nodeListxattr(this.id, nodeid, Buffer.alloc(0))) };
    const buf = Buffer.allocUnsafe(Math.min(size, XATTR_SIZE_MAX));
    return { value: buf.subarray(0, check(native.nodeListxattr(this.id, nodeid, buf))) };
  }

  override get setxattrExtended(): boolean {
    return (native.stateSession(this.id) & SessionFlags.SETXATTR_EXT) !== 0;
  }

  override setxattr(ctx: Context, nodeid: number, name: Buffer, value: Buffer, flags: number, setxattrFlags = 0): void {
    const host = this.hostXattrName(name);
    this.writable();
    // A new access ACL from a caller outside the file's group and without CAP_FSETID must
    // clear setgid, as a chmod would: set it as that caller, whose rights the host then checks.
    const killSgid =
      (setxattrFlags & SetxattrFlags.ACL_KILL_SGID) !== 0 &&
      (native.stateSession(this.id) & SessionFlags.POSIX_ACL) !== 0 &&
      host.equals(ACL_ACCESS);
    check(native.nodeSetxattr(this.id, nodeid, host, value, flags, killSgid ? [ctx.uid, ctx.gid] : undefined));
  }

  override removexattr(_ctx: Context, nodeid: number, name: Buffer): void {
    const host = this.hostXattrName(name);
    this.writable();
    check(native.nodeRemovexattr(this.id, nodeid, host));
  }

  /** The host's name for an xattr name from the guest (--xattrmap), or the refusal. */
  private hostXattrName(name: Buffer): Buffer {
    this.xattrs();
    const m = this.mappedToHost(name);
    if ('errno' in m) throw new FsError(m.errno);
    return m.name;
  }

  /** A guest xattr name as --xattrmap maps it to the host (the name itself without a map). */
  private mappedToHost(name: Buffer): MappedName {
    return this.xattrMap ? this.xattrMap.toHost(name) : { name };
  }

  // ---- locks -------------------------------------------------------------------------

  override getlk(_ctx: Context, nodeid: number, fh: number, owner: bigint, lock: Lock): Lock {
    if (!this.opts.posixLock) throw new FsError(E.ENOSYS);
    return getLock(this.id, nodeid, fh, owner, lock);
  }

  override setlk(_ctx: Context, nodeid: number, fh: number, owner: bigint, lock: Lock, flock: boolean, wait: boolean): void | Promise<void> {
    if (flock ? !this.opts.flock : !this.opts.posixLock) throw new FsError(E.ENOSYS);
    return this.lockWaits.set(this.id, nodeid, fh, owner, lock, flock, wait);
  }

  override cancelWaits(): void {
    this.lockWaits.cancelAll();
  }

  // ---- helpers -----------------------------------------------------------------------

  /**
   * The entry of a file just made (described in this.st), once it holds the security context
   * the guest sent with the request (--security-label). The label is set by the daemon, not
   * as the caller, who need not own it. If it cannot be stored (a name --xattrmap refuses, a
   * host that refuses the name or value), the file is taken back: handle closed, name
   * removed, lookup dropped, and the request fails with that error, as in the Rust virtiofsd.
   */
  private labelled(ctx: Context, parent: number, name: Buffer | null, nodeid: number, dir = false, fh?: number): Entry {
    const label = ctx.securityContext;
    if (!label || !this.opts.securityLabel) return this.entry(nodeid);
    const entry = this.entry(nodeid);
    // What a guest LSM names (security.selinux, security.SMACK64, ...); any other name would
    // let the guest store attributes with --xattr off, and security.capability would give a
    // host file capabilities.
    const labelName = label.name.toString('latin1');
    const m = !labelName.startsWith('security.') || labelName === 'security.capability' ? { errno: E.EINVAL } : this.mappedToHost(label.name);
    const errno = 'errno' in m ? m.errno : -native.nodeSetxattr(this.id, nodeid, m.name, label.value, 0);
    if (errno === 0) return entry;
    // Once at warning level (a guest making many such files would fill the log), then at debug.
    this.log?.[this.labelFailed ? 'debug' : 'warn']({ errno, label: label.name.toString() }, 'a new file could not be stored with its security label, so it was not made');
    this.labelFailed = true;
    if (fh !== undefined) native.handleRemove(this.id, fh);
    if (name) native.nodeUnlink(this.id, parent, name, dir);
    native.inodeForget(this.id, nodeid, 1);
    throw new FsError(errno);
  }

  /** The entry for a nodeid the last native call described in this.st. */
  private entry(nodeid: number): Entry {
    return { nodeid, generation: 0, attr: attrsOf(this.st), entryTimeout: this.policy.entryTimeout, attrTimeout: this.policy.attrTimeout };
  }

  /** Guest open flags as we pass them to the host: nothing that creates or follows by name. */
  private openFlags(flags: number): number {
    const f = flags & ~(fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOCTTY | fsc.O_NOFOLLOW);
    return hostOpenFlags(f, native.stateSession(this.id), this.opts.cache.allowDirectIo);
  }

  private writable(): void {
    if (this.opts.readonly) throw new FsError(E.EROFS);
  }

  private xattrs(): void {
    // As the Rust virtiofsd: without --xattr the kernel is told these do not exist.
    if (!this.opts.xattr) throw new FsError(E.ENOSYS);
  }
}

function nsec(seconds: number): number {
  return Math.round((seconds - Math.floor(seconds)) * 1e9);
}

function isDotDot(name: Buffer): boolean {
  return name.length === 2 && name[0] === 0x2e && name[1] === 0x2e;
}

/** A DAX window's refusal as the guest's errno (logged: the guest only sees the number). */
function daxFailure(e: unknown, log?: Logger): unknown {
  if (!(e instanceof DaxError)) return e;
  log?.warn(`DAX: ${e.message}`);
  return new FsError(e.errno);
}

/** A name from the guest: one path component, not empty, no '/' (NUL was cut by the decoder). */
export function checkName(name: Buffer): void {
  if (name.length === 0) throw new FsError(E.EINVAL, 'empty name');
  if (name.length > 255) throw new FsError(E.ENAMETOOLONG);
  if (name.includes(0x2f)) throw new FsError(E.EINVAL, "name contains '/'");
}

/** A name to create, remove or rename: also not '.' or '..'. */
function checkNewName(name: Buffer): void {
  checkName(name);
  if ((name.length === 1 && name[0] === 0x2e) || isDotDot(name)) throw new FsError(E.EINVAL, "'.' or '..'");
}

/** A queued transfer's result: finished at once (bytes, or -errno thrown) or replied by the pool. */
function settledOnPool(r: number | PoolReplied): number | PoolReplied {
  return r === REPLIED_BY_POOL ? r : check(r);
}

/** A transfer's result, whether it finished on this thread (a number) or on the pool (a Promise). */
function settled(r: number | Promise<number>): number | Promise<number> {
  return typeof r === 'number' ? check(r) : r.then(check);
}
