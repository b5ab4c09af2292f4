/**
 * Live migration of the passthrough file system's state (native/migration.cc): what the
 * guest's FUSE session holds of this daemon (inodes with their lookup counts, open handles,
 * POSIX and flock() locks, the flags INIT negotiated), written by the source daemon and put
 * back by the destination's before the guest runs again, so the guest goes on with the node
 * ids, handles and locks it has. The locks are the host's: the source lets go of them as it
 * saves and takes them back if it goes on after all (resumeState).
 *
 * An inode that cannot travel (a file removed while the guest holds it, a path that leads
 * elsewhere, a file missing on the destination) is handled as --migration-on-error says:
 * abort (the default, as in the Rust virtiofsd) fails the migration, and the guest stays on
 * the source; guest-error carries on without it, and the guest's requests on it fail (EBADF).
 */
import type { Logger } from '../../log';
import { native, type LostInode } from '../../native';

export type MigrationOnError = 'abort' | 'guest-error';

/** How many lost inodes a log line names. */
const LOST_SHOWN = 8;

function describe(lost: LostInode[]): string {
  const shown = lost.slice(0, LOST_SHOWN).map((l) => `node ${l.nodeid}: ${l.reason}`);
  return shown.join('; ') + (lost.length > LOST_SHOWN ? `; and ${lost.length - LOST_SHOWN} more` : '');
}

/** The source's half: the state to send, or an Error when it may not go (abort). */
export function saveState(stateId: number, onError: MigrationOnError, log: Logger): Buffer {
  const r = native.stateSave(stateId);
  if (r.lost.length > 0) {
    if (onError === 'abort') throw new Error(`${r.lost.length} inodes or handles cannot be migrated (--migration-on-error=abort): ${describe(r.lost)}`);
    log.warn({ lost: r.lost.length }, `migrating without ${r.lost.length} inodes or handles; the guest gets errors on them: ${describe(r.lost)}`);
  }
  log.info({ inodes: r.inodes, handles: r.handles, lockOwners: r.locks, bytes: r.data.length }, 'device state saved for migration');
  return r.data;
}

/** The destination's half: puts the state back, or throws (nothing kept) when it may not. */
export function loadState(stateId: number, data: Buffer, onError: MigrationOnError, log: Logger): void {
  const r = native.stateLoad(stateId, data);
  if (r.lost.length > 0) {
    if (onError === 'abort') {
      native.stateClear(stateId);
      throw new Error(`${r.lost.length} inodes or handles of the source cannot be put back (--migration-on-error=abort): ${describe(r.lost)}`);
    }
    log.warn({ lost: r.lost.length }, `${r.lost.length} inodes or handles of the source are missing here; the guest gets errors on them: ${describe(r.lost)}`);
  }
  log.info({ inodes: r.inodes, handles: r.handles, lockOwners: r.locks, bytes: data.length }, 'device state loaded from migration');
}

/** The source goes on after a save (the migration failed): it takes back the locks it let go of. */
export function resumeState(stateId: number, log: Logger): void {
  const lost = native.stateResume(stateId);
  if (lost.length > 0) log.error({ lost: lost.length }, `after the failed migration, ${lost.length} locks of the guest could not be taken again: ${describe(lost)}`);
  else log.info('the guest goes on here after its state was saved: its locks are taken again');
}
