/**
 * The FUSE fast path (native/fastpath.cc): READ and WRITE served in native code as the
 * virtqueue pops them. Through our vhost-user front end, with and without the I/O pool:
 * what it serves gets the replies the FUSE server in JS gives (data, a short read at the end
 * of the file, bytes written, errors), in every chain layout Linux uses; what it declines
 * (lengths that disagree, a read-only share, an offset past 2^63) gets JS's answer; and the
 * exit report counts both, so that it shows the fast path at work.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok, type FuseClientOptions } from '../frontend/fuse-client';
import { connectDaemon, disconnectDaemon, type ConnectedDaemon } from '../support/connected';

const { E2BIG, EBADF, EINVAL, EROFS } = os.constants.errno;

type Env = ConnectedDaemon;

interface Report {
  opcodesPerQueue?: Record<string, Record<string, number>>;
  nativePerQueue?: Record<string, number>;
  nativeKicksPerQueue?: Record<string, number>;
  pooledPerQueue?: Record<string, number>;
}

const launch = (args: string[], client: FuseClientOptions = {}): Promise<Env> => connectDaemon('vfs-fast-', args, { timeoutMs: 30000, ...client });

/** Closes the connection, waits for the daemon to exit, and returns its exit report. */
async function finish(env: Env): Promise<Report> {
  await disconnectDaemon(env);
  return env.daemon.exitReport<Report>();
}

async function openFile(env: Env, name: string, flags: number): Promise<{ nodeid: bigint; fh: bigint }> {
  const e = ok(await env.c.lookup(1n, name), 'LOOKUP');
  return { nodeid: e.nodeid, fh: ok(await env.c.open(e.nodeid, flags), 'OPEN').fh };
}

const sum = (r: Record<string, number> | undefined): number => Object.values(r ?? {}).reduce((a, b) => a + b, 0);
const opcodeCount = (r: Report, op: string): number => Object.values(r.opcodesPerQueue ?? {}).reduce((n, q) => n + (q[op] ?? 0), 0);

/** Random bytes, so that a misplaced block shows. */
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed * 2654435761;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const layouts: Array<{ name: string; client: FuseClientOptions }> = [
  { name: "Linux's layout (header, arguments and data each a descriptor, data in pages)", client: { layout: 'linux', dataSegment: 4096 } },
  { name: 'one readable and one writable descriptor', client: { layout: 'single', indirect: 'never' } },
];

