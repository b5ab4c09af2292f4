/**
 * A busy request queue does not starve what shares its thread. The first request queue is
 * served on the daemon's main thread, with the hiprio queue and the vhost-user socket; while
 * a guest keeps it busy (eight requests in flight, so the loop always finds a next chain and
 * never goes back to sleep), its loop must still give the event loop a turn now and
 * then (src/vhost/queue-runner.ts and native/vring.cc, kServeBudgetNs), or FORGETs and
 * vhost-user messages (a memory table change, a queue stop) wait as long as the load lasts:
 * here, without the budget, FORGETs waited up to 20-54 ms, with it at most 10 ms.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ok } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest } from '../support/connected';

interface Report {
  pollsPerQueue?: Record<string, { yields: number }>;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const msSince = (t: bigint): number => Number(process.hrtime.bigint() - t) / 1e6;

describe('virtiofsd-ts: a busy first request queue leaves its thread its other work', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  // Several requests in flight, each replaced as soon as it is answered: the ring never runs
  // dry while the daemon serves, whatever its polling window does (on a busy host the window
  // closes, and a load of one request at a time would let the loop sleep between requests,
  // which proves nothing). READ is served by the native kick loop, IOCTL by the JS server.
  const DEPTH = 8;
  for (const op of ['READ', 'IOCTL'] as const) {
    for (const pool of [0, 4]) {
      it(`answers vhost-user messages and hiprio FORGETs promptly while ${op}s follow each other on queue 1 (--thread-pool-size=${pool})`, async () => {
        const env = await connect('vfs-fair-', ['--cache=never', `--thread-pool-size=${pool}`], { timeoutMs: 30000 });
        const { c, fe, share } = env;
        fs.writeFileSync(path.join(share, 'f'), Buffer.alloc(1 << 20, 7));
        const e = ok(await c.lookup(1n, 'f'), 'LOOKUP');
        const fh = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN').fh;
        let stop = false;
        let served = 0;
        // The probes take about 1.2 s; the load ends after 4 s whatever happens, so a starved probe shows as a long wait.
        const deadline = setTimeout(() => (stop = true), 4000);
        const loop = async (lane: number): Promise<void> => {
          for (let i = lane; !stop; i += DEPTH) {
            if (op === 'READ') ok(await c.read(fh, (i % 256) * 4096, 4096, { nodeid: e.nodeid, borrowBody: true }), 'READ');
            else ok(await c.ioctl(), 'IOCTL');
            served++;
          }
        };
        const load = Promise.all(Array.from({ length: DEPTH }, (_, lane) => loop(lane)));
        await sleep(200);
        const socketMs: number[] = [];
        const forgetMs: number[] = [];
        const servedAtProbe: number[] = [];
        for (let k = 0; k < 20 && !stop; k++) {
          servedAtProbe.push(served);
          let t = process.hrtime.bigint();
          assert.equal(await fe.getQueueNum(), 65);
          socketMs.push(msSince(t));
          ok(await c.lookup(1n, 'f'), 'LOOKUP');
          t = process.hrtime.bigint();
          await c.forget(e.nodeid, 1);
          forgetMs.push(msSince(t));
          await sleep(50);
        }
        stop = true;
        clearTimeout(deadline);
        await load;
        const worst = (xs: number[]): number => Math.max(...xs);
        assert.equal(socketMs.length, 20, 'the probes did not finish while the load ran');
        // The load went on through every probe (not a count of requests: that measures the
        // host's speed).
        servedAtProbe.push(served);
        const stalls = servedAtProbe.slice(1).filter((n, k) => n === servedAtProbe[k]).length;
        assert.equal(stalls, 0, `no ${op} was answered between ${stalls} of 20 probes: ${servedAtProbe.join(' ')}`);
        // A turn comes within half a millisecond of serving; the bound leaves room for a
        // slow, shared host and for the front end's own event loop.
        assert.ok(worst(socketMs) < 100, `a vhost-user message waited ${worst(socketMs).toFixed(1)} ms`);
        assert.ok(worst(forgetMs) < 100, `a FORGET waited ${worst(forgetMs).toFixed(1)} ms`);
        // And the loop did stop for its thread's event loop while the chains kept coming.
        await disconnectDaemon(env);
        const report = env.daemon.exitReport<Report>();
        assert.ok((report.pollsPerQueue?.['1']?.yields ?? 0) > 0, `no yields: ${JSON.stringify(report.pollsPerQueue)}`);
      });
    }
  }
});
