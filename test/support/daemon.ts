/**
 * Test helper: runs bin/virtiofsd-ts as a child process on a temp socket, as a user would,
 * and collects its stderr (pino JSON lines) for assertions.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const BIN = path.join(REPO, 'bin', 'virtiofsd-ts');

export interface RunningDaemon {
  proc: ChildProcess;
  socketPath: string;
  /** Everything the daemon wrote to stderr so far. */
  log(): string;
  /** Parsed log lines. */
  lines(): Array<Record<string, unknown>>;
  /** Resolves with the exit code once the daemon has exited. */
  exited: Promise<number | null>;
  stop(): Promise<number | null>;
}

export async function startOurDaemon(sharedDir: string, extraArgs: string[] = [], wrapper: string[] = []): Promise<RunningDaemon> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vfsd-sock-'));
  const socketPath = path.join(dir, 'vfs.sock');
  const [file, ...args] = [...wrapper, process.execPath, BIN, `--socket-path=${socketPath}`, `--shared-dir=${sharedDir}`, ...extraArgs];
  const proc = spawn(file, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  while (!existsSync(socketPath)) {
    if (proc.exitCode !== null) throw new Error(`daemon exited early (${proc.exitCode}): ${err}`);
    if (Date.now() > deadline) throw new Error(`daemon did not create ${socketPath} within 10 s: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    socketPath,
    log: () => err,
    lines: () =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    exited,
    async stop() {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}
