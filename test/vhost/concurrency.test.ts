/**
 * Concurrency inside one queue, and between queues. With --thread-pool-size=0 (the Rust
 * virtiofsd's meaning) every request the fast path serves runs on its queue's thread, in
 * order; with a pool, a
 * request that blocks (an fsync of 128 MiB of dirty data here) holds back none behind it,
 * and completions reach the used ring out of order. Whatever the pool, a request blocking
 * one queue holds back nothing on another, not even a request the JS thread that all queues
 * share serves, and not when JS serves the blocking one itself; and a lock wait JS serves
 * holds back nothing behind it on its own queue, whose kick thread serves on.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { native } from '../../src/native';
import { startDaemon, type Daemon, type DaemonExit } from '../frontend/daemons';
import type { VhostUserFrontend } from '../frontend/frontend';
import { FuseClient, ok } from '../frontend/fuse-client';

/**
 * Runs body against our daemon (exactly `args`) on a new share holding `files`, connected
 * with 32 MiB of guest memory and `queues` request queues, past INIT on queue 1; then
 * closes the connection, stops the daemon and removes the share.
 */
async function onDaemon<T>(
  o: { files: Record<string, string>; args: string[]; queues?: number; timeoutMs?: number },
  body: (d: { daemon: Daemon; fe: VhostUserFrontend; c: FuseClient }) => Promise<T>,
): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-conc-'));
  fs.mkdirSync(path.join(dir, 'share'));
  for (const [name, data] of Object.entries(o.files)) fs.writeFileSync(path.join(dir, 'share', name), data);
  const daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: o.args });
  const fe = await daemon.connect();
  try {
    await fe.negotiate({ memory: { size: 32 << 20 }, requestQueues: o.queues ?? 1 });
    const c = new FuseClient(fe, { timeoutMs: o.timeoutMs ?? 60000 });
    ok(await c.init(), 'INIT');
    return await body({ daemon, fe, c });
  } finally {
    fe.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The share's file 'dirty' looked up, opened and written with 128 MiB (page-cached, not yet on disk). */
async function dirtyFile(c: FuseClient): Promise<{ e: abi.EntryOut; o: abi.OpenOut }> {
  const e = ok(await c.lookup(1n, 'dirty'), 'LOOKUP');
  const o = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN');
  const chunk = Buffer.alloc(1 << 20, 0xab);
  for (let i = 0; i < 128; i++) ok(await c.write(o.fh, i * chunk.length, chunk, { nodeid: e.nodeid }), 'WRITE');
  return { e, o };
}

function fsyncArgs(fh: number | bigint): Buffer {
  const args = Buffer.alloc(abi.FSYNC_IN_SIZE);
  abi.encodeFsyncIn(args, 0, { fh: BigInt(fh), fsyncFlags: 0 });
  return args;
}

/**
 * An FSYNC of 128 MiB of dirty data on queue 1, and while it runs a GETATTR on queue
 * `otherQueue` (and an IOCTL there, which JS serves, when that is not queue 1): the order in
 * which they completed.
 */
async function fsyncThenGetattr(pool: number, otherQueue = 1, extraArgs: string[] = [], stopQueue1 = false): Promise<string[]> {
  return onDaemon({ files: { dirty: '' }, args: [`--thread-pool-size=${pool}`, ...extraArgs], queues: otherQueue }, async ({ fe, c }) => {
    const other = new FuseClient(fe, { timeoutMs: 60000, queue: otherQueue });
    const { e, o } = await dirtyFile(c);
    const order: string[] = [];
    let fsyncAt = 0n;
    let stoppedAt = 0n;
    const fsync = c.request(abi.Opcode.FSYNC, e.nodeid, fsyncArgs(o.fh), 0).then((r) => {
      assert.equal(r.error, 0);
      order.push('fsync');
      fsyncAt = process.hrtime.bigint();
    });
    // The front end stops queue 1 (GET_VRING_BASE) while the fsync runs: the daemon answers
    // once the fsync is on the used ring, and serves the other queues meanwhile.
    let stopped: Promise<void> = Promise.resolve();
    if (stopQueue1) {
      await new Promise((r) => setTimeout(r, 20));
      stopped = fe.getVringBase(1).then((base) => {
        order.push('stopped');
        stoppedAt = process.hrtime.bigint();
        // Answered once every request of queue 1, the fsync included, was on the used ring.
        const q = fe.queue(1).vq;
        assert.equal(q.readUsedIdx(), q.availIdx, 'the stop was answered before the fsync was on the used ring');
        assert.equal(base, q.availIdx);
      });
      await new Promise((r) => setTimeout(r, 5));
    }
    const getattr = other.getattr(e.nodeid).then((r) => {
      assert.equal(r.error, 0);
      order.push('getattr');
    });
    const ioctl =
      otherQueue === 1
        ? Promise.resolve()
        : getattr
            .then(() => other.ioctl(e.nodeid))
            .then((r) => {
              assert.equal(r.error, 0);
              order.push('ioctl');
            });
    await Promise.all([fsync, getattr, ioctl, stopped]);
    // The stop's reply follows the fsync's at once, not at whatever event came next.
    if (stopQueue1) assert.ok(stoppedAt - fsyncAt < 1_000_000_000n && fsyncAt - stoppedAt < 1_000_000_000n, `fsync done at ${fsyncAt}, stop answered at ${stoppedAt}`);
    if (!stopQueue1) ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
    return order;
  });
}

/** A write lock of [0, 0] on `fh` for `owner` (fuse_lk_in). */
function lk(fh: bigint, owner: bigint): Buffer {
  const x = Buffer.alloc(abi.LK_IN_SIZE);
  abi.encodeLkIn(x, 0, { fh, owner, lk: { start: 0n, end: 0n, type: 1 /* F_WRLCK */, pid: 1 }, lkFlags: 0 });
  return x;
}

/** The share's file `lock` opened twice (a and b), and its lock taken by owner 1 through a. */
async function lockTaken(c: FuseClient): Promise<{ l: abi.EntryOut; a: bigint; b: bigint }> {
  const l = ok(await c.lookup(1n, 'lock'), 'LOOKUP lock');
  const a = ok(await c.open(l.nodeid, fs.constants.O_RDWR), 'OPEN a').fh;
  const b = ok(await c.open(l.nodeid, fs.constants.O_RDWR), 'OPEN b').fh;
  assert.equal((await c.request(abi.Opcode.SETLK, l.nodeid, lk(a, 1n), 0)).error, 0, 'owner 1 takes the lock');
  return { l, a, b };
}

/**
 * Two request queues, no pool. On queue 1 a SETLKW waits for a lock another owner holds (JS
 * serves it); an FSYNC of 128 MiB of dirty data comes next on queue 1, then a GETATTR on
 * queue 1 and an IOCTL (JS's) on queue 2, then the FLUSH that frees the lock. Returns the order of
 * completion and the exit report.
 */
async function fsyncWhileSetlkwWaits(): Promise<{ order: string[]; fsyncMs: number; report: { nativeOpcodesPerQueue: Record<string, Record<string, number>>; opcodesPerQueue: Record<string, Record<string, number>> } }> {
  return onDaemon({ files: { dirty: '', lock: 'x' }, args: ['--thread-pool-size=0'], queues: 2 }, async ({ daemon, fe, c }) => {
    const other = new FuseClient(fe, { timeoutMs: 60000, queue: 2 });
    const { e, o } = await dirtyFile(c);
    const { l, a, b } = await lockTaken(c);
    const order: string[] = [];
    const setlkw = c.request(abi.Opcode.SETLKW, l.nodeid, lk(b, 2n), 0).then((r) => {
      assert.equal(r.error, 0);
      order.push('setlkw');
    });
    await new Promise((r) => setTimeout(r, 20));
    const fsyncSent = Date.now();
    let fsyncMs = 0;
    const fsync = c.request(abi.Opcode.FSYNC, e.nodeid, fsyncArgs(o.fh), 0).then((r) => {
      assert.equal(r.error, 0);
      order.push('fsync');
      fsyncMs = Date.now() - fsyncSent;
    });
    await new Promise((r) => setTimeout(r, 5));
    const getattr = c.getattr(l.nodeid).then((r) => {
      ok(r, 'GETATTR');
      order.push('getattr');
    });
    ok(await other.ioctl(l.nodeid), 'IOCTL');
    order.push('ioctl');
    const flush = Buffer.alloc(abi.FLUSH_IN_SIZE);
    abi.encodeFlushIn(flush, 0, { fh: BigInt(a), lockOwner: 1n });
    assert.equal((await other.request(abi.Opcode.FLUSH, l.nodeid, flush, 0)).error, 0, 'FLUSH of owner 1');
    await Promise.all([setlkw, fsync, getattr]);
    fe.close();
    await daemon.stop();
    return { order, fsyncMs, report: daemon.exitReport() };
  });
}

/**
 * Two request queues. A SETLKW waits on queue 1 (JS serves it; queue 1's kick thread popped
 * it and goes on), a GETATTR behind it is served; then 16 IOCTLs (JS's too) go on queue 1
 * and the front end stops queue 1 at once, while they may still be queued for JS. Returns
 * the replies of those the stop's index covers, and the indices when the stop's reply came.
 */
async function stopWhileSetlkwWaits(): Promise<{ setlkwError: number; base: number; availBefore: number; availIdx: number; usedIdx: number; getattrError: number; ioctlErrors: number[] }> {
  return onDaemon({ files: { lock: 'x' }, args: ['--thread-pool-size=0'], queues: 2, timeoutMs: 20000 }, async ({ fe, c }) => {
    const { l, b } = await lockTaken(c);
    let setlkwError = -1;
    const setlkw = c.request(abi.Opcode.SETLKW, l.nodeid, lk(b, 2n), 0).then((r) => (setlkwError = r.error));
    await new Promise((r) => setTimeout(r, 20));
    const getattrError = (await c.getattr(l.nodeid)).error;
    assert.equal(setlkwError, -1, 'the SETLKW still waits');
    const q = fe.queue(1).vq;
    const availBefore = q.availIdx;
    // Those past the stop's index stay on the ring unanswered until the front end closes.
    const ioctls = Array.from({ length: 16 }, () => c.request(abi.Opcode.IOCTL, l.nodeid, Buffer.alloc(32), 0).then((r) => r.error, () => 1));
    let usedIdx = -1;
    const base = await fe.getVringBase(1).then((x) => {
      usedIdx = q.readUsedIdx();
      return x;
    });
    await setlkw;
    const covered = (base - availBefore + 0x10000) % 0x10000;
    return { setlkwError, base, availBefore, availIdx: q.availIdx, usedIdx, getattrError, ioctlErrors: await Promise.all(ioctls.slice(0, covered)) };
  });
}

interface LogLine {
  msg?: string;
  level?: number;
  queue?: number;
}

/**
 * SIGTERM while a SET_VRING_KICK (a new kick descriptor) or a GET_VRING_BASE of queue 1 waits
 * for that queue to stop (an fsync of 128 MiB of dirty data runs there): how the daemon
 * exited, and its log lines from the signal on.
 */
async function sigtermWhileStopWaits(request: 'SET_VRING_KICK' | 'GET_VRING_BASE'): Promise<{ exit: DaemonExit; output: string; beforeSignal: LogLine[]; afterSignal: LogLine[]; errors: string[] }> {
  return onDaemon({ files: { dirty: '' }, args: ['--thread-pool-size=0', '--log-level=debug'] }, async ({ daemon, fe, c }) => {
    const { e, o } = await dirtyFile(c);
    void c.request(abi.Opcode.FSYNC, e.nodeid, fsyncArgs(o.fh), 0).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 20));
    // Either stops the queue first, which waits for the fsync.
    if (request === 'SET_VRING_KICK') {
      const kick = native.eventfdCreate();
      await fe.setVringKick(1, kick);
      native.close(kick);
    } else {
      void fe.getVringBase(1).catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 20));
    daemon.proc.kill('SIGTERM');
    const exit = await daemon.waitExit(60000);
    const lines = daemon.logLines<LogLine>();
    const signalled = lines.findIndex((l) => l.msg === 'exiting on signal');
    assert.ok(signalled >= 0 && lines.some((l) => l.msg === 'connection closed'), daemon.describeExit());
    return { exit, output: daemon.describeExit(), beforeSignal: lines.slice(0, signalled), afterSignal: lines.slice(signalled + 1), errors: daemon.errorLines };
  });
}

