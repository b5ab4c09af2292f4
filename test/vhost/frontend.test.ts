/**
 * Our vhost-user front end (test/frontend/, playing QEMU's part) against three backends over
 * their real sockets: virtiofsd-ts, the Rust virtiofsd 1.13 and QEMU 7.2's C virtiofsd. The
 * same scenarios run against each: QEMU 7.2's negotiation, INIT + LOOKUP + GETATTR + OPEN +
 * READ + RELEASE + FORGET, several memory layouts, more requests than the ring holds, and a
 * stop/restart of the queues on one connection. The reference daemons passing shows the front
 * end is faithful; ours passing the same steps is the evidence for the backend.
 * Missing reference binaries make these tests fail: run scripts/fetch-anchors.sh.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Daemon, startDaemon, type DaemonKind } from '../frontend/daemons';
import { VhostUserFrontend, defaultProtocolMask, describeFeatures, type NegotiateOptions } from '../frontend/frontend';
import { FuseClient, ok } from '../frontend/fuse-client';
import { GuestMemory } from '../frontend/guest-memory';
import { Virtqueue, VirtqDescFlags, DESC_SIZE, QueueFullError, vringNeedEvent } from '../frontend/vring';
import { native } from '../../src/native';
import { ProtocolFeature, VirtioFeature, FrontendReq, hasBit } from '../../src/vhost/messages';

const HELLO = Buffer.from('Hello from the shared directory!\n'.repeat(3));
const BIG_SIZE = 300 * 1024;

interface Env {
  dir: string;
  shared: string;
  socket: string;
  daemon: Daemon | null;
  fe: VhostUserFrontend | null;
}

function makeEnv(): Env {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-frontend-'));
  const shared = path.join(dir, 'shared');
  fs.mkdirSync(shared);
  fs.writeFileSync(path.join(shared, 'hello.txt'), HELLO);
  const big = Buffer.alloc(BIG_SIZE);
  for (let i = 0; i < BIG_SIZE; i++) big[i] = (i * 7 + (i >> 12)) & 0xff;
  fs.writeFileSync(path.join(shared, 'big.bin'), big);
  return { dir, shared, socket: path.join(dir, 'vfs.sock'), daemon: null, fe: null };
}

async function cleanup(env: Env): Promise<void> {
  env.fe?.close();
  if (env.daemon) await env.daemon.stop();
  fs.rmSync(env.dir, { recursive: true, force: true });
}

async function launch(env: Env, kind: DaemonKind, opts: NegotiateOptions = {}): Promise<FuseClient> {
  env.daemon = startDaemon(kind, { sharedDir: env.shared, socketPath: env.socket });
  env.fe = await env.daemon.connect();
  await env.fe.negotiate(opts);
  return new FuseClient(env.fe);
}

/** INIT, LOOKUP, GETATTR, OPEN, READ, RELEASE, FORGET of hello.txt. */
async function helloRoundTrip(c: FuseClient): Promise<void> {
  const init = ok(await c.init(), 'INIT');
  assert.equal(init.major, 7);
  assert.ok(init.minor >= 31, `INIT minor ${init.minor}`);
  assert.ok(c.maxWrite >= 4096, `max_write ${c.maxWrite}`);
  const e = ok(await c.lookup(1n, 'hello.txt'), 'LOOKUP hello.txt');
  assert.ok(e.nodeid > 1n);
  assert.equal(e.attr.size, BigInt(HELLO.length));
  const missing = await c.lookup(1n, 'no-such-file');
  assert.equal(missing.error, -os.constants.errno.ENOENT);
  const a = ok(await c.getattr(e.nodeid), 'GETATTR');
  assert.equal(a.attr.size, BigInt(HELLO.length));
  assert.equal(a.attr.ino, e.attr.ino);
  const o = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
  const data = ok(await c.read(o.fh, 0, 4096, { nodeid: e.nodeid }), 'READ');
  assert.deepEqual(data, HELLO);
  const tail = ok(await c.read(o.fh, 6, 4, { nodeid: e.nodeid }), 'READ at offset');
  assert.deepEqual(tail, HELLO.subarray(6, 10));
  const rel = await c.release(o.fh, { nodeid: e.nodeid });
  assert.equal(rel.error, 0);
  assert.equal(rel.reply.len, 16);
  const used = await c.forget(e.nodeid, 1);
  assert.equal(used.len, 0, 'FORGET chain returned with used length 0');
}

