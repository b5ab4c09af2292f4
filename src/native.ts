/**
 * The typed surface of the native addon (native/*.cc). Nothing else imports the .node file.
 *
 * Conventions:
 *  - setup calls (memory tables, sockets, eventfds) throw errors shaped like Node's system
 *    errors ({code, errno (negative), syscall});
 *  - hot-path file-system and I/O calls return the result or a negative errno;
 *  - file data moves between a file and guest memory named as GuestRanges: a memory table
 *    and (guest-physical address, length) pairs, translated and bounds-checked natively;
 *  - inodes and open handles are named by nodeid and fh: the node and handle calls pin the
 *    entry around their system call, so JS never holds one of their descriptors.
 */
import * as path from 'node:path';

/** One guest memory region as the front end describes it (vhost-user memory region). */
export interface RegionSpec {
  gpa: number;
  size: number;
  uaddr: number;
  mmapOffset: number;
  fd: number;
}

/** A mapped region as seen from JS: zero-copy views of at most 1 GiB each. */
export interface RegionView {
  gpa: number;
  size: number;
  uaddr: number;
  chunks: Buffer[];
}

export interface MemoryViews {
  generation: number;
  regions: RegionView[];
}

/** Guest memory for one I/O: memory table `table`, ranges as (gpa, length) pairs. */
export interface GuestRanges {
  table: number;
  pairs: readonly number[];
}

/**
 * Where the I/O pool (native/iopool.cc) puts a request's reply when it finishes it: the
 * queue's ring and the chain's head, the FUSE request's unique, and the guest ranges of the
 * reply's header (and of fuse_write_out after it, for a WRITE).
 */
export interface PoolReply {
  ring: Vring;
  head: number;
  unique: bigint;
  header: GuestRanges;
}

/**
 * What a request's handler returns when the I/O pool took the request and will put its reply
 * on the used ring itself: nothing is left to do on this thread.
 */
export const REPLIED_BY_POOL: unique symbol = Symbol('replied by the I/O pool');
export type PoolReplied = typeof REPLIED_BY_POOL;

export declare class FdWatcher {
  /**
   * With a vring (a kick watcher), each kick is first served natively (Vring with a chain
   * server); callback runs only when something is left for JS.
   */
  constructor(fd: number, drainEventfd: boolean, callback: (status: number) => void, vring?: Vring);
  start(): void;
  stop(): void;
  /** Ends the watcher now; call before closing the fd (see native/events.cc). */
  close(): void;
}

/**
 * A queue's kick thread (native/kickthread.cc): a native thread that waits for the queue's
 * kicks and serves them through the vring's chain server without this thread's event loop.
 * The ring stays the thread's: a chain the server declines is queued for JS, and callback
 * runs on this thread to take it (vring.takeHandedOff()); also when the thread found the
 * ring broken, which takeHandedOff() then reports.
 */
export declare class KickThread {
  constructor(kickFd: number, vring: Vring, callback: () => void);
  start(): void;
  /** Stops and joins the thread; call before closing the kick fd. */
  close(): void;
  /** The same without blocking this thread: resolves once the thread has ended its request and exited. */
  closeAsync(): Promise<void>;
}

/**
 * The device side of one split virtqueue (native/vring.cc). pop() fills `out` with
 * [readable count, writable count, readable bytes, writable bytes, prefetched bytes,
 * readable (gpa, len) pairs..., writable pairs...] and copies the request's first bytes into
 * `prefetch`. Negative results: -1 empty, -2 broken (the reason in error()).
 */
export declare class Vring {
  constructor(table: number, size: number, desc: number, avail: number, used: number, base: number,
    eventIdx: boolean, callFd: number, out: Float64Array, prefetch: Buffer);
  sync(): number;
  pop(): number;
  push(head: number, len: number): void;
  flush(): boolean;
  /** push + flush + signal the call eventfd; 1 when it was signalled. */
  complete(head: number, len: number): number;
  /** 1 when the ring is empty after asking for the next kick, 0 when not, -2 broken. */
  enableNotification(): number;
  setPolling(maxNs: number): void;
  pollAvail(): number;
  /** [hits, misses, window ns, misses that gave the CPU to another thread] */
  pollStats(): [number, number, number, number];
  lastAvail(): number;
  error(): string;
  setCallFd(fd: number): void;
  /** Requests of this queue out on the I/O pool (native/iopool.cc), not yet on the used ring. */
  pending(): number;
  /** The queue is broken: completions still to come from the I/O pool are dropped. */
  close(): void;
  /** The native server pop() offers each chain to first; pop() returns only what it declines. */
  setChainServer(server: NativeChainServer | null): void;
  /** [chains the attached server served, of which it handed the I/O pool, kicks served without handing JS a chain, yields] */
  chainServerStats(): [number, number, number, number];
  /** JS has requests of its own in flight: kicks go to JS (no native loop, no spin). Not with a kick thread. */
  setJsBusy(busy: boolean): void;
  /**
   * With a kick thread: the next chain it declined and queued for JS, described in `out` and
   * `prefetch` as by pop(); -1 none, -2 the ring is broken (after the queued chains).
   */
  takeHandedOff(): number;
}

