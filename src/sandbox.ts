/**
 * --sandbox namespace|chroot: what the daemon's process may see of the host. The daemon
 * already keeps the guest inside the shared directory by resolving names one component at a
 * time under it; the sandbox is the second wall, for a daemon that is itself subverted.
 *
 * At start, once the listening socket exists, the process enters new namespaces (mount; for
 * namespace also network and IPC) and pivots into a new read-only root holding only: the
 * shared directory (read-write, at its own path), read-only the system directories (/usr
 * and the /lib, /bin links or directories), the Node binary's installation when it lives
 * elsewhere, the daemon's own files, a /proc, and /dev/null, zero, random, urandom. Then it
 * starts again inside with execve: same PID (libvirt's pidfile holds), the socket passed as a
 * descriptor (and --syslog's socket), the options already parsed passed in the environment
 * (a --config file is not visible inside), with only the capabilities src/capabilities.ts keeps and, with --seccomp,
 * under a filter of the system calls it may make (native/seccomp.cc). native/sandbox.cc makes the system calls.
 *
 * It needs CAP_SYS_ADMIN; without it an explicit --sandbox fails the start, as in the Rust
 * virtiofsd, and the default (namespace for a root daemon) falls back to none with a
 * warning, so that a daemon in a container without the capability still starts. chroot,
 * the Rust virtiofsd's mode for containers that made the namespaces already, enters only a
 * mount namespace (it still needs one to assemble the root). Unlike the Rust virtiofsd there
 * is no new PID namespace (that needs a fork, and the process libvirt started must stay the
 * daemon).
 */
import { existsSync, lstatSync, readlinkSync, realpathSync } from 'node:fs';
import * as path from 'node:path';
import { native } from './native';
import { parseNamespaceIdMaps, sandboxMode, type NamespaceIdMap, type Options } from './options';
import { CAPABILITIES, keptCapabilities } from './capabilities';
import { syslogFd } from './log';

/** The environment variable that carries the options into the sandboxed process. */
export const SANDBOXED_ENV = 'VIRTIOFSD_TS_SANDBOXED';

export interface SandboxedStart {
  /** The options as parsed outside. */
  opts: Options;
  /** The listening socket, inherited across execve. */
  listenFd: number;
  /**
   * 'sandbox': this process is the daemon in its sandbox. 'userns': it is root in the user
   * namespace of --uid-map/--gid-map, and makes the sandbox next.
   */
  stage: 'sandbox' | 'userns';
  /**
   * --socket-path's socket, to remove once the connection is accepted, as outside: its
   * directory (a descriptor kept across execve, since the path is out of view) and name.
   */
  socket?: SocketToRemove;
}

export interface SocketToRemove {
  dirFd: number;
  name: string;
}

/** A descriptor of the socket's directory, for removing the socket from inside (null: none). */
export function socketToRemove(socketPath: string | null): SocketToRemove | null {
  if (!socketPath) return null;
  const fd = native.openat(-100, path.dirname(path.resolve(socketPath)), 0o10000000 | 0o200000); // O_PATH | O_DIRECTORY
  return fd < 0 ? null : { dirFd: fd, name: path.basename(socketPath) };
}

/** The daemon's own files: the package root (dist/, node_modules/, build/, bin/). */
export const APP_DIR = path.resolve(__dirname, '..', '..');

type BindSpec = [src: string, dst: string, readOnly: boolean];
type LinkSpec = [target: string, path: string];