describe('virtiofsd-ts: a request that blocks and the one behind it, on one queue and on another', function () {
  this.timeout(120000);

  it('--thread-pool-size=0: on the queue thread, in order (the Rust virtiofsd default)', async () => {
    assert.deepEqual(await fsyncThenGetattr(0), ['fsync', 'getattr']);
  });

  it('--thread-pool-size=4: the GETATTR behind an fsync completes first', async () => {
    assert.deepEqual(await fsyncThenGetattr(4), ['getattr', 'fsync']);
  });

  it('--thread-pool-size=0, two request queues: a GETATTR and an IOCTL (served by JS) on queue 2 complete while an fsync blocks queue 1', async () => {
    assert.deepEqual(await fsyncThenGetattr(0, 2), ['getattr', 'ioctl', 'fsync']);
  });

  it('--thread-pool-size=0, two request queues, every request through JS (--log-level=trace): the fsync does not hold the JS thread', async () => {
    assert.deepEqual(await fsyncThenGetattr(0, 2, ['--log-level=trace']), ['getattr', 'ioctl', 'fsync']);
  });

  it('--thread-pool-size=0, two request queues: while a SETLKW waits on queue 1, queue 1\'s kick thread serves what comes behind it (an fsync, then a GETATTR), off the JS thread', async () => {
    const { order, fsyncMs, report } = await fsyncWhileSetlkwWaits();
    // An IOCTL takes about a millisecond: only an fsync that lasts longer tells anything.
    assert.ok(fsyncMs > 20 || order[0] === 'ioctl', `the fsync of 128 MiB took only ${fsyncMs} ms here: too quick to show whether it held the JS thread`);
    assert.equal(order[0], 'ioctl', `the IOCTL on queue 2 waited for the fsync (${fsyncMs} ms): ${order}`);
    // The GETATTR waits for the fsync before it on queue 1's thread; the SETLKW completes once
    // queue 2's FLUSH frees the lock, which may be before the fsync ends.
    assert.deepEqual([...order].sort(), ['fsync', 'getattr', 'ioctl', 'setlkw']);
    assert.ok(order.indexOf('fsync') < order.indexOf('getattr'), `${order}`);
    // The fast path served the fsync and the GETATTR on queue 1's kick thread, though JS had
    // the SETLKW in flight there; JS served only the SETLKW.
    assert.equal(report.nativeOpcodesPerQueue['1']?.FSYNC, 1, JSON.stringify(report));
    assert.equal(report.nativeOpcodesPerQueue['1']?.GETATTR, 1, JSON.stringify(report));
    assert.equal(report.opcodesPerQueue['1']?.FSYNC, 1, JSON.stringify(report));
    assert.equal(report.opcodesPerQueue['1']?.SETLKW, 1, JSON.stringify(report));
    assert.equal(report.nativeOpcodesPerQueue['1']?.SETLKW ?? 0, 0, JSON.stringify(report));
  });

  it('queue 1 stopped while a SETLKW waits there and IOCTLs may be queued for JS: the wait is given up (EINTR), the IOCTLs taken served, and the stop answered with every chain up to its index on the used ring', async () => {
    // Three rounds: whether the IOCTLs are still queued for JS when the stop comes is a race.
    let taken = 0;
    for (let round = 0; round < 3; round++) {
      const r = await stopWhileSetlkwWaits();
      taken += r.ioctlErrors.length;
      assert.equal(r.getattrError, 0, 'the GETATTR behind the SETLKW');
      assert.equal(r.setlkwError, -4 /* -EINTR: the guest sends it again */, JSON.stringify(r));
      // The stop may come before the kick thread took every IOCTL: those stay on the ring.
      assert.ok((r.availIdx - r.base + 0x10000) % 0x10000 <= 16, JSON.stringify(r));
      assert.equal(r.usedIdx, r.base, `the stop was answered before every chain up to its index was on the used ring: ${JSON.stringify(r)}`);
      assert.deepEqual(r.ioctlErrors, new Array(r.ioctlErrors.length).fill(-25 /* -ENOTTY */), JSON.stringify(r));
    }
    assert.ok(taken > 0, 'in no round did the kick thread take an IOCTL before the stop: nothing was checked');
  });

  for (const request of ['SET_VRING_KICK', 'GET_VRING_BASE'] as const) {
    it(`SIGTERM while a ${request} waits for its queue to stop (an fsync runs there): the daemon exits cleanly, with no error and starting no queue once the signal came`, async () => {
      const r = await sigtermWhileStopWaits(request);
      const is = (msg: string) => (l: LogLine): boolean => l.msg === msg && l.queue === 1;
      // The stop was still waiting for the fsync when the signal came (else this tests
      // nothing): queue 1 had not stopped before it, and never started again.
      assert.ok(!r.beforeSignal.some(is('queue stopped')), r.output);
      assert.equal([...r.beforeSignal, ...r.afterSignal].filter(is('queue started')).length, 1, r.output);
      assert.equal(r.exit.code, 0, r.output);
      assert.deepEqual(r.errors, [], r.output);
    });
  }

  it('--thread-pool-size=0, two request queues: queue 1 stopped while its fsync runs; queue 2 is served meanwhile, and the stop is answered after the fsync', async () => {
    // The fsync's reply (on the used ring) and the stop's (on the socket) reach the front end
    // at about the same time, in either order.
    const order = await fsyncThenGetattr(0, 2, [], true);
    assert.deepEqual(order.slice(0, 2), ['getattr', 'ioctl']);
    assert.deepEqual(order.slice(2).sort(), ['fsync', 'stopped']);
  });
});
