/**
 * The FUSE fast path's requests that may take long in the kernel (native/fastpath.cc):
 * FSYNC, FSYNCDIR, SYNCFS, FALLOCATE, COPY_FILE_RANGE, LSEEK and STATFS. They are served on
 * the queue's own kick thread (or the I/O pool), so that one of them blocks only its queue,
 * never the JS thread all queues share. The same requests go to a daemon with the fast path,
 * one with the I/O pool, and one at trace level (every request through the FUSE server in JS),
 * each on its own copy of the share; every reply must be the same bytes (but for offsets past
 * 2^53, which the fast path serves and JS, carrying them as doubles, refuses with EOVERFLOW),
 * the files on the host must end the same, and the exit reports must show which path served
 * what.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok, type FuseClient } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest } from '../support/connected';

interface Report {
  opcodesPerQueue?: Record<string, Record<string, number>>;
  nativeOpcodesPerQueue?: Record<string, Record<string, number>>;
  pooledPerQueue?: Record<string, number>;
}

interface Seen {
  label: string;
  error: number;
  usedLen: number;
  body: string;
}

const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;
const UNKNOWN_FH = 1n << 40n;
/** Requests whose offsets a JS number cannot carry exactly: the fast path serves them, JS refuses them. */
const BEYOND_JS = new Set([
  'LSEEK from -1', 'LSEEK SEEK_DATA from 2^60', 'FALLOCATE at 2^63 - 1', 'FALLOCATE of 4 KiB at 2^60, size kept', 'COPY_FILE_RANGE from f at 2^60',
]);

/** The share: a file with data at 0 and at 1 MiB and a hole between, and a directory. */
function populate(share: string): void {
  const fd = fs.openSync(path.join(share, 'f'), 'w');
  fs.writeSync(fd, Buffer.alloc(8192, 'a'), 0, 8192, 0);
  fs.writeSync(fd, Buffer.alloc(4096, 'b'), 0, 4096, 1 << 20);
  fs.closeSync(fd);
  fs.writeFileSync(path.join(share, 'g'), '');
  fs.mkdirSync(path.join(share, 'd'));
}

const args = (...fields: Array<[number, bigint]>): Buffer => {
  // Little-endian fields of 4 or 8 bytes, in order.
  const size = fields.reduce((n, [w]) => n + w, 0);
  const b = Buffer.alloc(size);
  let at = 0;
  for (const [w, v] of fields) {
    if (w === 8) b.writeBigUInt64LE(BigInt.asUintN(64, v), at);
    else b.writeUInt32LE(Number(v), at);
    at += w;
  }
  return b;
};

