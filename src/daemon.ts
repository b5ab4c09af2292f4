/**
 * The daemon: listens on the vhost-user socket (or takes libvirt's --fd), serves one front
 * end connection with the virtio-fs device, and exits when it closes, as the Rust virtiofsd
 * does (libvirt and QEMU expect that). SIGTERM/SIGINT/SIGHUP end it at once, cleanly.
 */
import { DaxWindow, parseDaxWindowSize } from './dax/window';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import { native, STATX_FIELDS, StatxField } from './native';
import type { Logger } from './log';
import { optionsWithoutEffect, sandboxMode, type Options } from './options';
import { fsDevice } from './fs-device';
import { currentNofileLimit, setupNofileLimit } from './limits';
import { createSharedState } from './fuse/passthrough';
import { idMapWire, parseIdMaps } from './fuse/passthrough/idmap';
import { mappedCapabilityName, parseXattrMap } from './fuse/passthrough/xattrmap';
import { RECV_TIMEOUT_MS, VhostUserBackend } from './vhost/backend';
import { enterSandboxAndRestart, enterUserNamespaceAndRestart, socketToRemove, type SocketToRemove } from './sandbox';

/**
 * Runs the daemon to the end of its connection. `stage`: 'sandbox' when this process was
 * started again inside the sandbox (src/sandbox.ts), 'userns' in the user namespace of
 * --uid-map/--gid-map before the sandbox; the listening socket is then opts.fd.
 */
export async function runDaemon(
  opts: Options,
  log: Logger,
  stage: 'start' | 'userns' | 'sandbox' = 'start',
  handedSocket: SocketToRemove | null = null,
): Promise<number> {
  const sandboxed = stage === 'sandbox';
  if (!opts.sharedDir) throw new Error('--shared-dir (or -o source=DIR) is required');
  // Without POSIX ACLs, modes arrive from the guest with the caller's umask already applied:
  // our own umask must not take more bits away (with them, see native/umask.cc).
  process.umask(0);
  // Set before the sandbox; the process started again inside keeps it.
  const nofile = stage !== 'start' ? currentNofileLimit().soft : setupNofileLimit(opts.rlimitNofile, log);
  let listenFd: number;
  let ownSocket: string | null = null;
  if (opts.fd !== undefined) {
    listenFd = opts.fd;
  } else if (opts.socketPath) {
    removeStaleSocket(opts.socketPath);
    listenFd = native.unixListen(opts.socketPath, 1);
    ownSocket = opts.socketPath;
    if (opts.socketGroup) await chgrp(opts.socketPath, opts.socketGroup);
  } else {
    throw new Error('either --socket-path or --fd is required');
  }
  for (const w of optionsWithoutEffect(opts)) if (stage === 'start') log.warn(w, 'option accepted for compatibility, without effect here');
  if (stage === 'start' && (opts.uidMap.length > 0 || opts.gidMap.length > 0)) {
    // As in the Rust virtiofsd: for an unprivileged user, with the namespace sandbox.
    if (process.geteuid?.() === 0) {
      throw new Error('--uid-map/--gid-map are for a daemon started by an unprivileged user (as root, --translate-uid/--translate-gid translate IDs)');
    }
    if (opts.sandbox !== undefined && opts.sandbox !== 'namespace') throw new Error('--uid-map/--gid-map need --sandbox namespace');
    log.debug({ uidMap: opts.uidMap, gidMap: opts.gidMap }, 'entering a user namespace');
    throw new Error(enterUserNamespaceAndRestart(opts, listenFd, socketToRemove(ownSocket)));
  }
  const sandbox = sandboxMode(opts);
  if (sandbox !== 'none' && !sandboxed) {
    log.debug({ sandbox }, 'entering the sandbox');
    // Returns only if it failed.
    const handover = stage === 'userns' ? handedSocket : socketToRemove(ownSocket);
    const failed = enterSandboxAndRestart(opts, listenFd, handover);
    // The default gives way where namespaces are not allowed; an explicit --sandbox does not.
    if (opts.sandbox !== undefined || !failed.untouched) throw new Error(failed.message);
    // Without the restart this process removes its socket by path, as without a sandbox.
    if (handover && handover !== handedSocket) native.close(handover.dirFd);
    log.warn({ reason: failed.message }, 'running without a sandbox (the default sandbox could not be made; --sandbox none says so explicitly)');
  }
  if (sandboxed) log.info({ sandbox }, 'running in the sandbox: the host outside the shared directory is out of view');
  const stateId = createSharedState(opts.sharedDir);
  native.stateSetIdMaps(stateId, idMapWire(parseIdMaps(opts.translateUid)), idMapWire(parseIdMaps(opts.translateGid)));
  // --inode-file-handles: prefer keeps a descriptor per inode up to three quarters of the open
  // file limit, then file handles; mandatory keeps every inode as a file handle.
  native.stateSetInodeFdBudget(stateId, inodeFdBudget(opts.inodeFileHandles, nofile));
  native.stateSetLockFdBudget(stateId, lockFdBudget(nofile));
  const xattrMap = opts.xattrmap === undefined ? undefined : parseXattrMap(opts.xattrmap);
  const mappedCapability = xattrMap && mappedCapabilityName(xattrMap);
  if (mappedCapability) native.stateSetMappedCapability(stateId, mappedCapability);
  log.info({ sharedDir: opts.sharedDir, socket: opts.socketPath ?? `fd ${opts.fd}`, cache: opts.cache, openFileLimit: nofile }, 'waiting for a vhost-user connection');

  const conn = await new Promise<number>((resolve, reject) => {
    const w = new native.FdWatcher(listenFd, false, () => {
      w.close();
      try {
        resolve(native.unixAccept(listenFd, RECV_TIMEOUT_MS));
      } catch (e) {
        reject(e);
      }
    });
    w.start();
  });
  native.close(listenFd);
  if (ownSocket) removeStaleSocket(ownSocket);
  if (handedSocket) removeHandedSocket(handedSocket, log);
  log.info('front end connected');

  const device = fsDevice(
    {
      passthrough: {
        stateId,
        sharedDir: opts.sharedDir,
        cache: {
          mode: opts.cache,
          writeback: opts.writeback,
          readdirplus: !opts.noReaddirplus,
          allowMmap: opts.allowMmap,
          allowDirectIo: opts.allowDirectIo,
        },
        readonly: opts.readonly,
        xattr: opts.xattr || opts.posixAcl || opts.xattrmap !== undefined,
        xattrMap,
        posixAcl: opts.posixAcl,
        securityLabel: opts.securityLabel,
        killprivV2: opts.killprivV2,
        announceSubmounts: opts.announceSubmounts,
        posixLock: opts.posixLock,
        flock: opts.flock,
        threadPool: opts.threadPoolSize > 0,
        dax: opts.daxWindowSize ? new DaxWindow(parseDaxWindowSize(opts.daxWindowSize), log.child({ dax: true })) : undefined,
      },
      pollMaxNs: opts.pollMaxUs * 1000,
      tag: opts.tag,
      migration: {
        mode: opts.migrationMode ?? 'find-paths',
        verifyHandles: opts.migrationVerifyHandles,
        confirmPaths: opts.migrationConfirmPaths,
        onError: opts.migrationOnError ?? 'abort',
      },
    },
    log,
  );
  const backend = new VhostUserBackend(conn, device, log);
  const onSignal = (sig: NodeJS.Signals) => {
    log.info({ signal: sig }, 'exiting on signal');
    void backend.close();
  };
  for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(s, onSignal);
  backend.start();
  await backend.finished;
  const [asHandles, fdsOpen, everAsHandles] = native.stateInodeFds(stateId);
  // What the guest still held when it went (the root inode counts): a guest that dropped its
  // caches and closed its files before going leaves 1 and 0.
  const [inodes, handles] = native.stateCounts(stateId);
  log.info({ inodes, handles, inodesAsFileHandles: asHandles, inodeFdsOpen: fdsOpen, inodesEverAsFileHandles: everAsHandles }, 'inode table at exit');
  native.stateDestroy(stateId);
  return 0;
}

