/**
 * Concurrency inside one queue, and between queues. With --thread-pool-size=0 (the Rust
 * virtiofsd's meaning) every request runs on its queue's thread, in order; with a pool, a
 * request that blocks (an fsync of 128 MiB of dirty data here) holds back none behind it,
 * and completions reach the used ring out of order. Whatever the pool, a request blocking
 * one queue holds back nothing on another, not even a request the JS thread that all queues
 * share serves, and not when JS serves the blocking one itself.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { startDaemon } from '../frontend/daemons';
import { FuseClient, ok } from '../frontend/fuse-client';

/**
 * An FSYNC of 128 MiB of dirty data on queue 1, and while it runs a GETATTR on queue
 * `otherQueue` (and an ACCESS there, which JS serves, when that is not queue 1): the order in
 * which they completed.
 */
async function fsyncThenGetattr(pool: number, otherQueue = 1, extraArgs: string[] = [], stopQueue1 = false): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-conc-'));
  fs.mkdirSync(path.join(dir, 'share'));
  fs.writeFileSync(path.join(dir, 'share', 'dirty'), '');
  const daemon = startDaemon('ts', {
    sharedDir: path.join(dir, 'share'),
    socketPath: path.join(dir, 'vfs.sock'),
    replaceDefaultArgs: [`--thread-pool-size=${pool}`, ...extraArgs],
  });
  const fe = await daemon.connect();
  try {
    await fe.negotiate({ memory: { size: 32 << 20 }, requestQueues: otherQueue });
    const c = new FuseClient(fe, { timeoutMs: 60000 });
    const other = new FuseClient(fe, { timeoutMs: 60000, queue: otherQueue });
    ok(await c.init(), 'INIT');
    const e = ok(await c.lookup(1n, 'dirty'), 'LOOKUP');
    const o = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN');
    const chunk = Buffer.alloc(1 << 20, 0xab);
    for (let i = 0; i < 128; i++) ok(await c.write(o.fh, i * chunk.length, chunk, { nodeid: e.nodeid }), 'WRITE');
    const order: string[] = [];
    const args = Buffer.alloc(abi.FSYNC_IN_SIZE);
    abi.encodeFsyncIn(args, 0, { fh: BigInt(o.fh), fsyncFlags: 0 });
    let fsyncAt = 0n;
    let stoppedAt = 0n;
    const fsync = c.request(abi.Opcode.FSYNC, e.nodeid, args, 0).then((r) => {
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
    const access =
      otherQueue === 1
        ? Promise.resolve()
        : getattr
            .then(() => other.access(e.nodeid, fs.constants.R_OK))
            .then((r) => {
              assert.equal(r.error, 0);
              order.push('access');
            });
    await Promise.all([fsync, getattr, access, stopped]);
    // The stop's reply follows the fsync's at once, not at whatever event came next.
    if (stopQueue1) assert.ok(stoppedAt - fsyncAt < 1_000_000_000n && fsyncAt - stoppedAt < 1_000_000_000n, `fsync done at ${fsyncAt}, stop answered at ${stoppedAt}`);
    if (!stopQueue1) ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
    return order;
  } finally {
    fe.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Two request queues, no pool. On queue 1 a SETLKW waits for a lock another owner holds, so
 * JS holds queue 1's ring; an FSYNC of 128 MiB of dirty data comes next on queue 1, then an
 * ACCESS on queue 2, then the FLUSH that frees the lock. Returns the order of completion and
 * the exit report.
 */
async function fsyncWhileJsHoldsTheRing(): Promise<{ order: string[]; fsyncMs: number; report: { nativeOpcodesPerQueue: Record<string, Record<string, number>>; opcodesPerQueue: Record<string, Record<string, number>> } }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-conc-'));
  fs.mkdirSync(path.join(dir, 'share'));
  fs.writeFileSync(path.join(dir, 'share', 'dirty'), '');
  fs.writeFileSync(path.join(dir, 'share', 'lock'), 'x');
  const daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: ['--thread-pool-size=0'] });
  const fe = await daemon.connect();
  try {
    await fe.negotiate({ memory: { size: 32 << 20 }, requestQueues: 2 });
    const c = new FuseClient(fe, { timeoutMs: 60000 });
    const other = new FuseClient(fe, { timeoutMs: 60000, queue: 2 });
    ok(await c.init(), 'INIT');
    const e = ok(await c.lookup(1n, 'dirty'), 'LOOKUP');
    const o = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN');
    const chunk = Buffer.alloc(1 << 20, 0xab);
    for (let i = 0; i < 128; i++) ok(await c.write(o.fh, i * chunk.length, chunk, { nodeid: e.nodeid }), 'WRITE');
    const l = ok(await c.lookup(1n, 'lock'), 'LOOKUP lock');
    const a = ok(await c.open(l.nodeid, fs.constants.O_RDWR), 'OPEN a').fh;
    const b = ok(await c.open(l.nodeid, fs.constants.O_RDWR), 'OPEN b').fh;
    const lk = (fh: bigint, owner: bigint): Buffer => {
      const x = Buffer.alloc(abi.LK_IN_SIZE);
      abi.encodeLkIn(x, 0, { fh, owner, lk: { start: 0n, end: 0n, type: 1 /* F_WRLCK */, pid: 1 }, lkFlags: 0 });
      return x;
    };
    assert.equal((await c.request(abi.Opcode.SETLK, l.nodeid, lk(a, 1n), 0)).error, 0, 'owner 1 takes the lock');
    const order: string[] = [];
    const setlkw = c.request(abi.Opcode.SETLKW, l.nodeid, lk(b, 2n), 0).then((r) => {
      assert.equal(r.error, 0);
      order.push('setlkw');
    });
    await new Promise((r) => setTimeout(r, 20));
    const args = Buffer.alloc(abi.FSYNC_IN_SIZE);
    abi.encodeFsyncIn(args, 0, { fh: BigInt(o.fh), fsyncFlags: 0 });
    const fsyncSent = Date.now();
    let fsyncMs = 0;
    const fsync = c.request(abi.Opcode.FSYNC, e.nodeid, args, 0).then((r) => {
      assert.equal(r.error, 0);
      order.push('fsync');
      fsyncMs = Date.now() - fsyncSent;
    });
    await new Promise((r) => setTimeout(r, 5));
    ok(await other.access(l.nodeid, fs.constants.R_OK), 'ACCESS');
    order.push('access');
    const flush = Buffer.alloc(abi.FLUSH_IN_SIZE);
    abi.encodeFlushIn(flush, 0, { fh: BigInt(a), lockOwner: 1n });
    assert.equal((await other.request(abi.Opcode.FLUSH, l.nodeid, flush, 0)).error, 0, 'FLUSH of owner 1');
    await Promise.all([setlkw, fsync]);
    fe.close();
    await daemon.stop();
    return { order, fsyncMs, report: daemon.exitReport() };
  } finally {
    fe.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('virtiofsd-ts: a request that blocks and the one behind it, on one queue and on another', function () {
  this.timeout(120000);

  it('--thread-pool-size=0: on the queue thread, in order (the Rust virtiofsd default)', async () => {
    assert.deepEqual(await fsyncThenGetattr(0), ['fsync', 'getattr']);
  });

  it('--thread-pool-size=4: the GETATTR behind an fsync completes first', async () => {
    assert.deepEqual(await fsyncThenGetattr(4), ['getattr', 'fsync']);
  });

  it('--thread-pool-size=0, two request queues: a GETATTR and an ACCESS (served by JS) on queue 2 complete while an fsync blocks queue 1', async () => {
    assert.deepEqual(await fsyncThenGetattr(0, 2), ['getattr', 'access', 'fsync']);
  });

  it('--thread-pool-size=0, two request queues, every request through JS (--log-level=trace): the fsync does not hold the JS thread', async () => {
    assert.deepEqual(await fsyncThenGetattr(0, 2, ['--log-level=trace']), ['getattr', 'access', 'fsync']);
  });

  it('--thread-pool-size=0, two request queues: an fsync that comes while JS holds queue 1\'s ring (a SETLKW waits there) runs off the JS thread', async () => {
    const { order, fsyncMs, report } = await fsyncWhileJsHoldsTheRing();
    // An ACCESS takes about a millisecond: only an fsync that lasts longer tells anything.
    assert.ok(fsyncMs > 20 || order[0] === 'access', `the fsync of 128 MiB took only ${fsyncMs} ms here: too quick to show whether it held the JS thread`);
    assert.equal(order[0], 'access', `the ACCESS on queue 2 waited for the fsync (${fsyncMs} ms): ${order}`);
    assert.deepEqual([...order].sort(), ['access', 'fsync', 'setlkw']);
    // JS served the fsync (the fast path declines it on the JS thread), and the SETLKW.
    assert.equal(report.opcodesPerQueue['1']?.FSYNC, 1, JSON.stringify(report));
    assert.equal(report.nativeOpcodesPerQueue['1']?.FSYNC ?? 0, 0, JSON.stringify(report));
    assert.equal(report.opcodesPerQueue['1']?.SETLKW, 1, JSON.stringify(report));
  });

  it('--thread-pool-size=0, two request queues: queue 1 stopped while its fsync runs; queue 2 is served meanwhile, and the stop is answered after the fsync', async () => {
    // The fsync's reply (on the used ring) and the stop's (on the socket) reach the front end
    // at about the same time, in either order.
    const order = await fsyncThenGetattr(0, 2, [], true);
    assert.deepEqual(order.slice(0, 2), ['getattr', 'access']);
    assert.deepEqual(order.slice(2).sort(), ['fsync', 'stopped']);
  });
});