async function closeAndExpectExit(env: Env): Promise<void> {
  const d = env.daemon as Daemon;
  (env.fe as VhostUserFrontend).close();
  env.fe = null;
  const exit = await d.waitExit(5000);
  assert.ok(exit.signal === null, `daemon ${d.describeExit()}`);
}

const KINDS: DaemonKind[] = ['ts', 'rust', 'c'];

describe('vhost-user front end against virtiofsd-ts and the reference daemons', function () {
  this.timeout(30000);

  for (const kind of KINDS) {
    describe(`${kind} virtiofsd`, () => {
      let env: Env;
      beforeEach(() => {
        env = makeEnv();
      });
      afterEach(async () => {
        await cleanup(env);
      });

      it('negotiates as QEMU 7.2 does and serves hello.txt; exits at EOF', async () => {
        env.daemon = startDaemon(kind, { sharedDir: env.shared, socketPath: env.socket });
        const fe = (env.fe = await env.daemon.connect());
        const n = await fe.negotiate();
        assert.ok(hasBit(n.ackedFeatures, VirtioFeature.VERSION_1));
        assert.ok(hasBit(n.ackedFeatures, VirtioFeature.VHOST_USER_PROTOCOL_FEATURES));
        assert.ok(n.queueNum === null || n.queueNum >= 2);
        assert.equal(fe.trace[0], 'GET_FEATURES');
        const c = new FuseClient(fe);
        await helloRoundTrip(c);
        await closeAndExpectExit(env);
        if (process.env.VIRTIOFSD_TEST_LOG === '1') {
          process.stderr.write(
            `${kind}: features ${describeFeatures(n.features, VirtioFeature)}; protocol ` +
              `${describeFeatures(n.protocolFeatures, ProtocolFeature)}; queues ${n.queueNum}; ` +
              `mem slots ${n.maxMemSlots}; max_write ${c.maxWrite}; init flags 0x${c.initOut?.flags.toString(16)} ` +
              `flags2 0x${c.initOut?.flags2.toString(16)} minor ${c.initOut?.minor}\n`,
          );
        }
      });

      it('works with two regions at a high gpa base, SET_MEM_TABLE, no indirect, no event idx', async () => {
        const c = await launch(env, kind, {
          memory: { size: 32 << 20, regions: 2, gpaBase: 0x1_0000_0000, interleave: true },
          useAddMemReg: false,
          indirect: false,
          eventIdx: false,
          ringRegion: 1,
        });
        assert.ok(!env.fe?.hasFeature(VirtioFeature.RING_EVENT_IDX));
        assert.ok(env.fe?.trace.includes('SET_MEM_TABLE'));
        await helloRoundTrip(c);
      });

      it('works with ADD_MEM_REG, one memfd at two offsets, and page-sized descriptors', async () => {
        env.daemon = startDaemon(kind, { sharedDir: env.shared, socketPath: env.socket });
        const fe = (env.fe = await env.daemon.connect());
        await fe.negotiate({
          memory: { size: 32 << 20, regions: 2, sharedFd: true, gpaBase: 0x8000_0000, interleave: true },
          useAddMemReg: true,
          queueSize: 256,
          backendReq: true,
        });
        assert.equal(fe.trace.filter((t) => t === 'ADD_MEM_REG').length, 2);
        assert.ok(fe.hasProtocolFeature(ProtocolFeature.BACKEND_REQ));
        assert.ok(fe.trace.indexOf('SET_BACKEND_REQ_FD') < fe.trace.indexOf('SET_OWNER'));
        const c = new FuseClient(fe, { dataSegment: 4096 });
        await helloRoundTrip(c);
        const e = ok(await c.lookup(1n, 'big.bin'), 'LOOKUP big.bin');
        const o = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN big.bin');
        const chunk = 128 * 1024;
        const want = fs.readFileSync(path.join(env.shared, 'big.bin'));
        for (let off = 0; off < BIG_SIZE; off += chunk) {
          const got = ok(await c.read(o.fh, off, chunk, { nodeid: e.nodeid }), `READ ${off}`);
          assert.deepEqual(got, want.subarray(off, Math.min(off + chunk, BIG_SIZE)));
        }
        ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
      });

      it('keeps many requests in flight (more than the ring holds), eventfd and poll modes', async () => {
        const c = await launch(env, kind, { queueSize: 16, indirect: false });
        ok(await c.init(), 'INIT');
        const e = ok(await c.lookup(1n, 'big.bin'), 'LOOKUP big.bin');
        const o = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
        const want = fs.readFileSync(path.join(env.shared, 'big.bin'));
        const run = async (): Promise<void> => {
          const reads = [];
          for (let i = 0; i < 64; i++) reads.push(c.read(o.fh, i * 4096, 4096, { nodeid: e.nodeid }));
          const got = await Promise.all(reads);
          got.forEach((r, i) => assert.deepEqual(ok(r, `READ ${i}`), want.subarray(i * 4096, (i + 1) * 4096)));
        };
        await run();
        const fe = env.fe as VhostUserFrontend;
        fe.queue(1).setNotifyMode('poll');
        await run();
        fe.queue(1).setNotifyMode('eventfd');
        await run();
        assert.equal(fe.queue(1).vq.inFlight, 0);
      });
    });
  }

  for (const kind of KINDS) {
    describe(`${kind} virtiofsd, queues stopped and restarted`, () => {
      let env: Env;
      beforeEach(() => {
        env = makeEnv();
      });
      afterEach(async () => {
        await cleanup(env);
      });

      it('stopQueues() / startQueues() on one connection, then a request succeeds', async () => {
        const c = await launch(env, kind);
        ok(await c.init(), 'INIT');
        const e = ok(await c.lookup(1n, 'hello.txt'), 'LOOKUP');
        const fe = env.fe as VhostUserFrontend;
        const before = fe.queues.map((q) => q.vq.availIdx);
        const bases = await fe.stopQueues();
        assert.deepEqual(bases, before, 'GET_VRING_BASE returns the next avail index of each queue');
        const traceStop = fe.trace.slice(-3 * fe.queues.length);
        assert.deepEqual(traceStop, [
          ...fe.queues.map(() => 'SET_VRING_ENABLE'),
          ...fe.queues.map(() => 'GET_VRING_BASE'),
          ...fe.queues.map(() => 'SET_VRING_CALL'),
        ]);
        await fe.startQueues(bases);
        const a = ok(await c.getattr(e.nodeid), 'GETATTR after restart');
        assert.equal(a.attr.size, BigInt(HELLO.length));
        const again = await fe.stopQueues();
        assert.deepEqual(
          again,
          fe.queues.map((q) => q.vq.availIdx),
        );
        // A guest reset: fresh rings, bases 0, and a new FUSE session.
        await fe.startQueues(
          again.map(() => 0),
          { resetRings: true },
        );
        ok(await c.init(), 'INIT after reset');
        const e2 = ok(await c.lookup(1n, 'hello.txt'), 'LOOKUP after reset');
        assert.equal(e2.attr.size, BigInt(HELLO.length));
        await closeAndExpectExit(env);
      });
    });
  }

  // The Rust virtiofsd is left out of the next two: after a restart it waits for a new kick
  // instead of looking at the ring, so requests the guest queued (and kicked) before the
  // stop are never served (seen with 1.13.2: the burst below stalls with 4 requests unread).
  // PROTOCOL.md: a backend should scan the avail ring when a queue is enabled. The C
  // virtiofsd is left out of the burst: it exited with status 1 in one of four runs of 20
  // restarts, which would make this test a test of its stability.
  const RESTARTERS: DaemonKind[] = ['ts', 'c'];
  for (const kind of RESTARTERS) {
    if (kind === 'ts') it(`${kind}: a stop in the middle of a burst loses and repeats no request`, async function () {
      const env = makeEnv();
      try {
        // Ours serves request queue 2 on its kick thread, concurrently with the connection
        // on the main thread, so the stop can land between two chains of the burst.
        const queues = kind === 'ts' ? 2 : 1;
        const c0 = await launch(env, kind, { queueSize: 16, indirect: false, requestQueues: queues });
        const c = new FuseClient(env.fe as VhostUserFrontend, { queue: queues });
        ok(await c0.init(), 'INIT');
        const e = ok(await c.lookup(1n, 'big.bin'), 'LOOKUP big.bin');
        const o = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
        const want = fs.readFileSync(path.join(env.shared, 'big.bin'));
        const fe = env.fe as VhostUserFrontend;
        const q = fe.queue(queues);
        let midBurst = 0;
        for (let round = 0; round < 20; round++) {
          const reads = [];
          for (let i = 0; i < 64; i++) reads.push(c.read(o.fh, i * 4096, 4096, { nodeid: e.nodeid }));
          // Stop while the backend works through the burst, then resume where it says it
          // stopped: the rest must be served once, the served ones not again.
          await new Promise((r) => setImmediate(r));
          const bases = await fe.stopQueues();
          if (bases[queues] !== q.vq.availIdx) midBurst++;
          await fe.startQueues(bases);
          const got = await Promise.all(reads);
          got.forEach((r, i) => assert.deepEqual(ok(r, `READ ${i}`), want.subarray(i * 4096, (i + 1) * 4096)));
          assert.deepEqual(q.strays, [], 'no completion arrived twice or for a chain never made');
          assert.equal(q.vq.lastUsedIdx, q.vq.availIdx, 'every request was answered');
        }
        if (process.env.VIRTIOFSD_TEST_LOG === '1') process.stderr.write(`${kind}: ${midBurst} of 20 stops landed mid-burst\n`);
      } finally {
        await cleanup(env);
      }
    });

    it(`${kind}: requests queued while the queues are stopped are served after the restart`, async function () {
      const env = makeEnv();
      try {
        const c = await launch(env, kind);
        ok(await c.init(), 'INIT');
        const e = ok(await c.lookup(1n, 'hello.txt'), 'LOOKUP');
        const fe = env.fe as VhostUserFrontend;
        const bases = await fe.stopQueues();
        const pending = [c.getattr(e.nodeid), c.getattr(e.nodeid), c.getattr(1n)];
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(fe.queue(1).vq.pendingUsed(), 0, 'nothing is served while stopped');
        await fe.startQueues(bases);
        for (const r of await Promise.all(pending)) assert.equal(r.error, 0);
      } finally {
        await cleanup(env);
      }
    });
  }

  describe('--tag: the config space for front ends that ask the backend (GET_CONFIG)', () => {
    let env: Env;
    beforeEach(() => {
      env = makeEnv();
    });
    afterEach(async () => {
      await cleanup(env);
    });
    /** GET_CONFIG of virtio_fs_config's tag and num_request_queues: [tag, queues]. */
    const readConfig = async (fe: VhostUserFrontend): Promise<[string, number]> => {
      const req = Buffer.alloc(12 + 40);
      req.writeUInt32LE(40, 4);
      const r = await fe.requestReply(FrontendReq.GET_CONFIG, req);
      assert.equal(r.length, 52, 'header and 40 bytes');
      assert.deepEqual([r.readUInt32LE(0), r.readUInt32LE(4), r.readUInt32LE(8)], [0, 40, 0], 'the header comes back');
      const tag = r.subarray(12, 48);
      return [tag.subarray(0, tag.indexOf(0) < 0 ? 36 : tag.indexOf(0)).toString(), r.readUInt32LE(48)];
    };
    const withConfig = defaultProtocolMask() | (1n << BigInt(ProtocolFeature.CONFIG));

    // The C virtiofsd has no --tag.
    for (const kind of ['ts', 'rust'] as const) {
      it(`${kind}: offers CONFIG with --tag and answers GET_CONFIG with the tag and one request queue`, async () => {
        env.daemon = startDaemon(kind, { sharedDir: env.shared, socketPath: env.socket, extraArgs: ['--tag=shared-docs'] });
        const fe = (env.fe = await env.daemon.connect());
        const n = await fe.negotiate({ protocolMask: withConfig });
        assert.ok(hasBit(n.protocolFeatures, ProtocolFeature.CONFIG), 'CONFIG offered');
        assert.deepEqual(await readConfig(fe), ['shared-docs', 1]);
        await helloRoundTrip(new FuseClient(fe));
        await closeAndExpectExit(env);
      });

      it(`${kind}: without --tag, does not offer CONFIG`, async () => {
        const c = await launch(env, kind, { protocolMask: withConfig });
        assert.ok(!hasBit(env.fe!.protocolFeatures, ProtocolFeature.CONFIG));
        await helloRoundTrip(c);
        await closeAndExpectExit(env);
      });
    }

    it('ts: the number of request queues is how many the front end set up', async () => {
      env.daemon = startDaemon('ts', { sharedDir: env.shared, socketPath: env.socket, extraArgs: ['--tag=t'] });
      const fe = (env.fe = await env.daemon.connect());
      await fe.negotiate({ protocolMask: withConfig, requestQueues: 3 });
      assert.deepEqual(await readConfig(fe), ['t', 3]);
      // A range past the 256 bytes a config space may have is refused with an empty reply.
      const bad = Buffer.alloc(12);
      bad.writeUInt32LE(250, 0);
      bad.writeUInt32LE(40, 4);
      assert.deepEqual([...(await fe.requestReply(FrontendReq.GET_CONFIG, bad))], Array(12).fill(0), 'a header without bytes');
      assert.deepEqual([...(await fe.requestReply(FrontendReq.GET_CONFIG, Buffer.alloc(5)))], Array(12).fill(0), 'a message shorter than its header');
      await helloRoundTrip(new FuseClient(fe));
      await closeAndExpectExit(env);
    });

    it('ts: a tag longer than the 36 bytes of the config space is refused at start', async () => {
      env.daemon = startDaemon('ts', { sharedDir: env.shared, socketPath: env.socket, extraArgs: [`--tag=${'x'.repeat(37)}`] });
      assert.equal((await env.daemon.waitExit(10000)).code, 2, env.daemon.describeExit());
      assert.match(env.daemon.output(), /a tag has at most 36 bytes/);
    });
  });

  describe('raw messages', () => {
    let env: Env;
    beforeEach(() => {
      env = makeEnv();
    });
    afterEach(async () => {
      await cleanup(env);
    });

    for (const kind of KINDS) {
      it(`${kind}: answers GET_FEATURES sent raw with flags exactly VERSION|REPLY`, async () => {
        env.daemon = startDaemon(kind, { sharedDir: env.shared, socketPath: env.socket });
        const fe = (env.fe = await env.daemon.connect());
        fe.sendRaw(FrontendReq.GET_FEATURES, 0x1);
        const m = await fe.recv(2000, 'GET_FEATURES reply');
        assert.ok(m && m.payload);
        assert.equal(m.request, FrontendReq.GET_FEATURES);
        assert.equal(m.flags, 0x5);
        assert.equal(m.size, 8);
        fe.close();
        env.fe = null;
        await env.daemon.waitExit(5000);
      });
    }
  });
});

