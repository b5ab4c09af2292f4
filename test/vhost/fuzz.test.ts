/**
 * A guest that sends garbage: thousands of FUSE requests with random opcodes, node ids, file
 * handles, lengths and bodies (random bytes, or a structure with hostile names: "..", "a/b",
 * a name of 300 bytes, no NUL; lock requests of three owners on shared ranges), on four
 * lanes at once, against the real daemon through its socket, in four configurations, one at
 * --log-level=trace (every request served by JS, no fast path).
 * Seeded, so a failure can be replayed (FUZZ_SEED=n). Every request must come back (no hang)
 * with a well-formed reply or none (a request too short for a header), and be refused with
 * an errno, never with an exception of ours (logged as "request failed"); the daemon must
 * live through it and serve a new session afterwards; and nothing outside the share may
 * change: a canary directory beside it, reachable from inside only through a symlink, keeps
 * its file, its mode and its listing.
 *
 * A SETLKW may wait for a lock another owner holds, by design: it is not waited for in its
 * lane. JS gives a wait up after a second (EINTR: the guest asks again), and once the lanes
 * are done the queues are stopped (as QEMU stops them), which gives up any wait left; every
 * SETLKW must have come back by then, well-formed.
 * Left out: lengths that would fill the host's disk (FALLOCATE and COPY_FILE_RANGE are kept
 * under 1 MiB).
 *
 * And a front end that sends garbage: random vhost-user messages (codes, flags, sizes that
 * lie, payloads, descriptors of every kind), on a fresh connection or on a device already
 * running. The daemon may refuse or close the connection, but must never crash or hang: it
 * answers a request that owes a reply, or closes, and exits cleanly when the front end goes.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { native } from '../../src/native';
import { Flags, FrontendReq } from '../../src/vhost/messages';
import { startDaemon, type Daemon } from '../frontend/daemons';
import type { VhostUserFrontend } from '../frontend/frontend';
import { FuseClient, ok } from '../frontend/fuse-client';
import { connectEachTest } from '../support/connected';
import { rng } from '../support/random';
import { leStruct as le } from '../support/structs';

const REQUESTS = 5000;
const LANES = 4;

const HOSTILE_NAMES = ['..', '.', 'a/b', '', 'x'.repeat(300), '../outside', 'f', 'd', 'l', 'fifo', 'new', 'd/f', '/etc/passwd', 'outside', '\u00ff\u00fe', 'canary'];

/** Everything below dir, as "path mode size" lines: what must not change outside the share. */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (p: string): void => {
    for (const e of fs.readdirSync(p).sort()) {
      const full = path.join(p, e);
      const st = fs.lstatSync(full);
      out.push(`${path.relative(dir, full)} ${st.mode.toString(8)} ${st.size} ${st.uid}:${st.gid}`);
      if (st.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return out;
}

describe('a guest sending random FUSE requests', function () {
  this.timeout(180000);
  const connect = connectEachTest();

  for (const [label, args, seed, queues] of [
    ['defaults', ['--cache=never'], 1, 1],
    ['cache always, writeback, an I/O pool, xattrs', ['--cache=always', '--writeback', '--thread-pool-size=4', '--xattr'], 2, 1],
    ['two request queues, two lanes on each', ['--cache=never', '--thread-pool-size=2'], 3, 2],
    ['every request through JS (--log-level=trace)', ['--cache=never', '--log-level=trace'], 4, 1],
  ] as const) {
    it(`gets a well-formed reply to each, never reaches outside the share, and serves on (${label})`, async () => {
      const s = Number(process.env.FUZZ_SEED ?? seed);
      const rand = rng(s);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
      const u64 = (): bigint => (BigInt(Math.floor(rand() * 2 ** 32)) << 32n) | BigInt(Math.floor(rand() * 2 ** 32));

      const env = await connect('vfs-fuzz-', [...args], {}, undefined, { requestQueues: queues });
      const { share, dir, fe, c } = env;
      // Beside the share, outside it: a canary, reachable from inside only through a symlink.
      const outside = path.join(dir, 'outside');
      fs.mkdirSync(outside);
      fs.writeFileSync(path.join(outside, 'canary'), 'must not change');
      fs.writeFileSync(path.join(share, 'f'), 'a file\n');
      fs.mkdirSync(path.join(share, 'd'));
      fs.writeFileSync(path.join(share, 'd', 'f'), 'in d\n');
      fs.symlinkSync('../outside', path.join(share, 'l'));
      fs.symlinkSync(path.join(outside, 'canary'), path.join(share, 'abs'));
      assert.equal(spawnSync('mkfifo', [path.join(share, 'fifo')]).status, 0);
      const before = snapshot(outside);
      const parentBefore = fs.readdirSync(dir).sort();

      const nodeids: bigint[] = [1n, 0n];
      for (const n of ['f', 'd', 'l', 'abs', 'fifo']) nodeids.push(ok(await c.lookup(1n, n), `LOOKUP ${n}`).nodeid);
      const fhs: bigint[] = [0n, ok(await c.open(nodeids[2], 2), 'OPEN f').fh, ok(await c.opendir(nodeids[3]), 'OPENDIR d').fh];
      const opcodes = Object.values(abi.Opcode).filter((v): v is number => typeof v === 'number');

      // Well-formed requests on a small namespace, so that they meet: made, renamed, linked,
      // opened, written and removed by one lane while another uses them.
      const NAMES = ['a', 'b', 'c', 'sub', 'sub2', '..', 'a/b'];
      const cname = (): Buffer => Buffer.from(`${pick(NAMES)}\0`);
      const O = abi.Opcode;
      const WELL_FORMED = [O.LOOKUP, O.UNLINK, O.RMDIR, O.MKDIR, O.MKNOD, O.CREATE, O.SYMLINK, O.LINK, O.RENAME, O.RENAME2, O.OPEN, O.OPENDIR, O.READ, O.READDIR, O.READDIRPLUS, O.WRITE, O.RELEASE, O.RELEASEDIR, O.FLUSH, O.FSYNC, O.FORGET, O.SETATTR, O.GETLK, O.SETLK, O.SETLKW];
      const wellFormed = (opcode: number): Buffer | null => {
        const fh = pick(fhs);
        switch (opcode) {
          case O.LOOKUP: case O.UNLINK: case O.RMDIR:
            return cname();
          case O.MKDIR:
            return Buffer.concat([le(8, [[0, 0o755, 4], [4, 0o022, 4]]), cname()]);
          case O.MKNOD:
            return Buffer.concat([le(16, [[0, pick([0o100644, 0o10644, 0o140644]), 4]]), cname()]);
          case O.CREATE:
            return Buffer.concat([le(16, [[0, pick([0o2, 0o1, 0o101, 0o1102, 0o302]), 4], [4, 0o644, 4], [8, 0o022, 4]]), cname()]);
          case O.SYMLINK:
            return Buffer.concat([cname(), Buffer.from(`${pick(['a', '../outside/canary', '/etc/passwd', 'sub/a'])}\0`)]);
          case O.LINK:
            return Buffer.concat([le(8, [[0, pick(nodeids), 8]]), cname()]);
          case O.RENAME:
            return Buffer.concat([le(8, [[0, pick(nodeids), 8]]), cname(), cname()]);
          case O.RENAME2:
            return Buffer.concat([le(16, [[0, pick(nodeids), 8], [8, pick([0, 1, 2, 4]), 4]]), cname(), cname()]);
          case O.OPEN: case O.OPENDIR:
            return le(8, [[0, pick([0, 2, 0o1, 0o2002, 0o1002, 0o40000]), 4]]);
          case O.READ: case O.READDIR: case O.READDIRPLUS:
            return le(40, [[0, fh, 8], [8, pick([0, 1, 4096, 1 << 20]), 8], [16, pick([0, 100, 4096, 65536]), 4]]);
          case O.WRITE: {
            const n = pick([0, 1, 100, 4096]);
            return Buffer.concat([le(40, [[0, fh, 8], [8, pick([0, 7, 4096]), 8], [16, n, 4]]), Buffer.alloc(n, 0x77)]);
          }
          case O.RELEASE: case O.RELEASEDIR: case O.FLUSH: case O.FSYNC:
            return le(24, [[0, fh, 8]]);
          case O.FORGET:
            return le(8, [[0, pick([1, 2, 1000]), 8]]);
          case O.GETLK: case O.SETLK: case O.SETLKW:
            // Three owners, overlapping ranges, POSIX or flock: locks that conflict, waits, deadlocks.
            return le(48, [[0, fh, 8], [8, pick([1, 2, 3]), 8], [16, pick([0, 10, 100]), 8], [24, pick([9n, 99n, 0x7fffffffffffffffn]), 8], [32, pick([0, 1, 2]), 4], [40, rand() < 0.8 ? 0 : 1, 4]]);
          case O.SETATTR:
            return le(88, [[0, pick([1, 8, 8 | 64, 16 | 32, 2 | 4]), 4], [8, fh, 8], [16, pick([0, 10, 5000]), 8], [68, pick([0o644, 0o4755, 0o000]), 4], [76, pick([0, 1000]), 4], [80, pick([0, 1000]), 4]]);
          default:
            return null;
        }
      };

      const body = (opcode: number): Buffer => {
        let b: Buffer;
        if (rand() < 0.3) {
          b = Buffer.alloc(pick([0, 1, 7, 8, 16, 24, 40, 64, 80, 128, 300, 4096]));
          for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand() * 256);
        } else {
          const struct = Buffer.alloc(pick([0, 8, 16, 24, 32, 40, 48, 64, 80, 88, 104]));
          for (let i = 0; i < struct.length; i++) struct[i] = rand() < 0.5 ? 0 : Math.floor(rand() * 256);
          if (struct.length >= 8) struct.writeBigUInt64LE(rand() < 0.8 ? pick(fhs) : u64(), 0);
          const names: Buffer[] = [];
          for (let k = Math.floor(rand() * 3); k > 0; k--) names.push(Buffer.from(pick(HOSTILE_NAMES), 'latin1'), rand() < 0.9 ? Buffer.alloc(1) : Buffer.alloc(0));
          b = Buffer.concat([struct, ...names]);
        }
        // Lengths that would make the host allocate or copy gigabytes stay small.
        if (opcode === abi.Opcode.FALLOCATE && b.length >= 24) b.writeBigUInt64LE(BigInt(Math.floor(rand() * 1048576)), 16);
        if (opcode === abi.Opcode.COPY_FILE_RANGE && b.length >= 48) b.writeBigUInt64LE(BigInt(Math.floor(rand() * 1048576)), 40);
        return b;
      };

      const mem = fe.memory!;
      let sent = 0;
      let unique = 1n << 40n;
      const counts = { replies: 0, errors: 0, dropped: 0, setlkws: 0 };
      /** A reply must be well-formed: its unique, its lengths, an errno in range. */
      const check = (opcode: number, u: bigint, used: { len: number }, wr: { buf: Buffer } | null, cap: number): void => {
        if (used.len === 0) {
          counts.dropped++;
        } else {
          assert.ok(wr && used.len >= abi.OUT_HEADER_SIZE && used.len <= cap, `seed ${s}: ${abi.opcodeName(opcode)}: used length ${used.len} in ${cap} bytes of room`);
          const h = abi.decodeOutHeader(wr.buf, 0);
          assert.equal(h.unique, u, `seed ${s}: ${abi.opcodeName(opcode)}: the reply's unique`);
          assert.equal(h.len, used.len, `seed ${s}: ${abi.opcodeName(opcode)}: out header length and used length`);
          assert.ok(h.error <= 0 && h.error >= -4095, `seed ${s}: ${abi.opcodeName(opcode)}: error ${h.error}`);
          if (h.error < 0) counts.errors++;
          else counts.replies++;
          // What the daemon hands out, the next requests use.
          const entry = [abi.Opcode.LOOKUP, abi.Opcode.CREATE, abi.Opcode.MKDIR, abi.Opcode.MKNOD, abi.Opcode.SYMLINK, abi.Opcode.LINK];
          if (h.error === 0 && entry.includes(opcode) && used.len >= abi.OUT_HEADER_SIZE + 8) nodeids.push(wr.buf.readBigUInt64LE(abi.OUT_HEADER_SIZE));
          if (h.error === 0 && (opcode === abi.Opcode.OPEN || opcode === abi.Opcode.OPENDIR) && used.len >= abi.OUT_HEADER_SIZE + 8) fhs.push(wr.buf.readBigUInt64LE(abi.OUT_HEADER_SIZE));
          if (h.error === 0 && opcode === abi.Opcode.CREATE && used.len >= abi.OUT_HEADER_SIZE + abi.ENTRY_OUT_SIZE + 8) fhs.push(wr.buf.readBigUInt64LE(abi.OUT_HEADER_SIZE + abi.ENTRY_OUT_SIZE));
        }
      };
      // SETLKWs that may be waiting for a lock: checked once the queues have stopped.
      const waiting: Array<Promise<void>> = [];
      const lane = async (k: number): Promise<void> => {
        const q = fe.queue(1 + (k % queues));
        while (sent < REQUESTS) {
          sent++;
          // Half the requests well-formed (with room for their reply), half chaos.
          const structured = rand() < 0.5;
          const opcode = structured ? pick(WELL_FORMED) : rand() < 0.95 ? pick(opcodes) : Math.floor(rand() * 5000);
          const nodeid = rand() < 0.9 ? pick(nodeids) : u64();
          const args = (structured && wellFormed(opcode)) || body(opcode);
          const len = abi.IN_HEADER_SIZE + args.length;
          const rd = mem.alloc(len, 64);
          const u = ++unique;
          abi.encodeInHeader(rd.buf, 0, {
            len: structured || rand() < 0.95 ? len : Math.floor(rand() * 2 * len),
            opcode,
            unique: u,
            nodeid,
            uid: structured || rand() < 0.8 ? 0 : Math.floor(rand() * 70000),
            gid: structured || rand() < 0.8 ? 0 : Math.floor(rand() * 70000),
            pid: 1,
            totalExtlen: structured || rand() < 0.95 ? 0 : Math.floor(rand() * 65536),
          });
          args.copy(rd.buf, abi.IN_HEADER_SIZE);
          const cap = structured ? pick([4096, 65536]) : pick([0, 16, 64, 256, 4096, 65536]);
          const wr = cap ? mem.alloc(cap, 64) : null;
          const submitted = q.submit([{ gpa: rd.gpa, len }], wr ? [{ gpa: wr.gpa, len: cap }] : [], {
            label: `seed ${s}: request ${sent}, ${abi.opcodeName(opcode)} on node ${nodeid}`,
            timeoutMs: opcode === abi.Opcode.SETLKW ? 120000 : 30000,
          });
          const answered = submitted.then((used) => check(opcode, u, used, wr, cap));
          const freed = answered.finally(() => {
            mem.free(rd);
            if (wr) mem.free(wr);
          });
          if (opcode === abi.Opcode.SETLKW) {
            counts.setlkws++;
            // Awaited after the lanes; a failure meanwhile is not an unhandled rejection.
            freed.catch(() => undefined);
            waiting.push(freed);
          } else {
            await freed;
          }
          // A DESTROY ends the session (everything but INIT gets EIO): the guest mounts again.
          if (opcode === abi.Opcode.DESTROY) ok(await c.init(), `seed ${s}: INIT after a DESTROY`);
        }
      };
      await Promise.all(Array.from({ length: LANES }, (_, k) => lane(k)));
      // The SETLKWs still waiting are given up when their queue stops; then the queues run again.
      await fe.startQueues(await fe.stopQueues());
      await Promise.all(waiting);
      if (process.env.FUZZ_VERBOSE) process.stderr.write(`seed ${s}: ${JSON.stringify(counts)}, ${nodeids.length} node ids and ${fhs.length} handles handed out\n`);
      assert.ok(counts.setlkws > 0, `seed ${s}: no SETLKW sent: ${JSON.stringify(counts)}`);
      // Both kinds of answer happened: the run tried things that worked and things that did not.
      assert.ok(counts.replies > 100 && counts.errors > 1000, `seed ${s}: ${JSON.stringify(counts)}`);

      assert.equal(env.daemon.exited, null, `seed ${s}: the daemon died: ${env.daemon.describeExit()}`);
      // Bad input is refused with an errno; an exception that is not one (logged as "request
      // failed", answered EIO) is a bug of ours.
      assert.deepEqual(env.daemon.errorLines.filter((l) => l.includes('"msg":"request failed"')), [], `seed ${s}`);
      assert.deepEqual(snapshot(outside), before, `seed ${s}: something outside the share changed`);
      assert.equal(fs.readFileSync(path.join(outside, 'canary'), 'utf8'), 'must not change');
      assert.deepEqual(fs.readdirSync(dir).sort(), parentBefore, `seed ${s}: the share's parent directory changed`);
      // A new session (the guest may have sent DESTROY or INIT along the way) serves a file
      // the host writes now.
      fs.writeFileSync(path.join(share, 'after'), 'after the storm\n');
      const c2 = new FuseClient(fe, { timeoutMs: 30000 });
      ok(await c2.init(), `seed ${s}: INIT after the fuzzing`);
      const n = ok(await c2.lookup(1n, 'after'), `seed ${s}: LOOKUP after the fuzzing`).nodeid;
      const fh = ok(await c2.open(n, 0), `seed ${s}: OPEN after the fuzzing`).fh;
      assert.equal(ok(await c2.read(fh, 0, 100, { nodeid: n }), `seed ${s}: READ after the fuzzing`).toString(), 'after the storm\n');
    });
  }
});

describe('a front end sending random vhost-user messages', function () {
  this.timeout(180000);
  const CONNECTIONS = 16;
  const MESSAGES = 80;
  let daemon: Daemon | null = null;
  let dir = '';
  afterEach(async () => {
    if (daemon) await daemon.stop().catch(() => undefined);
    daemon = null;
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = '';
  });

  it('never crashes or hangs: it refuses, or closes the connection, and exits cleanly', async () => {
    const base = Number(process.env.FUZZ_SEED ?? 7);
    let closedByDaemon = 0;
    let sentTotal = 0;
    for (let k = 0; k < CONNECTIONS; k++) {
      const s = base * 1000 + k;
      const rand = rng(s);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-vfuzz-'));
      fs.mkdirSync(path.join(dir, 'share'));
      daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock') });
      const fe: VhostUserFrontend = await daemon.connect();
      // Half the runs start from a running device: memory mapped, queues started, a session.
      if (k % 2 === 1) {
        await fe.negotiate({ memory: { size: 16 << 20 } });
        ok(await new FuseClient(fe, { timeoutMs: 10000 }).init(), `seed ${s}: INIT`);
      }
      let closed = false;
      let sent = 0;
      const drain = async (): Promise<void> => {
        try {
          const m = await fe.recv(2, 'a reply');
          if (m === null) closed = true;
          else for (const fd of m.fds) native.close(fd);
        } catch {
          // nothing came
        }
      };
      const codes = Object.values(FrontendReq).filter((v): v is number => typeof v === 'number');
      for (let i = 0; i < MESSAGES && !closed && daemon.exited === null; i++) {
        const request = rand() < 0.97 ? pick(codes) : Math.floor(rand() * 1000);
        const flags = rand() < 0.8 ? Flags.VERSION : rand() < 0.9 ? Flags.VERSION | Flags.NEED_REPLY : Math.floor(rand() * 16);
        const payload = Buffer.alloc(pick([0, 4, 8, 12, 16, 24, 40, 64, 128, 320, 4096]));
        for (let j = 0; j < payload.length; j++) payload[j] = rand() < 0.6 ? 0 : Math.floor(rand() * 256);
        // Small numbers where the daemon expects indices and counts.
        if (payload.length >= 8 && rand() < 0.5) payload.writeBigUInt64LE(BigInt(Math.floor(rand() * 4)) | (rand() < 0.3 ? 0x100n : 0n), 0);
        const fds: number[] = [];
        for (let n = rand() < 0.6 ? 0 : Math.floor(rand() * 3); n > 0; n--) {
          const kind = pick(['eventfd', 'memfd', 'socket', 'null'] as const);
          if (kind === 'eventfd') fds.push(native.eventfdCreate());
          else if (kind === 'memfd') fds.push(native.memfdCreate('fuzz', pick([4096, 1 << 20])));
          else if (kind === 'socket') {
            const [a, b] = native.socketPair();
            native.close(b);
            fds.push(a);
          } else fds.push(fs.openSync('/dev/null', 'r'));
        }
        const size = rand() < 0.98 ? undefined : Math.floor(rand() * 8192);
        try {
          fe.sendRaw(request, flags, payload, fds, size);
          sent++;
        } catch {
          closed = true; // the daemon went first
        }
        for (const fd of fds) native.close(fd);
        await drain();
      }
      // Still there: a request that owes a reply gets one, or the connection closes.
      if (!closed && daemon.exited === null) {
        try {
          fe.sendRaw(FrontendReq.GET_FEATURES, Flags.VERSION);
          for (let t = 0; t < 50; t++) {
            const m = await fe.recv(10000, 'the reply to GET_FEATURES');
            if (m === null) {
              closed = true;
              break;
            }
            for (const fd of m.fds) native.close(fd);
            if (m.request === FrontendReq.GET_FEATURES && m.flags & Flags.REPLY) break;
          }
        } catch (e) {
          if (!/EPIPE|ECONNRESET|closed/.test(String(e))) throw new Error(`seed ${s}: no reply and no close: ${String(e)}\n${daemon.output().slice(-3000)}`);
          closed = true;
        }
      }
      if (closed) closedByDaemon++;
      sentTotal += sent;
      if (process.env.FUZZ_VERBOSE) process.stderr.write(`seed ${s}: ${sent} messages, ${closed ? 'closed by the daemon' : 'still open'}\n`);
      fe.close();
      const exit = await daemon.waitExit(10000);
      assert.equal(exit.signal, null, `seed ${s}: ${daemon.describeExit()}`);
      assert.doesNotMatch(daemon.output(), /uncaught|FATAL|Segmentation|Assertion|core dumped/i, `seed ${s}`);
      daemon = null;
      fs.rmSync(dir, { recursive: true, force: true });
      dir = '';
    }
    // The garbage went deep: most messages were taken before a connection ended.
    assert.ok(sentTotal > (CONNECTIONS * MESSAGES) / 3, `${sentTotal} messages sent in all; ${closedByDaemon} connections closed by the daemon`);
  });
});
