/**
 * The I/O pool (--thread-pool-size > 0, native/iopool.cc) replies to READ, WRITE and FSYNC
 * itself: the FUSE header into guest memory, the chain onto the used ring, the call eventfd.
 * Through our vhost-user front end: replies match their requests when pool threads and the
 * queue's thread complete at once (the header in a descriptor of its own, as Linux lays it
 * out), errors found on the pool come back as errors, and stopping the queues waits for what
 * is out on the pool.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { FuseClient, ok } from '../frontend/fuse-client';
import { connectDaemon, disconnectDaemon, type ConnectedDaemon } from '../support/connected';

type Env = ConnectedDaemon;
const launch = (pool: number): Promise<Env> => connectDaemon('vfs-pool-', [`--thread-pool-size=${pool}`]);
const cleanup = disconnectDaemon;

/** Drops a host file's clean pages from the page cache, so that reading it must wait for the disk. */
function evict(file: string): void {
  execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Creates an empty file in the share and opens it through FUSE. */
async function openNew(env: Env, name: string, flags: number = fs.constants.O_RDWR): Promise<{ e: abi.EntryOut; o: abi.OpenOut }> {
  fs.writeFileSync(path.join(env.share, name), '');
  const e = ok(await env.c.lookup(1n, name), 'LOOKUP');
  return { e, o: ok(await env.c.open(e.nodeid, flags), 'OPEN') };
}

/** Writes 64 MiB of byte through an open file, so that an FSYNC after it takes a while. */
async function dirty(c: FuseClient, f: { e: abi.EntryOut; o: abi.OpenOut }, byte: number): Promise<Buffer> {
  const mib = Buffer.alloc(1 << 20, byte);
  for (let i = 0; i < 64; i++) ok(await c.write(f.o.fh, i * mib.length, mib, { nodeid: f.e.nodeid }), 'WRITE');
  return mib;
}

async function fsync(c: FuseClient, nodeid: bigint, fh: bigint): Promise<number> {
  const args = Buffer.alloc(abi.FSYNC_IN_SIZE);
  abi.encodeFsyncIn(args, 0, { fh, fsyncFlags: 0 });
  return (await c.request(abi.Opcode.FSYNC, nodeid, args, 0)).error;
}

describe('virtiofsd-ts --thread-pool-size: replies written by the I/O pool', function () {
  this.timeout(120000);
  let env: Env | null = null;
  afterEach(async () => {
    if (env) await cleanup(env);
    env = null;
  });

  it('64 WRITEs, then 64 READs of the evicted file, 32 at a time: every reply whole and matching its request', async () => {
    env = await launch(4);
    const { c } = env;
    fs.writeFileSync(path.join(env.share, 'data'), '');
    const e = ok(await c.lookup(1n, 'data'), 'LOOKUP');
    const o = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN');
    const chunk = (i: number): Buffer => Buffer.alloc(4096, `chunk ${i} `);
    for (let round = 0; round < 2; round++) {
      const writes = [];
      for (let i = round * 32; i < round * 32 + 32; i++) writes.push(c.write(o.fh, i * 4096, chunk(i), { nodeid: e.nodeid }));
      for (const r of await Promise.all(writes)) {
        assert.equal(ok(r, 'WRITE').size, 4096);
        assert.equal(r.reply.usedLen, abi.OUT_HEADER_SIZE + abi.WRITE_OUT_SIZE, 'used length = the reply written');
        assert.equal(r.reply.len, r.reply.usedLen);
      }
    }
    assert.equal(await fsync(c, e.nodeid, o.fh), 0, 'FSYNC');
    evict(path.join(env.share, 'data'));
    for (let round = 0; round < 2; round++) {
      const reads = [];
      for (let i = round * 32; i < round * 32 + 32; i++) reads.push(c.read(o.fh, i * 4096, 4096, { nodeid: e.nodeid }));
      const got = await Promise.all(reads);
      got.forEach((r, k) => {
        const i = round * 32 + k;
        assert.ok(ok(r, 'READ').equals(chunk(i)), `READ ${i} returns chunk ${i}`);
        assert.equal(r.reply.usedLen, abi.OUT_HEADER_SIZE + 4096);
      });
    }
    const tail = ok(await c.read(o.fh, 64 * 4096 - 100, 4096, { nodeid: e.nodeid }), 'READ across the end');
    assert.equal(tail.length, 100);
    assert.equal(ok(await c.read(o.fh, 1 << 20, 4096, { nodeid: e.nodeid }), 'READ past the end').length, 0);
    ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
    assert.ok(fs.readFileSync(path.join(env.share, 'data')).equals(Buffer.concat(Array.from({ length: 64 }, (_, i) => chunk(i)))));
    const { daemon } = env;
    await cleanup(env);
    env = null;
    // The FSYNC always goes to the pool; so do the WRITEs where the file system cannot take
    // them without blocking (ext4) and the READs that missed the page cache.
    const pooled = daemon.exitReport<{ pooledPerQueue?: Record<string, number> }>().pooledPerQueue ?? {};
    assert.ok((pooled[1] ?? 0) >= 1, `requests completed by the pool: ${JSON.stringify(pooled)}`);
  });

  it('48 WRITEs to one spot of one file, sent together, interleaved with WRITEs to another file: all done, the last one sent wins', async () => {
    // Buffered writes to one file run one after another on the pool thread writing it; the
    // others wait in the pool's queue for it and must not be lost or held back by each other.
    env = await launch(16);
    const { c } = env;
    const same = await openNew(env, 'same', fs.constants.O_WRONLY);
    const other = await openNew(env, 'other', fs.constants.O_WRONLY);
    const block = (i: number): Buffer => Buffer.alloc(64 << 10, `write ${i} `);
    const writes = [];
    for (let i = 0; i < 48; i++) {
      writes.push(c.write(same.o.fh, 0, block(i), { nodeid: same.e.nodeid }));
      if (i % 3 === 0) writes.push(c.write(other.o.fh, (i / 3) * 4096, Buffer.alloc(4096, i), { nodeid: other.e.nodeid }));
    }
    for (const r of await Promise.all(writes)) assert.ok(ok(r, 'WRITE').size > 0);
    assert.ok(fs.readFileSync(path.join(env.share, 'same')).equals(block(47)), 'the file holds the last WRITE sent');
    const o = fs.readFileSync(path.join(env.share, 'other'));
    assert.equal(o.length, 16 * 4096);
    for (let k = 0; k < 16; k++) assert.equal(o[k * 4096], k * 3, `block ${k} of the other file`);
  });

  it('a WRITE through a read-only handle: EBADF, from the pool; the queue goes on', async () => {
    env = await launch(4);
    const { c } = env;
    fs.writeFileSync(path.join(env.share, 'ro'), 'unchanged');
    const e = ok(await c.lookup(1n, 'ro'), 'LOOKUP');
    const o = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
    const r = await c.write(o.fh, 0, Buffer.from('changed'), { nodeid: e.nodeid });
    assert.equal(r.error, -os.constants.errno.EBADF);
    assert.equal(r.reply.usedLen, abi.OUT_HEADER_SIZE, 'an error reply is the header alone');
    assert.equal(ok(await c.read(o.fh, 0, 100, { nodeid: e.nodeid }), 'READ').toString(), 'unchanged');
    ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
    assert.equal((await c.read(o.fh, 0, 100, { nodeid: e.nodeid })).error, -os.constants.errno.EBADF, 'READ of a released handle');
  });

  it('the memory table sent again while an fsync is out on the pool: its reply reaches the used ring, and the queue goes on', async () => {
    // QEMU sends the memory table again whenever the guest's memory map changes, queues
    // running. A pool thread that completes after that finds the table's generation changed
    // and translates the rings again itself (UsedRing::RefreshLocked).
    env = await launch(4);
    const { c, fe } = env;
    const f = await openNew(env, 'dirty');
    const { e, o } = f;
    let straddled = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      const mib = await dirty(c, f, 0x30 + attempt);
      let synced = false;
      const pending = fsync(c, e.nodeid, o.fh).then((err) => {
        synced = true;
        return err;
      });
      await new Promise((r) => setTimeout(r, 2));
      const mem = fe.memory!;
      const before = synced;
      await fe.setMemTable(mem.describe(), mem.regionFds());
      if (!before && !synced) straddled++;
      assert.equal(await pending, 0, 'FSYNC');
      const got = ok(await c.read(o.fh, 5 * mib.length, 4096, { nodeid: e.nodeid }), 'READ after the new table');
      assert.ok(got.equals(mib.subarray(0, 4096)));
    }
    assert.ok(straddled > 0, 'an fsync was still out on the pool when the new table was in place, in at least one of 5 tries');
    ok(await c.getattr(e.nodeid), 'GETATTR');
  });

  it('memory tables sent again and again while READs that missed the page cache go to the pool: every READ right, the daemon alive', async () => {
    // Each SET_MEM_TABLE maps the regions afresh and unmaps the old mappings once nothing
    // holds them. A READ's header and data are translated on the queue's thread and moved on
    // a pool thread: the job must hold the very mappings they point into, even when a table
    // arrives between the translations (GuestMemoryPin), or the pool writes into memory that
    // is no longer mapped (SIGSEGV) or has been mapped again for something else.
    env = await launch(4);
    const { c, fe } = env;
    const size = 16 << 20;
    const content = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4) content.writeUInt32LE(i, i);
    const file = path.join(env.share, 'big');
    fs.writeFileSync(file, content);
    const e = ok(await c.lookup(1n, 'big'), 'LOOKUP');
    const o = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
    const mem = fe.memory!;
    let reads = 0;
    for (let round = 0; round < 30; round++) {
      evict(file);
      const pending = [];
      for (let k = 0; k < 48; k++) {
        const at = (((round * 7919 + k * 104729) % (size / 4096)) * 4096) | 0;
        pending.push(c.read(o.fh, at, 4096, { nodeid: e.nodeid }).then((r) => ({ r, at })));
      }
      for (let t = 0; t < 12; t++) await fe.setMemTable(mem.describe(), mem.regionFds());
      for (const { r, at } of await Promise.all(pending)) {
        assert.ok(ok(r, 'READ').equals(content.subarray(at, at + 4096)), `READ at ${at} in round ${round}`);
        reads++;
      }
    }
    assert.equal(reads, 30 * 48);
    ok(await c.getattr(e.nodeid), 'GETATTR at the end');
    const { daemon } = env;
    await cleanup(env);
    env = null;
    assert.deepEqual(daemon.errorLines, [], 'no error line');
  });

  it('stopping the queues waits for an fsync out on the pool; its reply is on the ring before GET_VRING_BASE answers', async () => {
    env = await launch(4);
    const { c, fe } = env;
    const f = await openNew(env, 'dirty');
    const { e, o } = f;
    await dirty(c, f, 0x5a);
    let synced = false;
    const pending = fsync(c, e.nodeid, o.fh).then((err) => {
      assert.equal(err, 0);
      synced = true;
    });
    await new Promise((r) => setTimeout(r, 5));
    const bases = await fe.stopQueues();
    // The reply is on the used ring by now: already taken by the client, or waiting there.
    assert.ok(synced || fe.queue(1).vq.pendingUsed() === 1, 'the fsync reply is on the used ring once the queue has stopped');
    await pending;
    assert.ok(synced);
    await fe.startQueues(bases);
    ok(await c.getattr(e.nodeid), 'GETATTR after the restart');
    ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
  });
});
