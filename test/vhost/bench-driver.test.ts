/**
 * The benchmark's native ring driver (bench/ring-driver.ts) against our daemon: it keeps
 * requests in flight on every request queue, reports what it completed, rejects a wrong
 * reply, and hands the rings back so that the JS front end carries on where it stopped.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { driveRepeated, type RepeatedRequest } from '../../bench/ring-driver';
import { ok } from '../frontend/fuse-client';
import { connectEachTest, type ConnectedDaemon } from '../support/connected';

describe('the benchmark ring driver', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  async function withFile(queues: number): Promise<{ env: ConnectedDaemon; nodeid: bigint; fh: bigint }> {
    const env = await connect('vfs-driver-', ['--cache=never'], {}, undefined, { requestQueues: queues });
    fs.writeFileSync(path.join(env.share, 'f'), Buffer.alloc(1 << 20, 7));
    const e = ok(await env.c.lookup(1n, 'f'), 'LOOKUP');
    const o = ok(await env.c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
    return { env, nodeid: e.nodeid, fh: o.fh };
  }

  function read4k(nodeid: bigint, fh: bigint): RepeatedRequest {
    const args = Buffer.alloc(abi.READ_IN_SIZE);
    abi.encodeReadIn(args, 0, { fh, offset: 0n, size: 4096, readFlags: 0, lockOwner: 0n, flags: 0 });
    return { opcode: abi.Opcode.READ, nodeid, args, replyBody: 4096, offset: { at: 8, blockSize: 4096, blocks: 256 } };
  }

  it('keeps READs in flight on both queues and gives the rings back in order', async () => {
    const { env: e, nodeid, fh } = await withFile(2);
    const kicksBefore = [1, 2].map((q) => e.fe.queue(q).kicks);
    for (let run = 0; run < 2; run++) {
      const r = await driveRepeated(e.fe, 2, 8, read4k(nodeid, fh), 0.3);
      assert.ok(r.ops > 100, `only ${r.ops} READs in 0.3 s`);
      assert.ok(r.latencyUs / r.ops > 0, 'no latency measured');
    }
    // Both queues were kicked at least once (the first submission always is).
    [1, 2].forEach((q, i) => assert.ok(e.fe.queue(q).kicks > kicksBefore[i], `queue ${q} never kicked`));
    // The JS front end goes on from the driver's indices, on both queues.
    for (const queue of [1, 2]) {
      const d = ok(await e.c.read(fh, 4096, 4096, { nodeid, queue }), `READ on queue ${queue}`);
      assert.deepEqual(d, Buffer.alloc(4096, 7));
    }
  });

  it('rejects a reply of another length or with an error', async () => {
    const { env: e, nodeid } = await withFile(1);
    const args = Buffer.alloc(abi.GETATTR_IN_SIZE);
    await assert.rejects(
      driveRepeated(e.fe, 1, 1, { opcode: abi.Opcode.GETATTR, nodeid, args, replyBody: 200 }, 0.2),
      /out_header len 120 error 0 .*expected len 216/,
    );
    const name = Buffer.from('missing\0');
    await assert.rejects(driveRepeated(e.fe, 1, 1, { opcode: abi.Opcode.LOOKUP, nodeid: 1n, args: name, replyBody: abi.ENTRY_OUT_SIZE }, 0.2), /error -2 /);
    // Nothing was left in flight: the JS front end carries on.
    ok(await e.c.getattr(nodeid), 'GETATTR after the failed runs');
  });
});
