/**
 * Lock requests for the passthrough filesystem. POSIX (fcntl) and BSD (flock) locks are
 * held by the host kernel (native/fileops.cc), so they hold against host processes too — a
 * capability the Rust virtiofsd lacks. The native calls never wait; a SETLKW that meets a
 * conflicting lock is retried here on a timer with backoff (1 ms doubling to 50 ms), so no
 * queue thread is held while it waits, and resolves once the lock is granted.
 */
import { native } from '../../native';
import { E, FsError, type Lock } from '../filesystem';

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_UN = 8;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
const OFFSET_MAX = (1n << 63n) - 1n;

/** One non-waiting attempt; -EAGAIN / -EWOULDBLOCK while someone else holds the lock. */
export function tryLock(stateId: number, nodeid: number, fh: number, owner: bigint, lock: Lock, flock: boolean): number {
  if (flock) {
    const op = lock.type === F_UNLCK ? LOCK_UN : lock.type === F_WRLCK ? LOCK_EX : LOCK_SH;
    return native.handleFlock(stateId, fh, op);
  }
  if (lock.type !== F_RDLCK && lock.type !== F_WRLCK && lock.type !== F_UNLCK) return -E.EINVAL;
  return native.nodeSetlk(stateId, nodeid, fh, owner, lock.type, lock.start, lock.end);
}

const busy = (r: number): boolean => r === -E.EAGAIN || r === -E.EWOULDBLOCK || r === -E.EACCES;

/** SETLK / SETLKW: grants the lock, waiting for it (without a thread) when wait is set. */
export function setLock(stateId: number, nodeid: number, fh: number, owner: bigint, lock: Lock, flock: boolean, wait: boolean): void | Promise<void> {
  const r = tryLock(stateId, nodeid, fh, owner, lock, flock);
  if (r === 0) return;
  if (!wait || !busy(r)) throw new FsError(busy(r) ? E.EAGAIN : -r);
  return new Promise<void>((resolve, reject) => {
    let delay = 1;
    const retry = (): void => {
      const again = tryLock(stateId, nodeid, fh, owner, lock, flock);
      if (again === 0) return resolve();
      if (!busy(again)) return reject(new FsError(-again));
      delay = Math.min(delay * 2, 50);
      setTimeout(retry, delay);
    };
    setTimeout(retry, delay);
  });
}

/** GETLK: the first conflicting lock, or type F_UNLCK. */
export function getLock(stateId: number, nodeid: number, fh: number, owner: bigint, lock: Lock): Lock {
  const out = new Float64Array(4);
  const r = native.nodeGetlk(stateId, nodeid, fh, owner, lock.type, lock.start, lock.end, out);
  if (r < 0) throw new FsError(-r);
  if (out[0] === F_UNLCK) return { start: 0n, end: 0n, type: F_UNLCK, pid: 0 };
  // The end comes back as a double: 2^63-1 ("to the end of the file") must stay exact.
  const end = out[2] >= 2 ** 63 - 4096 ? OFFSET_MAX : BigInt(out[2]);
  return { type: out[0], start: BigInt(out[1]), end, pid: out[3] };
}
