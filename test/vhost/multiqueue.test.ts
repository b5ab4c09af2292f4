/**
 * State shared by the queues of virtiofsd-ts, through its socket with two request queues
 * (each queue with a kick thread of its own, their JS sides on the main thread): one nodeid for a name whatever queue
 * looked it up, with every lookup counted and FORGET on the hiprio queue honoured; handles
 * usable from any queue; one set of locks; and renames on one queue racing lookups and reads
 * on the other.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { startDaemon, type Daemon } from '../frontend/daemons';
import type { VhostUserFrontend } from '../frontend/frontend';
import { FuseClient, ok } from '../frontend/fuse-client';

const E = os.constants.errno;
const cstr = (s: string): Buffer => Buffer.concat([Buffer.from(s), Buffer.alloc(1)]);

describe('virtiofsd-ts with two request queues: one shared state', function () {
  this.timeout(30000);
  let dir: string;
  let daemon: Daemon;
  let fe: VhostUserFrontend;
  let q1: FuseClient;
  let q2: FuseClient;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-mq-'));
    fs.mkdirSync(path.join(dir, 'share'));
    fs.writeFileSync(path.join(dir, 'share', 'a'), 'A'.repeat(4096));
    fs.writeFileSync(path.join(dir, 'share', 'b'), 'B'.repeat(4096));
    daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock') });
    fe = await daemon.connect();
    await fe.negotiate({ requestQueues: 2 });
    q1 = new FuseClient(fe, { queue: 1, timeoutMs: 5000 });
    q2 = new FuseClient(fe, { queue: 2, timeoutMs: 5000 });
    ok(await q1.init(), 'INIT');
  });

  afterEach(async () => {
    fe.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a name looked up on both queues is one nodeid; FORGET on hiprio frees it after both', async () => {
    const e1 = ok(await q1.lookup(1n, 'a'), 'LOOKUP on queue 1');
    const e2 = ok(await q2.lookup(1n, 'a'), 'LOOKUP on queue 2');
    assert.equal(e2.nodeid, e1.nodeid);
    await q1.forget(e1.nodeid, 1);
    ok(await q2.getattr(e1.nodeid), 'still known: one lookup left');
    await q1.forget(e1.nodeid, 1);
    assert.equal((await q2.getattr(e1.nodeid)).error, -E.EBADF, 'both lookups forgotten: the nodeid is gone');
  });

  it('a handle opened on one queue reads, writes and releases on the other', async () => {
    const e = ok(await q1.lookup(1n, 'a'), 'LOOKUP');
    const o = ok(await q1.open(e.nodeid, fs.constants.O_RDWR), 'OPEN on queue 1');
    ok(await q2.write(o.fh, 0, Buffer.from('xyz'), { nodeid: e.nodeid }), 'WRITE on queue 2');
    assert.equal(ok(await q1.read(o.fh, 0, 3, { nodeid: e.nodeid }), 'READ on queue 1').toString(), 'xyz');
    ok(await q2.release(o.fh, { nodeid: e.nodeid }), 'RELEASE on queue 2');
    assert.equal((await q1.read(o.fh, 0, 3, { nodeid: e.nodeid })).error, -E.EBADF, 'released for every queue');
  });

  it('locks are one set: a lock taken on one queue conflicts on the other', async () => {
    const e = ok(await q1.lookup(1n, 'a'), 'LOOKUP');
    const o = ok(await q1.open(e.nodeid, fs.constants.O_RDWR), 'OPEN');
    const lk = (owner: bigint): Buffer => {
      const b = Buffer.alloc(abi.LK_IN_SIZE);
      abi.encodeLkIn(b, 0, { fh: BigInt(o.fh), owner, lk: { start: 0n, end: 99n, type: 1, pid: 1 }, lkFlags: 0 });
      return b;
    };
    assert.equal((await q1.request(abi.Opcode.SETLK, e.nodeid, lk(1n), 0)).error, 0);
    assert.equal((await q2.request(abi.Opcode.SETLK, e.nodeid, lk(2n), 0)).error, -E.EAGAIN);
    assert.equal((await q2.request(abi.Opcode.SETLK, e.nodeid, lk(1n), 0)).error, 0, 'the same owner on the other queue');
  });

  it('renames racing lookups and reads on the other queue: every answer is whole and consistent', async () => {
    const ex = Buffer.alloc(abi.RENAME2_IN_SIZE);
    abi.encodeRename2In(ex, 0, { newdir: 1n, flags: 2 /* RENAME_EXCHANGE */ });
    const swap = Buffer.concat([ex, cstr('a'), cstr('b')]);
    const renamer = (async () => {
      for (let i = 0; i < 300; i++) assert.equal((await q1.request(abi.Opcode.RENAME2, 1n, swap, 0)).error, 0);
    })();
    const seen = new Set<string>();
    const nodeids = new Set<bigint>();
    const reader = (async () => {
      for (let i = 0; i < 150; i++) {
        const e = ok(await q2.lookup(1n, 'a'), 'LOOKUP during renames');
        nodeids.add(e.nodeid);
        const o = ok(await q2.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN during renames');
        const data = ok(await q2.read(o.fh, 0, 4096, { nodeid: e.nodeid }), 'READ during renames');
        assert.equal(data.length, 4096);
        assert.ok(data.equals(Buffer.alloc(4096, 'A')) || data.equals(Buffer.alloc(4096, 'B')), 'whole content of one file');
        seen.add(String.fromCharCode(data[0]));
        ok(await q2.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
      }
    })();
    await Promise.all([renamer, reader]);
    assert.ok(nodeids.size <= 2, `the two files keep their two nodeids (saw ${nodeids.size})`);
    const ea = ok(await q1.lookup(1n, 'a'), 'LOOKUP a');
    const eb = ok(await q2.lookup(1n, 'b'), 'LOOKUP b');
    assert.notEqual(ea.nodeid, eb.nodeid);
    assert.equal(fs.readFileSync(path.join(dir, 'share', 'a')).length + fs.readFileSync(path.join(dir, 'share', 'b')).length, 8192);
  });

  it('bursts on both queues at once all complete, in any order', async () => {
    const e = ok(await q1.lookup(1n, 'b'), 'LOOKUP');
    const o = ok(await q1.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
    const reads = [];
    for (let i = 0; i < 200; i++) reads.push((i % 2 ? q1 : q2).read(o.fh, (i * 16) % 4096, 16, { nodeid: e.nodeid }));
    for (const r of await Promise.all(reads)) assert.deepEqual(ok(r, 'READ'), Buffer.alloc(16, 'B'));
  });
});

