/**
 * Starts a virtio-fs daemon as a child process for front-end tests and benchmarks: ours
 * ('ts', bin/virtiofsd-ts), the Rust virtiofsd 1.13 ('rust') or QEMU 7.2's C virtiofsd
 * ('c'). The reference ("anchor") daemons are the wrappers scripts/fetch-anchors.sh puts in
 * .cache/anchors/bin/; when one is missing, startDaemon throws saying so (tests must fail,
 * not skip). Each daemon serves one front-end connection on a fresh socket path and is
 * expected to exit when that connection closes.
 *
 * VIRTIOFSD_ANCHOR_BIN_DIR points elsewhere for the wrappers. Output (stdout and stderr) is
 * kept for error messages; set VIRTIOFSD_TEST_LOG=1 to also echo it. Daemons still running when the test process exits are killed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VhostUserFrontend, type ConnectOptions } from './frontend';

export type DaemonKind = 'ts' | 'rust' | 'c';

export interface DaemonOptions {
  sharedDir: string;
  socketPath: string;
  /** Appended to the default arguments. */
  extraArgs?: string[];
  /** Replace the default arguments after the socket/shared-dir ones (e.g. other cache modes). */
  replaceDefaultArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** A command the daemon runs under, e.g. ['prlimit', '--nofile=256:256']. */
  wrapper?: string[];
  /** virtiofsd-ts only: run the copy of the package in this directory (an unprivileged user's). */
  appDir?: string;
}

export interface DaemonExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** The repository root: the nearest directory up from here with our package.json. */
function findRepoRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        const name = (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown }).name;
        if (name === 'virtiofsd-ts') return dir;
      } catch {
        // not ours; keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the virtiofsd-ts repository above ${__dirname}`);
    dir = up;
  }
}

export const REPO_ROOT = findRepoRoot();
/** Where the reference daemons' wrappers are; VIRTIOFSD_ANCHOR_BIN_DIR overrides it. */
export const ANCHOR_BIN_DIR = process.env.VIRTIOFSD_ANCHOR_BIN_DIR ?? path.join(REPO_ROOT, '.cache', 'anchors', 'bin');

/** The command (and its arguments before the per-run ones) for a kind. */
export function daemonCommand(kind: DaemonKind): { file: string; args: string[]; cwd: string } {
  switch (kind) {
    case 'ts':
      // relative to the repository root, run with the node running the tests; node options
      // for a profile (e.g. --cpu-prof) can be given in VIRTIOFSD_TS_NODE_ARGS
      return {
        file: process.execPath,
        args: [...(process.env.VIRTIOFSD_TS_NODE_ARGS?.split(' ').filter(Boolean) ?? []), 'bin/virtiofsd-ts'],
        cwd: REPO_ROOT,
      };
    case 'rust':
      return { file: path.join(ANCHOR_BIN_DIR, 'virtiofsd-rust'), args: [], cwd: REPO_ROOT };
    case 'c':
      return { file: path.join(ANCHOR_BIN_DIR, 'virtiofsd-c'), args: [], cwd: REPO_ROOT };
  }
}

/** null when the daemon can be started, else why not (with what to do about it). */
export function daemonMissing(kind: DaemonKind): string | null {
  const cmd = daemonCommand(kind);
  const target = kind === 'ts' ? path.join(REPO_ROOT, cmd.args[cmd.args.length - 1]) : cmd.file;
  try {
    fs.accessSync(target, kind === 'ts' ? fs.constants.R_OK : fs.constants.X_OK);
    return null;
  } catch {
    const rel = path.relative(REPO_ROOT, target);
    return kind === 'ts'
      ? `our daemon ${rel} is missing`
      : `the ${kind === 'rust' ? 'Rust' : 'C'} reference virtiofsd ${rel} is missing: run scripts/fetch-anchors.sh`;
  }
}