/**
 * How many lock owners' descriptors may be open at once: an eighth of the open file limit
 * (at least 64), beside the three quarters inodes may take, so that a guest taking locks
 * under ever new owners cannot leave the daemon without descriptors to open files with.
 */
export function lockFdBudget(openFileLimit: number): number {
  return Math.max(64, Math.floor(openFileLimit / 8));
}

/** How many inode descriptors stay open before inodes are kept as file handles (-1: always open). */
export function inodeFdBudget(mode: 'never' | 'prefer' | 'mandatory', openFileLimit: number): number {
  if (mode === 'never') return -1;
  return mode === 'mandatory' ? 0 : Math.floor(openFileLimit * 0.75);
}

/** The socket of --socket-path, from inside the sandbox: by its directory's descriptor. */
function removeHandedSocket(s: SocketToRemove, log: Logger): void {
  const st = new Float64Array(STATX_FIELDS);
  const S_IFSOCK = 0o140000;
  if (native.statx(s.dirFd, s.name, 0x100 /* AT_SYMLINK_NOFOLLOW */, st) === 0 && (st[StatxField.mode] & 0o170000) === S_IFSOCK) {
    const r = native.unlinkat(s.dirFd, s.name, 0);
    if (r < 0) log.debug({ errno: -r }, 'could not remove the socket');
  }
  native.close(s.dirFd);
}

function removeStaleSocket(p: string): void {
  if (existsSync(p) && lstatSync(p).isSocket()) unlinkSync(p);
}

async function chgrp(p: string, group: string): Promise<void> {
  const { execFileSync } = await import('node:child_process');
  execFileSync('chgrp', [group, p]);
}
