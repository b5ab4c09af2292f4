/**
 * @guest Dirty-page logging under a real QEMU 10.0 migration: while a Linux 6.12 guest writes
 * and reads back files on the share, QEMU is told over QMP to migrate (to a pipe that drops
 * the stream, at 32 MiB/s so that the precopy lasts seconds). QEMU maps our dirty log
 * (SET_LOG_BASE), turns logging on (VHOST_F_LOG_ALL, SET_VRING_ADDR again on the running
 * rings) and copies memory while the guest keeps writing. The device state does not move yet,
 * so QEMU then fails the migration at its last step (no DEVICE_STATE) and resumes the guest:
 * logging goes off and the guest finishes its work with every file intact. When the device
 * state lands, this test will expect the migration to complete instead.
 * Fails, never skips, when QEMU 10.0 or the guest image is missing.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { REPO, startOurDaemon, type RunningDaemon } from '../support/daemon';
import { COMBINATIONS, comboMissing } from './runner';

/** A QMP client: one command at a time, events skipped. */
class Qmp {
  private buf = '';
  private waiters: Array<(line: Record<string, unknown>) => void> = [];
  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let nl;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = JSON.parse(this.buf.slice(0, nl)) as Record<string, unknown>;
        this.buf = this.buf.slice(nl + 1);
        if ('event' in line) continue;
        this.waiters.shift()?.(line);
      }
    });
  }

  static async connect(file: string, deadline: number): Promise<Qmp> {
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection(file, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qmp(sock);
        await q.next(); // the greeting
        await q.cmd('qmp_capabilities');
        return q;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private next(): Promise<Record<string, unknown>> {
    return new Promise((r) => this.waiters.push(r));
  }

  async cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const reply = this.next();
    this.sock.write(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    const r = await reply;
    if ('error' in r) throw new Error(`${execute}: ${JSON.stringify(r.error)}`);
    return r.return as Record<string, unknown>;
  }

  close(): void {
    this.sock.destroy();
  }
}

const until = async (what: string, deadline: number, ok: () => boolean): Promise<void> => {
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
};

const combo = COMBINATIONS.find((c) => c.qemu === '10.0')!;

describe(`@guest a QEMU ${combo.qemu} migration attempt on virtiofsd-ts (Linux ${combo.kernel})`, function () {
  this.timeout(300_000);
  let d: RunningDaemon | null = null;

  before(function () {
    const missing = comboMissing(combo);
    assert.equal(missing, null, missing ?? '');
  });

  it('logs dirty pages through the precopy while the guest writes; the refused end leaves the guest and its files intact', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vfsd-mig-'));
    const qmpSocket = path.join(dir, 'qmp.sock');
    const share = path.join(dir, 'share');
    mkdirSync(share);
    d = await startOurDaemon(share, ['--cache=never']);
    // 45 s of writing 256 KiB files and comparing them with what was written.
    const cmd =
      'i=0; end=$(( $(date +%s) + 45 )); while [ $(date +%s) -lt $end ]; do i=$((i+1)); ' +
      'dd if=/dev/urandom of=/tmp/r bs=64k count=4 2>/dev/null; cp /tmp/r /mnt/f$((i%20)); ' +
      'cmp /tmp/r /mnt/f$((i%20)) || { echo MISMATCH $i; exit 1; }; done; echo "LOOPS $i"';
    const qemuDir = path.dirname(combo.binary);
    const guest = spawn(
      'bash',
      [
        path.join(REPO, 'scripts', 'run-guest.sh'), '--socket', d.socketPath, '--qemu', combo.binary, '--kernel', combo.kernel,
        '--qemu-arg', '-L', '--qemu-arg', qemuDir, '--qemu-arg', '-qmp', '--qemu-arg', `unix:${qmpSocket},server=on,wait=off`,
        '--cmd', cmd, '--timeout', '120',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    guest.stdout.on('data', (b: Buffer) => (out += b.toString()));
    guest.stderr.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => guest.on('exit', (code) => r(code)));
    const has = (msg: string): boolean => d!.lines().some((l) => l.msg === msg);
    const deadline = Date.now() + 240_000;

    // The guest has mounted the share: migrate while it writes.
    await until('the guest to mount the share', deadline, () => has('FUSE session started'));
    const qmp = await Qmp.connect(qmpSocket, deadline);
    let status = '';
    let error = '';
    try {
      await qmp.cmd('migrate-set-parameters', { 'max-bandwidth': 32 * 1024 * 1024 });
      await qmp.cmd('migrate', { uri: 'exec:cat > /dev/null' });
      for (;;) {
        const r = await qmp.cmd('query-migrate');
        status = String(r.status ?? '');
        error = String(r['error-desc'] ?? '');
        if (['failed', 'completed', 'cancelled'].includes(status)) break;
        if (Date.now() > deadline) throw new Error(`migration still ${status}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    } catch (e) {
      guest.kill();
      throw e;
    } finally {
      qmp.close();
    }
    const code = await exited;

    assert.equal(code, 0, `guest command failed:\n${out}\ndaemon:\n${d.log().slice(-3000)}`);
    assert.match(out, /LOOPS \d+/, out);
    assert.doesNotMatch(out, /MISMATCH/);
    assert.equal(status, 'failed', `migration ${status}: ${error}`);
    assert.match(error, /vhost-user-fs-backend/);
    const msgs = d.lines().map((l) => l.msg);
    const on = msgs.indexOf('dirty-page logging on (migration started)');
    assert.ok(msgs.indexOf('dirty log mapped') >= 0 && on >= 0, `no dirty logging in the daemon's log:\n${d.log().slice(-3000)}`);
    assert.ok(msgs.indexOf('dirty-page logging off') > on, 'logging not turned off after the failed migration');
    const complaints = d.lines().filter((l) => (l.level as number) >= 40);
    assert.deepEqual(complaints, [], 'the migration attempt logs no warning or error');
    await d.exited;
  });
});
