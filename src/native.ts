/**
 * The typed surface of the native addon (native/*.cc). Nothing else imports the .node file.
 *
 * Conventions:
 *  - setup calls (memory tables, sockets, eventfds) throw errors shaped like Node's system
 *    errors ({code, errno (negative), syscall});
 *  - hot-path file-system and I/O calls return the result or a negative errno.
 *  - a segment list is a flat array [buf, off, len, buf, off, len, ...] of views into guest
 *    memory; every segment is bounds-checked natively before the kernel sees it.
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

export interface ReceivedMessage {
  request: number;
  flags: number;
  size: number;
  /** null when size exceeded the caller's maximum: the stream is no longer trustworthy. */
  payload: Buffer | null;
  fds: number[];
  truncatedFds: boolean;
}

export type Segments = Array<Buffer | number>;

export declare class FdWatcher {
  constructor(fd: number, drainEventfd: boolean, callback: (status: number) => void);
  start(): void;
  stop(): void;
}

/** Indexes into the Float64Array filled by statx(). */
export enum StatxField {
  mask, devMajor, devMinor, ino, mode, nlink, uid, gid, rdevMajor, rdevMinor, size, blocks,
  blksize, atimeSec, atimeNsec, mtimeSec, mtimeNsec, ctimeSec, ctimeNsec, btimeSec,
  btimeNsec, mntId,
}
export const STATX_FIELDS = 22;

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
  mmapShared(fd: number, size: number, offset?: number): Buffer;
  // socket.cc
  unixListen(path: string, backlog?: number): number;
  unixAccept(fd: number, recvTimeoutMs?: number): number;
  unixConnect(path: string): number;
  socketPair(): [number, number];
  vhostRecv(fd: number, maxPayload: number): ReceivedMessage | null;
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
  // ring.cc
  loadAcquire16(buf: Buffer, off: number): number;
  storeRelease16(buf: Buffer, off: number, value: number): void;
  fence(): void;
  // io.cc
  preadv(fd: number, position: number, segs: Segments): number;
  pwritev(fd: number, position: number, segs: Segments): number;
  // fsops.cc
  openat(dirfd: number, path: string | Buffer, flags: number, mode?: number): number;
  statx(dirfd: number, path: string | Buffer, flags: number, out: Float64Array): number;
  // state.cc
  stateCreate(): number;
  stateDestroy(id: number): void;
  stateClear(id: number): void;
  stateCounts(id: number): [number, number];
  inodeSetRoot(id: number, fd: number, devMajor: number, devMinor: number, ino: number, mntId: number): number;
  inodeRef(id: number, fd: number, devMajor: number, devMinor: number, ino: number, mntId: number): number;
  inodeAcquire(id: number, nodeid: number | bigint): number;
  inodeRelease(id: number, nodeid: number | bigint): void;
  inodeForget(id: number, nodeid: number | bigint, nlookup: number | bigint): void;
  inodeLookups(id: number, nodeid: number | bigint): number;
  handleInsert(id: number, fd: number, nodeid: number | bigint): number;
  handleAcquire(id: number, fh: number | bigint): number;
  handleRelease(id: number, fh: number | bigint): void;
  handleRemove(id: number, fh: number | bigint): number;
}

// dist/src/native.js -> <root>/build/Release
// eslint-disable-next-line @typescript-eslint/no-var-requires
export const native: NativeAddon = require(path.join(__dirname, '..', '..', 'build', 'Release', 'virtiofsd_native.node'));
