/**
 * The FUSE fast path's ACCESS, GETLK, SETLK and SETLKW (native/fastpath.cc). POSIX and flock
 * locks are on by default, and a shell tests executables with access(2): served in JS they
 * would all queue for the one thread every queue's JS side shares. The same requests go to a
 * daemon with the fast path and to one at trace level (every request through the FUSE server
 * in JS), each on its own copy of the share, also with --readonly; every reply must be the
 * same bytes, and the exit reports must show that the fast path served all but the SETLKW
 * that has to wait and the requests it leaves to JS.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { FuseClient, ok } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest, type ConnectedDaemon } from '../support/connected';

interface Report {
  opcodesPerQueue?: Record<string, Record<string, number>>;
  nativeOpcodesPerQueue?: Record<string, Record<string, number>>;
}

interface Seen {
  label: string;
  error: number;
  usedLen: number;
  body: string;
}

const R_OK = 4;
const W_OK = 2;
const X_OK = 1;
const F_RDLCK = 0;
const F_WRLCK = 1;
const F_UNLCK = 2;
const OFFSET_MAX = (1n << 63n) - 1n;
const { EAGAIN, EACCES, EBADF, EINVAL, EROFS, EINTR, EDEADLK, ENOSYS, ENOLCK } = os.constants.errno;

/** The share: files of several modes (owned by 1000:1001 when root runs the test), a directory, and a file to lock. */
function populate(share: string): void {
  for (const [name, mode] of [['f', 0o640], ['x', 0o750], ['none', 0o000], ['all', 0o777]] as const) {
    fs.writeFileSync(path.join(share, name), 'data');
    fs.chmodSync(path.join(share, name), mode);
    if (process.getuid?.() === 0) fs.chownSync(path.join(share, name), 1000, 1001);
  }
  fs.mkdirSync(path.join(share, 'd'), 0o755);
  fs.writeFileSync(path.join(share, 'l'), 'lock me');
}

function lkIn(fh: bigint, owner: bigint, type: number, start: bigint, end: bigint, flock = false): Buffer {
  const b = Buffer.alloc(abi.LK_IN_SIZE);
  b.writeBigUInt64LE(fh, 0);
  b.writeBigUInt64LE(owner, 8);
  b.writeBigUInt64LE(BigInt.asUintN(64, start), 16);
  b.writeBigUInt64LE(BigInt.asUintN(64, end), 24);
  b.writeUInt32LE(type, 32);
  b.writeUInt32LE(1, 36); // the guest process asking, which a GETLK that finds the lock reports
  b.writeUInt32LE(flock ? abi.LkFlags.FLOCK : 0, 40);
  return b;
}