describe('virtiofsd-ts with 16 request queues', function () {
  this.timeout(60000);

  it('serves requests on every one of them, each queue on a thread of its own', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-mq16-'));
    fs.mkdirSync(path.join(dir, 'share'));
    fs.writeFileSync(path.join(dir, 'share', 'f'), 'sixteen');
    const daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: ['--log-level=debug'] });
    const fe = await daemon.connect();
    try {
      await fe.negotiate({ requestQueues: 16, queueSize: 64 });
      const clients = Array.from({ length: 16 }, (_, i) => new FuseClient(fe, { queue: i + 1, timeoutMs: 10000 }));
      ok(await clients[0].init(), 'INIT');
      const e = ok(await clients[0].lookup(1n, 'f'), 'LOOKUP');
      const o = ok(await clients[0].open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
      const reads = clients.flatMap((c) => [0, 1, 2].map(() => c.read(o.fh, 0, 7, { nodeid: e.nodeid })));
      for (const r of await Promise.all(reads)) assert.equal(ok(r, 'READ').toString(), 'sixteen');
    } finally {
      fe.close();
      await daemon.waitExit(10000).catch(() => daemon.stop());
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const closed = daemon.exitReport<{ requestsPerQueue?: Record<string, number> }>();
    assert.ok(closed.requestsPerQueue, daemon.output().slice(-2000));
    for (let q = 1; q <= 16; q++) assert.ok((closed.requestsPerQueue[q] ?? 0) >= 3, `queue ${q}: ${JSON.stringify(closed.requestsPerQueue)}`);
  });
});