/** What goes into the new root, for a shared directory, this Node and this package. */
export function sandboxLayout(sharedDir: string, nodePath: string, appDir: string): { binds: BindSpec[]; links: LinkSpec[] } {
  const binds: BindSpec[] = [];
  const links: LinkSpec[] = [];
  // The system: /usr, and /bin, /lib, /lib64, /sbin as the host has them (links on a merged
  // /usr, directories otherwise).
  binds.push(['/usr', '/usr', true]);
  for (const d of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
    if (!existsSync(d)) continue;
    if (lstatSync(d).isSymbolicLink()) links.push([readlinkSync(d), d]);
    else binds.push([d, d, true]);
  }
  const node = realpathSync(nodePath);
  // Node installed outside /usr (a tarball in /opt, nvm under a home directory): its tree.
  if (!node.startsWith('/usr/')) binds.push([path.dirname(path.dirname(node)), path.dirname(path.dirname(node)), true]);
  binds.push([appDir, appDir, true]);
  for (const dev of ['null', 'zero', 'random', 'urandom']) binds.push([`/dev/${dev}`, `/dev/${dev}`, true]);
  const shared = realpathSync(sharedDir);
  binds.push([shared, shared, false]);
  return { binds, links };
}

/** Why the sandbox could not be made; `untouched`: the process is as it was (the first step failed). */
export interface SandboxFailure {
  message: string;
  untouched: boolean;
}

/**
 * Enters the sandbox and starts the daemon again inside; returns only on failure, saying
 * why (unless `untouched`, the process may be in a half-made namespace and must exit).
 */
export function enterSandboxAndRestart(opts: Options, listenFd: number, socket: SocketToRemove | null = null): SandboxFailure {
  const mode = sandboxMode(opts);
  if (mode === 'none') throw new Error('no sandbox asked for');
  const { binds, links } = sandboxLayout(opts.sharedDir!, process.execPath, APP_DIR);
  const failed = native.enterSandbox(binds, links, mode === 'namespace');
  if (failed) {
    return {
      message: `cannot set up the ${mode} sandbox (${failed}); it needs CAP_SYS_ADMIN, or run with --sandbox none`,
      untouched: failed.startsWith('unshare:'),
    };
  }
  const capsFailed = native.limitCapabilities(keptCapabilities(opts.modcaps, opts.inodeFileHandles).map((c) => CAPABILITIES[c]));
  if (capsFailed) return { message: `cannot limit the capabilities (${capsFailed})`, untouched: false };
  if (opts.seccomp !== 'none') {
    const seccompFailed = native.installSeccomp(opts.seccomp);
    if (seccompFailed) return { message: `cannot install the seccomp filter (${seccompFailed})`, untouched: false };
  }
  // Certificates are not in the sandbox, and the daemon makes no TLS connection: without
  // this Node would warn at start when the variable names a file.
  delete process.env.NODE_EXTRA_CA_CERTS;
  const failure = restartWith(process.execPath, ownCommand(), 'sandbox', { sandbox: mode }, opts, listenFd, socket);
  return { message: `cannot start again inside the sandbox: ${failure}`, untouched: false };
}

/**
 * Starts `program` in place of this process (execve: same PID), handing it the options as
 * parsed here, changed by `changes`, and the listening socket (and the socket file's
 * directory) as inherited descriptors. Inside, paths are the same: the shared directory and
 * this package are mounted where they were, and the socket is the descriptor now, so no
 * --socket-path or --config is handed on. Returns only on failure, saying why.
 */
function restartWith(
  program: string, argv: string[], stage: SandboxedStart['stage'], changes: Partial<Options>,
  opts: Options, listenFd: number, socket: SocketToRemove | null,
): string {
  const inside: Options = {
    ...opts,
    ...changes,
    sharedDir: realpathSync(opts.sharedDir!),
    socketPath: undefined,
    socketGroup: undefined,
    fd: listenFd,
    config: undefined,
  };
  const start: SandboxedStart = { opts: inside, listenFd, stage, ...(socket ? { socket } : {}) };
  const logFd = syslogFd();
  const kept = [listenFd, ...(socket ? [socket.dirFd] : []), ...(logFd === null ? [] : [logFd])];
  const r = native.execve(program, argv, [`${SANDBOXED_ENV}=${JSON.stringify(start)}`], kept);
  return `execve of ${program} failed (errno ${-r})`;
}

