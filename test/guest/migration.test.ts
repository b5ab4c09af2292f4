/**
 * @guest A live migration under real QEMU 10.0: a Linux 6.12 guest on one QEMU and one
 * virtiofsd-ts moves to a second QEMU (-incoming) and a second virtiofsd-ts on the same share,
 * while it writes and reads back files there and holds files open and locked. The source daemon
 * logs the pages it writes while QEMU copies memory (SET_LOG_BASE, VHOST_F_LOG_ALL), and once
 * the source is stopped it hands its device state (inodes, lookup counts, open handles, the
 * FUSE session) to QEMU (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE); the destination daemon
 * takes it before its queues start. The guest then finishes on the destination, through the
 * descriptors it opened on the source, with every file intact and no new FUSE session.
 * Fails, never skips, when QEMU 10.0 or the guest image is missing.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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

describe(`@guest a QEMU ${combo.qemu} live migration between two virtiofsd-ts (Linux ${combo.kernel})`, function () {
  this.timeout(360_000);
  const daemons: RunningDaemon[] = [];
  const guests: ChildProcess[] = [];
  afterEach(async () => {
    for (const g of guests.splice(0)) if (g.exitCode === null) g.kill();
    for (const d of daemons.splice(0)) await d.stop();
  });

  before(function () {
    const missing = comboMissing(combo);
    assert.equal(missing, null, missing ?? '');
  });

  // One request queue, and two with an I/O pool (two writers then, one per vCPU).
  for (const cfg of [
    { queues: 1, args: [] as string[] },
    // By file handle: the guest also holds a file whose name it removed.
    { queues: 2, args: ['--thread-pool-size=4', '--migration-mode=file-handles'] },
  ]) {
    it(`moves a guest that writes and holds files open to a second QEMU and daemon; it goes on with its descriptors (${cfg.queues} request queue${cfg.queues > 1 ? 's' : ''}${cfg.args.length ? ', ' + cfg.args.join(' ') : ''})`, async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'vfsd-mig-'));
      const share = path.join(dir, 'share');
      mkdirSync(share);
      mkdirSync(path.join(share, 'held'));
      writeFileSync(path.join(share, 'held', 'r'), 'line one\nline two\n');
      const src = await startOurDaemon(share, ['--cache=never', ...cfg.args]);
      const dst = await startOurDaemon(share, ['--cache=never', ...cfg.args]);
      daemons.push(src, dst);
      const byHandle = cfg.args.includes('--migration-mode=file-handles');
      // 40 s of writing 256 KiB files and comparing them with what was written (by two writers
      // with two queues), with one file open for reading, one for appending and one flock()ed
      // from the start; all three are used again at the end, on the destination.
      const cmd =
        'exec 3</mnt/held/r 4>>/mnt/held/w 5>/mnt/held/lock; flock -x 5 || exit 1; read a <&3; echo "FIRST $a"; echo source >&4; ' +
        (byHandle ? 'echo kept > /mnt/held/t; exec 6</mnt/held/t; rm /mnt/held/t; ' : '') +
        'L() { i=0; end=$(( $(date +%s) + 40 )); while [ $(date +%s) -lt $end ]; do i=$((i+1)); ' +
        'dd if=/dev/urandom of=/tmp/$1 bs=64k count=4 2>/dev/null; cp /tmp/$1 /mnt/$1$((i%20)); ' +
        'cmp /tmp/$1 /mnt/$1$((i%20)) || { echo MISMATCH $1 $i; return 1; }; done; echo "LOOPS $1 $i"; }; ' +
        (cfg.queues > 1 ? 'L f & p=$!; L g || exit 1; wait $p || exit 1; ' : 'L f || exit 1; ') +
        'read b <&3 || { echo "HELD READ FAILED"; exit 1; }; echo "SECOND $b"; echo destination >&4 || exit 1; ' +
        'flock -n -x /mnt/held/free -c true && echo "FREE LOCKED"; ' +
        'if flock -n -x /mnt/held/lock -c true; then echo "LOCK LOST"; else echo "LOCK KEPT"; fi' +
        (byHandle ? '; read c <&6 && echo "UNLINKED $c"' : '');
      const qemuDir = path.dirname(combo.binary);
      const boot = (socket: string, extra: string[]): { out: () => string; exited: Promise<number | null>; proc: ChildProcess } => {
        const proc = spawn(
          'bash',
          [
            path.join(REPO, 'scripts', 'run-guest.sh'), '--socket', socket, '--qemu', combo.binary, '--kernel', combo.kernel,
            '--qemu-arg', '-L', '--qemu-arg', qemuDir, ...extra.flatMap((a) => ['--qemu-arg', a]), '--cmd', cmd, '--timeout', '150',
            '--queues', String(cfg.queues),
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        guests.push(proc);
        let out = '';
        proc.stdout!.on('data', (b: Buffer) => (out += b.toString()));
        proc.stderr!.on('data', (b: Buffer) => (out += b.toString()));
        return { out: () => out, exited: new Promise((r) => proc.on('exit', (code) => r(code))), proc };
      };
      const qmpSocket = path.join(dir, 'qmp.sock');
      const migSocket = path.join(dir, 'mig.sock');
      const source = boot(src.socketPath, ['-qmp', `unix:${qmpSocket},server=on,wait=off`]);
      const has = (d: RunningDaemon, msg: string): boolean => d.lines().some((l) => l.msg === msg);
      const deadline = Date.now() + 300_000;

      // The guest has mounted the share and runs its loop: start the destination and migrate.
      await until('the guest to mount the share', deadline, () => has(src, 'FUSE session started'));
      await until('the guest to start writing', deadline, () => /FIRST line one/.test(source.out()));
      const destination = boot(dst.socketPath, ['-incoming', `unix:${migSocket}`]);
      await until('the destination QEMU to listen', deadline, () => existsSync(migSocket));
      const qmp = await Qmp.connect(qmpSocket, deadline);
      let status = '';
      let error = '';
      let stats: Record<string, unknown> = {};
      try {
        // Downtime: the stopped source's last pages and the device state. TCG dirties memory
        // slowly enough for the precopy to converge at full speed.
        await qmp.cmd('migrate-set-parameters', { 'downtime-limit': 2000 });
        await qmp.cmd('migrate', { uri: `unix:${migSocket}` });
        for (;;) {
          const r = await qmp.cmd('query-migrate');
          stats = r;
          status = String(r.status ?? '');
          error = String(r['error-desc'] ?? '');
          if (['failed', 'completed', 'cancelled'].includes(status)) break;
          if (Date.now() > deadline) throw new Error(`migration still ${status}`);
          await new Promise((r) => setTimeout(r, 500));
        }
        // The source QEMU has sent everything (postmigrate). It goes once the destination has
        // taken the device state, as libvirt ends a source only after the destination took
        // over: until then the source daemon's descriptors keep alive the files the guest
        // holds open after their last name went, which the destination opens by file handle.
        if (status === 'completed') {
          await until('the destination daemon to take the device state', deadline, () =>
            dst.lines().some((l) => l.msg === 'device state loaded from migration' || /device state not transferred/.test(String(l.msg))),
          );
          await qmp.cmd('quit').catch(() => undefined);
        }
      } finally {
        qmp.close();
      }
      assert.equal(status, 'completed', `migration ${status}: ${error}\nsource:\n${source.out().slice(-3000)}\nsource daemon:\n${src.log().slice(-3000)}\ndestination daemon:\n${dst.log().slice(-3000)}`);
      const code = await destination.exited;
      const out = destination.out();
      assert.equal(code, 0, `the guest command failed on the destination:\n${out}\ndestination daemon:\n${dst.log().slice(-3000)}`);
      assert.match(out, /LOOPS f \d+/);
      if (cfg.queues > 1) assert.match(out, /LOOPS g \d+/);
      assert.doesNotMatch(out, /MISMATCH/);
      // Through the descriptors opened on the source: the next line of the file being read,
      // and the appended line after the one written before the move.
      assert.match(out, /SECOND line two/);
      assert.equal(readFileSync(path.join(share, 'held', 'w'), 'utf8'), 'source\ndestination\n');
      // The flock() taken on the source still keeps another open file description out.
      // (and the same command does lock a file nobody holds).
      assert.match(out, /LOCK KEPT/);
      assert.match(out, /FREE LOCKED/);
      // By file handle, the file whose name went is still read through its descriptor.
      if (byHandle) assert.match(out, /UNLINKED kept/);
      await source.exited;

      // The source logged dirty pages during the precopy and saved its state; the destination
      // loaded it, served the guest's requests without a new FUSE session, and nobody warned.
      const srcMsgs = src.lines().map((l) => l.msg);
      assert.ok(srcMsgs.includes('dirty-page logging on (migration started)'), `no dirty logging:\n${src.log().slice(-3000)}`);
      const saved = src.lines().find((l) => l.msg === 'device state saved for migration');
      assert.ok(saved && (saved.inodes as number) >= 4 && (saved.handles as number) >= 3, `saved: ${JSON.stringify(saved)}`);
      // By path, the paths of the files held open since before the precopy were found then,
      // not in the downtime.
      if (!byHandle) assert.ok((saved.pathsFromPrecopy as number) >= 3, `paths found during the precopy: ${JSON.stringify(saved)}`);
      const loaded = dst.lines().find((l) => l.msg === 'device state loaded from migration');
      // What it cost, for the record: QEMU's figures and the state's size.
      process.stderr.write(
        `      (migration: ${String(stats['total-time'])} ms in all, ${String(stats.downtime)} ms of downtime; ` +
          `device state ${String(saved.bytes)} bytes: ${String(saved.inodes)} inodes (${String(saved.pathsFromPrecopy)} paths from the precopy), ${String(saved.handles)} handles, ${String(saved.lockOwners)} lock owners)\n`,
      );
      assert.deepEqual([loaded?.inodes, loaded?.handles], [saved.inodes, saved.handles], `loaded: ${JSON.stringify(loaded)}`);
      assert.ok(!has(dst, 'FUSE session started'), 'the destination saw a new FUSE session');
      for (const d of [src, dst]) assert.deepEqual(d.lines().filter((l) => (l.level as number) >= 40), [], 'no warning or error');
      await dst.stop();
      const report = dst.lines().find((l) => l.msg === 'connection closed') as { requestsPerQueue?: Record<string, number> } | undefined;
      for (let q = 1; q <= cfg.queues; q++) assert.ok((report?.requestsPerQueue?.[String(q)] ?? 0) > 100, `the destination served on queue ${q}: ${JSON.stringify(report)}`);
    });
  }
});
