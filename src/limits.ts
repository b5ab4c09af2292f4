/**
 * The daemon's open-file limit (RLIMIT_NOFILE). Every inode the guest holds a lookup of
 * keeps an O_PATH descriptor open here, and every file it has open one more, so a guest that
 * walks a large tree (find, du, a build) needs tens of thousands. As the Rust virtiofsd does,
 * the limit is raised at start: to --rlimit-nofile N, or by default to the smaller of
 * 1,000,000 and /proc/sys/fs/nr_open (the most the kernel allows); 0 leaves it as it is. A
 * limit already as high stays (it is never lowered). Raising the hard limit needs
 * CAP_SYS_RESOURCE: without it the default settles for the hard limit (said in the log), and
 * an explicit N that cannot be had is an error at start.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from './log';
import { native } from './native';

export const DEFAULT_NOFILE = 1_000_000;

/** The kernel's ceiling for RLIMIT_NOFILE. */
function nrOpen(): number {
  return Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());
}

/** RLIMIT_NOFILE as it is (soft and hard). */
export function currentNofileLimit(): { soft: number; hard: number } {
  const out = new Float64Array(2);
  const r = native.nofileLimit(out);
  if (r < 0) throw new Error(`getrlimit(RLIMIT_NOFILE): errno ${-r}`);
  return { soft: out[0], hard: out[1] };
}

/** Applies --rlimit-nofile (undefined: the default); returns the soft limit now in force. */
export function setupNofileLimit(requested: number | undefined, log: Logger): number {
  const ceiling = nrOpen();
  const target = requested ?? Math.min(DEFAULT_NOFILE, ceiling);
  const now = currentNofileLimit();
  if (target === 0 || now.soft >= target) return now.soft;
  if (target > ceiling) throw new Error(`--rlimit-nofile ${target} is above the kernel's maximum (/proc/sys/fs/nr_open: ${ceiling})`);
  const r = native.setNofileLimit(target, Math.max(target, now.hard));
  if (r === 0) {
    log.debug({ from: now.soft, to: target }, 'open file limit raised');
    return target;
  }
  if (requested !== undefined) throw new Error(`cannot raise the open file limit to ${target} (hard limit ${now.hard}): errno ${-r}`);
  if (now.soft < now.hard) native.setNofileLimit(now.hard, now.hard);
  const soft = currentNofileLimit().soft;
  // Said once at start, not as a warning: an unprivileged or containerised daemon always lands here.
  log.info({ wanted: target, limit: soft }, 'open file limit kept at its hard limit (raising that needs CAP_SYS_RESOURCE)');
  return soft;
}
