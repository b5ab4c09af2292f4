/**
 * Hostile front ends and guests against virtiofsd-ts, through its real socket: malformed
 * vhost-user messages, memory tables that overlap or do not map, rings outside guest memory,
 * and descriptor chains that point outside guest memory, loop, run past their table or nest
 * indirect tables. Each must give a log line and either a refusal (non-zero REPLY_ACK), a
 * broken queue (its error eventfd signalled) or a closed connection; never a crash, a hang
 * or an access outside the mapped regions. After every case the daemon must still be alive,
 * and where only a queue broke, a restart of the queues brings the device back.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as abi from '../../src/fuse/abi';
import { native } from '../../src/native';
import { encodeHeader, encodeMemoryTable, encodeVringState, Flags, FrontendReq, type MemoryRegion } from '../../src/vhost/messages';
import { Daemon, startDaemon } from '../frontend/daemons';
import { VhostUserFrontend, type FrontendQueue, type NegotiateOptions } from '../frontend/frontend';
import { FuseClient, ok } from '../frontend/fuse-client';
import { VirtqDescFlags, type RawDescriptor } from '../frontend/vring';

const { NEXT, WRITE, INDIRECT } = VirtqDescFlags;

interface Env {
  dir: string;
  shared: string;
  daemon: Daemon;
  fe: VhostUserFrontend;
  client: FuseClient;
}

async function launch(opts: NegotiateOptions = {}, extraArgs: string[] = [], init = true): Promise<Env> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-bad-'));
  const shared = path.join(dir, 'shared');
  fs.mkdirSync(shared);
  fs.writeFileSync(path.join(shared, 'hello.txt'), 'hello\n');
  const daemon = startDaemon('ts', { sharedDir: shared, socketPath: path.join(dir, 'vfs.sock'), extraArgs });
  const fe = await daemon.connect();
  await fe.negotiate({ queueSize: 8, ...opts });
  const client = new FuseClient(fe, { timeoutMs: 3000 });
  if (init) ok(await client.init(), 'INIT');
  return { dir, shared, daemon, fe, client };
}

async function teardown(env: Env | null): Promise<void> {
  if (!env) return;
  env.fe.close();
  await env.daemon.stop();
  fs.rmSync(env.dir, { recursive: true, force: true });
}

/** The daemon is alive and the connection still answers a request that owes a reply. */
async function assertAlive(env: Env): Promise<void> {
  assert.equal(env.daemon.exited, null, `daemon died: ${env.daemon.describeExit()}`);
  const f = await env.fe.getFeatures();
  assert.ok(f > 0n);
}