declare const chainServerBrand: unique symbol;
/** A native object that serves chains before JS sees them (native/chainserver.h). */
export interface NativeChainServer {
  readonly [chainServerBrand]: true;
}

/**
 * The FUSE fast path (native/fastpath.cc): READ, WRITE and the commonest metadata, lock and
 * sync requests (the list is in its header comment) served natively as the virtqueue pops
 * them; anything unusual is declined to the FUSE server in JS.
 */
export interface FuseFastPathOptions {
  stateId: number;
  readOnly: boolean;
  /** --thread-pool-size > 0 */
  pool: boolean;
  /** POSIX locks are served (FLUSH drops the closing owner's). */
  posixLock: boolean;
  /** flock() locks are served (SETLK and SETLKW with FUSE_LK_FLOCK). */
  flock: boolean;
  /** Extended attributes are served (--xattr): GETXATTR is served natively too. */
  xattr: boolean;
  /** --killpriv-v2: a FALLOCATE or COPY_FILE_RANGE of a caller other than root runs without CAP_FSETID. */
  killprivV2: boolean;
  /** The cache policy's timeouts, in seconds (src/cache/policy.ts). */
  entryTimeout: number;
  attrTimeout: number;
  negativeTimeout: number;
  /** FOPEN_* flags of a file opened (OPEN's and CREATE's reply): the cache policy's. */
  fileOpenFlags: number;
  /** FOPEN_* flags of a directory opened (OPENDIR's reply): the cache policy's. */
  dirOpenFlags: number;
  /** Cache auto: OPEN adds KEEP_CACHE while the file is unchanged since its last open. */
  keepCacheIfUnchanged: boolean;
  /** The cache options allow O_DIRECT on the host. */
  allowDirectIo: boolean;
}

export declare class FuseFastPath implements NativeChainServer {
  readonly [chainServerBrand]: true;
  constructor(options: FuseFastPathOptions);
  /** Requests served here, by opcode. */
  counts(): Record<number, number>;
}

/**
 * Indexes into the Float64Array filled by statx() and the node calls; the last, attrFlags,
 * is fuse_attr.flags (AttrFlags: SUBMOUNT on an entry that is another mount's root).
 */
export enum StatxField {
  mask, devMajor, devMinor, ino, mode, nlink, uid, gid, rdevMajor, rdevMinor, size, blocks,
  blksize, atimeSec, atimeNsec, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, btimeSec,
  btimeNsec, mntId, attrFlags,
  /** The inode number's halves, exact (ino is rounded past 2^53): exactIno(). */
  inoHigh, inoLow,
}
export const STATX_FIELDS = 25;
/** The inode number of a statx array, exact. */
export function exactIno(st: Float64Array): bigint {
  return (BigInt(st[StatxField.inoHigh]) << 32n) | BigInt(st[StatxField.inoLow]);
}
/**
 * out[FH_SLOT] receives the fh of nodeCreate and nodeTmpfile, out[CREATED_SLOT] nodeCreate's 1
 * when it made the file, 0 when the name existed (out: Float64Array(STATX_FIELDS + 2)).
 */
export const FH_SLOT = STATX_FIELDS;
export const CREATED_SLOT = STATX_FIELDS + 1;

/** An inode (or a handle of one) a migration could not carry, and why. */
export interface LostInode {
  nodeid: number;
  reason: string;
}