/** This daemon's command line (Node, its options, the script, the daemon's arguments). */
function ownCommand(): string[] {
  return [process.argv0, ...process.execArgv, realpathSync(process.argv[1]), ...process.argv.slice(2)];
}

/**
 * util-linux unshare's options that map these --uid-map (or --gid-map) ranges, for a user
 * whose own ID is `own`: a range of one ID that is the user's own becomes --map-user (mapped
 * directly), any other range --map-users (through newuidmap, package uidmap, and the user's
 * /etc/subuid entries). No range maps the user's own ID to 0. unshare (2.38) takes one of
 * each, so the usual pair (:0:OWN:1: with the subordinate IDs from 1) works and a third
 * range is refused: throws an Error saying so.
 */
export function unshareIdMapArgs(ranges: NamespaceIdMap[], own: number, kind: 'user' | 'group'): string[] {
  if (ranges.length === 0) return [`--map-${kind}=0`];
  const isOwn = (r: NamespaceIdMap): boolean => r.count === 1 && r.outside === own;
  const ownOne = ranges.filter(isOwn);
  const others = ranges.filter((r) => !isOwn(r));
  const option = kind === 'user' ? '--uid-map' : '--gid-map';
  if (ownOne.length > 1 || others.length > 1) {
    throw new Error(`${option}: at most two ranges, the ${kind}'s own ID (:ID:${own}:1:) and one range of subordinate IDs (util-linux unshare maps no more)`);
  }
  // unshare (2.38) takes an own ID just past the range's end for one inside it, and drops
  // the range's last ID.
  if (ownOne.length === 1 && others.length === 1 && ownOne[0].inside === others[0].inside + others[0].count) {
    throw new Error(`${option}: util-linux unshare would drop the last ID of the range just below the ${kind}'s own ID (${ownOne[0].inside}); give the own ID another place`);
  }
  return [
    ...ownOne.map((r) => `--map-${kind}=${r.inside}`),
    ...others.map((r) => `--map-${kind}s=${r.outside},${r.inside},${r.count}`),
  ];
}

/**
 * --uid-map/--gid-map, for a daemon started by an unprivileged user: starts the daemon again
 * (through util-linux's unshare, since a Node process has threads and a user namespace
 * wants a single-threaded caller) as root of a new user namespace with these IDs mapped,
 * where it then makes its sandbox like a root daemon (unshareIdMapArgs says how the ranges
 * are mapped). Returns only on failure, saying why.
 */
export function enterUserNamespaceAndRestart(opts: Options, listenFd: number, socket: SocketToRemove | null = null): string {
  const unshare = ['/usr/bin/unshare', '/bin/unshare'].find((p) => existsSync(p));
  if (!unshare) return '--uid-map/--gid-map need util-linux\'s unshare';
  let maps: string[];
  try {
    maps = [
      ...unshareIdMapArgs(parseNamespaceIdMaps(opts.uidMap), process.geteuid!(), 'user'),
      ...unshareIdMapArgs(parseNamespaceIdMaps(opts.gidMap), process.getegid!(), 'group'),
    ];
  } catch (e) {
    return (e as Error).message;
  }
  const args = ['unshare', ...maps, '--keep-caps', '--', process.execPath, ...ownCommand().slice(1)];
  const failure = restartWith(unshare, args, 'userns', { uidMap: [], gidMap: [], sandbox: 'namespace' }, opts, listenFd, socket);
  return `cannot start again in a user namespace: ${failure}`;
}

/** In the sandboxed process: the start handed over from outside (and forgotten by the environment). */
export function sandboxedStart(): SandboxedStart | null {
  const v = process.env[SANDBOXED_ENV];
  if (v === undefined) return null;
  delete process.env[SANDBOXED_ENV];
  return JSON.parse(v) as SandboxedStart;
}