function perRunArgs(kind: DaemonKind, opts: DaemonOptions): string[] {
  const s = opts.socketPath;
  const d = opts.sharedDir;
  switch (kind) {
    case 'ts':
      return [`--socket-path=${s}`, `--shared-dir=${d}`, ...(opts.replaceDefaultArgs ?? [])];
    case 'rust':
      return [`--socket-path=${s}`, `--shared-dir=${d}`, ...(opts.replaceDefaultArgs ?? ['--sandbox=none', '--cache=never'])];
    case 'c':
      return [`--socket-path=${s}`, '-o', `source=${d}`, ...(opts.replaceDefaultArgs ?? ['-o', 'cache=none'])];
  }
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

const OUTPUT_LIMIT = 64 * 1024;

export class Daemon {
  readonly kind: DaemonKind;
  readonly proc: ChildProcess;
  readonly socketPath: string;
  readonly sharedDir: string;
  readonly commandLine: string;
  exited: DaemonExit | null = null;
  /** virtiofsd-ts's log lines at level error or fatal, all of them (the output keeps the last 64 KiB). */
  readonly errorLines: string[] = [];
  private out = '';
  private readonly exitPromise: Promise<DaemonExit>;

  constructor(kind: DaemonKind, opts: DaemonOptions) {
    const missing = daemonMissing(kind);
    if (missing) throw new Error(`cannot start the ${kind} daemon: ${missing}`);
    const cmd = kind === 'ts' && opts.appDir ? { ...daemonCommand(kind), cwd: opts.appDir } : daemonCommand(kind);
    // VIRTIOFSD_TEST_EXTRA_ARGS: options added to every virtiofsd-ts the tests start (the
    // seccomp test runs part of the suite again with --seccomp=kill this way).
    const envArgs = kind === 'ts' && process.env.VIRTIOFSD_TEST_EXTRA_ARGS ? process.env.VIRTIOFSD_TEST_EXTRA_ARGS.split(' ').filter(Boolean) : [];
    const own = [cmd.file, ...cmd.args, ...perRunArgs(kind, opts), ...(opts.extraArgs ?? []), ...envArgs];
    // VIRTIOFSD_TEST_WRAPPER (e.g. 'strace -ff -o /tmp/trace'): a command line put before
    // every virtiofsd-ts the tests start without a wrapper of their own.
    const envWrapper = kind === 'ts' && process.env.VIRTIOFSD_TEST_WRAPPER ? process.env.VIRTIOFSD_TEST_WRAPPER.split(' ').filter(Boolean) : [];
    const [file, ...args] = [...(opts.wrapper ?? envWrapper), ...own];
    this.kind = kind;
    this.socketPath = opts.socketPath;
    this.sharedDir = opts.sharedDir;
    this.commandLine = [file, ...args].join(' ');
    this.proc = spawn(file, args, {
      cwd: cmd.cwd,
      env: opts.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(this.proc);
    installExitHook();
    const echo = process.env.VIRTIOFSD_TEST_LOG === '1';
    // Each stream has its own unfinished last line: a chunk of one arriving in the middle of
    // a line of the other must not split that line.
    const collector = (): ((chunk: Buffer) => void) => {
      let partialLine = '';
      return (chunk: Buffer): void => {
        const text = chunk.toString('utf8');
        this.out += text;
        const lines = (partialLine + text).split('\n');
        partialLine = lines.pop() ?? '';
        for (const l of lines) if (/^\{"level":(50|60),/.test(l)) this.errorLines.push(l);
        if (this.out.length > OUTPUT_LIMIT) this.out = this.out.slice(-OUTPUT_LIMIT);
        if (echo) process.stderr.write(`[${kind} virtiofsd] ${text}`);
      };
    };
    this.proc.stdout?.on('data', collector());
    this.proc.stderr?.on('data', collector());
    this.exitPromise = new Promise((resolve) => {
      this.proc.on('error', (e) => {
        this.out += `\nspawn error: ${e.message}`;
      });
      this.proc.on('close', (code, signal) => {
        live.delete(this.proc);
        this.exited = { code, signal };
        resolve(this.exited);
      });
    });
  }

  /** What the daemon printed (last 64 KiB). */
  output(): string {
    return this.out;
  }

  /**
   * virtiofsd-ts's report when its connection closed (the 'connection closed' JSON log line:
   * requestsPerQueue, opcodesPerQueue, pollsPerQueue, pooledPerQueue, nativePerQueue); throws with the output when missing.
   */
  exitReport<T extends object>(): T {
    return this.logLine<T>('connection closed');
  }

  /** The JSON log lines of the output (its last 64 KiB), parsed, in order. */
  logLines<T extends { msg?: string }>(): T[] {
    return this.out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as T);
  }

  /** The first JSON log line with this message; throws with the output's tail if there is none. */
  logLine<T extends object>(msg: string): T {
    const line = this.logLines().find((l) => l.msg === msg);
    if (!line) throw new Error(`no '${msg}' line in the daemon's output:\n${this.out.slice(-2000)}`);
    return line as T;
  }

  describeExit(): string {
    if (!this.exited) return 'still running';
    const how = this.exited.signal ? `signal ${this.exited.signal}` : `code ${this.exited.code}`;
    return `exited with ${how}; output:\n${this.out.trim()}`;
  }

  /** Waits for the daemon to exit on its own; fails after timeoutMs. */
  waitExit(timeoutMs = 5000): Promise<DaemonExit> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`${this.kind} virtiofsd did not exit within ${timeoutMs} ms (pid ${this.proc.pid})`)),
        timeoutMs,
      );
      void this.exitPromise.then((e) => {
        clearTimeout(t);
        resolve(e);
      });
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited after timeoutMs. */
  async stop(timeoutMs = 3000): Promise<DaemonExit> {
    if (this.exited) return this.exited;
    this.proc.kill('SIGTERM');
    try {
      return await this.waitExit(timeoutMs);
    } catch {
      this.proc.kill('SIGKILL');
      return this.waitExit(timeoutMs);
    }
  }

  /**
   * Connects a front end, giving up early (with the daemon's output) if it exits; if the
   * daemon dies later, everything waiting on the front end fails with its exit status.
   */
  async connect(opts: ConnectOptions = {}): Promise<VhostUserFrontend> {
    const fe = await VhostUserFrontend.connect(this.socketPath, {
      ...opts,
      abortIf: () => (this.exited ? `${this.kind} virtiofsd ${this.describeExit()}` : (opts.abortIf?.() ?? null)),
    });
    void this.exitPromise.then(() => fe.abort(new Error(`${this.kind} virtiofsd ${this.describeExit()}`)));
    return fe;
  }
}

export function startDaemon(kind: DaemonKind, opts: DaemonOptions): Daemon {
  return new Daemon(kind, opts);
}