export interface NativeAddon {
  // memory.cc
  memTableCreate(): number;
  memTableDestroy(id: number): void;
  memTableSet(id: number, regions: RegionSpec[]): number;
  memTableAdd(id: number, region: RegionSpec): number;
  memTableRemove(id: number, gpa: number, size: number): number;
  memTableGeneration(id: number): number;
  memTableViews(id: number): MemoryViews;
  memfdCreate(name: string, size: number): number;
  /** The eventfd that counts SIGBUS faults on front-end memory (a file shrunk under us). */
  memFaultFd(): number;
  /** [faults since the last call, the last one's address and si_code]; quiets memFaultFd. */
  memTakeFaults(): [number, number, number];
  /** A shared mapping of fd (readOnly: PROT_READ only; a write through it kills the process). */
  mmapShared(fd: number, size: number, offset?: number, readOnly?: boolean): Buffer;
  // dirtylog.cc: the dirty-page log of a memory table's connection (live migration)
  /** Maps the log the front end shares (the caller keeps and closes fd); throws a system error. */
  dirtyLogMap(table: number, fd: number, size: number, offset: number): void;
  /** VHOST_F_LOG_ALL acked or not (the table logs once a log is mapped too). */
  dirtyLogEnable(table: number, on: boolean): void;
  /** Stops logging and unmaps every log of the table (once no thread writes for it). */
  dirtyLogReset(table: number): void;
  // socket.cc
  unixListen(path: string, backlog?: number): number;
  unixAccept(fd: number, recvTimeoutMs?: number): number;
  unixConnect(path: string): number;
  unixDatagram(path: string, bind?: boolean): number;
  socketPair(): [number, number];
  /** One non-blocking recvmsg into buf[offset, offset + length): bytes 0 at EOF, -1 if none yet. */
  recvSome(fd: number, buf: Buffer, offset: number, length: number): { bytes: number; fds: number[]; truncatedFds: boolean };
  vhostSend(fd: number, data: Buffer, fds?: number[]): void;
  shutdownSocket(fd: number): void;
  // events.cc
  eventfdCreate(): number;
  eventfdWrite(fd: number, n?: number): number;
  eventfdRead(fd: number): number;
  pollReadable(fd: number, timeoutMs: number): boolean;
  setNonBlocking(fd: number): void;
  close(fd: number): number;
  FdWatcher: typeof FdWatcher;
  // kickthread.cc
  isEventfd(fd: number): boolean;
  KickThread: typeof KickThread;
  // vring.cc
  Vring: typeof Vring;
  // fastpath.cc
  FuseFastPath: typeof FuseFastPath;
  // ring.cc
  loadAcquire16(buf: Buffer, off: number): number;
  storeRelease16(buf: Buffer, off: number, value: number): void;
  fence(): void;
  // io.cc: (fd, position (-1: the file position), table, pairs, count) -> bytes or -errno
  preadv(fd: number, position: number, table: number, pairs: Float64Array, count: number): number;
  pwritev(fd: number, position: number, table: number, pairs: Float64Array, count: number): number;
  // fsops.cc
  openat(dirfd: number, path: string | Buffer, flags: number, mode?: number): number;
  statx(dirfd: number, path: string | Buffer, flags: number, out: Float64Array): number;
  /** RLIMIT_NOFILE: out gets the soft and the hard limit; 0 or -errno. */
  nofileLimit(out: Float64Array): number;
  setNofileLimit(soft: number, hard: number): number;
  // migration.cc: the device state a live migration carries (inodes by path, handles, session)
  /**
   * The state of every inode (by path, with file handles when attachHandles; or by file
   * handle), handle and lock; inodes it cannot describe travel with the reason and are in lost.
   * Lets go of the host locks. Queues stopped. prepared: paths the precopy found that served;
   * unchanged: those of them taken without a look at the inode (its directories' timestamps
   * held), unchangedDirs: the directories whose timestamps held.
   */
  stateSave(id: number, byHandle: boolean, attachHandles: boolean): { data: Buffer; inodes: number; handles: number; locks: number; prepared: number; unchanged: number; unchangedDirs: number; lost: LostInode[] };
  /** A migration's precopy began: a thread finds and checks every inode's path now, for the save to reuse (prepared). */
  stateMigrationPrepare(id: number): void;
  /** The migration was cancelled before its save: the preparation stops and what it found is dropped; returns the paths dropped. */
  stateMigrationUnprepare(id: number): number;
  /** Puts back what stateSave wrote into a state holding only its root; throws on a malformed stream. */
  stateLoad(id: number, data: Buffer): { inodes: number; handles: number; locks: number; lost: LostInode[] };
  /** The source goes on after a save: the locks the save let go of are taken again; those that cannot be are returned. */
  stateResume(id: number): LostInode[];
  // state.cc
  stateCreate(): number;
  stateDestroy(id: number): void;
  /** States not yet deleted in this process: a destroyed state lives on while operations queued on libuv's pool hold it. */
  statesAlive(): number;
  stateClear(id: number): void;
  /** --translate-uid/-gid ranges (idMapWire); before the first request. */
  stateSetIdMaps(id: number, uidRanges: Float64Array, gidRanges: Float64Array): void;
  /** The session flags INIT negotiated (bit 0: writeback cache); sets them when given. */
  stateSession(id: number, flags?: number): number;
  stateCounts(id: number): [number, number];
  /** Past n open inode descriptors new inodes are kept as file handles; n < 0: never. */
  stateSetInodeFdBudget(id: number, n: number): void;
  /** At most n lock owners' descriptors open at once (then ENOLCK); n < 0: no bound. */
  stateSetLockFdBudget(id: number, n: number): void;
  stateSetMappedCapability(id: number, hostName: string): void;
  /** [inodes kept as file handles, inode descriptors open, inodes ever kept as file handles]. */
  stateInodeFds(id: number): [number, number, number];
  inodeSetRoot(id: number, fd: number, devMajor: number, devMinor: number, ino: number | bigint, mntId: number): number;
  inodeRef(id: number, fd: number, devMajor: number, devMinor: number, ino: number | bigint, mntId: number): number;
  inodeAcquire(id: number, nodeid: number | bigint): number;
  inodeRelease(id: number, nodeid: number | bigint): void;
  inodeForget(id: number, nodeid: number | bigint, nlookup: number | bigint): void;
  inodeLookups(id: number, nodeid: number | bigint): number;
  /** 0 or -errno; out is a Float64Array(STATX_FIELDS). */
  nodeStatx(id: number, nodeid: number | bigint, out: Float64Array): number;
  /** ACCESS: 0 when uid/gid may do mask (R_OK|W_OK|X_OK; 0: exists), else -EACCES, -EROFS, -errno. */
  nodeAccess(id: number, nodeid: number, uid: number, gid: number, mask: number, readonly: boolean): number;
  /** nodeid (one lookup taken) or -errno; out gets the attributes. */
  nodeLookup(id: number, parent: number | bigint, name: string | Buffer, out: Float64Array): number;
  /** fh or -errno; O_CREAT, O_EXCL, O_NOCTTY and O_NOFOLLOW are dropped. */
  /** killSuidgid: a truncating open clears setuid/setgid (FUSE_OPEN_KILL_SUIDGID). */
  /** A descriptor of regular file nodeid, read-write or read-only (the caller closes it), or -errno. */
  nodeOpenFile(id: number, nodeid: number, writable: boolean): number;
  nodeOpen(id: number, nodeid: number | bigint, flags: number, killSuidgid?: boolean): number;
  /**
   * Cache auto's KEEP_CACHE: whether the file's size, mtime and ctime are what the previous
   * open of the inode (on any queue) saw; remembers them for the next open.
   */
  nodeUnchangedSinceLastOpen(id: number, nodeid: number | bigint): boolean;
  handleInsert(id: number, fd: number, nodeid: number | bigint): number;
  handleAcquire(id: number, fh: number | bigint): number;
  handleRelease(id: number, fh: number | bigint): void;
  handleRemove(id: number, fh: number | bigint): number;
  handleReadv(id: number, fh: number | bigint, position: number, table: number, pairs: Float64Array, count: number): number;
  // nodeops.cc: -errno on failure; the "entry" ones return a nodeid and fill out (attributes).
  /** kind 0 mknod, 1 mkdir, 2 symlink (to target); runs as uid/gid. */
  nodeMake(id: number, parent: number, name: Buffer, kind: 0 | 1 | 2, mode: number, rdev: number, target: Buffer | string, uid: number, gid: number, out: Float64Array, umask?: number): number;
  /** out[FH_SLOT] gets the fh. */
  nodeCreate(id: number, parent: number, name: Buffer, flags: number, mode: number, uid: number, gid: number, out: Float64Array, killSuidgid?: boolean, umask?: number): number;
  nodeTmpfile(id: number, parent: number, flags: number, mode: number, uid: number, gid: number, out: Float64Array, umask?: number): number;
  nodeLink(id: number, nodeid: number, newParent: number, newName: Buffer, out: Float64Array): number;
  nodeUnlink(id: number, parent: number, name: Buffer, rmdir: boolean): number;
  nodeRename(id: number, oldParent: number, oldName: Buffer, newParent: number, newName: Buffer, flags: number): number;
  nodeReadlink(id: number, nodeid: number, buf: Buffer): number;
  nodeSetattr(id: number, nodeid: number, fh: number, valid: number, mode: number, uid: number, gid: number, size: number, atime: number, atimeNsec: number, mtime: number, mtimeNsec: number, out: Float64Array): number;
  nodeGetxattr(id: number, nodeid: number, name: Buffer | string, buf: Buffer): number;
  nodeListxattr(id: number, nodeid: number, buf: Buffer): number;
  /** killSgidAs: [uid, gid] of the guest caller, to set the value as it without CAP_FSETID (FUSE_SETXATTR_ACL_KILL_SGID). */
  nodeSetxattr(id: number, nodeid: number, name: Buffer | string, value: Buffer, flags: number, killSgidAs?: [number, number]): number;
  nodeRemovexattr(id: number, nodeid: number, name: Buffer | string): number;
  /** out: blocks, bfree, bavail, files, ffree, bsize, namelen, frsize. */
  nodeStatfs(id: number, nodeid: number, out: Float64Array): number;
  // fileops.cc
  /** Bytes of fuse_dirent (or fuse_direntplus) records written into out; 0 at the end. */
  handleReaddir(id: number, fh: number, offset: bigint, out: Buffer, plus: boolean, timeouts: Float64Array): number;
  handleLseek(id: number, fh: number, offset: number, whence: number): number;
  /** LOCK_SH / LOCK_EX / LOCK_UN, never waiting (-EWOULDBLOCK). */
  handleFlock(id: number, fh: number, op: number): number;
  /**
   * Never waits: -EAGAIN when another owner holds a conflicting lock, -EDEADLK when waiting
   * could never end. mode 0: SETLK; 1: an attempt of a SETLKW; 2: the SETLKW was given up.
   */
  /** pid: the guest process asking, which a GETLK that finds the lock reports. */
  nodeSetlk(id: number, nodeid: number, fh: number, owner: bigint, type: number, start: bigint, end: bigint, mode: 0 | 1 | 2, pid?: number): number;
  /** out: type, start, end, pid of a conflicting lock (type F_UNLCK when none). */
  nodeGetlk(id: number, nodeid: number, fh: number, owner: bigint, type: number, start: bigint, end: bigint, out: BigInt64Array): number;
  nodeUnlockOwner(id: number, nodeid: number, owner: bigint): void;
  /** killSuidgid: written without CAP_FSETID, so that setuid/setgid go (FUSE_WRITE_KILL_SUIDGID). */
  handleWritev(id: number, fh: number | bigint, position: number, table: number, pairs: Float64Array, count: number, killSuidgid?: boolean): number;
  // asyncops.cc: on libuv's thread pool (READ and WRITE with --thread-pool-size > 0 off a virtqueue; FSYNC off a virtqueue or without the pool)
  handleReadvAsync(id: number, fh: number, position: number, table: number, pairs: Float64Array, count: number): number | Promise<number>;
  handleWritevAsync(id: number, fh: number, position: number, table: number, pairs: Float64Array, count: number, killSuidgid?: boolean): number | Promise<number>;
  handleFsyncAsync(id: number, fh: number, datasync: boolean): Promise<number>;
  // ... and always there when JS serves them, so that they never block the JS thread
  handleFallocateAsync(id: number, fh: number, mode: number, offset: number, length: number, killSuidgid?: boolean): Promise<number>;
  handleCopyRangeAsync(id: number, fhIn: number, offIn: number, fhOut: number, offOut: number, length: number, flags: number, killSuidgid?: boolean): Promise<number>;
  nodeSyncfsAsync(id: number, nodeid: number): Promise<number>;
  // iopool.cc: the same on the I/O pool, which replies on the ring itself (undefined), unless
  // finished at once (bytes or -errno). pairs: count pairs, the last headerCount the header's.
  handleReadvQueued(id: number, fh: number, position: number, table: number, pairs: Float64Array, count: number,
    headerCount: number, ring: Vring, head: number, unique: bigint): number | undefined;
  handleWritevQueued(id: number, fh: number, position: number, table: number, pairs: Float64Array, count: number,
    headerCount: number, ring: Vring, head: number, unique: bigint, killSuidgid?: boolean): number | undefined;
  handleFsyncQueued(id: number, fh: number, datasync: boolean, table: number, pairs: Float64Array, count: number,
    ring: Vring, head: number, unique: bigint): number | undefined;
  ioPoolSetSize(threads: number): void;
  /** native/sandbox.cc: new namespaces and a new root of these binds and links; '' or what failed. */
  enterSandbox(binds: Array<[string, string, boolean]>, links: Array<[string, string]>, newNet: boolean): string;
  /** native/seccomp.cc: this thread under the daemon's system call filter; '' or what failed. */
  installSeccomp(action: 'kill' | 'log' | 'trap'): string;
  /** The system call numbers the filter allows. */
  seccompAllowed(): number[];
  /** Bounding set = these capabilities, inheritable and ambient empty; '' or what failed. */
  limitCapabilities(keep: number[]): string;
  /** Replaces the process (returns -errno only on failure); keepFds stay open across it. */
  execve(path: string, argv: string[], extraEnv: string[], keepFds: number[]): number;
  unlinkat(dirfd: number, name: string, flags: number): number;
}