describe('test front end building blocks (no daemon)', () => {
  it('GuestMemory: two regions, translation, allocation with coalescing', () => {
    const half = 512 * 1024;
    const m = new GuestMemory({ size: 2 * half, regions: 2, gpaBase: 0x1_0000_0000, regionGap: 0x10_0000 });
    try {
      const [r0, r1] = m.describe();
      assert.equal(r0.guestPhysAddr, 0x1_0000_0000);
      assert.equal(r1.guestPhysAddr, 0x1_0000_0000 + half + 0x10_0000);
      assert.notEqual(r0.userspaceAddr, r0.guestPhysAddr);
      assert.equal(m.fromUaddr(m.toUaddr(r1.guestPhysAddr + 12)), r1.guestPhysAddr + 12);
      const a = m.alloc(100, 64);
      assert.equal(a.gpa % 64, 0);
      a.buf.write('abc');
      assert.equal(m.read(a.gpa, 3).toString(), 'abc');
      const fill = m.alloc(half - 4096, 16, 0);
      const b = m.alloc(8192); // no room left in region 0
      assert.equal(b.region, 1);
      assert.equal(m.regionOf(m.unmappedGpa()), -1);
      assert.throws(() => m.view(r0.guestPhysAddr + half - 8, 16), /not inside one region/);
      for (const x of [a, fill, b]) m.free(x);
      assert.equal(m.liveAllocations, 0);
      const all = m.alloc(half, 4096, 0); // coalesced back into one range
      assert.equal(all.gpa, r0.guestPhysAddr);
    } finally {
      m.close();
    }
  });

  it('GuestMemory with recycle: a freed buffer comes back for its size; when memory runs out, kept ones return to the free list', () => {
    const size = 1 << 20;
    const m = new GuestMemory({ size, recycle: true });
    try {
      const a = m.alloc(4096 + 16, 64);
      a.buf.fill(7);
      m.free(a);
      assert.equal(m.liveAllocations, 0);
      const b = m.alloc(4096 + 16, 64);
      assert.equal(b.gpa, a.gpa, 'the same buffer again');
      assert.ok(b.buf.every((x) => x === 0), 'zeroed again');
      const c = m.alloc(4096 + 16, 64, undefined, false);
      assert.notEqual(c.gpa, b.gpa);
      m.free(b);
      m.free(c);
      // Nothing else is live, but both buffers are kept aside: a whole-memory allocation
      // needs them back on the free list, coalesced.
      const all = m.alloc(size, 4096);
      assert.equal(all.gpa, m.regions[0].guestPhysAddr);
      m.free(all);
      assert.equal(m.liveAllocations, 0);
    } finally {
      m.close();
    }
  });

  it('GuestMemory: one memfd seen at two mmap offsets', () => {
    const m = new GuestMemory({ size: 1 << 20, regions: 2, sharedFd: true });
    try {
      const [g0, g1] = m.regions;
      assert.equal(g0.fd, g1.fd);
      assert.equal(g1.mmapOffset, g0.memorySize);
      m.write(g1.guestPhysAddr, Buffer.from('xyz'));
      const whole = native.mmapShared(g0.fd, 1 << 20, 0);
      assert.equal(whole.subarray(g1.mmapOffset, g1.mmapOffset + 3).toString(), 'xyz');
    } finally {
      m.close();
    }
  });

  it('Virtqueue: layout, chains, indirect tables, used ring and event index', () => {
    const m = new GuestMemory({ size: 1 << 20 });
    try {
      const vq = new Virtqueue(m, { size: 8, eventIdx: true });
      assert.equal(vq.descGpa % 4096, 0);
      assert.equal(vq.availGpa, vq.descGpa + 8 * DESC_SIZE);
      assert.equal(vq.usedGpa % 4096, 0);
      const head = vq.addChain([{ gpa: 0x1000, len: 10 }], [{ gpa: 0x2000, len: 20 }]);
      const d0 = vq.readDescriptor(head);
      assert.equal(d0.flags, VirtqDescFlags.NEXT);
      const d1 = vq.readDescriptor(d0.next);
      assert.equal(d1.flags, VirtqDescFlags.WRITE);
      assert.equal(BigInt(d1.addr), 0x2000n);
      assert.deepEqual(vq.publish(), { oldIdx: 0, newIdx: 1 });
      // play the device: used entry, then used.idx
      const used = m.view(vq.usedGpa, 4 + 8 * 8 + 2);
      used.writeUInt32LE(head, 4);
      used.writeUInt32LE(5, 8);
      used.writeUInt16LE(1, 2);
      assert.deepEqual(vq.popUsed(), { id: head, len: 5, known: true });
      assert.equal(vq.numFree, 8);
      assert.equal(m.view(vq.availGpa + 4 + 2 * 8, 2).readUInt16LE(0), 1, 'used_event follows');
      const ih = vq.addChain([{ gpa: 0x3000, len: 1 }], [{ gpa: 0x4000, len: 2 }, { gpa: 0x5000, len: 3 }], {
        indirect: true,
      });
      const id = vq.readDescriptor(ih);
      assert.equal(id.flags, VirtqDescFlags.INDIRECT);
      assert.equal(id.len, 3 * DESC_SIZE);
      const table = m.view(Number(id.addr), 3 * DESC_SIZE);
      assert.equal(table.readUInt16LE(2 * DESC_SIZE + 12), VirtqDescFlags.WRITE);
      assert.equal(vq.numFree, 7);
      for (let i = 0; i < 7; i++) vq.addChain([{ gpa: 0x1000, len: 1 }], []);
      assert.throws(() => vq.addChain([{ gpa: 0x1000, len: 1 }], []), QueueFullError);
      // the device asks for a kick only once avail passes avail_event
      used.writeUInt16LE(5, 4 + 8 * 8);
      assert.equal(vq.needsKick(1, 4), false);
      assert.equal(vq.needsKick(4, 9), true);
      assert.equal(vringNeedEvent(0xffff, 0, 0xfffe), true);
    } finally {
      m.close();
    }
  });
});
