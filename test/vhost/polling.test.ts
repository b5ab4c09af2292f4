/**
 * --poll-max-us through the socket: a request queue's thread spins for the next request once
 * its ring is empty (native/vring.cc's adaptive window), and does not with --poll-max-us=0.
 * The daemon's exit report counts the spins that caught a request ("hits") and those that
 * gave up and slept ("misses"), per queue.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startDaemon } from '../frontend/daemons';
import { FuseClient, ok } from '../frontend/fuse-client';

interface PollCounts {
  hits: number;
  misses: number;
}

/** Serves `n` GETATTRs one at a time on queue 1; returns the exit report's poll counts. */
async function getattrsThenPolls(args: string[], n: number): Promise<Record<string, PollCounts>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-poll-'));
  fs.mkdirSync(path.join(dir, 'share'));
  const daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: args });
  const fe = await daemon.connect();
  try {
    await fe.negotiate();
    const c = new FuseClient(fe, { queue: 1, timeoutMs: 5000 });
    ok(await c.init(), 'INIT');
    for (let i = 0; i < n; i++) ok(await c.getattr(1n), 'GETATTR');
  } finally {
    fe.close();
    await daemon.waitExit(10000).catch(() => daemon.stop());
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const report = daemon.exitReport<{ pollsPerQueue?: Record<string, PollCounts> }>();
  assert.ok(report.pollsPerQueue, daemon.output().slice(-2000));
  return report.pollsPerQueue;
}

describe('virtiofsd-ts polling for the next request', function () {
  this.timeout(30000);

  it('catches requests that follow each other closely by spinning, on request queues only', async () => {
    // A 10 ms ceiling: however slow this machine's round trip, the window grows to cover it.
    const polls = await getattrsThenPolls(['--poll-max-us=10000'], 1000);
    // Far from all, and how many varies from run to run (50 to 250 of 300 here; once 7 of
    // 300, with the machine busy): the window first has to grow, each pause of this test
    // process's longer than the ceiling halves it, and a spin that has to give the CPU away
    // halves it too. npm run bench measures what polling is worth.
    assert.ok(polls['1'] && polls['1'].hits >= 10, `queue 1 caught requests spinning: ${JSON.stringify(polls)}`);
    assert.equal(polls['0'], undefined, 'the hiprio queue never spins');
  });

  it('never spins with --poll-max-us=0', async () => {
    const polls = await getattrsThenPolls(['--poll-max-us=0'], 100);
    assert.deepEqual(polls, {});
  });
});
