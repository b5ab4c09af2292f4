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
    const started = process.hrtime.bigint();
    const fsync = c.request(abi.Opcode.FSYNC, e.nodeid, args, 0).then((r) => {
      assert.equal(r.error, 0);
      order.push('fsync');
    });
    // The front end stops queue 1 (GET_VRING_BASE) while the fsync runs: the daemon answers
    // once the fsync is on the used ring, and serves the other queues meanwhile.
    let stopped: Promise<void> = Promise.resolve();
    if (stopQueue1) {
      await new Promise((r) => setTimeout(r, 20));
      stopped = fe.getVringBase(1).then((base) => {
        order.push('stopped');
        // The test holds only if the fsync was still running when the stop came.
        assert.ok(process.hrtime.bigint() - started > 40_000_000n, 'the fsync took under 40 ms: nothing to overlap with');
        // Answered once every request of queue 1, the fsync included, was on the used ring.
        assert.equal(base, fe.queue(1).vq.availIdx, 'the stop reported an index behind what the driver made available');
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
    if (!stopQueue1) ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
    return order;
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

  it('--thread-pool-size=0, two request queues: queue 1 stopped while its fsync runs; queue 2 is served meanwhile, and the stop is answered after the fsync', async () => {
    // The fsync's reply (on the used ring) and the stop's (on the socket) reach the front end
    // at about the same time, in either order.
    const order = await fsyncThenGetattr(0, 2, [], true);
    assert.deepEqual(order.slice(0, 2), ['getattr', 'access']);
    assert.deepEqual(order.slice(2).sort(), ['fsync', 'stopped']);
  });
});
