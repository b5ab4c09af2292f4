/**
 * Live migration of the passthrough file system's state (native/migration.cc): what the
 * guest's FUSE session holds of this daemon (inodes with their lookup counts, open handles,
 * POSIX and flock() locks, the flags INIT negotiated), written by the source daemon and put
 * back by the destination's before the guest runs again, so the guest goes on with the node
 * ids, handles and locks it has. The locks are the host's: the source lets go of them as it
 * saves and takes them back if it goes on after all (resumeState).
 *
 * Inodes travel by path (find-paths, the default) or by file handle (--migration-mode
 * file-handles); --migration-verify-handles adds file handles to paths for the destination
 * to check that each path still leads to the same inode. An inode the source cannot describe
 * (a file removed while the guest holds it, by path) travels with the reason, and the
 * destination's --migration-on-error decides, as in the Rust virtiofsd (the option is
 * ignored on the source): abort (the default) fails the migration, and the guest stays on the
 * source; guest-error carries on without it, and the guest's requests on it fail (EBADF).
 */
import type { Logger } from '../../log';
import { native, type LostInode } from '../../native';

export interface MigrationOptions {
  /** --migration-mode: how the source describes inodes. */
  mode: 'find-paths' | 'file-handles';
  /** --migration-verify-handles: paths come with file handles, checked on the destination. */
  verifyHandles: boolean;
  /** --migration-confirm-paths: every path is walked again at the switch-over, none taken from the precopy. */
  confirmPaths: boolean;
  /** --migration-on-error: what the destination does with an inode it cannot put back. */
  onError: 'abort' | 'guest-error';
}

/** How many lost inodes a log line names. */
const LOST_SHOWN = 8;

function describe(lost: LostInode[]): string {
  const shown = lost.slice(0, LOST_SHOWN).map((l) => `node ${l.nodeid}: ${l.reason}`);
  return shown.join('; ') + (lost.length > LOST_SHOWN ? `; and ${lost.length - LOST_SHOWN} more` : '');
}

/**
 * The precopy began (dirty logging on), the guest still running: by path, each inode's path is
 * found and checked now, on a thread of its own, so that the save, in the guest's downtime,
 * only has to see that the kernel names each inode as it did then; or, where the timestamps of
 * every directory on the path are those the precopy took before it checked the path (nothing
 * made, removed or renamed in them since), not even that. By file handle there is
 * nothing to prepare; with --migration-confirm-paths the save walks every path itself.
 */
export function prepareState(stateId: number, o: MigrationOptions): void {
  if (o.mode === 'find-paths' && !o.confirmPaths) native.stateMigrationPrepare(stateId);
}

/** Dirty logging went off before any save (the migration was cancelled): what the precopy found is dropped. */
export function unprepareState(stateId: number, log: Logger): void {
  const dropped = native.stateMigrationUnprepare(stateId);
  if (dropped > 0) log.info({ paths: dropped }, 'migration cancelled: the paths found during its precopy are dropped');
}

/** The source's half: the state to send (what it could not describe included, for the destination to judge). */
export function saveState(stateId: number, o: MigrationOptions, log: Logger): Buffer {
  const started = process.hrtime.bigint();
  const r = native.stateSave(stateId, o.mode === 'file-handles', o.verifyHandles);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.lost.length > 0) {
    log.warn({ lost: r.lost.length }, `${r.lost.length} inodes cannot be described for the destination, whose --migration-on-error decides: ${describe(r.lost)}`);
  }
  log.info({ inodes: r.inodes, pathsFromPrecopy: r.prepared, pathsInUnchangedDirs: r.unchanged, unchangedDirs: r.unchangedDirs, handles: r.handles, lockOwners: r.locks, bytes: r.data.length, mode: o.mode, ms: Math.round(ms * 10) / 10 }, 'device state saved for migration');
  return r.data;
}

/** The destination's half: puts the state back, or throws (nothing kept) when it may not. */
export function loadState(stateId: number, data: Buffer, o: MigrationOptions, log: Logger): void {
  const started = process.hrtime.bigint();
  const r = native.stateLoad(stateId, data);
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  if (r.lost.length > 0) {
    if (o.onError === 'abort') {
      native.stateClear(stateId);
      throw new Error(`${r.lost.length} inodes or handles of the source cannot be put back (--migration-on-error=abort): ${describe(r.lost)}`);
    }
    log.warn({ lost: r.lost.length }, `${r.lost.length} inodes or handles of the source are missing here; the guest gets errors on them: ${describe(r.lost)}`);
  }
  log.info({ inodes: r.inodes, handles: r.handles, lockOwners: r.locks, bytes: data.length, ms: Math.round(ms * 10) / 10 }, 'device state loaded from migration');
}

/** The source goes on after a save (the migration failed): it takes back the locks it let go of. */
export function resumeState(stateId: number, log: Logger): void {
  const lost = native.stateResume(stateId);
  if (lost.length > 0) log.error({ lost: lost.length }, `after the failed migration, ${lost.length} locks of the guest could not be taken again: ${describe(lost)}`);
  else log.info('the guest goes on here after its state was saved: its locks are taken again');
}