/** The requests, in order: each reply, and how many the fast path should serve per opcode. */
async function exercise(env: ConnectedDaemon, readonly: boolean): Promise<{ seen: Seen[]; plain: Record<string, number> }> {
  const seen: Seen[] = [];
  const plain: Record<string, number> = {};
  const c = env.c;
  const send = async (client: FuseClient, name: keyof typeof abi.Opcode, label: string, nodeid: bigint, a: Buffer, room: number, isPlain = true): Promise<void> => {
    const r = await client.request(abi.Opcode[name], nodeid, a, room);
    seen.push({ label: `${name} ${label}`, error: r.error, usedLen: r.usedLen, body: r.body.toString('hex') });
    if (isPlain) plain[name] = (plain[name] ?? 0) + 1;
  };
  const node = async (name: string): Promise<bigint> => BigInt(ok(await c.lookup(1n, name), `LOOKUP ${name}`).nodeid);

  // ACCESS as the files' owner, as a member of their group, as anyone else, and as root.
  const st = fs.statSync(path.join(env.share, 'f'));
  const callers: Array<[string, FuseClient]> = [
    ['root', c],
    ['the owner', new FuseClient(env.fe, { timeoutMs: 60000, uid: st.uid, gid: st.gid + 1 })],
    ['a group member', new FuseClient(env.fe, { timeoutMs: 60000, uid: st.uid + 1000, gid: st.gid })],
    ['another', new FuseClient(env.fe, { timeoutMs: 60000, uid: st.uid + 1000, gid: st.gid + 1000 })],
  ];
  const access = (mask: number): Buffer => {
    const b = Buffer.alloc(abi.ACCESS_IN_SIZE);
    b.writeUInt32LE(mask, 0);
    return b;
  };
  for (const name of ['f', 'x', 'none', 'all', 'd']) {
    const id = await node(name);
    for (const [who, client] of callers) {
      for (const [m, mask] of [['F_OK', 0], ['R', R_OK], ['W', W_OK], ['X', X_OK], ['RW', R_OK | W_OK], ['RWX', R_OK | W_OK | X_OK]] as const) {
        await send(client, 'ACCESS', `${m} of ${name} by ${who}`, id, access(mask), 0);
      }
    }
  }
  await send(c, 'ACCESS', 'of an unknown node', 1n << 40n, access(R_OK), 0);
  await send(c, 'ACCESS', 'with its arguments cut short', await node('f'), Buffer.alloc(2), 0, false);

  // POSIX locks of two owners on l, and flock() locks of two handles.
  const l = await node('l');
  // (A guest takes a write lock only through a handle open for writing; a read-only share
  // opens none.)
  const mode = readonly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
  const a = BigInt(ok(await c.open(l, mode), 'OPEN a').fh);
  const b = BigInt(ok(await c.open(l, mode), 'OPEN b').fh);
  const lk = (name: 'GETLK' | 'SETLK' | 'SETLKW', label: string, args: Buffer, isPlain = true, nodeid = l, room = name === 'GETLK' ? abi.LK_OUT_SIZE : 0): Promise<void> =>
    send(c, name, label, nodeid, args, room, isPlain);
  await lk('GETLK', 'of a free range', lkIn(a, 1n, F_WRLCK, 0n, 99n));
  await lk('SETLK', 'owner 1 writes 0-99', lkIn(a, 1n, F_WRLCK, 0n, 99n));
  await lk('GETLK', 'owner 2 finds owner 1\'s lock', lkIn(b, 2n, F_WRLCK, 50n, 60n));
  await lk('GETLK', 'owner 1 finds none of its own', lkIn(a, 1n, F_WRLCK, 50n, 60n));
  await lk('SETLK', 'owner 2 reads 50-60: taken', lkIn(b, 2n, F_RDLCK, 50n, 60n));
  await lk('SETLK', 'owner 2 writes 100 to the end', lkIn(b, 2n, F_WRLCK, 100n, OFFSET_MAX));
  await lk('GETLK', 'owner 1 finds owner 2\'s lock to the end', lkIn(a, 1n, F_RDLCK, 200n, 300n));
  await lk('SETLKW', 'owner 2 writes 100-200, its own range', lkIn(b, 2n, F_WRLCK, 100n, 200n));
  await lk('SETLK', 'of an unknown type', lkIn(a, 1n, 7, 0n, 10n));
  await lk('GETLK', 'of an unknown type', lkIn(a, 1n, 7, 0n, 10n));
  await lk('SETLK', 'through an unknown handle, for a new owner', lkIn(1n << 40n, 3n, F_RDLCK, 1000n, 1000n));
  await lk('SETLK', 'of an unknown node', lkIn(a, 1n, F_RDLCK, 0n, 10n), true, 1n << 40n);
  await lk('SETLK', 'owner 1 unlocks 0-99', lkIn(a, 1n, F_UNLCK, 0n, 99n));
  await lk('SETLKW', 'owner 2 reads 0-10, now free', lkIn(b, 2n, F_RDLCK, 0n, 10n));
  await lk('SETLK', 'flock: a writes', lkIn(a, 1n, F_WRLCK, 0n, 0n, true));
  await lk('SETLK', 'flock: b writes, a holds it', lkIn(b, 2n, F_WRLCK, 0n, 0n, true));
  await lk('SETLK', 'flock: b reads, a holds it', lkIn(b, 2n, F_RDLCK, 0n, 0n, true));
  // A SETLKW that must wait goes to JS, which gives up after its slice (EINTR: the guest
  // sends it again).
  await lk('SETLKW', 'flock: b writes, a holds it', lkIn(b, 2n, F_WRLCK, 0n, 0n, true), false);
  await lk('SETLK', 'flock: a unlocks', lkIn(a, 1n, F_UNLCK, 0n, 0n, true));
  await lk('SETLKW', 'flock: b writes, now free', lkIn(b, 2n, F_WRLCK, 0n, 0n, true));
  await lk('SETLK', 'with a range past 2^63', lkIn(a, 1n, F_RDLCK, 1n << 63n, (1n << 64n) - 1n), false);
  await lk('GETLK', 'through a handle past 2^53', lkIn((1n << 53n) + 1n, 1n, F_RDLCK, 0n, 0n), false);
  await lk('SETLK', 'with its arguments cut short', lkIn(a, 1n, F_RDLCK, 0n, 0n).subarray(0, 40), false);
  await lk('GETLK', 'with no room for the reply', lkIn(a, 1n, F_RDLCK, 0n, 0n), false, l, abi.LK_OUT_SIZE - 1);
  // Locks past 2^53, which JS answers exactly too (as 64-bit integers, not doubles).
  await lk('SETLK', 'owner 2 reads at 2^60 + 1', lkIn(b, 2n, F_RDLCK, (1n << 60n) + 1n, (1n << 60n) + 1n));
  await lk('GETLK', 'owner 1 finds owner 2\'s lock at 2^60 + 1', lkIn(a, 1n, F_WRLCK, 1n << 60n, (1n << 60n) + 10n));
  await lk('GETLK', 'owner 1 finds owner 2\'s read lock at 2^60 + 1', lkIn(a, 1n, F_WRLCK, (1n << 60n) + 1n, (1n << 60n) + 10n));
  await lk('SETLK', 'owner 2 reads at 2^63 - 4097', lkIn(b, 2n, F_RDLCK, OFFSET_MAX - 4096n, OFFSET_MAX - 4096n));
  await lk('GETLK', 'owner 1 finds owner 2\'s lock at 2^63 - 4097', lkIn(a, 1n, F_WRLCK, OFFSET_MAX - 5000n, OFFSET_MAX - 4000n));
  // A deadlock: owner 6 waits (in JS) for owner 5's lock, then owner 5 asks for owner 6's.
  // Once owner 6 has given up, owner 5 only waits. (40-69 is free: owner 2 holds 0-10 and
  // 100 on.)
  await lk('SETLK', 'owner 5 writes 40-49', lkIn(a, 5n, F_WRLCK, 40n, 49n));
  await lk('SETLK', 'owner 6 writes 60-69', lkIn(b, 6n, F_WRLCK, 60n, 69n));
  const waits = c.request(abi.Opcode.SETLKW, l, lkIn(b, 6n, F_WRLCK, 40n, 49n), 0);
  await new Promise((r) => setTimeout(r, 50));
  await lk('SETLKW', 'owner 5 writes 60-69 while owner 6 waits for 40-49', lkIn(a, 5n, F_WRLCK, 60n, 69n), false);
  const w = await waits;
  seen.push({ label: 'SETLKW owner 6 writes 40-49, held by owner 5', error: w.error, usedLen: w.usedLen, body: w.body.toString('hex') });
  await lk('SETLKW', 'owner 5 writes 60-69 once owner 6 gave up', lkIn(a, 5n, F_WRLCK, 60n, 69n), false);
  return { seen, plain };
}