/** The requests, in order; returns each reply and how many the fast path should serve per opcode. */
async function exercise(c: FuseClient): Promise<{ seen: Seen[]; plain: Record<string, number> }> {
  const seen: Seen[] = [];
  const plain: Record<string, number> = {};
  // The requests the fast path declines are sent last, so that the counts of what each path
  // served stay simple to state (the kick thread serves on while JS answers one).
  const declined: Array<() => Promise<unknown>> = [];
  const send = (name: keyof typeof abi.Opcode, label: string, nodeid: bigint, a: Buffer, room: number, isPlain = true): Promise<Buffer> => {
    if (isPlain) return sendNow(name, label, nodeid, a, room, true);
    declined.push(() => sendNow(name, label, nodeid, a, room, false));
    return Promise.resolve(Buffer.alloc(0));
  };
  const sendNow = async (name: keyof typeof abi.Opcode, label: string, nodeid: bigint, a: Buffer, room: number, isPlain: boolean): Promise<Buffer> => {
    const r = await c.request(abi.Opcode[name], nodeid, a, room);
    let body = r.body.toString('hex');
    // Free blocks and inodes move with anything else on the host's file system: a STATFS
    // reply is compared without them.
    if (name === 'STATFS' && r.error === 0 && r.body.length === abi.STATFS_OUT_SIZE) body = body.slice(0, 16) + body.slice(48, 64) + body.slice(80);
    seen.push({ label: `${name} ${label}`, error: r.error, usedLen: r.usedLen, body });
    if (isPlain) plain[name] = (plain[name] ?? 0) + 1;
    return r.body;
  };
  const f = ok(await c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
  const g = ok(await c.lookup(1n, 'g'), 'LOOKUP g').nodeid;
  const d = ok(await c.lookup(1n, 'd'), 'LOOKUP d').nodeid;
  const fh = ok(await c.open(f, fs.constants.O_RDWR), 'OPEN f').fh;
  const gh = ok(await c.open(g, fs.constants.O_RDWR), 'OPEN g').fh;
  const dh = ok(await c.open(d, fs.constants.O_RDONLY, abi.Opcode.OPENDIR), 'OPENDIR d').fh;

  await send('FSYNC', 'f', f, args([8, fh], [4, 0n], [4, 0n]), 0);
  await send('FSYNC', 'f, data only', f, args([8, fh], [4, 1n], [4, 0n]), 0);
  await send('FSYNC', 'of an unknown handle', f, args([8, UNKNOWN_FH], [4, 0n], [4, 0n]), 0);
  await send('FSYNC', 'with its arguments cut short', f, args([8, fh]), 0, false);
  await send('FSYNCDIR', 'd', d, args([8, dh], [4, 0n], [4, 0n]), 0);
  await send('FSYNCDIR', 'of an unknown handle', d, args([8, UNKNOWN_FH], [4, 1n], [4, 0n]), 0);
  await send('SYNCFS', 'of the root', 1n, args([8, 0n]), 0);
  await send('SYNCFS', 'of f', f, args([8, 0n]), 0);
  await send('SYNCFS', 'of an unknown node', 1n << 40n, args([8, 0n]), 0);

  const lseek = (label: string, h: bigint, offset: bigint, whence: number, isPlain = true, room = abi.LSEEK_OUT_SIZE): Promise<Buffer> =>
    send('LSEEK', label, f, args([8, h], [8, offset], [4, BigInt(whence)], [4, 0n]), room, isPlain);
  await lseek('SEEK_DATA from 0', fh, 0n, SEEK_DATA);
  await lseek('SEEK_HOLE from 0', fh, 0n, SEEK_HOLE);
  await lseek('SEEK_DATA from the hole', fh, 100000n, SEEK_DATA);
  await lseek('SEEK_DATA past the end', fh, 2n << 20n, SEEK_DATA);
  await lseek('of an unknown handle', UNKNOWN_FH, 0n, SEEK_DATA);
  await lseek('with an unknown whence', fh, 0n, 77);
  await lseek('from -1', fh, -1n, SEEK_DATA);
  await lseek('SEEK_DATA from 2^60', fh, 1n << 60n, SEEK_DATA);
  await lseek('with no room for the reply', fh, 0n, SEEK_DATA, false, abi.LSEEK_OUT_SIZE - 1);
  await send('LSEEK', 'with its arguments cut short', f, args([8, fh], [8, 0n]), abi.LSEEK_OUT_SIZE, false);

  const fallocate = (label: string, h: bigint, offset: bigint, length: bigint, mode: number, isPlain = true): Promise<Buffer> =>
    send('FALLOCATE', label, f, args([8, h], [8, offset], [8, length], [4, BigInt(mode)], [4, 0n]), 0, isPlain);
  await fallocate('of 64 KiB past the end, size kept', fh, 2n << 20n, 65536n, FALLOC_FL_KEEP_SIZE);
  await fallocate('punching 4 KiB', fh, 4096n, 4096n, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  await fallocate('growing f to 3 MiB', fh, 0n, 3n << 20n, 0);
  await fallocate('of length 0', fh, 0n, 0n, 0);
  await fallocate('with an unknown mode', fh, 0n, 4096n, 0x4000);
  await fallocate('of an unknown handle', UNKNOWN_FH, 0n, 4096n, 0);
  await fallocate('at 2^63 - 1', fh, (1n << 63n) - 1n, 4096n, 0);
  await fallocate('of 4 KiB at 2^60, size kept', fh, 1n << 60n, 4096n, FALLOC_FL_KEEP_SIZE);
  await lseek('SEEK_HOLE from 0 after the punch', fh, 0n, SEEK_HOLE);

  const copy = (label: string, from: bigint, offIn: bigint, to: bigint, offOut: bigint, len: bigint, flags = 0n, isPlain = true, room = abi.WRITE_OUT_SIZE): Promise<Buffer> =>
    send('COPY_FILE_RANGE', label, f, args([8, from], [8, offIn], [8, g], [8, to], [8, offOut], [8, len], [8, flags]), room, isPlain);
  await copy('of 100 bytes from f to g', fh, 0n, gh, 0n, 100n);
  await copy('of 4 KiB from f at 1 MiB to g at 10', fh, 1n << 20n, gh, 10n, 4096n);
  await copy('past the end of f', fh, 8n << 20n, gh, 0n, 100n);
  await copy('from f at 2^60', fh, 1n << 60n, gh, 0n, 100n);
  await copy('from an unknown handle', UNKNOWN_FH, 0n, gh, 0n, 100n);
  await copy('to an unknown handle', fh, 0n, UNKNOWN_FH, 0n, 100n);
  await copy('with unknown flags', fh, 0n, gh, 0n, 100n, 1n);
  await copy('with a flag past 32 bits', fh, 0n, gh, 0n, 100n, 1n << 32n, false);
  await copy('of 2^40 bytes, from past the end of f', fh, 8n << 20n, gh, 0n, 1n << 40n, 0n, false);
  await copy('with no room for the reply', fh, 0n, gh, 0n, 100n, 0n, false, abi.WRITE_OUT_SIZE - 1);

  await send('STATFS', 'of the root', 1n, Buffer.alloc(0), abi.STATFS_OUT_SIZE);
  await send('STATFS', 'of d', d, Buffer.alloc(0), abi.STATFS_OUT_SIZE);
  await send('STATFS', 'of an unknown node', 1n << 40n, Buffer.alloc(0), abi.STATFS_OUT_SIZE);
  await send('STATFS', 'with no room for the reply', 1n, Buffer.alloc(0), abi.STATFS_OUT_SIZE - 8, false);
  for (const d of declined) await d();
  return { seen, plain };
}

describe('virtiofsd-ts FUSE fast path: FSYNC, FSYNCDIR, SYNCFS, FALLOCATE, COPY_FILE_RANGE, LSEEK and STATFS', function () {
  this.timeout(60000);
  let dir = '';
  const connect = connectEachTest();
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fastsync-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs exercise() through a new daemon with `args` on a new copy of the share. */
  async function run(name: string, daemonArgs: string[]): Promise<{ seen: Seen[]; plain: Record<string, number>; report: Report; share: string }> {
    const share = path.join(dir, name);
    fs.mkdirSync(share);
    populate(share);
    const env = await connect('vfs-fastsync-', ['--sandbox=none', '--cache=never', ...daemonArgs], {}, share);
    const out = await exercise(env.c);
    await disconnectDaemon(env);
    const report = env.daemon.exitReport<Report>();
    return { ...out, report, share };
  }

  it('answers byte for byte as the FUSE server in JS, on the queue thread and on the I/O pool, and the files end the same', async () => {
    const fast = await run('fast', []);
    const pool = await run('pool', ['--thread-pool-size=2']);
    const js = await run('js', ['--log-level=trace']);
    for (const r of [pool, js]) {
      assert.equal(r.seen.length, fast.seen.length);
      for (let i = 0; i < fast.seen.length; i++) {
        // JS carries offsets as doubles: past 2^53 it refuses (EOVERFLOW) what the fast path serves.
        if (r === js && BEYOND_JS.has(fast.seen[i].label)) assert.equal(r.seen[i].error, -os.constants.errno.EOVERFLOW, fast.seen[i].label);
        else assert.deepEqual(r.seen[i], fast.seen[i], fast.seen[i].label);
      }
    }
    // What a user would see of them.
    const reply = (label: string): Seen => fast.seen.find((s) => s.label === label)!;
    const u64 = (label: string): bigint => Buffer.from(reply(label).body, 'hex').readBigUInt64LE(0);
    const u32 = (label: string): number => Buffer.from(reply(label).body, 'hex').readUInt32LE(0);
    assert.equal(reply('FSYNC f').error, 0);
    assert.equal(reply('FSYNC of an unknown handle').error, -os.constants.errno.EBADF);
    assert.ok(reply('SYNCFS of an unknown node').error < 0);
    assert.equal(u64('LSEEK SEEK_DATA from 0'), 0n);
    assert.equal(u64('LSEEK SEEK_DATA from the hole'), 1n << 20n);
    assert.equal(reply('LSEEK SEEK_DATA past the end').error, -os.constants.errno.ENXIO);
    assert.equal(u64('LSEEK SEEK_HOLE from 0 after the punch'), 4096n, 'the punched hole');
    assert.equal(u32('COPY_FILE_RANGE of 100 bytes from f to g'), 100);
    assert.equal(u32('COPY_FILE_RANGE of 4 KiB from f at 1 MiB to g at 10'), 4096);
    assert.equal(u32('COPY_FILE_RANGE past the end of f'), 0);
    assert.equal(u32('COPY_FILE_RANGE from f at 2^60'), 0, 'nothing there');
    assert.equal(reply('COPY_FILE_RANGE with a flag past 32 bits').error, -os.constants.errno.EINVAL, 'not taken for no flag');
    assert.equal(reply('LSEEK SEEK_DATA from 2^60').error, -os.constants.errno.ENXIO, 'no data past the end');
    assert.ok(reply('FALLOCATE at 2^63 - 1').error < 0, 'past the largest offset');
    assert.equal(reply('FALLOCATE of an unknown handle').error, -os.constants.errno.EBADF);
    const st = fs.statfsSync(fast.share);
    const statfs = Buffer.from(reply('STATFS of the root').body, 'hex');
    assert.equal(statfs.readBigUInt64LE(0), BigInt(st.blocks), 'the share\'s file system\'s size');
    // bsize: at 40 in fuse_kstatfs, at 16 once bfree, bavail and ffree are left out.
    assert.equal(statfs.readUInt32LE(16), st.bsize, 'its block size');
    for (const r of [fast, pool, js]) {
      assert.equal(fs.statSync(path.join(r.share, 'f')).size, 3 << 20, 'FALLOCATE grew f');
      const gData = fs.readFileSync(path.join(r.share, 'g'));
      // 100 bytes of a at 0, then 4 KiB of b at 10 over them; the copy with no room for its
      // reply (sent last, 100 bytes of a at 0 again) goes to JS, which refuses it unmade.
      assert.equal(gData.length, 4106);
      assert.equal(gData.toString(), 'a'.repeat(10) + 'b'.repeat(4096));
    }
    // Which path served them: every plain request natively (FSYNCs on the pool when there is
    // one), nothing natively at trace level; the exit report counts them either way.
    for (const r of [fast, pool]) {
      for (const [op, n] of Object.entries(fast.plain)) assert.equal(r.report.nativeOpcodesPerQueue?.['1']?.[op], n, `${op}: ${JSON.stringify(r.report)}`);
    }
    assert.deepEqual(js.report.nativeOpcodesPerQueue?.['1'] ?? {}, {}, JSON.stringify(js.report));
    for (const r of [fast, pool, js]) assert.equal(r.report.opcodesPerQueue?.['1']?.FSYNC, 4, JSON.stringify(r.report));
    assert.equal(fast.report.pooledPerQueue?.['1'] ?? 0, 0);
    // The two FSYNCs and the FSYNCDIR of known handles.
    assert.equal(pool.report.pooledPerQueue?.['1'], 3, `FSYNCs and FSYNCDIRs on the pool: ${JSON.stringify(pool.report)}`);
  });
});
