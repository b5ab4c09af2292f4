/**
 * Lock requests for the passthrough filesystem. POSIX (fcntl) and BSD (flock) locks are
 * held by the host kernel (native/fileops.cc), so they hold against host processes too — a
 * capability the Rust virtiofsd lacks. The native calls never wait; a SETLKW that meets a
 * conflicting lock is retried here on a timer with backoff (1 ms doubling to 50 ms), so no
 * queue thread is held while it waits, and resolves once the lock is granted. A POSIX wait
 * that could never end fails with EDEADLK (native/fileops.cc keeps the wait-for graph), and
 * waits still pending when the queue stops are given up with EINTR (cancelAll).
 *
 * One wait lasts at most WAIT_SLICE_MS, then answers EINTR. A virtio-fs guest cannot
 * interrupt a FUSE request, so a process blocked in a forwarded SETLKW could otherwise not
 * even be killed (seen: stress-ng's lockf child waiting on its parent, which waits for the
 * child to exit). The guest kernel turns EINTR from SETLK(W) into ERESTARTSYS
 * (fs/fuse/file.c, "locking is restartable"): with no signal pending the call is simply sent
 * again, with one pending the process handles it, as with a local lock.
 */
import { native } from '../../native';
import { E, FsError, type Lock } from '../filesystem';

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_UN = 8;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;

/** SETLK, an attempt of a SETLKW, or giving a SETLKW up (native/fileops.cc nodeSetlk). */
const enum Mode {
  Once = 0,
  Waiting = 1,
  GiveUp = 2,
}

/** One non-waiting attempt; -EAGAIN / -EWOULDBLOCK while someone else holds the lock. */
function tryLock(stateId: number, nodeid: number, fh: number, owner: bigint, lock: Lock, flock: boolean, mode: Mode): number {
  if (flock) {
    const op = lock.type === F_UNLCK ? LOCK_UN : lock.type === F_WRLCK ? LOCK_EX : LOCK_SH;
    return native.handleFlock(stateId, fh, op);
  }
  if (lock.type !== F_RDLCK && lock.type !== F_WRLCK && lock.type !== F_UNLCK) return -E.EINVAL;
  return native.nodeSetlk(stateId, nodeid, fh, owner, lock.type, lock.start, lock.end, mode, lock.pid >>> 0);
}

/** Longest single wait of a SETLKW before it answers EINTR and the guest asks again. */
export const WAIT_SLICE_MS = 1000;

const busy = (r: number): boolean => r === -E.EAGAIN || r === -E.EWOULDBLOCK || r === -E.EACCES;

/** The SETLKW requests of one filesystem instance that are waiting; cancelAll gives them up. */
export class LockWaits {
  private readonly pending = new Set<() => void>();

  /** Gives up every pending wait: each fails with EINTR. */
  cancelAll(): void {
    for (const cancel of [...this.pending]) cancel();
  }

  /** SETLK / SETLKW: grants the lock, waiting for it (without a thread) when wait is set. */
  set(stateId: number, nodeid: number, fh: number, owner: bigint, lock: Lock, flock: boolean, wait: boolean): void | Promise<void> {
    const r = tryLock(stateId, nodeid, fh, owner, lock, flock, wait ? Mode.Waiting : Mode.Once);
    if (r === 0) return;
    if (!wait || !busy(r)) throw new FsError(busy(r) ? E.EAGAIN : -r);
    return new Promise<void>((resolve, reject) => {
      let delay = 1;
      let timer: NodeJS.Timeout;
      const finish = (err: FsError | null): void => {
        clearTimeout(timer);
        this.pending.delete(cancel);
        if (err) reject(err);
        else resolve();
      };
      const cancel = (): void => {
        if (!flock) tryLock(stateId, nodeid, fh, owner, lock, flock, Mode.GiveUp);
        finish(new FsError(E.EINTR));
      };
      const sliceEnd = Date.now() + WAIT_SLICE_MS;
      const retry = (): void => {
        const again = tryLock(stateId, nodeid, fh, owner, lock, flock, Mode.Waiting);
        if (again === 0) return finish(null);
        if (!busy(again)) return finish(new FsError(-again));
        if (Date.now() >= sliceEnd) return cancel();
        delay = Math.min(delay * 2, 50);
        timer = setTimeout(retry, delay);
      };
      this.pending.add(cancel);
      timer = setTimeout(retry, delay);
    });
  }
}

/** GETLK: the first conflicting lock, or type F_UNLCK. */
export function getLock(stateId: number, nodeid: number, fh: number, owner: bigint, lock: Lock): Lock {
  const out = new BigInt64Array(4);
  const r = native.nodeGetlk(stateId, nodeid, fh, owner, lock.type, lock.start, lock.end, out);
  if (r < 0) throw new FsError(-r);
  if (Number(out[0]) === F_UNLCK) return { start: 0n, end: 0n, type: F_UNLCK, pid: 0 };
  return { type: Number(out[0]), start: out[1], end: out[2], pid: Number(out[3]) };
}