describe('virtiofsd-ts FUSE fast path: ACCESS, GETLK, SETLK and SETLKW', function () {
  this.timeout(60000);
  let dir = '';
  const connect = connectEachTest();
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fastlocks-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs exercise() through a new daemon with `args` on a new copy of the share. */
  async function run(name: string, daemonArgs: string[]): Promise<{ seen: Seen[]; plain: Record<string, number>; report: Report }> {
    const share = path.join(dir, name);
    fs.mkdirSync(share);
    populate(share);
    const env = await connect('vfs-fastlocks-', ['--sandbox=none', '--cache=never', ...daemonArgs], {}, share);
    const out = await exercise(env, daemonArgs.includes('--readonly'));
    await disconnectDaemon(env);
    const report = env.daemon.exitReport<Report>();
    return { ...out, report };
  }

  it('with -o no_posix_lock,no_flock: lock requests go to JS, which answers ENOSYS', async () => {
    const share = path.join(dir, 'off');
    fs.mkdirSync(share);
    populate(share);
    const env = await connect('vfs-fastlocks-', ['--sandbox=none', '-o', 'no_posix_lock,no_flock'], {}, share);
    const c = env.c;
    const l = ok(await c.lookup(1n, 'l'), 'LOOKUP l').nodeid;
    const fh = BigInt(ok(await c.open(l, fs.constants.O_RDWR), 'OPEN').fh);
    for (const [op, flock] of [['GETLK', false], ['SETLK', false], ['SETLKW', false], ['SETLK', true], ['SETLKW', true]] as const) {
      const r = await c.request(abi.Opcode[op], l, lkIn(fh, 1n, F_WRLCK, 0n, 9n, flock), op === 'GETLK' ? abi.LK_OUT_SIZE : 0);
      assert.equal(r.error, -ENOSYS, `${op}${flock ? ' (flock)' : ''}`);
    }
    await disconnectDaemon(env);
    const report = env.daemon.exitReport<Report>();
    for (const op of ['GETLK', 'SETLK', 'SETLKW']) assert.equal(report.nativeOpcodesPerQueue?.['1']?.[op] ?? 0, 0, JSON.stringify(report));
    assert.equal(report.opcodesPerQueue?.['1']?.SETLK, 2, JSON.stringify(report));
  });

  for (const extra of [[], ['--log-level=trace']]) {
    it(`opens no descriptor for an owner that only asks (GETLK) or unlocks what it never locked${extra.length ? ' (served in JS)' : ''}`, async () => {
      const share = path.join(dir, 'fds');
      fs.mkdirSync(share);
      populate(share);
      const env = await connect('vfs-fastlocks-', ['--sandbox=none', '--cache=never', ...extra], {}, share);
      const c = env.c;
      const pid = env.daemon.proc.pid!;
      const fdCount = (): number => fs.readdirSync(`/proc/${pid}/fd`).length;
      const l = ok(await c.lookup(1n, 'l'), 'LOOKUP l').nodeid;
      const f = ok(await c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
      const fh = BigInt(ok(await c.open(l, fs.constants.O_RDWR), 'OPEN l').fh);
      const fhOfF = BigInt(ok(await c.open(f, fs.constants.O_RDONLY), 'OPEN f').fh);
      const getlk = async (owner: bigint, handle = fh): Promise<abi.FileLock> => {
        const r = await c.request(abi.Opcode.GETLK, l, lkIn(handle, owner, F_WRLCK, 0n, 99n), abi.LK_OUT_SIZE);
        assert.equal(r.error, 0, `GETLK of owner ${owner}`);
        return abi.decodeLkOut(r.body, 0).lk;
      };
      const setlk = async (owner: bigint, type: number): Promise<number> => (await c.request(abi.Opcode.SETLK, l, lkIn(fh, owner, type, 0n, 99n), 0)).error;
      const before = fdCount();
      for (let owner = 100n; owner < 150n; owner++) assert.equal((await getlk(owner)).type, F_UNLCK);
      for (let owner = 200n; owner < 250n; owner++) assert.equal(await setlk(owner, F_UNLCK), 0);
      assert.equal(fdCount(), before, '100 owners that held no lock left descriptors open');
      // A lock is one descriptor, and others still see it through their GETLK.
      assert.equal(await setlk(1n, F_WRLCK), 0);
      assert.equal(fdCount(), before + 1);
      assert.deepEqual(await getlk(2n), { start: 0n, end: 99n, type: F_WRLCK, pid: 1 });
      assert.equal((await getlk(1n)).type, F_UNLCK, 'an owner does not conflict with itself');
      // A GETLK naming a handle of another file still asks about this one.
      assert.deepEqual(await getlk(3n, fhOfF), { start: 0n, end: 99n, type: F_WRLCK, pid: 1 });
      assert.equal(await setlk(1n, F_UNLCK), 0);
      assert.equal((await getlk(2n)).type, F_UNLCK);
      await disconnectDaemon(env);
    });
  }

  for (const extra of [[], ['--log-level=trace']]) {
    it(`bounds what the guest's lock owners hold on the host: an open file description's lock ends with its handle, a refused owner keeps no descriptor, past the budget ENOLCK${extra.length ? ' (served in JS)' : ''}`, async () => {
      const share = path.join(dir, 'bounds');
      fs.mkdirSync(share);
      populate(share);
      // An open file limit of 1024: at most 128 lock owners' descriptors (src/daemon.ts lockFdBudget).
      const env = await connect('vfs-fastlocks-', ['--sandbox=none', '--cache=never', ...extra], {}, share, {}, ['prlimit', '--nofile=1024:1024']);
      const c = env.c;
      const pid = env.daemon.proc.pid!;
      const fdCount = (): number => fs.readdirSync(`/proc/${pid}/fd`).length;
      const l = ok(await c.lookup(1n, 'l'), 'LOOKUP l').nodeid;
      const open = async (): Promise<bigint> => BigInt(ok(await c.open(l, fs.constants.O_RDWR), 'OPEN l').fh);
      const setlk = async (fh: bigint, owner: bigint, type: number, start: bigint, end: bigint): Promise<number> =>
        (await c.request(abi.Opcode.SETLK, l, lkIn(fh, owner, type, start, end), 0)).error;
      const getlk = async (fh: bigint, owner: bigint, start: bigint, end: bigint): Promise<{ error: number; lk?: abi.FileLock }> => {
        const r = await c.request(abi.Opcode.GETLK, l, lkIn(fh, owner, F_WRLCK, start, end), abi.LK_OUT_SIZE);
        return r.error ? { error: r.error } : { error: 0, lk: abi.decodeLkOut(r.body, 0).lk };
      };

      // F_OFD_SETLK in the guest: the owner is the guest's open file, which no FLUSH names;
      // its lock goes when the file's handle is released.
      const a = await open();
      const b = await open();
      const ofdOwner = 0xabcdef01n;
      assert.equal(await setlk(a, ofdOwner, F_WRLCK, 0n, 99n), 0);
      assert.equal(await setlk(b, 7n, F_WRLCK, 0n, 9n), -EAGAIN);
      assert.equal(ok(await c.release(a, { nodeid: l }), 'RELEASE a'), null);
      assert.equal(await setlk(b, 7n, F_WRLCK, 0n, 9n), 0, 'the released handle\'s lock is gone');
      // A RELEASE of another handle leaves the locks taken through this one.
      const other = await open();
      assert.equal(await setlk(b, 8n, F_RDLCK, 200n, 299n), 0);
      ok(await c.release(other, { nodeid: l }), 'RELEASE other');
      assert.deepEqual((await getlk(b, 9n, 200n, 299n)).lk, { start: 200n, end: 299n, type: F_RDLCK, pid: 1 });

      // Owners the guest makes up, refused: no descriptor stays behind for any of them.
      const before = fdCount();
      for (let owner = 1000n; owner < 1100n; owner++) assert.equal(await setlk(b, owner, F_WRLCK, 0n, 9n), -EAGAIN);
      assert.equal(fdCount(), before, '100 refused owners left descriptors open');

      // An open file description's lock taken and dropped, then the file closed (the guest's
      // F_OFD_SETLK, F_UNLCK, close): nothing stays behind.
      for (let owner = 1500n; owner < 1520n; owner++) {
        const fh = await open();
        assert.equal(await setlk(fh, owner, F_WRLCK, 1000n, 1000n), 0);
        assert.equal(await setlk(fh, owner, F_UNLCK, 1000n, 1000n), 0);
        ok(await c.release(fh, { nodeid: l }), 'RELEASE');
      }
      assert.equal(fdCount(), before, '20 locks taken and dropped left descriptors open');

      // Owners that each hold a lock: one descriptor each, up to the budget, then ENOLCK.
      const results: number[] = [];
      for (let owner = 2000n; owner < 2200n; owner++) results.push(await setlk(b, owner, F_RDLCK, 500n, 500n));
      const granted = results.filter((r) => r === 0).length;
      assert.ok(granted >= 120 && granted <= 128, `${granted} granted`);
      assert.ok(results.slice(granted).every((r) => r === -ENOLCK), `then ENOLCK: ${results.slice(granted, granted + 5).join(',')}`);
      assert.ok(fdCount() <= before + 128, `${fdCount() - before} descriptors more`);
      // One owner's close (FLUSH) makes room for another.
      const flush = Buffer.alloc(abi.FLUSH_IN_SIZE);
      abi.encodeFlushIn(flush, 0, { fh: b, lockOwner: 2000n });
      assert.equal((await c.request(abi.Opcode.FLUSH, l, flush, 0)).error, 0);
      assert.equal(await setlk(b, 3000n, F_RDLCK, 500n, 500n), 0, 'room again after a FLUSH');

      // A range that ends before it starts: EINVAL, as fcntl answers. A lock through a
      // handle that is not one of this file's (Linux sends the handle fcntl() was called on):
      // EBADF, so that every lock has a handle whose RELEASE can end it.
      assert.equal(await setlk(b, 7n, F_RDLCK, 100n, 50n), -EINVAL);
      const f = ok(await c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
      const ofF = BigInt(ok(await c.open(f, fs.constants.O_RDONLY), 'OPEN f').fh);
      assert.equal(await setlk(ofF, 11n, F_RDLCK, 0n, 0n), -EBADF, 'a handle of another file');
      assert.equal(await setlk(1n << 40n, 11n, F_RDLCK, 0n, 0n), -EBADF, 'an unknown handle');
      assert.equal((await getlk(b, 9n, 100n, 50n)).error, -EINVAL);
      await disconnectDaemon(env);
    });
  }

  for (const extra of [[], ['--log-level=trace']]) {
    it(`opens a file for writing for a lock only where the guest's handle is: a read lock through a read-only handle leaves the host file executable${extra.length ? ' (served in JS)' : ''}`, async () => {
      const share = path.join(dir, 'modes');
      fs.mkdirSync(share);
      const tool = path.join(share, 'tool');
      fs.copyFileSync('/bin/true', tool);
      fs.chmodSync(tool, 0o755);
      const env = await connect('vfs-fastlocks-', ['--sandbox=none', '--cache=never', ...extra], {}, share);
      const c = env.c;
      const pid = env.daemon.proc.pid!;
      const O_PATH = 0o10000000;
      /** The access modes (O_RDONLY 0, O_WRONLY 1, O_RDWR 2) of the daemon's descriptors of the tool. */
      const modes = (): number[] =>
        fs.readdirSync(`/proc/${pid}/fd`).flatMap((fd) => {
          try {
            if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== tool) return [];
            const flags = /^flags:\s+([0-7]+)$/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
            // Not the inode's O_PATH descriptor, which opens nothing.
            const f = flags ? parseInt(flags[1], 8) : O_PATH;
            return f & O_PATH ? [] : [f & 3];
          } catch {
            return []; // closed meanwhile
          }
        }).sort();
      const node = ok(await c.lookup(1n, 'tool'), 'LOOKUP tool').nodeid;
      const ro = BigInt(ok(await c.open(node, fs.constants.O_RDONLY), 'OPEN read-only').fh);
      const setlk = async (fh: bigint, owner: bigint, type: number, start: bigint, end: bigint): Promise<number> =>
        (await c.request(abi.Opcode.SETLK, node, lkIn(fh, owner, type, start, end), 0)).error;
      const getlk = async (fh: bigint, owner: bigint, type: number, start: bigint, end: bigint): Promise<abi.FileLock> => {
        const r = await c.request(abi.Opcode.GETLK, node, lkIn(fh, owner, type, start, end), abi.LK_OUT_SIZE);
        assert.equal(r.error, 0, 'GETLK');
        return abi.decodeLkOut(r.body, 0).lk;
      };

      // A shell script's `flock -s` or a reader's F_RDLCK on a program: the host can still run
      // it (a descriptor open for writing makes execve fail with ETXTBSY).
      assert.equal(await setlk(ro, 1n, F_RDLCK, 0n, 99n), 0);
      assert.deepEqual(modes(), [0, 0], 'the handle and the lock owner\'s descriptor, both read-only');
      execFileSync(tool);
      // As fcntl() refuses it: no write lock through a handle not open for writing.
      assert.equal(await setlk(ro, 1n, F_WRLCK, 0n, 99n), -EBADF);

      // The same owner (a process with a read-only and a read-write descriptor) takes a write
      // lock through a read-write handle: its description becomes read-write, and the read
      // lock it held stays held throughout.
      const rw = BigInt(ok(await c.open(node, fs.constants.O_RDWR), 'OPEN read-write').fh);
      assert.equal(await setlk(rw, 1n, F_WRLCK, 50n, 59n), 0);
      assert.deepEqual(modes(), [0, 2, 2], 'the two handles and one read-write descriptor for the owner');
      assert.equal(await setlk(rw, 2n, F_WRLCK, 0n, 9n), -EAGAIN, 'owner 1\'s read lock moved with it');
      assert.deepEqual(await getlk(rw, 2n, F_RDLCK, 50n, 50n), { start: 50n, end: 59n, type: F_WRLCK, pid: 1 });
      assert.deepEqual(await getlk(rw, 2n, F_WRLCK, 60n, 60n), { start: 60n, end: 99n, type: F_RDLCK, pid: 1 });
      assert.equal(await setlk(rw, 2n, F_RDLCK, 0n, 9n), 0, 'a read lock beside owner 1\'s');
      assert.equal(await setlk(ro, 1n, F_UNLCK, 0n, OFFSET_MAX), 0);
      assert.equal(await setlk(rw, 2n, F_UNLCK, 0n, OFFSET_MAX), 0);
      assert.deepEqual(modes(), [0, 2], 'owners that hold nothing keep no descriptor');
      // A write lock through a write-only handle, then a read lock of the same owner through a
      // read-only one: its description was opened read-write (the file was open for writing
      // already), so the read lock needs no new one.
      const wo = BigInt(ok(await c.open(node, fs.constants.O_WRONLY), 'OPEN write-only').fh);
      assert.equal(await setlk(wo, 5n, F_WRLCK, 300n, 309n), 0);
      assert.equal(await setlk(ro, 5n, F_RDLCK, 400n, 409n), 0, 'a read lock beside its write lock');
      assert.equal(await setlk(wo, 5n, F_RDLCK, 500n, 509n), -EBADF, 'no read lock through a write-only handle');
      assert.deepEqual(modes(), [0, 1, 2, 2], 'the handles and one read-write descriptor for owner 5');
      assert.equal(await setlk(wo, 5n, F_UNLCK, 0n, OFFSET_MAX), 0);
      ok(await c.release(wo, { nodeid: node }), 'RELEASE write-only');
      ok(await c.release(rw, { nodeid: node }), 'RELEASE read-write');
      execFileSync(tool);
      await disconnectDaemon(env);
    });
  }

  for (const extra of [[], ['--readonly']]) {
    it(`answers byte for byte as the FUSE server in JS${extra.length ? ` (${extra.join(' ')})` : ''}, and serves all but what must wait or is malformed`, async () => {
      const fast = await run('fast', extra);
      const js = await run('js', ['--log-level=trace', ...extra]);
      assert.equal(js.seen.length, fast.seen.length);
      for (let i = 0; i < fast.seen.length; i++) assert.deepEqual(js.seen[i], fast.seen[i], fast.seen[i].label);
      // What a program in the guest would see.
      const error = (label: string): number => fast.seen.find((s) => s.label === label)!.error;
      const lock = (label: string): abi.FileLock => abi.decodeLkOut(Buffer.from(fast.seen.find((s) => s.label === label)!.body, 'hex'), 0).lk;
      const ro = extra.includes('--readonly');
      assert.equal(error('ACCESS R of f by the owner'), 0);
      assert.equal(error('ACCESS W of f by the owner'), ro ? -EROFS : 0);
      assert.equal(error('ACCESS X of f by the owner'), -EACCES);
      assert.equal(error('ACCESS R of f by a group member'), 0);
      assert.equal(error('ACCESS W of f by a group member'), ro ? -EROFS : -EACCES);
      assert.equal(error('ACCESS R of f by another'), -EACCES);
      assert.equal(error('ACCESS F_OK of none by another'), 0);
      assert.equal(error('ACCESS RW of none by root'), ro ? -EROFS : 0);
      assert.equal(error('ACCESS X of none by root'), -EACCES, 'root executes only what someone may');
      assert.equal(error('ACCESS X of d by root'), 0);
      assert.equal(error('ACCESS RWX of all by another'), ro ? -EROFS : 0);
      assert.ok(error('ACCESS of an unknown node') < 0);
      assert.equal(lock('GETLK of a free range').type, F_UNLCK);
      assert.equal(error('SETLK of an unknown type'), -EINVAL);
      assert.equal(error('SETLK flock: b writes, a holds it'), -EAGAIN);
      assert.equal(error('SETLKW flock: b writes, a holds it'), -EINTR);
      assert.equal(error('SETLKW flock: b writes, now free'), 0);
      if (ro) {
        // A read-only share opens no handle for writing, and fcntl() takes no write lock
        // through one that is not (the guest's kernel refuses it before asking).
        assert.equal(error('SETLK owner 1 writes 0-99'), -EBADF);
        assert.equal(error('SETLKW owner 5 writes 60-69 while owner 6 waits for 40-49'), -EBADF);
        assert.equal(error('SETLKW owner 2 reads 0-10, now free'), 0);
      } else {
        assert.deepEqual(lock('GETLK owner 2 finds owner 1\'s lock'), { start: 0n, end: 99n, type: F_WRLCK, pid: 1 });
        assert.equal(lock('GETLK owner 1 finds none of its own').type, F_UNLCK);
        assert.deepEqual(lock('GETLK owner 1 finds owner 2\'s lock to the end'), { start: 100n, end: OFFSET_MAX, type: F_WRLCK, pid: 1 });
        assert.equal(error('SETLK owner 2 reads 50-60: taken'), -EAGAIN);
        assert.equal(error('SETLKW owner 2 writes 100-200, its own range'), 0);
        assert.equal(error('SETLKW owner 2 reads 0-10, now free'), 0);
        assert.equal(error('SETLKW owner 6 writes 40-49, held by owner 5'), -EINTR);
        assert.equal(error('SETLKW owner 5 writes 60-69 while owner 6 waits for 40-49'), -EDEADLK);
        assert.equal(error('SETLKW owner 5 writes 60-69 once owner 6 gave up'), -EINTR, 'no deadlock left behind');
        // Owner 2's read lock at 2^60 + 1 split its write lock from 100 on: the part before it is in the way.
        assert.deepEqual(lock('GETLK owner 1 finds owner 2\'s lock at 2^60 + 1'), { start: 100n, end: 1n << 60n, type: F_WRLCK, pid: 1 });
        assert.deepEqual(lock('GETLK owner 1 finds owner 2\'s read lock at 2^60 + 1'), { start: (1n << 60n) + 1n, end: (1n << 60n) + 1n, type: F_RDLCK, pid: 1 }, 'exact past 2^53');
      }
      // Which path served them: every plain request natively, nothing at trace level.
      const native = fast.report.nativeOpcodesPerQueue?.['1'] ?? {};
      // (On a read-only share the three write SETLKWs that would wait get EBADF at once.)
      const refusedAtOnce: Record<string, number> = ro ? { SETLKW: 3 } : {};
      for (const op of ['ACCESS', 'GETLK', 'SETLK', 'SETLKW']) assert.equal(native[op], fast.plain[op] + (refusedAtOnce[op] ?? 0), `${op}: ${JSON.stringify(fast.report)}`);
      for (const op of ['ACCESS', 'GETLK', 'SETLK', 'SETLKW']) assert.equal(js.report.nativeOpcodesPerQueue?.['1']?.[op] ?? 0, 0, JSON.stringify(js.report));
      // The exit report counts each request once, whichever path served it.
      assert.equal(fast.report.opcodesPerQueue?.['1']?.SETLKW, 7, JSON.stringify(fast.report));
    });
  }
});