// dist/src/native.js -> <root>/build/Release
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const native: NativeAddon = require(path.join(__dirname, '..', '..', 'build', 'Release', 'virtiofsd_native.node'));

/**
 * Guest I/O with the ranges staged in this thread's reusable Float64Array. A fresh small
 * typed array would cost about 800 ns when native code first reads it (V8 moves it off its
 * heap then); the native calls are synchronous, so one array per thread is enough.
 */
let stage = new Float64Array(2 * 1024);
function staged(pairs: readonly number[], then: readonly number[] = []): Float64Array {
  const n = pairs.length + then.length;
  if (n > stage.length) stage = new Float64Array(2 ** Math.ceil(Math.log2(n)));
  for (let i = 0; i < pairs.length; i++) stage[i] = pairs[i];
  for (let i = 0; i < then.length; i++) stage[pairs.length + i] = then[i];
  return stage;
}

/** A queued transfer's result: REPLIED_BY_POOL, or what finished at once (bytes or -errno). */
const queued = (r: number | undefined): number | PoolReplied => (r === undefined ? REPLIED_BY_POOL : r);

/** READ or WRITE on the I/O pool: the data's ranges staged, then the reply header's. */
const rwQueued =
  (call: NativeAddon['handleWritevQueued']) =>
  (id: number, fh: number, position: number, r: GuestRanges, reply: PoolReply, killSuidgid = false): number | PoolReplied =>
    queued(call(id, fh, position, r.table, staged(r.pairs, reply.header.pairs), (r.pairs.length + reply.header.pairs.length) >> 1,
      reply.header.pairs.length >> 1, reply.ring, reply.head, reply.unique, killSuidgid));