/** The FUSE device still serves requests: LOOKUP and READ of hello.txt. */
async function assertServes(env: Env): Promise<void> {
  const e = ok(await env.client.lookup(1n, 'hello.txt'), 'LOOKUP');
  const o = ok(await env.client.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
  const data = ok(await env.client.read(o.fh, 0, 100, { nodeid: e.nodeid }), 'READ');
  assert.equal(data.toString(), 'hello\n');
  ok(await env.client.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
}

/** Sends a raw request with NEED_REPLY and returns the REPLY_ACK value. */
async function rawAck(fe: VhostUserFrontend, request: number, payload: Buffer, fds: number[] = [], size?: number): Promise<bigint> {
  fe.sendRaw(request, Flags.VERSION | Flags.NEED_REPLY, payload, fds, size);
  const m = await fe.recv(3000, `the REPLY_ACK to request ${request}`);
  assert.ok(m && m.payload, 'the daemon replied instead of closing the connection');
  assert.equal(m.request, request);
  assert.equal(m.flags, Flags.VERSION | Flags.REPLY);
  return m.payload.readBigUInt64LE(0);
}

/** The daemon closed the connection: EOF, or a reset when it left our bytes unread. */
async function expectClosed(fe: VhostUserFrontend): Promise<void> {
  try {
    await fe.waitForEof(3000);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ECONNRESET') throw e;
  }
}

async function waitForLog(d: Daemon, re: RegExp, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!re.test(d.output())) {
    if (Date.now() > end) assert.fail(`daemon never logged ${re}; output:\n${d.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A valid GETATTR request header in guest memory, so only the chain's shape is wrong. */
function getattrRequest(env: Env): { gpa: number; len: number } {
  const len = abi.IN_HEADER_SIZE + abi.GETATTR_IN_SIZE;
  const b = env.fe.memory!.alloc(len, 64);
  abi.encodeInHeader(b.buf, 0, { len, opcode: abi.Opcode.GETATTR, unique: 1000n, nodeid: 1n, uid: 0, gid: 0, pid: 1, totalExtlen: 0 });
  return { gpa: b.gpa, len };
}

/**
 * Exposes a hand-built chain at `head` on queue 1 and kicks; expects the queue to break:
 * its error eventfd signalled and the reason logged. Then checks the daemon survived, and
 * that stopping and restarting the queues (what QEMU does at a guest reset) serves again.
 */
async function expectBrokenQueue(env: Env, head: number, reason: RegExp): Promise<void> {
  const q: FrontendQueue = env.fe.queue(1);
  q.vq.pushAvailRaw(head);
  q.vq.publish();
  q.kickNow();
  assert.ok(native.pollReadable(q.errFd, 3000), 'the error eventfd was not signalled');
  assert.ok(q.readErr() > 0);
  await waitForLog(env.daemon, /virtqueue broken/);
  assert.match(env.daemon.output(), reason);
  await assertAlive(env);
  const bases = await env.fe.stopQueues();
  assert.equal(bases.length, env.fe.queues.length, 'GET_VRING_BASE answered for every queue');
  await env.fe.startQueues(bases.map(() => 0), { resetRings: true });
  ok(await env.client.init(), 'INIT after the restart');
  await assertServes(env);
}

describe('virtiofsd-ts against a hostile front end', function () {
  this.timeout(20000);
  let env: Env | null = null;
  afterEach(async () => {
    await teardown(env);
    env = null;
  });

  describe('vhost-user messages', () => {
    it('refuses a request whose payload has the wrong size, and goes on', async () => {
      env = await launch();
      const ack = await rawAck(env.fe, FrontendReq.SET_VRING_NUM, Buffer.alloc(4));
      assert.notEqual(ack, 0n);
      await waitForLog(env.daemon, /SET_VRING_NUM with payload 4 bytes, expected 8/);
      await assertAlive(env);
      await assertServes(env);
    });

    it('refuses an unknown request, and goes on', async () => {
      env = await launch();
      assert.notEqual(await rawAck(env.fe, 200, Buffer.alloc(8)), 0n);
      await waitForLog(env.daemon, /unknown request 200/);
      await assertAlive(env);
    });

    it('refuses a request with the wrong number of descriptors and closes the extra ones', async () => {
      env = await launch();
      const a = native.eventfdCreate();
      const b = native.eventfdCreate();
      const payload = Buffer.alloc(8);
      payload.writeBigUInt64LE(1n);
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_VRING_KICK, payload, [a, b]), 0n);
      native.close(a);
      native.close(b);
      await waitForLog(env.daemon, /SET_VRING_KICK with 2 fds, expected 0-1/);
      await assertAlive(env);
      await assertServes(env);
    });

    it('refuses a request for a queue the device does not have', async () => {
      env = await launch();
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_VRING_NUM, encodeVringState({ index: 999, num: 8 })), 0n);
      await waitForLog(env.daemon, /queue index 999 out of range/);
      await assertAlive(env);
    });

    it('refuses a queue size that is not a power of two', async () => {
      env = await launch();
      await env.fe.stopQueues();
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_VRING_NUM, encodeVringState({ index: 1, num: 100 })), 0n);
      await waitForLog(env.daemon, /queue size 100 is not a power of two/);
      await assertAlive(env);
    });

    it('refuses a dirty log of size 0 with a failure reply, and goes on', async () => {
      env = await launch();
      const memfd = native.memfdCreate('log', 4096);
      // SET_LOG_BASE always has a u64 reply: the status.
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_LOG_BASE, Buffer.alloc(16), [memfd]), 0n);
      native.close(memfd);
      await waitForLog(env.daemon, /refused the dirty log/);
      await assertAlive(env);
    });

    it('closes the connection on a SET_LOG_BASE without its descriptor (it owes a reply)', async () => {
      env = await launch();
      env.fe.sendRaw(FrontendReq.SET_LOG_BASE, Flags.VERSION, Buffer.alloc(16));
      await expectClosed(env.fe);
      await waitForLog(env.daemon, /SET_LOG_BASE with 0 fds, expected 1/);
    });

    it('closes the connection when a GET request it must refuse owes a reply', async () => {
      env = await launch();
      env.fe.sendRaw(FrontendReq.GET_VRING_BASE, Flags.VERSION, encodeVringState({ index: 77, num: 0 }));
      await expectClosed(env.fe);
      await waitForLog(env.daemon, /GET_VRING_BASE refused, and it owes a reply/);
      const exit = await env.daemon.waitExit(5000);
      assert.equal(exit.signal, null, env.daemon.describeExit());
    });

    it('serves a message written in pieces: its header in two writes, its payload later, its descriptor on the first byte', async () => {
      env = await launch();
      const q = env.fe.queue(1);
      const err = native.eventfdCreate();
      try {
        const payload = Buffer.alloc(8);
        payload.writeBigUInt64LE(1n);
        const msg = Buffer.concat([encodeHeader({ request: FrontendReq.SET_VRING_ERR, flags: Flags.VERSION | Flags.NEED_REPLY, size: 8 }, 0), payload]);
        env.fe.sendBytes(msg.subarray(0, 5), [err]);
        await sleep(50);
        // The queues serve while the rest of the message has not come.
        await assertServes(env);
        env.fe.sendBytes(msg.subarray(5, 12));
        await sleep(50);
        env.fe.sendBytes(msg.subarray(12));
        const m = await env.fe.recv(3000, 'the REPLY_ACK to SET_VRING_ERR');
        assert.ok(m && m.payload, 'the daemon replied instead of closing the connection');
        assert.equal(m.request, FrontendReq.SET_VRING_ERR);
        assert.equal(m.payload.readBigUInt64LE(0), 0n);
        // The descriptor that came with the first piece is queue 1's error notifier now.
        q.vq.setAvailIdxRaw(q.vq.availIdx + q.vq.size + 3);
        q.kickNow();
        assert.ok(native.pollReadable(err, 3000), 'the error eventfd of the pieced message was not signalled');
      } finally {
        native.close(err);
      }
      await assertAlive(env);
    });

    it('a front end that closes in the middle of a message: logged, and the daemon ends cleanly', async () => {
      env = await launch();
      const err = native.eventfdCreate();
      const header = encodeHeader({ request: FrontendReq.SET_VRING_ERR, flags: Flags.VERSION, size: 8 }, 0);
      env.fe.sendBytes(header, [err]);
      native.close(err);
      await sleep(50);
      env.fe.close();
      await waitForLog(env.daemon, /closed the connection in the middle of a message/);
      const exit = await env.daemon.waitExit(5000);
      assert.equal(exit.code, 0, env.daemon.describeExit());
    });

    it('closes the connection on bad version bits in the header', async () => {
      env = await launch();
      env.fe.sendRaw(FrontendReq.GET_FEATURES, 0x2);
      await expectClosed(env.fe);
      await waitForLog(env.daemon, /bad header flags 0x2/);
      const exit = await env.daemon.waitExit(5000);
      assert.equal(exit.signal, null, env.daemon.describeExit());
    });

    it('closes the connection when a header announces an oversized payload', async () => {
      env = await launch();
      env.fe.sendRaw(FrontendReq.SET_FEATURES, Flags.VERSION, Buffer.alloc(8), [], 1 << 20);
      await expectClosed(env.fe);
      await waitForLog(env.daemon, /exceeds 4096/);
      const exit = await env.daemon.waitExit(5000);
      assert.equal(exit.signal, null, env.daemon.describeExit());
    });
  });

  describe('memory tables', () => {
    function table(env: Env, regions: MemoryRegion[]): Buffer {
      assert.ok(env.fe.memory);
      return encodeMemoryTable(regions);
    }

    it('refuses overlapping regions and keeps the previous table', async () => {
      env = await launch();
      const [r] = env.fe.memory!.describe();
      const fd = env.fe.memory!.regionFds()[0];
      const second = { ...r, guestPhysAddr: r.guestPhysAddr + 4096, userspaceAddr: r.userspaceAddr + 0x100_0000_0000 };
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_MEM_TABLE, table(env, [r, second]), [fd, fd]), 0n);
      await waitForLog(env.daemon, /memory regions overlap/);
      await assertAlive(env);
      await assertServes(env);
    });

    it('refuses a region whose descriptor cannot be mapped', async () => {
      env = await launch();
      const [r] = env.fe.memory!.describe();
      const efd = native.eventfdCreate();
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_MEM_TABLE, table(env, [r]), [efd]), 0n);
      native.close(efd);
      await waitForLog(env.daemon, /mmap/);
      await assertAlive(env);
      await assertServes(env);
    });

    it('refuses a region larger than its memfd (touching it would raise SIGBUS)', async () => {
      env = await launch();
      const small = native.memfdCreate('small', 1 << 20);
      const region = { guestPhysAddr: 0x4000_0000_0, memorySize: 64 << 20, userspaceAddr: 0x7e00_0000_0000, mmapOffset: 0 };
      assert.notEqual(await rawAck(env.fe, FrontendReq.ADD_MEM_REG, Buffer.concat([Buffer.alloc(8), table(env, [region]).subarray(8)]), [small]), 0n);
      native.close(small);
      await waitForLog(env.daemon, /runs past the end of its file/);
      await assertAlive(env);
      await assertServes(env);
    });

    it('a front end that shrinks a region\'s file under the daemon: the fault is caught, logged, and the connection closed; the daemon ends cleanly', async () => {
      env = await launch();
      const [r] = env.fe.memory!.describe();
      const fd = env.fe.memory!.regionFds()[0];
      const q = env.fe.queue(1);
      const out = env.fe.memory!.alloc(64);
      // A request in the region's last page, which the file then no longer has: the daemon
      // reads its header from a page that raises SIGBUS. (This process must not touch it.)
      const lastPage = r.guestPhysAddr + r.memorySize - 4096;
      fs.ftruncateSync(fd, r.mmapOffset + r.memorySize - (1 << 20));
      const used = q.submit([{ gpa: lastPage, len: abi.IN_HEADER_SIZE + abi.GETATTR_IN_SIZE }], [{ gpa: out.gpa, len: 64 }], { timeoutMs: 5000 }).catch((e: unknown) => e);
      await waitForLog(env.daemon, /shrank the file of its shared memory under us \(SIGBUS\): closing the connection/);
      await expectClosed(env.fe);
      await used;
      const exit = await env.daemon.waitExit(5000);
      assert.equal(exit.code, 0, env.daemon.describeExit());
      assert.equal(exit.signal, null);
    });

    it('a SIGBUS sent to the daemon (no fault) still ends it as before the guard', async () => {
      env = await launch();
      process.kill(env.daemon.proc.pid!, 'SIGBUS');
      const exit = await env.daemon.waitExit(5000);
      assert.equal(exit.signal, 'SIGBUS', env.daemon.describeExit());
      assert.doesNotMatch(env.daemon.output(), /shrank the file/);
    });

    it('refuses a table that announces more regions than it carries descriptors', async () => {
      env = await launch();
      const regions = env.fe.memory!.describe();
      const second = { ...regions[0], guestPhysAddr: 0x10_0000_0000, userspaceAddr: 0x7d00_0000_0000 };
      assert.notEqual(await rawAck(env.fe, FrontendReq.SET_MEM_TABLE, table(env, [regions[0], second]), [env.fe.memory!.regionFds()[0]]), 0n);
      await waitForLog(env.daemon, /2 regions but 1 descriptors/);
      await assertAlive(env);
      await assertServes(env);
    });
  });

  describe('rings', () => {
    it('refuses to start a ring whose address is outside guest memory', async () => {
      env = await launch();
      const fe = env.fe;
      await fe.stopQueues();
      const q = fe.queue(1);
      const good = q.vq.ringUaddrs();
      await fe.setVringNum(1, q.vq.size);
      await fe.setVringBase(1, 0);
      await fe.setVringAddr(1, { ...good, used: 0x1234_0000_0000 });
      await fe.setVringKick(1, q.kickFd);
      await assert.rejects(fe.setVringEnable(1, true, true), /REPLY_ACK/);
      await waitForLog(env.daemon, /queue 1 cannot start: ring outside guest memory/);
      await assertAlive(env);
    });

    it('refuses a kick fd that cannot be waited on (a memfd, not an eventfd)', async () => {
      env = await launch();
      const fe = env.fe;
      await fe.stopQueues();
      const q = fe.queue(1);
      const memfd = native.memfdCreate('kick', 4096);
      try {
        await fe.setVringNum(1, q.vq.size);
        await fe.setVringBase(1, 0);
        await fe.setVringAddr(1, q.vq.ringUaddrs());
        await fe.setVringKick(1, memfd);
        await assert.rejects(fe.setVringEnable(1, true, true), /REPLY_ACK/);
      } finally {
        native.close(memfd);
      }
      await waitForLog(env.daemon, /queue 1 cannot start: .*uv_poll_init/);
      await assertAlive(env);
    });

    it('refuses a ring that starts inside guest memory and runs past its end', async () => {
      env = await launch();
      const fe = env.fe;
      await fe.stopQueues();
      const q = fe.queue(1);
      const [r] = fe.memory!.describe();
      await fe.setVringNum(1, q.vq.size);
      await fe.setVringAddr(1, { ...q.vq.ringUaddrs(), desc: r.userspaceAddr + r.memorySize - 64 });
      await fe.setVringKick(1, q.kickFd);
      await assert.rejects(fe.setVringEnable(1, true, true), /REPLY_ACK/);
      await waitForLog(env.daemon, /runs past the end of its memory region/);
      await assertAlive(env);
    });

    it('refuses to start a ring that lands misaligned in host memory (a region mapped at an odd offset of its file)', async () => {
      // The ring's guest addresses are aligned; the host's are not, and its index loads and
      // stores are atomic accesses (undefined on odd addresses; a fault on arm64).
      env = await launch();
      const fe = env.fe;
      await fe.stopQueues();
      const [r] = fe.memory!.describe();
      const odd = native.memfdCreate('odd', Number(r.memorySize) + 4096);
      try {
        assert.equal(await rawAck(fe, FrontendReq.SET_MEM_TABLE, encodeMemoryTable([{ ...r, mmapOffset: 1 }]), [odd]), 0n, 'the table itself is fine');
        const q = fe.queue(1);
        await fe.setVringNum(1, q.vq.size);
        await fe.setVringBase(1, 0);
        await fe.setVringAddr(1, q.vq.ringUaddrs());
        await fe.setVringKick(1, q.kickFd);
        await assert.rejects(fe.setVringEnable(1, true, true), /REPLY_ACK/);
      } finally {
        native.close(odd);
      }
      await waitForLog(env.daemon, /queue 1 cannot start: ring misaligned in host memory/);
      await assertAlive(env);
    });

    it('refuses a call notifier that is not an eventfd (a FIFO whose writes could block the queue)', async () => {
      env = await launch();
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fifo-'));
      execFileSync('mkfifo', [path.join(dir, 'call')]);
      const rd = fs.openSync(path.join(dir, 'call'), fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
      const wr = fs.openSync(path.join(dir, 'call'), fs.constants.O_WRONLY);
      try {
        const index = Buffer.alloc(8);
        index.writeBigUInt64LE(1n);
        assert.notEqual(await rawAck(env.fe, FrontendReq.SET_VRING_CALL, index, [wr]), 0n);
      } finally {
        fs.closeSync(wr);
        fs.closeSync(rd);
        fs.rmSync(dir, { recursive: true, force: true });
      }
      await waitForLog(env.daemon, /SET_VRING_CALL: queue 1's notifier is not an eventfd/);
      await assertAlive(env);
      await assertServes(env);
    });

    it('a new error eventfd sent while the queue runs is the one a broken ring is reported on', async () => {
      env = await launch();
      const q = env.fe.queue(1);
      const err = native.eventfdCreate();
      try {
        await env.fe.setVringErr(1, err);
        await env.fe.getFeatures(); // the SET_VRING_ERR has been served
        q.vq.setAvailIdxRaw(q.vq.availIdx + q.vq.size + 3);
        q.kickNow();
        assert.ok(native.pollReadable(err, 3000), 'the new error eventfd was not signalled');
        assert.ok(native.eventfdRead(err) > 0);
      } finally {
        native.close(err);
      }
      await waitForLog(env.daemon, /entries ahead of/);
      await assertAlive(env);
    });

    it('breaks only the queue whose avail index runs further ahead than the queue size', async () => {
      env = await launch();
      const q = env.fe.queue(1);
      q.vq.setAvailIdxRaw(q.vq.availIdx + q.vq.size + 3);
      q.kickNow();
      assert.ok(native.pollReadable(q.errFd, 3000), 'the error eventfd was not signalled');
      await waitForLog(env.daemon, /entries ahead of/);
      await assertAlive(env);
      const bases = await env.fe.stopQueues();
      await env.fe.startQueues(bases.map(() => 0), { resetRings: true });
      ok(await env.client.init(), 'INIT after the restart');
      await assertServes(env);
    });
  });

  describe('descriptor chains', () => {
    it('a chain head outside the queue', async () => {
      env = await launch();
      await expectBrokenQueue(env, env.fe.queue(1).vq.size + 5, /chain head 13 outside a queue of 8/);
    });

    it('a descriptor address outside guest memory', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const [a, b] = vq.takeDescriptors(2);
      vq.writeDescriptor(a, { addr: req.gpa, len: req.len, flags: NEXT, next: b });
      vq.writeDescriptor(b, { addr: env.fe.memory!.unmappedGpa(), len: 120, flags: WRITE, next: 0 });
      await expectBrokenQueue(env, a, /descriptor \d+: guest range 0x[0-9a-f]+\+120 is not in guest memory/);
    });

    it('a descriptor that starts in guest memory and runs past its end', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const [r] = env.fe.memory!.describe();
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: r.guestPhysAddr + r.memorySize - 16, len: 64, flags: 0, next: 0 });
      await expectBrokenQueue(env, a, /is not in guest memory/);
    });

    it('a descriptor address above 2^53', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: 0xffff_ffff_ffff_f000n, len: 64, flags: 0, next: 0 });
      await expectBrokenQueue(env, a, /descriptor address 0x[0-9a-f]+ out of range/);
    });

    it('a descriptor loop', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const [a, b] = vq.takeDescriptors(2);
      vq.writeDescriptor(a, { addr: req.gpa, len: req.len, flags: NEXT, next: b });
      vq.writeDescriptor(b, { addr: req.gpa, len: 8, flags: NEXT, next: a });
      await expectBrokenQueue(env, a, /loops or exceeds its table/);
    });

    it('a chain longer than the queue (every descriptor, then around again)', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const ids = vq.takeDescriptors(vq.size);
      ids.forEach((id, i) => vq.writeDescriptor(id, { addr: req.gpa, len: 8, flags: NEXT, next: ids[(i + 1) % ids.length] }));
      await expectBrokenQueue(env, ids[0], /loops or exceeds its table/);
    });

    it('a next index outside the descriptor table', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: req.gpa, len: req.len, flags: NEXT, next: 4000 });
      await expectBrokenQueue(env, a, /descriptor 4000 outside a table of 8/);
    });

    it('an indirect table inside an indirect table', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const inner = vq.writeIndirectTable([{ addr: req.gpa, len: req.len, flags: 0, next: 0 }]);
      const outer = vq.writeIndirectTable([{ addr: inner.gpa, len: 16, flags: INDIRECT, next: 0 }]);
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: outer.gpa, len: 16, flags: INDIRECT, next: 0 });
      await expectBrokenQueue(env, a, /indirect table inside an indirect table/);
    });

    it('a loop inside an indirect table', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const entries: RawDescriptor[] = [
        { addr: req.gpa, len: req.len, flags: NEXT, next: 1 },
        { addr: req.gpa, len: 8, flags: NEXT, next: 0 },
      ];
      const t = vq.writeIndirectTable(entries);
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: t.gpa, len: 32, flags: INDIRECT, next: 0 });
      await expectBrokenQueue(env, a, /loops or exceeds its table/);
    });

    it('an indirect table outside guest memory', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: env.fe.memory!.unmappedGpa(), len: 64, flags: INDIRECT, next: 0 });
      await expectBrokenQueue(env, a, /indirect table: guest address/);
    });

    it('an indirect table whose length is not a multiple of a descriptor', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const t = vq.writeIndirectTable([{ addr: req.gpa, len: req.len, flags: 0, next: 0 }]);
      const [a] = vq.takeDescriptors(1);
      vq.writeDescriptor(a, { addr: t.gpa, len: 20, flags: INDIRECT, next: 0 });
      await expectBrokenQueue(env, a, /indirect table of 20 bytes/);
    });

    it('a readable descriptor after a writable one', async () => {
      env = await launch();
      const vq = env.fe.queue(1).vq;
      const req = getattrRequest(env);
      const out = env.fe.memory!.alloc(128);
      const [a, b, c] = vq.takeDescriptors(3);
      vq.writeDescriptor(a, { addr: req.gpa, len: req.len, flags: NEXT, next: b });
      vq.writeDescriptor(b, { addr: out.gpa, len: 128, flags: WRITE | NEXT, next: c });
      vq.writeDescriptor(c, { addr: req.gpa, len: 8, flags: 0, next: 0 });
      await expectBrokenQueue(env, a, /readable descriptor after a writable one/);
    });
  });

  describe('malformed FUSE requests (the queue stays healthy)', () => {
    it('opcodes it does not know get ENOSYS and share one count (a guest sending every u32 grows nothing)', async () => {
      env = await launch();
      ok(await env.client.init(), 'INIT');
      for (const opcode of [4096, 70000, 0xfffffff0, 4097]) {
        assert.equal((await env.client.request(opcode, 1n, Buffer.alloc(0), 0)).error, -os.constants.errno.ENOSYS, `opcode ${opcode}`);
      }
      const daemon = env.daemon;
      await teardown(env);
      env = null;
      const perQueue = daemon.exitReport<{ opcodesPerQueue: Record<string, Record<string, number>> }>().opcodesPerQueue;
      assert.equal(perQueue['1'].UNKNOWN, 4, JSON.stringify(perQueue));
      assert.deepEqual(Object.keys(perQueue['1']).filter((k) => k.startsWith('UNKNOWN(')), [], 'no count per unknown opcode');
    });

    it('a request shorter than its header is dropped, a length that disagrees gets EINVAL', async () => {
      env = await launch();
      const mem = env.fe.memory!;
      const q = env.fe.queue(1);
      const short = mem.alloc(16);
      const out = mem.alloc(64);
      const u1 = await q.submit([{ gpa: short.gpa, len: 16 }], [{ gpa: out.gpa, len: 64 }], { timeoutMs: 3000 });
      assert.equal(u1.len, 0, 'no reply for a request without a header');
      const req = getattrRequest(env);
      mem.view(req.gpa, 4).writeUInt32LE(4096, 0); // header says 4096 bytes, the chain has 56
      const u2 = await q.submit([req], [{ gpa: out.gpa, len: 64 }], { timeoutMs: 3000 });
      assert.equal(u2.len, abi.OUT_HEADER_SIZE);
      const h = abi.decodeOutHeader(mem.read(out.gpa, 16), 0);
      assert.equal(h.error, -os.constants.errno.EINVAL);
      await assertServes(env);
    });

    for (const extra of [[], ['--log-level=trace']]) {
      const by = extra.length ? ' (served in JS)' : '';
      it(`without a session, before INIT and after DESTROY, every request but INIT gets EIO${by}`, async () => {
        env = await launch({}, extra, false);
        const c = env.client;
        const { EIO } = os.constants.errno;
        assert.equal((await c.lookup(1n, 'hello.txt')).error, -EIO, 'LOOKUP before INIT');
        assert.equal((await c.getattr(1n)).error, -EIO, 'GETATTR before INIT');
        assert.equal((await c.request(abi.Opcode.MKDIR, 1n, Buffer.concat([Buffer.alloc(abi.MKDIR_IN_SIZE), Buffer.from('d\0')]), abi.ENTRY_OUT_SIZE)).error, -EIO, 'MKDIR before INIT');
        assert.ok(!fs.existsSync(path.join(env.shared, 'd')), 'nothing done before INIT');
        ok(await c.init(), 'INIT');
        const e = ok(await c.lookup(1n, 'hello.txt'), 'LOOKUP in the session');
        const fh = ok(await c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN').fh;
        assert.equal((await c.request(abi.Opcode.DESTROY, 0n, Buffer.alloc(0), 0)).error, 0, 'DESTROY');
        assert.equal((await c.getattr(1n)).error, -EIO, 'GETATTR after DESTROY');
        assert.equal((await c.read(fh, 0, 10, { nodeid: e.nodeid })).error, -EIO, 'READ after DESTROY');
        // A new session (a remount) serves again.
        ok(await c.init(), 'INIT again');
        await assertServes(env);
        assert.equal(env.daemon.output().match(/before INIT or after DESTROY/g)?.length, 1, 'logged once');
      });

      it(`a request whose reply buffer cannot hold its reply gets EINVAL before anything is done${by}`, async () => {
        env = await launch({}, extra);
        const c = env.client;
        const { EINVAL } = os.constants.errno;
        const pid = env.daemon.proc.pid!;
        const fds = (): number => fs.readdirSync(`/proc/${pid}/fd`).length;
        const e = ok(await c.lookup(1n, 'hello.txt'), 'LOOKUP');
        const before = fds();
        const create = Buffer.alloc(abi.CREATE_IN_SIZE);
        create.writeUInt32LE(fs.constants.O_RDWR | fs.constants.O_CREAT, 0);
        create.writeUInt32LE(0o644, 4);
        const createArgs = Buffer.concat([create, Buffer.from('new.txt\0')]);
        assert.equal((await c.request(abi.Opcode.CREATE, 1n, createArgs, abi.ENTRY_OUT_SIZE)).error, -EINVAL, 'CREATE with room for the entry only');
        assert.ok(!fs.existsSync(path.join(env.shared, 'new.txt')), 'the file was not made');
        const open = Buffer.alloc(abi.OPEN_IN_SIZE);
        assert.equal((await c.request(abi.Opcode.OPEN, e.nodeid, open, abi.OPEN_OUT_SIZE - 1)).error, -EINVAL, 'OPEN');
        assert.equal((await c.request(abi.Opcode.OPENDIR, 1n, open, 0)).error, -EINVAL, 'OPENDIR');
        assert.equal(fds(), before, 'no handle left open');
        const mkdir = Buffer.concat([Buffer.alloc(abi.MKDIR_IN_SIZE), Buffer.from('d\0')]);
        mkdir.writeUInt32LE(0o755, 0);
        assert.equal((await c.request(abi.Opcode.MKDIR, 1n, mkdir, abi.ENTRY_OUT_SIZE - 8)).error, -EINVAL, 'MKDIR');
        assert.ok(!fs.existsSync(path.join(env.shared, 'd')), 'the directory was not made');
        // A WRITE whose size runs past the length its header gives (the buffers hold more).
        const fh = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN for writing').fh;
        const w = Buffer.alloc(abi.WRITE_IN_SIZE);
        abi.encodeWriteIn(w, 0, { fh: BigInt(fh), offset: 0n, size: 6, writeFlags: 0, lockOwner: 0n, flags: 0 });
        const r = await c.request(abi.Opcode.WRITE, e.nodeid, w, abi.WRITE_OUT_SIZE, Buffer.from('HELLO!'), { headerLen: abi.IN_HEADER_SIZE + abi.WRITE_IN_SIZE + 2 });
        assert.equal(r.error, -EINVAL, 'WRITE of 6 bytes in a request of 2');
        assert.equal(fs.readFileSync(path.join(env.shared, 'hello.txt'), 'utf8'), 'hello\n', 'nothing written');
        ok(await c.release(fh, { nodeid: e.nodeid }), 'RELEASE');
        await assertServes(env);
      });
    }

    it('a name without its NUL, with a slash, or empty gets EINVAL; ".." at the root stays at the root', async () => {
      env = await launch();
      const c = env.client;
      const r1 = await c.request(abi.Opcode.LOOKUP, 1n, Buffer.from('hello.txt'), abi.ENTRY_OUT_SIZE);
      assert.equal(r1.error, -os.constants.errno.EINVAL);
      assert.equal((await c.lookup(1n, 'a/b')).error, -os.constants.errno.EINVAL);
      assert.equal((await c.lookup(1n, '')).error, -os.constants.errno.EINVAL);
      const root = ok(await c.getattr(1n), 'GETATTR root');
      const up = ok(await c.lookup(1n, '..'), 'LOOKUP ..');
      assert.equal(up.attr.ino, root.attr.ino, '".." of the shared directory is the shared directory');
      await assertServes(env);
    });

    it('an unknown nodeid gets an error, not a crash', async () => {
      env = await launch();
      const r = await env.client.getattr(123456789n);
      assert.ok(r.error < 0);
      const r2 = await env.client.read(987654n, 0, 100);
      assert.ok(r2.error < 0);
      await assertServes(env);
    });
  });
});