for (const pool of [0, 4]) {
  describe(`virtiofsd-ts FUSE fast path, --thread-pool-size=${pool}`, function () {
    this.timeout(60000);
    let env: Env | null = null;
    afterEach(async () => {
      if (env) await finish(env).catch(() => undefined);
      env = null;
    });

    for (const { name, client } of layouts) {
      it(`READ and WRITE in ${name}: the replies JS would give, counted in the exit report`, async () => {
        env = await launch(['--cache=never', `--thread-pool-size=${pool}`], client);
        const { c, share } = env;
        const host = pattern(300000, 1);
        fs.writeFileSync(path.join(share, 'f'), host);
        const f = await openFile(env, 'f', fs.constants.O_RDWR);
        let reads = 0;
        let writes = 0;
        // Reads of every size and alignment, the last past the end of the file (a short read).
        for (const [off, size] of [[0, 4096], [1, 100], [4095, 8193], [131072, 131072], [299000, 4096], [300000, 10], [400000, 4096]]) {
          const got = ok(await c.read(f.fh, off, size, { nodeid: f.nodeid }), `READ ${off}+${size}`);
          reads++;
          assert.deepEqual(got, host.subarray(off, off + size), `READ ${off}+${size}`);
        }
        // Writes, the last one growing the file, and what the host file holds after each.
        let expect = Buffer.from(host);
        for (const [off, size, seed] of [[0, 4096, 2], [5000, 70000, 3], [299990, 20, 4]]) {
          const data = pattern(size, seed);
          const w = ok(await c.write(f.fh, off, data, { nodeid: f.nodeid }), `WRITE ${off}+${size}`);
          writes++;
          assert.equal(w.size, size);
          if (off + size > expect.length) expect = Buffer.concat([expect, Buffer.alloc(off + size - expect.length)]);
          data.copy(expect, off);
          assert.deepEqual(fs.readFileSync(path.join(share, 'f')), expect, `file after WRITE ${off}+${size}`);
        }
        // An unknown handle: EBADF, and the queue goes on.
        assert.equal((await c.read(f.fh + 1000n, 0, 4096, { nodeid: f.nodeid })).error, -EBADF);
        assert.equal((await c.write(f.fh + 1000n, 0, Buffer.alloc(10), { nodeid: f.nodeid })).error, -EBADF);
        reads++;
        writes++;
        ok(await c.getattr(f.nodeid), 'GETATTR after the errors');
        const r = await finish(env);
        env = null;
        assert.equal(opcodeCount(r, 'READ'), reads, JSON.stringify(r));
        assert.equal(opcodeCount(r, 'WRITE'), writes, JSON.stringify(r));
        // Served natively: every READ and WRITE, the LOOKUP, the OPEN and the GETATTR.
        assert.equal(sum(r.nativePerQueue), reads + writes + 3, JSON.stringify(r));
      });
    }

    it('declines to JS what is not plain, which answers it: lengths that disagree, an offset past 2^63, arguments too long', async () => {
      env = await launch(['--cache=never', `--thread-pool-size=${pool}`]);
      const { c, share } = env;
      fs.writeFileSync(path.join(share, 'f'), pattern(8192, 5));
      const f = await openFile(env, 'f', fs.constants.O_RDWR);
      // fuse_read_in cut short: the header's length ends inside the arguments.
      const shortArgs = Buffer.alloc(abi.READ_IN_SIZE - 16);
      shortArgs.writeBigUInt64LE(f.fh, 0);
      assert.equal((await c.request(abi.Opcode.READ, f.nodeid, shortArgs, 4096)).error, -EINVAL, 'READ with short arguments');
      // A WRITE whose size is more than the data it carries.
      const w = Buffer.alloc(abi.WRITE_IN_SIZE);
      abi.encodeWriteIn(w, 0, { fh: f.fh, offset: 0n, size: 8192, writeFlags: 0, lockOwner: 0n, flags: 0 });
      assert.equal((await c.request(abi.Opcode.WRITE, f.nodeid, w, abi.WRITE_OUT_SIZE, Buffer.alloc(4096))).error, -EINVAL, 'WRITE past its data');
      // Offsets no file has.
      assert.equal((await c.read(f.fh, 1n << 63n, 4096, { nodeid: f.nodeid })).error, -EINVAL, 'READ at 2^63');
      assert.equal((await c.write(f.fh, (1n << 64n) - 1n, Buffer.alloc(1), { nodeid: f.nodeid })).error, -EINVAL, 'WRITE at 2^64 - 1');
      // Arguments longer than JS copies: E2BIG, and a RELEASE that long releases nothing.
      const huge = Buffer.alloc(80 * 1024);
      huge.writeBigUInt64LE(f.fh, 0);
      assert.equal((await c.request(abi.Opcode.GETATTR, f.nodeid, huge, abi.ATTR_OUT_SIZE)).error, -E2BIG, 'GETATTR with 80 KiB of arguments');
      assert.equal((await c.request(abi.Opcode.RELEASE, f.nodeid, huge, 0)).error, -E2BIG, 'RELEASE with 80 KiB of arguments');
      assert.deepEqual(fs.readFileSync(path.join(share, 'f')), pattern(8192, 5), 'the file is untouched');
      ok(await c.read(f.fh, 0, 10, { nodeid: f.nodeid }), 'a plain READ after them');
      const r = await finish(env);
      env = null;
      assert.equal(sum(r.nativePerQueue), 3, `only the LOOKUP, the OPEN and the plain READ were served natively: ${JSON.stringify(r)}`);
      assert.equal(opcodeCount(r, 'READ'), 3);
      assert.equal(opcodeCount(r, 'WRITE'), 2);
    });

    it('serves kicks without JS while every chain is one it serves; an IOCTL among them goes to JS, and the kick thread serves on', async () => {
      // --poll-max-us=0: every request the daemon sees comes with a kick.
      env = await launch(['--cache=never', `--thread-pool-size=${pool}`, '--poll-max-us=0']);
      const { c, share } = env;
      const host = pattern(65536, 7);
      fs.writeFileSync(path.join(share, 'f'), host);
      const f = await openFile(env, 'f', fs.constants.O_RDWR);
      const one = 40;
      const q = env.fe.queue(1);
      // Each READ is sent once the daemon has gone to sleep (avail_event asks for a kick at the
      // next index), so each needs a kick. Without the wait, on a loaded machine the front end,
      // woken by the reply, can preempt the daemon on its CPU and send the next READ before
      // the daemon re-armed: served without a kick, correctly, but then no kick is tested.
      const asleep = async (): Promise<void> => {
        const until = Date.now() + 5000;
        while (q.vq.readAvailEvent() !== q.vq.availIdx) {
          assert.ok(Date.now() < until, `the daemon never re-armed: ${q.vq.readAvailEvent()} / ${q.vq.availIdx}`);
          await new Promise((r) => setTimeout(r, 1));
        }
      };
      const kicksBefore = q.kicks;
      for (let i = 0; i < one; i++) {
        await asleep();
        assert.deepEqual(ok(await c.read(f.fh, i * 1024, 1024, { nodeid: f.nodeid }), `READ ${i}`), host.subarray(i * 1024, (i + 1) * 1024));
      }
      const oneKicks = q.kicks - kicksBefore;
      // Bursts sent together (one kick each) with requests only JS serves between the READs
      // and WRITEs: the kick thread queues each IOCTL for JS and serves the rest.
      const bursts = 10;
      for (let b = 0; b < bursts; b++) {
        const data = pattern(512, 100 + b);
        const [r1, a1, w, a2, r2] = await Promise.all([
          c.read(f.fh, b * 4096, 4096, { nodeid: f.nodeid }),
          c.ioctl(),
          c.write(f.fh, b * 4096, data, { nodeid: f.nodeid }),
          c.ioctl(),
          c.read(f.fh, 60000, 100, { nodeid: f.nodeid }),
        ]);
        assert.deepEqual(ok(r1, 'READ in a burst'), host.subarray(b * 4096, (b + 1) * 4096));
        ok(a1, 'IOCTL in a burst');
        assert.equal(ok(w, 'WRITE in a burst').size, 512);
        ok(a2, 'second IOCTL in a burst');
        assert.deepEqual(ok(r2, 'READ at the end of a burst'), host.subarray(60000, 60100));
        data.copy(host, b * 4096);
      }
      assert.deepEqual(fs.readFileSync(path.join(share, 'f')), host, 'the file holds every WRITE');
      // One-at-a-time READs are served without JS again.
      const kicksBeforeAgain = q.kicks;
      for (let i = 0; i < one; i++) {
        await asleep();
        assert.deepEqual(ok(await c.read(f.fh, i * 1024, 1024, { nodeid: f.nodeid }), `READ ${i} after the bursts`), host.subarray(i * 1024, (i + 1) * 1024));
      }
      assert.equal(q.kicks - kicksBeforeAgain, one);
      const r = await finish(env);
      env = null;
      const reads = 2 * one + 2 * bursts;
      assert.equal(opcodeCount(r, 'READ'), reads, JSON.stringify(r));
      assert.equal(opcodeCount(r, 'IOCTL'), 2 * bursts, JSON.stringify(r));
      assert.equal(sum(r.nativePerQueue), reads + bursts + 2, `every READ and WRITE (and the LOOKUP and the OPEN) natively: ${JSON.stringify(r)}`);
      // The kicks of the one-at-a-time READs needed no JS (allowing for a few that came while
      // JS still had a request of its own in flight).
      assert.equal(oneKicks, one, 'one kick per READ sent to a sleeping daemon');
      assert.ok(sum(r.nativeKicksPerQueue) >= one + oneKicks / 2, `${oneKicks} + ${one} kicks for the READs; served natively: ${JSON.stringify(r)}`);
    });

    it('with a FIFO as kick descriptor (QEMU without eventfd): kicks are served from the event loop, natively, and IOCTL by JS', async () => {
      // --poll-max-us=0: every request the daemon sees comes with a kick, 8 bytes in the FIFO.
      env = await connectDaemon('vfs-fast-', ['--cache=never', `--thread-pool-size=${pool}`, '--poll-max-us=0'], { timeoutMs: 30000 }, undefined, { kick: 'fifo' });
      const { c, share } = env;
      const host = pattern(65536, 8);
      fs.writeFileSync(path.join(share, 'f'), host);
      const f = await openFile(env, 'f', fs.constants.O_RDWR);
      const q = env.fe.queue(1);
      const one = 40;
      for (let i = 0; i < one; i++) {
        assert.deepEqual(ok(await c.read(f.fh, i * 1024, 1024, { nodeid: f.nodeid }), `READ ${i}`), host.subarray(i * 1024, (i + 1) * 1024));
      }
      // 16 at once, an IOCTL among them (JS's), then one at a time again.
      const data = pattern(4096, 9);
      const [reads, st, writes] = await Promise.all([
        Promise.all(Array.from({ length: 8 }, (_, i) => c.read(f.fh, i * 4096, 4096, { nodeid: f.nodeid }))),
        c.ioctl(),
        Promise.all(Array.from({ length: 7 }, (_, i) => c.write(f.fh, 32768 + i * 4096, data, { nodeid: f.nodeid }))),
      ]);
      reads.forEach((r, i) => assert.deepEqual(ok(r, `READ ${i} in the burst`), host.subarray(i * 4096, (i + 1) * 4096)));
      ok(st, 'IOCTL in the burst');
      writes.forEach((w, i) => {
        assert.equal(ok(w, `WRITE ${i} in the burst`).size, 4096);
        data.copy(host, 32768 + i * 4096);
      });
      for (let i = 0; i < one; i++) {
        assert.deepEqual(ok(await c.read(f.fh, i * 1024, 1024, { nodeid: f.nodeid }), `READ ${i} after the burst`), host.subarray(i * 1024, (i + 1) * 1024));
      }
      assert.deepEqual(fs.readFileSync(path.join(share, 'f')), host, 'the file holds every WRITE');
      assert.ok(q.kicks >= one, `${q.kicks} kicks written to the FIFO`);
      const r = await finish(env);
      env = null;
      assert.equal(opcodeCount(r, 'IOCTL'), 1, JSON.stringify(r));
      assert.equal(sum(r.nativePerQueue), 2 * one + 15 + 2, `every READ and WRITE (and the LOOKUP and the OPEN) natively: ${JSON.stringify(r)}`);
    });

    it('on a read-only share, a WRITE, an UNLINK, a SETATTR, a RENAME, a LINK or an OPEN for writing goes to JS and gets EROFS; READs are still served natively', async () => {
      env = await launch(['--cache=never', `--thread-pool-size=${pool}`, '--readonly']);
      const { c, share } = env;
      fs.writeFileSync(path.join(share, 'f'), pattern(4096, 6));
      const f = await openFile(env, 'f', fs.constants.O_RDONLY);
      assert.equal((await c.write(f.fh, 0, Buffer.alloc(100), { nodeid: f.nodeid })).error, -EROFS);
      assert.equal((await c.request(abi.Opcode.UNLINK, 1n, Buffer.from('f\0'), 0)).error, -EROFS, 'UNLINK');
      assert.equal((await c.open(f.nodeid, fs.constants.O_RDWR)).error, -EROFS, 'OPEN for writing');
      assert.equal((await c.open(f.nodeid, fs.constants.O_RDONLY | fs.constants.O_TRUNC)).error, -EROFS, 'OPEN truncating');
      const setattr = Buffer.alloc(abi.SETATTR_IN_SIZE);
      setattr.writeUInt32LE(abi.FattrFlags.SIZE | abi.FattrFlags.MODE, 0);
      setattr.writeUInt32LE(0o100777, 68);
      assert.equal((await c.request(abi.Opcode.SETATTR, f.nodeid, setattr, abi.ATTR_OUT_SIZE)).error, -EROFS, 'SETATTR');
      const rename = Buffer.concat([Buffer.alloc(abi.RENAME_IN_SIZE), Buffer.from('f\0g\0')]);
      rename.writeBigUInt64LE(1n, 0);
      assert.equal((await c.request(abi.Opcode.RENAME, 1n, rename, 0)).error, -EROFS, 'RENAME');
      const link = Buffer.concat([Buffer.alloc(abi.LINK_IN_SIZE), Buffer.from('h\0')]);
      link.writeBigUInt64LE(f.nodeid, 0);
      assert.equal((await c.request(abi.Opcode.LINK, 1n, link, abi.ENTRY_OUT_SIZE)).error, -EROFS, 'LINK');
      assert.ok(!fs.existsSync(path.join(share, 'h')), 'no link made');
      assert.equal(fs.statSync(path.join(share, 'f')).size, 4096, 'not truncated');
      assert.notEqual(fs.statSync(path.join(share, 'f')).mode & 0o777, 0o777, 'mode unchanged');
      assert.deepEqual(ok(await c.read(f.fh, 0, 4096, { nodeid: f.nodeid }), 'READ'), pattern(4096, 6));
      assert.deepEqual(fs.readFileSync(path.join(share, 'f')), pattern(4096, 6));
      const r = await finish(env);
      env = null;
      assert.equal(sum(r.nativePerQueue), 3, `the LOOKUP, the OPEN and the READ: ${JSON.stringify(r)}`);
    });
  });
}