export const guestIo = {
  /** File at position -> guest ranges; bytes read or -errno. */
  preadv: (fd: number, position: number, r: GuestRanges): number =>
    native.preadv(fd, position, r.table, staged(r.pairs), r.pairs.length >> 1),
  /** Guest ranges -> file at position; bytes written or -errno. */
  pwritev: (fd: number, position: number, r: GuestRanges): number =>
    native.pwritev(fd, position, r.table, staged(r.pairs), r.pairs.length >> 1),
  /** Through open handle fh of state `id`. */
  handleReadv: (id: number, fh: number, position: number, r: GuestRanges): number =>
    native.handleReadv(id, fh, position, r.table, staged(r.pairs), r.pairs.length >> 1),
  handleWritev: (id: number, fh: number, position: number, r: GuestRanges, killSuidgid = false): number =>
    native.handleWritev(id, fh, position, r.table, staged(r.pairs), r.pairs.length >> 1, killSuidgid),
  /** On the thread pool; the ranges are translated before this returns. */
  handleReadvAsync: (id: number, fh: number, position: number, r: GuestRanges): number | Promise<number> =>
    native.handleReadvAsync(id, fh, position, r.table, staged(r.pairs), r.pairs.length >> 1),
  handleWritevAsync: (id: number, fh: number, position: number, r: GuestRanges, killSuidgid = false): number | Promise<number> =>
    native.handleWritevAsync(id, fh, position, r.table, staged(r.pairs), r.pairs.length >> 1, killSuidgid),
  /** On the I/O pool, which writes the reply and completes the chain itself. */
  handleReadvQueued: rwQueued(native.handleReadvQueued),
  handleWritevQueued: rwQueued(native.handleWritevQueued),
  handleFsyncQueued: (id: number, fh: number, datasync: boolean, reply: PoolReply): number | PoolReplied =>
    queued(native.handleFsyncQueued(id, fh, datasync, reply.header.table, staged(reply.header.pairs),
      reply.header.pairs.length >> 1, reply.ring, reply.head, reply.unique)),
};
