/**
 * The open file limit the daemon sets at start (src/limits.ts), read from /proc/PID/limits
 * of a daemon started as a user would start it: by default raised as the Rust virtiofsd
 * raises it, --rlimit-nofile N to N, 0 left alone, an N above the kernel's maximum refused.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_NOFILE } from '../../src/limits';
import { REPO_ROOT } from '../frontend/daemons';

const BIN = path.join(REPO_ROOT, 'bin', 'virtiofsd-ts');
const nrOpen = Number(fs.readFileSync('/proc/sys/fs/nr_open', 'utf8'));

/** Max open files (soft, hard) of a process. */
function limitsOf(pid: number): [number, number] {
  const line = fs.readFileSync(`/proc/${pid}/limits`, 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
  const m = /Max open files\s+(\d+)\s+(\d+)/.exec(line ?? '');
  assert.ok(m, `no open file limit in /proc/${pid}/limits`);
  return [Number(m[1]), Number(m[2])];
}

/** Starts the daemon with args; once it listens, returns its limits and stops it. Or its exit status and stderr if it exits first. */
async function startAndRead(args: string[], softLimit?: number): Promise<{ limits?: [number, number]; status?: number; stderr: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-limits-'));
  const sock = path.join(dir, 'vfs.sock');
  // `prlimit` lowers the soft limit the daemon inherits, as a login shell's 1024 would be.
  const cmd = softLimit === undefined ? [BIN] : ['prlimit', `--nofile=${softLimit}:`, BIN];
  const child = spawn(cmd[0], [...cmd.slice(1), `--socket-path=${sock}`, `--shared-dir=${dir}`, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
  try {
    for (let i = 0; i < 200; i++) {
      if (child.exitCode !== null) return { status: await exited, stderr };
      if (fs.existsSync(sock)) return { limits: limitsOf(child.pid!), stderr };
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`the daemon neither listened nor exited: ${stderr}`);
  } finally {
    child.kill('SIGTERM');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Whether this process (and so the daemon it starts) may raise hard limits. */
function hasSysResource(): boolean {
  const eff = /CapEff:\s*([0-9a-f]+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1];
  return (BigInt(`0x${eff}`) & (1n << 24n)) !== 0n; // CAP_SYS_RESOURCE
}

describe('virtiofsd-ts open file limit (--rlimit-nofile)', function () {
  this.timeout(30000);
  const want = Math.min(DEFAULT_NOFILE, nrOpen);
  const hard = limitsOf(process.pid)[1];

  it(`by default raises a low limit to min(1,000,000, nr_open) = ${want} as the Rust virtiofsd does, or to the hard limit without CAP_SYS_RESOURCE`, async () => {
    const r = await startAndRead([], 1024);
    if (hasSysResource() || hard >= want) {
      assert.deepEqual(r.limits, [want, Math.max(want, hard)], r.stderr);
    } else {
      assert.deepEqual(r.limits, [hard, hard], r.stderr);
      assert.match(r.stderr, /open file limit kept at its hard limit/);
    }
  });

  it('--rlimit-nofile N above the limit in force: N with CAP_SYS_RESOURCE, else a refusal at start; 0 changes nothing', async () => {
    const n = Math.min(hard + 1000, nrOpen);
    const r = await startAndRead([`--rlimit-nofile=${n}`]);
    if (hasSysResource()) {
      assert.deepEqual(r.limits, [n, n], r.stderr);
    } else {
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`cannot raise the open file limit to ${n}`));
    }
    // Node itself raises the soft limit to the hard one as it starts; 0 adds nothing to that.
    assert.deepEqual((await startAndRead(['--rlimit-nofile=0'], 1024)).limits, [hard, hard]);
  });

  it('refuses an N above the kernel maximum (nr_open), saying why', async () => {
    const r = await startAndRead([`--rlimit-nofile=${nrOpen + 1}`]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /nr_open/);
  });
});
