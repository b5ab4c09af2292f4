/**
 * The FUSE fast path's metadata requests (native/fastpath.cc): GETATTR, SETATTR, LOOKUP,
 * FORGET, OPEN, CREATE, MKNOD, MKDIR, SYMLINK, RENAME, RENAME2, FLUSH, RELEASE, UNLINK, RMDIR,
 * OPENDIR, READDIR, READDIRPLUS and RELEASEDIR served in native code. The same requests go to two daemons over one share, one with the
 * fast path and one at trace level (where every request goes through the FUSE server in JS),
 * and every reply must be the same bytes: attributes, node ids, the cache mode's timeouts,
 * negative entries, errors, and what JS answers for the requests the fast path declines
 * (names that are not one plain component, reply buffers too small, arguments cut short).
 * The exit reports show which path served them. Then what a user would check: the share's
 * boundary as the fast path sees it (a symlink is not followed, '..' at the root is the
 * root), and the locks a close drops (FLUSH: the owner's POSIX locks; RELEASE: the flock).
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
  nativePerQueue?: Record<string, number>;
  nativeOpcodesPerQueue?: Record<string, Record<string, number>>;
}

/** What a reply looked like to the driver: its bytes, and the used length. */
interface Seen {
  label: string;
  error: number;
  len: number;
  usedLen: number;
  body: string;
}

const sum = (r: Record<string, number> | undefined): number => Object.values(r ?? {}).reduce((a, b) => a + b, 0);

/** A share with one of each kind of file a guest looks up. */
function populate(share: string): void {
  fs.writeFileSync(path.join(share, 'f'), Buffer.alloc(12345, 1));
  fs.chmodSync(path.join(share, 'f'), 0o4751);
  fs.mkdirSync(path.join(share, 'd'));
  fs.writeFileSync(path.join(share, 'd', 'g'), 'g');
  // Listing d must not change its attributes between the two runs: with its atime ahead of
  // its mtime and ctime, relatime leaves it alone.
  fs.utimesSync(path.join(share, 'd'), new Date(Date.now() + 3600e3), new Date(Date.now() - 10e3));
  fs.symlinkSync('../../..', path.join(share, 'l'));
  fs.linkSync(path.join(share, 'f'), path.join(share, 'h'));
  fs.utimesSync(path.join(share, 'f'), new Date(1e12 + 123), new Date(-1e11 + 456));
  fs.mkdirSync(path.join(share, 'z'));
  fs.mkdirSync(path.join(share, 'z', 'full'));
  fs.writeFileSync(path.join(share, 'z', 'full', 'x'), 'x');
  restoreRemoved(share);
}

/** What exercise() removes, made again, and what it creates, removed (in z, which nothing else looks at). */
function restoreRemoved(share: string): void {
  fs.writeFileSync(path.join(share, 'z', 'u'), 'u');
  fs.writeFileSync(path.join(share, 'z', 't'), 'truncated by an OPEN');
  fs.mkdirSync(path.join(share, 'z', 'e'));
  for (const made of ['c', 'c2', 'k', 'k2', 'm', 'n', 'p', 'r', 'r0', 's', 's3']) fs.rmSync(path.join(share, 'z', made), { force: true, recursive: true });
}

const nameArg = (name: string | Buffer): Buffer => Buffer.concat([Buffer.from(name), Buffer.alloc(1)]);

/**
 * The requests, in order; returns what each got and how many of them the fast path should
 * serve (the plain ones: a name that is one component, room for the whole reply).
 */
async function exercise(c: FuseClient): Promise<{ seen: Seen[]; plain: number; forgets: number }> {
  const seen: Seen[] = [];
  let plain = 0;
  const send = async (label: string, opcode: number, nodeid: bigint, args: Buffer, room: number, isPlain: boolean): Promise<Buffer> => {
    const r = await c.request(opcode, nodeid, args, room);
    seen.push({ label, error: r.error, len: r.len, usedLen: r.usedLen, body: r.body.toString('hex') });
    if (isPlain) plain++;
    return r.body;
  };
  const lookup = async (parent: bigint, name: string | Buffer, isPlain = true): Promise<bigint> => {
    const body = await send(`LOOKUP ${parent}/${name.toString()}`, abi.Opcode.LOOKUP, parent, nameArg(name), abi.ENTRY_OUT_SIZE, isPlain);
    return body.length >= 8 ? body.readBigUInt64LE(0) : 0n;
  };
  const getattrArgs = (fh?: bigint): Buffer => {
    const a = Buffer.alloc(abi.GETATTR_IN_SIZE);
    abi.encodeGetattrIn(a, 0, { getattrFlags: fh === undefined ? 0 : abi.GetattrFlags.FH, fh: fh ?? 0n });
    return a;
  };
  const getattr = (nodeid: bigint, label = ''): Promise<Buffer> =>
    send(`GETATTR ${nodeid}${label}`, abi.Opcode.GETATTR, nodeid, getattrArgs(), abi.ATTR_OUT_SIZE, true);

  const f = await lookup(1n, 'f');
  const d = await lookup(1n, 'd');
  const l = await lookup(1n, 'l');
  const h = await lookup(1n, 'h');
  assert.equal(h, f, 'a hard link is the same node');
  const g = await lookup(d, 'g');
  await lookup(d, '..');
  await lookup(1n, '..');
  await lookup(1n, '.');
  await lookup(1n, 'missing');
  await lookup(d, 'missing');
  await lookup(1n, 'x'.repeat(255));
  await lookup(1n << 40n, 'f');
  // Declined to JS, which answers them.
  await lookup(1n, 'd/g', false);
  await lookup(1n, '', false);
  await lookup(1n, 'x'.repeat(256), false);
  await send('LOOKUP without a NUL', abi.Opcode.LOOKUP, 1n, Buffer.from('f'), abi.ENTRY_OUT_SIZE, false);
  await send('LOOKUP with no room for the entry', abi.Opcode.LOOKUP, 1n, nameArg('f'), abi.ENTRY_OUT_SIZE - 8, false);
  for (const n of [1n, f, d, l, g]) await getattr(n);
  await getattr(1n << 40n, ' (unknown)');
  await send('GETATTR without arguments', abi.Opcode.GETATTR, f, Buffer.alloc(0), abi.ATTR_OUT_SIZE, true);
  // OPEN: of f twice (in cache auto the second keeps the guest's cache: f is unchanged),
  // then the ones that fail or are declined; each handle is released further on.
  const { O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_RDONLY } = fs.constants;
  const openArgs = (flags: number): Buffer => {
    const a = Buffer.alloc(abi.OPEN_IN_SIZE);
    abi.encodeOpenIn(a, 0, { flags, openFlags: 0 });
    return a;
  };
  const opened: bigint[] = [];
  const open = async (label: string, nodeid: bigint, flags: number, isPlain = true, args = openArgs(flags), room = abi.OPEN_OUT_SIZE): Promise<void> => {
    const body = await send(`OPEN ${label}`, abi.Opcode.OPEN, nodeid, args, room, isPlain);
    if (body.length === abi.OPEN_OUT_SIZE) opened.push(abi.decodeOpenOut(body, 0).fh);
  };
  await open('f', f, O_RDONLY);
  const fh = opened[0];
  await open('f again', f, O_RDONLY);
  await open('d (a directory)', d, O_RDONLY);
  await open('d for writing', d, O_WRONLY);
  await open('l (a symlink)', l, O_RDONLY);
  await open('of an unknown node', 1n << 40n, O_RDONLY);
  await open('with its arguments cut short', f, O_RDONLY, false, openArgs(O_RDONLY).subarray(0, 4));
  await open('with no room for the reply', f, O_RDONLY, false, openArgs(O_RDONLY), abi.OPEN_OUT_SIZE - 1);
  // Listing d: OPENDIR, READDIR and READDIRPLUS (whole, from the second entry's offset, into
  // too small a buffer, of an unknown handle), RELEASEDIR.
  const opendir = async (label: string, nodeid: bigint, flags: number, isPlain = true, args = openArgs(flags)): Promise<bigint> => {
    const body = await send(`OPENDIR ${label}`, abi.Opcode.OPENDIR, nodeid, args, abi.OPEN_OUT_SIZE, isPlain);
    return body.length === abi.OPEN_OUT_SIZE ? abi.decodeOpenOut(body, 0).fh : 0n;
  };
  const dh = await opendir('d', d, O_RDONLY);
  await opendir('f (a file)', f, O_RDONLY);
  await opendir('of an unknown node', 1n << 40n, O_RDONLY);
  await opendir('with its arguments cut short', d, O_RDONLY, false, openArgs(O_RDONLY).subarray(0, 4));
  const readdirArgs = (h: bigint, offset: bigint, size: number): Buffer => {
    const a = Buffer.alloc(abi.READ_IN_SIZE);
    abi.encodeReadIn(a, 0, { fh: h, offset, size, readFlags: 0, lockOwner: 0n, flags: 0 });
    return a;
  };
  for (const [op, name] of [[abi.Opcode.READDIR, 'READDIR'], [abi.Opcode.READDIRPLUS, 'READDIRPLUS']] as const) {
    const all = await send(`${name} d`, op, d, readdirArgs(dh, 0n, 4096), 4096, true);
    // The first record's offset (fuse_dirent.off, after the entry in a READDIRPLUS record).
    const second = all.length >= 32 ? all.readBigUInt64LE((op === abi.Opcode.READDIRPLUS ? abi.ENTRY_OUT_SIZE : 0) + 8) : 0n;
    await send(`${name} d from the second entry`, op, d, readdirArgs(dh, second, 4096), 4096, true);
    await send(`${name} d into 100 bytes`, op, d, readdirArgs(dh, 0n, 100), 4096, true);
    await send(`${name} d with a reply buffer of 200 bytes`, op, d, readdirArgs(dh, 0n, 4096), 200, true);
    await send(`${name} of an unknown handle`, op, d, readdirArgs(dh + 1000n, 0n, 4096), 4096, true);
    await send(`${name} with its arguments cut short`, op, d, readdirArgs(dh, 0n, 4096).subarray(0, 16), 4096, false);
  }
  const releasedir = (label: string, h: bigint, isPlain = true, args = Buffer.alloc(abi.RELEASE_IN_SIZE)): Promise<Buffer> => {
    if (args.length >= 8) args.writeBigUInt64LE(h, 0);
    return send(`RELEASEDIR ${label}`, abi.Opcode.RELEASEDIR, d, args, 0, isPlain);
  };
  await releasedir('with its arguments cut short', dh, false, Buffer.alloc(8));
  await releasedir('d', dh);
  await releasedir('d again', dh);
  await send('GETATTR through a handle', abi.Opcode.GETATTR, f, getattrArgs(fh), abi.ATTR_OUT_SIZE, true);
  await send('GETATTR with no room for the attributes', abi.Opcode.GETATTR, f, getattrArgs(), abi.ATTR_OUT_SIZE - 1, false);
  const closeArgs = (h: bigint, releaseFlags: number, lockOwner: bigint): Buffer => {
    const a = Buffer.alloc(abi.RELEASE_IN_SIZE);
    abi.encodeReleaseIn(a, 0, { fh: h, flags: 0, releaseFlags, lockOwner });
    return a;
  };
  await send('FLUSH', abi.Opcode.FLUSH, f, closeArgs(fh, 0, 7n), 0, true);
  await send('FLUSH with its arguments cut short', abi.Opcode.FLUSH, f, closeArgs(fh, 0, 7n).subarray(0, 16), 0, false);
  await send('RELEASE with its arguments cut short', abi.Opcode.RELEASE, f, closeArgs(fh, 0, 7n).subarray(0, 8), 0, false);
  await send('RELEASE', abi.Opcode.RELEASE, f, closeArgs(fh, abi.ReleaseFlags.FLOCK_UNLOCK, 7n), 0, true);
  await send('RELEASE again', abi.Opcode.RELEASE, f, closeArgs(fh, 0, 7n), 0, true);
  await send('GETATTR through a released handle', abi.Opcode.GETATTR, f, getattrArgs(fh), abi.ATTR_OUT_SIZE, true);
  // FORGET: f was looked up twice (as f and as h), g once.
  const forgets: Array<[bigint, bigint]> = [[f, 1n], [g, 1n], [1n << 40n, 1n], [1n, 5n]];
  // Removals, in z (its attributes change with what is removed, so they are left out).
  const zr = await c.request(abi.Opcode.LOOKUP, 1n, nameArg('z'), abi.ENTRY_OUT_SIZE);
  const z = zr.body.readBigUInt64LE(0);
  seen.push({ label: 'LOOKUP 1/z', error: zr.error, len: zr.len, usedLen: zr.usedLen, body: `nodeid ${z}` });
  plain++;
  const remove = (op: 'UNLINK' | 'RMDIR', parent: bigint, name: string, isPlain = true): Promise<Buffer> =>
    send(`${op} ${parent}/${name}`, abi.Opcode[op], parent, nameArg(name), 0, isPlain);
  // z/t's attributes differ between the runs (restoreRemoved rewrites it): only its LOOKUP's
  // outcome is compared.
  const tr = await c.request(abi.Opcode.LOOKUP, z, nameArg('t'), abi.ENTRY_OUT_SIZE);
  const t = tr.body.readBigUInt64LE(0);
  seen.push({ label: 'LOOKUP z/t', error: tr.error, len: tr.len, usedLen: tr.usedLen, body: '' });
  plain++;
  await open('z/t, truncating', t, O_RDWR | O_TRUNC);
  const th = opened[opened.length - 1];
  // SETATTR, of z/t and of nodes whose change fails. ctime is "now" in each run, and z/t's
  // atime and mtime are those of its last write: the replies are compared without the times
  // they did not set to a given value.
  const { FattrFlags: A } = abi;
  const setattrArgs = (v: Partial<abi.SetattrIn>): Buffer => {
    const a = Buffer.alloc(abi.SETATTR_IN_SIZE);
    abi.encodeSetattrIn(a, 0, {
      valid: 0, fh: 0n, size: 0n, lockOwner: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0,
      uid: 0, gid: 0, ...v,
    });
    return a;
  };
  const setattr = async (label: string, nodeid: bigint, v: Partial<abi.SetattrIn>, isPlain = true, args = setattrArgs(v), room = abi.ATTR_OUT_SIZE): Promise<void> => {
    const r = await c.request(abi.Opcode.SETATTR, nodeid, args, room);
    let body = r.body.toString('hex');
    if (r.error === 0 && r.body.length >= abi.ATTR_OUT_SIZE) {
      const o = abi.decodeAttrOut(r.body, 0);
      const a = o.attr;
      const valid = v.valid ?? 0;
      const set = (bit: number, now: number): boolean => (valid & bit) !== 0 && (valid & now) === 0;
      const times = {
        ...(set(A.ATIME, A.ATIME_NOW) ? {} : { atime: 0, atimensec: 0 }),
        ...(set(A.MTIME, A.MTIME_NOW) ? {} : { mtime: 0, mtimensec: 0 }),
      };
      body = JSON.stringify({ ...o, attr: { ...a, ctime: 0, ctimensec: 0, ...times } }, (_k, x: unknown) =>
        typeof x === 'bigint' ? x.toString() : x,
      );
    }
    seen.push({ label: `SETATTR ${label}`, error: r.error, len: r.len, usedLen: r.usedLen, body });
    if (isPlain) plain++;
  };
  await setattr('z/t, chmod 640', t, { valid: A.MODE, mode: 0o100640 });
  await setattr('z/t, truncate to 100', t, { valid: A.SIZE, size: 100n });
  await setattr('z/t, truncate to 7 through its handle', t, { valid: A.SIZE | A.FH, size: 7n, fh: th });
  await setattr('z/t, atime and mtime', t, { valid: A.ATIME | A.MTIME, atime: 1234567890n, atimensec: 5, mtime: -5n, mtimensec: 999999999 });
  await setattr('z/t, mtime only', t, { valid: A.MTIME, mtime: 1500000000n });
  await setattr('z/t, atime and mtime now', t, { valid: A.ATIME | A.MTIME | A.ATIME_NOW | A.MTIME_NOW });
  await setattr('z/t, its own owner', t, { valid: A.UID | A.GID, uid: process.getuid!(), gid: process.getgid!() });
  await setattr('z/t, nothing', t, { valid: 0 });
  await setattr('z (a directory), truncate', z, { valid: A.SIZE, size: 0n });
  await setattr('l (a symlink), chmod', l, { valid: A.MODE, mode: 0o777 });
  await setattr('through an unknown handle', t, { valid: A.SIZE | A.FH, size: 0n, fh: th + 1000n });
  await setattr('of an unknown node', 1n << 40n, { valid: A.MODE, mode: 0o600 });
  await setattr('z/t, truncate to 2^60', t, { valid: A.SIZE, size: 1n << 60n }, false);
  await setattr('with its arguments cut short', t, { valid: A.MODE, mode: 0o640 }, false, setattrArgs({ valid: A.MODE, mode: 0o640 }).subarray(0, 80));
  await setattr('with no room for the reply', t, { valid: A.MODE, mode: 0o640 }, false, undefined, abi.ATTR_OUT_SIZE - 1);
  await remove('UNLINK', z, 'u');
  await remove('UNLINK', z, 'u');
  await remove('RMDIR', z, 'e');
  await remove('RMDIR', z, 'full');
  await remove('UNLINK', z, 'full');
  await remove('RMDIR', z, 'u');
  await remove('UNLINK', 1n << 40n, 'x');
  await remove('RMDIR', z, '.', false);
  await remove('UNLINK', z, '..', false);
  await remove('UNLINK', z, 'full/x', false);
  await remove('UNLINK', z, '', false);
  // CREATE, in z. A new file's timestamps and inode number differ between the two runs, and
  // so does its node id (the inode table's shard follows the inode number): its reply is
  // compared field by field without them, and its node id with what a LOOKUP then finds.
  const createArgs = (flags: number, name: string): Buffer => {
    const a = Buffer.alloc(abi.CREATE_IN_SIZE);
    abi.encodeCreateIn(a, 0, { flags, mode: 0o100640, umask: 0o022, openFlags: 0 });
    return Buffer.concat([a, nameArg(name)]);
  };
  const created: bigint[] = [];
  const createdNodes = new Set<bigint>();
  /** A new node's entry without what differs between the runs (node id, inode number, times). */
  const newEntry = (e: abi.EntryOut, extra: object = {}): string => {
    const a = e.attr;
    return JSON.stringify({ ...e, nodeid: undefined, attr: { mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, size: a.size, blksize: a.blksize }, ...extra }, (_k, v: unknown) =>
      typeof v === 'bigint' ? v.toString() : v,
    );
  };
  const create = async (label: string, parent: bigint, flags: number, name: string, isPlain = true, room = abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE): Promise<void> => {
    const r = await c.request(abi.Opcode.CREATE, parent, createArgs(flags, name), room);
    let body = r.body.toString('hex');
    if (r.error === 0 && r.body.length >= abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE) {
      const e = abi.decodeEntryOut(r.body, 0);
      const o = abi.decodeOpenOut(r.body, abi.ENTRY_OUT_SIZE);
      createdNodes.add(e.nodeid);
      body = newEntry(e, { open: o });
      created.push(o.fh);
    }
    seen.push({ label: `CREATE ${label}`, error: r.error, len: r.len, usedLen: r.usedLen, body });
    if (isPlain) plain++;
  };
  await create('z/c', z, O_WRONLY | O_CREAT | O_EXCL, 'c');
  await create('z/c again, O_EXCL', z, O_WRONLY | O_CREAT | O_EXCL, 'c');
  await create('z/c again', z, O_RDWR | O_CREAT | O_TRUNC, 'c');
  await create('z/c again, appending', z, O_WRONLY | O_CREAT | O_APPEND, 'c');
  await create('z/full (a directory)', z, O_RDWR | O_CREAT, 'full');
  await create('in a file', f, O_RDWR | O_CREAT, 'c');
  await create('in an unknown node', 1n << 40n, O_RDWR | O_CREAT, 'c');
  await create('z/.', z, O_RDWR | O_CREAT, '.', false);
  await create('z/full/c', z, O_RDWR | O_CREAT, 'full/c', false);
  await create('of a long name', z, O_RDWR | O_CREAT, 'c'.repeat(256), false);
  await create('with no room for the reply', z, O_RDWR | O_CREAT, 'c', false, abi.ENTRY_OUT_SIZE);
  assert.ok(created.length === 3, `three handles: ${created.length}`);
  // MKDIR, MKNOD and SYMLINK, in z; their replies are compared as CREATE's.
  const make = async (label: string, opcode: number, parent: bigint, args: Buffer, isPlain = true, room = abi.ENTRY_OUT_SIZE): Promise<void> => {
    const r = await c.request(opcode, parent, args, room);
    const body = r.error === 0 && r.body.length >= abi.ENTRY_OUT_SIZE ? newEntry(abi.decodeEntryOut(r.body, 0)) : r.body.toString('hex');
    seen.push({ label, error: r.error, len: r.len, usedLen: r.usedLen, body });
    if (isPlain) plain++;
  };
  const mkdirArgs = (mode: number, name: string): Buffer => {
    const a = Buffer.alloc(abi.MKDIR_IN_SIZE);
    abi.encodeMkdirIn(a, 0, { mode, umask: 0o022 });
    return Buffer.concat([a, nameArg(name)]);
  };
  const mknodArgs = (mode: number, name: string): Buffer => {
    const a = Buffer.alloc(abi.MKNOD_IN_SIZE);
    abi.encodeMknodIn(a, 0, { mode, rdev: 0, umask: 0o022 });
    return Buffer.concat([a, nameArg(name)]);
  };
  const symlinkArgs = (name: string, target: string): Buffer => Buffer.concat([nameArg(name), nameArg(target)]);
  await make('MKDIR z/m', abi.Opcode.MKDIR, z, mkdirArgs(0o750, 'm'));
  await make('MKDIR z/m again', abi.Opcode.MKDIR, z, mkdirArgs(0o750, 'm'));
  await make('MKDIR in a file', abi.Opcode.MKDIR, f, mkdirArgs(0o750, 'm'));
  await make('MKDIR in an unknown node', abi.Opcode.MKDIR, 1n << 40n, mkdirArgs(0o750, 'm'));
  await make('MKDIR z/..', abi.Opcode.MKDIR, z, mkdirArgs(0o750, '..'), false);
  await make('MKDIR z/m/n', abi.Opcode.MKDIR, z, mkdirArgs(0o750, 'm/n'), false);
  await make('MKDIR with no room for the reply', abi.Opcode.MKDIR, z, mkdirArgs(0o750, 'n'), false, abi.ENTRY_OUT_SIZE - 8);
  await make('MKNOD z/p (a FIFO)', abi.Opcode.MKNOD, z, mknodArgs(fs.constants.S_IFIFO | 0o640, 'p'));
  await make('MKNOD z/r (a file)', abi.Opcode.MKNOD, z, mknodArgs(fs.constants.S_IFREG | 0o600, 'r'));
  await make('MKNOD z/r again', abi.Opcode.MKNOD, z, mknodArgs(fs.constants.S_IFREG | 0o600, 'r'));
  await make('SYMLINK z/s', abi.Opcode.SYMLINK, z, symlinkArgs('s', 'target/elsewhere'));
  await make('SYMLINK z/s3, absolute', abi.Opcode.SYMLINK, z, symlinkArgs('s3', '/etc/passwd'));
  await make('SYMLINK z/s again', abi.Opcode.SYMLINK, z, symlinkArgs('s', 'x'));
  await make('SYMLINK to nothing', abi.Opcode.SYMLINK, z, symlinkArgs('s2', ''), false);
  await make('SYMLINK without a target', abi.Opcode.SYMLINK, z, nameArg('s2'), false);
  await make('SYMLINK z/.', abi.Opcode.SYMLINK, z, symlinkArgs('.', 'x'), false);
  const lc = await c.request(abi.Opcode.LOOKUP, z, nameArg('c'), abi.ENTRY_OUT_SIZE);
  const found = lc.body.readBigUInt64LE(0);
  seen.push({ label: 'LOOKUP z/c', error: lc.error, len: lc.len, usedLen: lc.usedLen, body: `the created node: ${createdNodes.size === 1 && createdNodes.has(found)}` });
  plain++;
  // RENAME and RENAME2, in z: a file (created above) renamed, then over another, into a
  // directory; NOREPLACE and EXCHANGE; the failures, and the names the fast path declines.
  const renameArgs = (newdir: bigint, from: string, to: string | Buffer, flags?: number): Buffer => {
    const a = Buffer.alloc(flags === undefined ? abi.RENAME_IN_SIZE : abi.RENAME2_IN_SIZE);
    if (flags === undefined) abi.encodeRenameIn(a, 0, { newdir });
    else abi.encodeRename2In(a, 0, { newdir, flags });
    return Buffer.concat([a, nameArg(from), typeof to === 'string' ? nameArg(to) : to]);
  };
  const rename = (label: string, parent: bigint, args: Buffer, two = false, isPlain = true): Promise<Buffer> =>
    send(`RENAME${two ? '2' : ''} ${label}`, two ? abi.Opcode.RENAME2 : abi.Opcode.RENAME, parent, args, 0, isPlain);
  const mr = await c.request(abi.Opcode.LOOKUP, z, nameArg('m'), abi.ENTRY_OUT_SIZE);
  const m = mr.body.readBigUInt64LE(0);
  seen.push({ label: 'LOOKUP z/m', error: mr.error, len: mr.len, usedLen: mr.usedLen, body: '' });
  plain++;
  const { NOREPLACE, EXCHANGE } = abi.RenameFlags;
  await rename('z/c to z/c2', z, renameArgs(z, 'c', 'c2'));
  await rename('z/c2 over z/r', z, renameArgs(z, 'c2', 'r'));
  await rename('z/s into z/m', z, renameArgs(m, 's', 's'));
  await rename('z/missing', z, renameArgs(z, 'missing', 'x'));
  await rename('into an unknown node', z, renameArgs(1n << 40n, 'r', 'x'));
  await rename('from a file', f, renameArgs(z, 'r', 'x'));
  await rename('z/m onto z/full (not empty)', z, renameArgs(z, 'm', 'full'));
  await rename('z/r onto z/p, NOREPLACE', z, renameArgs(z, 'r', 'p', NOREPLACE), true);
  await rename('z/r with z/p, EXCHANGE', z, renameArgs(z, 'r', 'p', EXCHANGE), true);
  await rename('z/r with no flags', z, renameArgs(z, 'r', 'r0', 0), true);
  await rename('z/r0 with unknown flags', z, renameArgs(z, 'r0', 'r', 1 << 20), true);
  await rename('z/r0 to z/..', z, renameArgs(z, 'r0', '..'), false, false);
  await rename('z/. to z/x', z, renameArgs(z, '.', 'x'), false, false);
  await rename('z/r0 to z/m/x', z, renameArgs(z, 'r0', 'm/x'), false, false);
  await rename('z/r0 to a name without a NUL', z, renameArgs(z, 'r0', Buffer.from('x')), false, false);
  await rename('z/r0 without a new name', z, renameArgs(z, 'r0', Buffer.alloc(0)), false, false);
  await rename('with its arguments cut short', z, renameArgs(z, 'r0', 'x', 0).subarray(0, 12), true, false);
  // LINK and READLINK, in z: a hard link to z/p (the file z/c became), the failures and the
  // declined ones; the targets of the symlinks made above (their LOOKUPs' replies hold
  // times that differ between the runs, so only the outcome is compared).
  const nodeOf = async (dir: bigint, name: string): Promise<bigint> => {
    const r = await c.request(abi.Opcode.LOOKUP, dir, nameArg(name), abi.ENTRY_OUT_SIZE);
    seen.push({ label: `LOOKUP ${name}`, error: r.error, len: r.len, usedLen: r.usedLen, body: '' });
    plain++;
    return r.body.readBigUInt64LE(0);
  };
  const p = await nodeOf(z, 'p');
  const linkArgs = (oldnodeid: bigint, name: string | Buffer): Buffer => {
    const a = Buffer.alloc(abi.LINK_IN_SIZE);
    abi.encodeLinkIn(a, 0, { oldnodeid });
    return Buffer.concat([a, typeof name === 'string' ? nameArg(name) : name]);
  };
  await make('LINK z/p as z/k', abi.Opcode.LINK, z, linkArgs(p, 'k'));
  await make('LINK z/p as z/k again', abi.Opcode.LINK, z, linkArgs(p, 'k'));
  await make('LINK z/p as z/m/k', abi.Opcode.LINK, m, linkArgs(p, 'k'));
  await make('LINK of a directory', abi.Opcode.LINK, z, linkArgs(m, 'k2'));
  await make('LINK of an unknown node', abi.Opcode.LINK, z, linkArgs(1n << 40n, 'k2'));
  await make('LINK into an unknown node', abi.Opcode.LINK, 1n << 40n, linkArgs(p, 'k2'));
  await make('LINK into a file', abi.Opcode.LINK, p, linkArgs(p, 'k2'));
  await make('LINK as z/..', abi.Opcode.LINK, z, linkArgs(p, '..'), false);
  await make('LINK as z/m/k2', abi.Opcode.LINK, z, linkArgs(p, 'm/k2'), false);
  await make('LINK as a name without a NUL', abi.Opcode.LINK, z, linkArgs(p, Buffer.from('k2')), false);
  await make('LINK with its arguments cut short', abi.Opcode.LINK, z, linkArgs(p, 'k2').subarray(0, 4), false);
  await make('LINK with no room for the reply', abi.Opcode.LINK, z, linkArgs(p, 'k2'), false, abi.ENTRY_OUT_SIZE - 8);
  const s3 = await nodeOf(z, 's3');
  const ms = await nodeOf(m, 's');
  const readlink = (label: string, nodeid: bigint, room = 4096, isPlain = true): Promise<Buffer> =>
    send(`READLINK ${label}`, abi.Opcode.READLINK, nodeid, Buffer.alloc(0), room, isPlain);
  await readlink('z/s3', s3);
  await readlink('z/m/s', ms);
  await readlink('of a file', p);
  await readlink('of a directory', m);
  await readlink('of an unknown node', 1n << 40n);
  await readlink('z/s3 with room for the exact target', s3, '/etc/passwd'.length);
  await readlink('z/s3 with no room for the whole target', s3, 4, false);
  for (const fh of created) await send(`RELEASE of a created handle`, abi.Opcode.RELEASE, z, closeArgs(fh, 0, 7n), 0, true);
  for (const fh of opened.slice(1)) await send(`RELEASE of an opened handle`, abi.Opcode.RELEASE, z, closeArgs(fh, 0, 7n), 0, true);
  for (const [n, k] of forgets) seen.push({ label: `FORGET ${n}`, error: 0, len: 0, usedLen: (await c.forget(n, k)).len, body: '' });
  await getattr(f, ' after one of its two FORGETs');
  await getattr(g, ' after its FORGET');
  await getattr(1n, ' after a FORGET of the root');
  ok(await c.forget(f, 1n).then(() => c.statfs()), 'STATFS');
  plain++;
  await getattr(f, ' after both FORGETs');
  return { seen, plain, forgets: forgets.length + 1 };
}

const CACHE_MODES = ['never', 'metadata', 'auto', 'always'];

describe('virtiofsd-ts FUSE fast path: GETATTR, LOOKUP, FORGET, FLUSH and RELEASE', function () {
  this.timeout(60000);
  let dir = '';
  const connect = connectEachTest();
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fastmeta-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs exercise() on the share through a new daemon with `args`; returns its replies and exit report. */
  async function run(share: string, args: string[]): Promise<{ seen: Seen[]; plain: number; forgets: number; report: Report }> {
    // No sandbox: node ids are chosen from the inode's key, mount ID included, and each
    // sandbox mounts the share anew, so two sandboxed runs could number the same files apart.
    const env = await connect('vfs-fastmeta-', ['--sandbox=none', ...args], {}, share);
    const out = await exercise(env.c);
    await disconnectDaemon(env);
    const report = env.daemon.exitReport<Report>();
    return { ...out, report };
  }

  for (const cache of CACHE_MODES) {
    it(`--cache=${cache}: the fast path's replies are byte for byte those of the FUSE server in JS`, async () => {
      const share = path.join(dir, 'share');
      fs.mkdirSync(share);
      populate(share);
      // f's state must be older than the timestamps' resolution may hide (100 ms) at both
      // runs' first OPEN, for cache auto to keep the guest's cache at the second.
      await new Promise((r) => setTimeout(r, 150));
      const fast = await run(share, [`--cache=${cache}`]);
      const chmodReply = JSON.parse(fast.seen.find((x) => x.label === 'SETATTR z/t, chmod 640')!.body) as { attr: { size: string; mode: number } };
      assert.equal(chmodReply.attr.size, '0', 'OPEN with O_TRUNC truncated z/t');
      assert.equal(chmodReply.attr.mode, 0o100640, "SETATTR's reply has the new mode");
      assert.ok(fs.statSync(path.join(share, 'z', 'm')).isDirectory(), 'MKDIR made z/m');
      assert.equal(fs.statSync(path.join(share, 'z', 'm')).mode & 0o777, 0o750);
      assert.equal(fs.readlinkSync(path.join(share, 'z', 's3')), '/etc/passwd', 'an absolute target is stored, not followed');
      assert.ok(!fs.existsSync(path.join(share, 'z', 'u')) && !fs.existsSync(path.join(share, 'z', 'e')), 'removed on the host');
      assert.ok(fs.existsSync(path.join(share, 'z', 'full', 'x')), 'what was refused is still there');
      const tst = fs.statSync(path.join(share, 'z', 't'), { bigint: true });
      assert.equal(Number(tst.mode & 0o7777n), 0o640, 'SETATTR changed z/t\'s mode');
      assert.equal(tst.size, 7n, 'SETATTR truncated z/t through its handle');
      assert.ok(Date.now() - Number(tst.mtimeMs) < 60e3, 'SETATTR set z/t\'s mtime to now');
      assert.equal(fs.readlinkSync(path.join(share, 'z', 'm', 's')), 'target/elsewhere', 'SYMLINK made z/s, RENAME moved it into z/m');
      assert.ok(!fs.existsSync(path.join(share, 'z', 'c')) && !fs.existsSync(path.join(share, 'z', 's')), 'renamed away');
      assert.ok(fs.lstatSync(path.join(share, 'z', 'p')).isFile(), 'EXCHANGE swapped z/r (the renamed z/c) and z/p');
      assert.ok(fs.lstatSync(path.join(share, 'z', 'r0')).isFIFO(), 'MKNOD made the FIFO z/p, which went to z/r, then to z/r0');
      const pst = fs.lstatSync(path.join(share, 'z', 'p'));
      assert.equal(fs.lstatSync(path.join(share, 'z', 'k')).ino, pst.ino, 'LINK made z/k a hard link of z/p');
      assert.equal(fs.lstatSync(path.join(share, 'z', 'm', 'k')).ino, pst.ino, 'and z/m/k');
      // The LINK and the MKDIR with no room for their replies go to JS, which refuses them
      // before it does anything (the guest would never learn of the new node).
      assert.equal(pst.nlink, 3);
      assert.ok(!fs.existsSync(path.join(share, 'z', 'k2')), 'the LINK with no room for its reply made nothing');
      assert.ok(!fs.existsSync(path.join(share, 'z', 'n')), 'the MKDIR with no room for its reply made nothing');
      assert.ok(!fs.existsSync(path.join(share, 'z', 'm', 'k2')) && !fs.existsSync(path.join(share, 'k2')), 'the refused LINKs made nothing');
      const target = (label: string): string => Buffer.from(fast.seen.find((x) => x.label === label)!.body, 'hex').toString();
      assert.equal(target('READLINK z/s3'), '/etc/passwd');
      assert.equal(target('READLINK z/m/s'), 'target/elsewhere');
      assert.equal(target('READLINK z/s3 with room for the exact target'), '/etc/passwd');
      restoreRemoved(share);
      const js = await run(share, [`--cache=${cache}`, '--log-level=trace']);
      assert.equal(fast.seen.length, js.seen.length);
      for (let i = 0; i < fast.seen.length; i++) assert.deepEqual(fast.seen[i], js.seen[i], fast.seen[i].label);
      // Which path served them: every plain request and every FORGET natively, the FORGETs
      // on the hiprio queue; nothing natively at trace level.
      assert.equal(sum(fast.report.nativePerQueue), fast.plain + fast.forgets, JSON.stringify(fast.report));
      assert.equal(fast.report.nativePerQueue?.['0'], fast.forgets, JSON.stringify(fast.report));
      assert.equal(sum(js.report.nativePerQueue), 0, JSON.stringify(js.report));
      // The exit report counts them either way.
      const count = (op: string): number => fast.seen.filter((s) => s.label.startsWith(op)).length;
      for (const r of [fast.report, js.report]) {
        assert.equal(r.opcodesPerQueue?.['0']?.FORGET, fast.forgets, JSON.stringify(r));
        assert.equal(r.opcodesPerQueue?.['1']?.GETATTR, count('GETATTR'), JSON.stringify(r));
        assert.equal(r.opcodesPerQueue?.['1']?.LOOKUP, count('LOOKUP'), JSON.stringify(r));
      }
      // What a user of each mode expects to see in them.
      const entryOf = (label: string): abi.EntryOut => abi.decodeEntryOut(Buffer.from(fast.seen.find((s) => s.label === label)!.body, 'hex'), 0);
      const timeout = { never: 0n, metadata: 86400n, auto: 1n, always: 86400n }[cache]!;
      const e = entryOf('LOOKUP 1/f');
      assert.equal(e.entryValid, timeout);
      assert.equal(e.attrValid, timeout);
      const st = fs.lstatSync(path.join(share, 'f'), { bigint: true });
      assert.equal(e.attr.ino, st.ino);
      assert.equal(e.attr.size, st.size);
      assert.equal(e.attr.mode, Number(st.mode));
      assert.equal(e.attr.nlink, 2);
      // A time before 1970 (a negative i64) as the host has it.
      assert.ok(e.attr.mtime < 0n);
      assert.equal(e.attr.mtime * 1000000000n + BigInt(e.attr.mtimensec), st.mtimeNs);
      const missing = fast.seen.find((s) => s.label === 'LOOKUP 1/missing')!;
      if (cache === 'metadata' || cache === 'always') {
        assert.equal(missing.error, 0, 'a negative entry');
        assert.equal(entryOf('LOOKUP 1/missing').nodeid, 0n);
        assert.equal(entryOf('LOOKUP 1/missing').entryValid, 86400n);
      } else {
        assert.equal(missing.error, -os.constants.errno.ENOENT);
      }
      // An open file's FOPEN_* flags: never and metadata bypass the guest's cache; auto keeps it at the
      // second open of a file unchanged since the first; always keeps it at every open.
      const openFlags = (label: string): number => abi.decodeOpenOut(Buffer.from(fast.seen.find((s) => s.label === label)!.body, 'hex'), 0).openFlags;
      const { DIRECT_IO, KEEP_CACHE } = abi.FopenFlags;
      const expected = { never: [DIRECT_IO, DIRECT_IO], metadata: [DIRECT_IO, DIRECT_IO], auto: [0, KEEP_CACHE], always: [KEEP_CACHE, KEEP_CACHE] }[cache]!;
      assert.deepEqual([openFlags('OPEN f'), openFlags('OPEN f again')], expected);
      // Listing d: its three names, and in a READDIRPLUS g's entry is g's node.
      const bodyOf = (label: string): Buffer => Buffer.from(fast.seen.find((s) => s.label === label)!.body, 'hex');
      const records = (b: Buffer, plus: boolean): Array<{ name: string; nodeid: bigint }> => {
        const out: Array<{ name: string; nodeid: bigint }> = [];
        for (let at = 0; at < b.length; ) {
          const r = plus ? abi.decodeDirentplus(b, at) : { entryOut: null, dirent: abi.decodeDirent(b, at) };
          out.push({ name: r.dirent.name.toString(), nodeid: r.entryOut?.nodeid ?? 0n });
          at += plus ? abi.direntplusSize(r.dirent.name.length) : abi.direntSize(r.dirent.name.length);
        }
        return out.sort((x, y) => x.name.localeCompare(y.name));
      };
      assert.deepEqual(records(bodyOf('READDIR d'), false).map((r) => r.name), ['.', '..', 'g']);
      const plusRecords = records(bodyOf('READDIRPLUS d'), true);
      assert.deepEqual(plusRecords.map((r) => r.name), ['.', '..', 'g']);
      assert.deepEqual(plusRecords.map((r) => r.nodeid > 0n), [false, false, true], 'only g has an entry');
      const lookupG = fast.seen.find((s) => /^LOOKUP \d+\/g$/.test(s.label))!;
      assert.equal(plusRecords[2].nodeid, abi.decodeEntryOut(Buffer.from(lookupG.body, 'hex'), 0).nodeid, "g's node, as LOOKUP found it");
      assert.equal(records(bodyOf('READDIR d from the second entry'), false).length, 2);
    });
  }

  it('CREATE in a writeback session, served natively: the guest can read what it opened write-only, and its own appends land where it says', async () => {
    const env = await connect('vfs-fastmeta-', ['--cache=always', '--writeback']);
    const { c, share } = env;
    assert.ok(BigInt(c.initOut!.flags) & abi.InitFlags.WRITEBACK_CACHE, 'a writeback session');
    const args = Buffer.alloc(abi.CREATE_IN_SIZE);
    const { O_WRONLY, O_CREAT, O_APPEND } = fs.constants;
    abi.encodeCreateIn(args, 0, { flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o100600, umask: 0, openFlags: 0 });
    const r = await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([args, nameArg('w')]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
    assert.equal(r.error, 0);
    const nodeid = abi.decodeEntryOut(r.body, 0).nodeid;
    const fh = abi.decodeOpenOut(r.body, abi.ENTRY_OUT_SIZE).fh;
    // The guest's page cache writes at the offsets it computed itself, and reads the file
    // to fill its pages: the host file is open for reading, and not O_APPEND.
    ok(await c.write(fh, 0, Buffer.from('abcdef'), { nodeid }), 'WRITE');
    ok(await c.write(fh, 1, Buffer.from('X'), { nodeid }), 'WRITE at 1');
    assert.equal(ok(await c.read(fh, 0, 100, { nodeid }), 'READ through a write-only handle').toString(), 'aXcdef');
    assert.equal(fs.readFileSync(path.join(share, 'w'), 'utf8'), 'aXcdef');
    assert.equal(fs.statSync(path.join(share, 'w')).mode & 0o777, 0o600);
    ok(await c.release(fh, { nodeid }), 'RELEASE');
    await disconnectDaemon(env);
    const rep = env.daemon.exitReport<Report>();
    assert.equal(sum(rep.nativePerQueue), 5, `CREATE, two WRITEs, READ, RELEASE natively: ${JSON.stringify(rep)}`);
  });

  it("keeps the guest inside the share: a symlink is looked up, not followed; '..' at the root is the root", async () => {
    const env = await connect('vfs-fastmeta-', ['--cache=never']);
    const { c, share } = env;
    populate(share);
    const l = ok(await c.lookup(1n, 'l'), 'LOOKUP l');
    assert.equal(l.attr.mode & 0o170000, 0o120000, 'the symlink itself');
    const up = ok(await c.lookup(1n, '..'), "LOOKUP '..'");
    assert.equal(up.nodeid, 1n);
    assert.equal(up.attr.ino, fs.statSync(share, { bigint: true }).ino);
    // Through the symlink as a directory: not a directory.
    assert.equal((await c.lookup(l.nodeid, 'etc')).error, -os.constants.errno.ENOTDIR);
    const d = ok(await c.lookup(1n, 'd'), 'LOOKUP d');
    assert.equal(ok(await c.lookup(d.nodeid, '..'), "LOOKUP d/'..'").nodeid, 1n);
    await disconnectDaemon(env);
    const r = env.daemon.exitReport<Report>();
    assert.equal(sum(r.nativePerQueue), 5, JSON.stringify(r));
  });

  it('GETXATTR with --xattr (Linux asks for security.capability before each write it caches): the replies JS gives, served natively; without --xattr JS answers ENOSYS', async () => {
    const share = path.join(dir, 'share');
    fs.mkdirSync(share);
    fs.writeFileSync(path.join(share, 'f'), 'f');
    const xattrs = async (args: string[], setUp = false): Promise<{ seen: Seen[]; plain: number; report: Report }> => {
      const env = await connect('vfs-fastmeta-', args, {}, share);
      const { c } = env;
      const seen: Seen[] = [];
      let plain = 0;
      const send = async (label: string, nodeid: bigint, args: Buffer, room: number, isPlain = true): Promise<void> => {
        const r = await c.request(abi.Opcode.GETXATTR, nodeid, args, room);
        seen.push({ label, error: r.error, len: r.len, usedLen: r.usedLen, body: r.body.toString('hex') });
        if (isPlain) plain++;
      };
      const get = (size: number, name: string | Buffer): Buffer => {
        const a = Buffer.alloc(abi.GETXATTR_IN_SIZE);
        a.writeUInt32LE(size, 0);
        return Buffer.concat([a, typeof name === 'string' ? nameArg(name) : name]);
      };
      const f = ok(await c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
      if (setUp) {
        // The value set through the daemon (SETXATTR is JS's): 'hello'.
        const set = Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), nameArg('user.a'), Buffer.from('hello')]);
        assert.equal((await c.request(abi.Opcode.SETXATTR, f, set, 0)).error, 0, 'SETXATTR user.a');
      }
      await send('user.a, its size', f, get(0, 'user.a'), abi.GETXATTR_OUT_SIZE);
      await send('user.a', f, get(100, 'user.a'), 100);
      await send('user.a, exactly its size', f, get(5, 'user.a'), 5);
      await send('user.a, too small a buffer', f, get(2, 'user.a'), 2);
      await send('security.capability', f, get(0, 'security.capability'), abi.GETXATTR_OUT_SIZE);
      await send('user.b (missing)', f, get(100, 'user.b'), 100);
      await send('of the root', 1n, get(100, 'user.a'), 100);
      await send('of an unknown node', 1n << 40n, get(100, 'user.a'), 100);
      await send('a name with a /', f, get(100, 'user.a/b'), 100, false);
      await send('a name without a NUL', f, get(100, Buffer.from('user.a')), 100, false);
      await send('arguments cut short', f, get(100, 'user.a').subarray(0, 4), 100, false);
      await send('no room for the value', f, get(100, 'user.a'), 3, false);
      await send('no room for the size', f, get(0, 'user.a'), 4, false);
      await disconnectDaemon(env);
      const report = env.daemon.exitReport<Report>();
      return { seen, plain, report };
    };
    const fast = await xattrs(['--cache=auto', '--xattr'], true);
    assert.equal(Buffer.from(fast.seen[1].body, 'hex').toString(), 'hello');
    assert.equal(Buffer.from(fast.seen[0].body, 'hex').readUInt32LE(0), 5);
    assert.equal(fast.seen[3].error, -os.constants.errno.ERANGE);
    assert.equal(fast.seen[4].error, -os.constants.errno.ENODATA);
    const js = await xattrs(['--cache=auto', '--xattr', '--log-level=trace']);
    assert.equal(fast.seen.length, js.seen.length);
    for (let i = 0; i < fast.seen.length; i++) assert.deepEqual(fast.seen[i], js.seen[i], fast.seen[i].label);
    // The LOOKUP and the plain GETXATTRs natively, as the exit report says per opcode.
    assert.equal(sum(fast.report.nativePerQueue), fast.plain + 1, JSON.stringify(fast.report));
    assert.deepEqual(fast.report.nativeOpcodesPerQueue, { 1: { LOOKUP: 1, GETXATTR: fast.plain } });
    assert.equal(sum(js.report.nativePerQueue), 0, JSON.stringify(js.report));
    const off = await xattrs(['--cache=auto']);
    // (The malformed ones get JS's EINVAL first.)
    for (const x of off.seen.slice(0, fast.plain)) assert.equal(x.error, -os.constants.errno.ENOSYS, x.label);
    assert.equal(sum(off.report.nativePerQueue), 1, `only the LOOKUP: ${JSON.stringify(off.report)}`);
  });

  it('FLUSH drops the closing owner\'s POSIX locks and RELEASE with FLOCK_UNLOCK the handle\'s flock, served natively', async () => {
    const env = await connect('vfs-fastmeta-', ['--cache=never']);
    const { c, share } = env;
    fs.writeFileSync(path.join(share, 'f'), 'x'.repeat(100));
    const e = ok(await c.lookup(1n, 'f'), 'LOOKUP');
    const a = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN a').fh;
    const b = ok(await c.open(e.nodeid, fs.constants.O_RDWR), 'OPEN b').fh;
    const lk = (fh: bigint, owner: bigint, flock: boolean): Buffer => {
      const x = Buffer.alloc(abi.LK_IN_SIZE);
      abi.encodeLkIn(x, 0, { fh, owner, lk: { start: 0n, end: 99n, type: 1 /* F_WRLCK */, pid: 1 }, lkFlags: flock ? 1 : 0 });
      return x;
    };
    const close = (op: number, fh: bigint, releaseFlags: number, owner: bigint): Promise<number> => {
      const x = Buffer.alloc(abi.RELEASE_IN_SIZE);
      abi.encodeReleaseIn(x, 0, { fh, flags: 0, releaseFlags, lockOwner: owner });
      return c.request(op, e.nodeid, x, 0).then((r) => r.error);
    };
    const { EAGAIN } = os.constants.errno;
    // POSIX: owner 1 holds the range; owner 2 cannot have it until owner 1's FLUSH.
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(a, 1n, false), 0)).error, 0);
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(b, 2n, false), 0)).error, -EAGAIN);
    assert.equal(await close(abi.Opcode.FLUSH, a, 0, 3n), 0, 'FLUSH of another owner');
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(b, 2n, false), 0)).error, -EAGAIN, 'still held');
    assert.equal(await close(abi.Opcode.FLUSH, a, 0, 1n), 0, 'FLUSH of the owner');
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(b, 2n, false), 0)).error, 0, 'free after its owner closed');
    // flock: handle a holds it; handle b gets it once a is released with FLOCK_UNLOCK.
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(a, 4n, true), 0)).error, 0);
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(b, 5n, true), 0)).error, -EAGAIN);
    assert.equal(await close(abi.Opcode.RELEASE, a, abi.ReleaseFlags.FLOCK_UNLOCK, 4n), 0);
    assert.equal((await c.request(abi.Opcode.SETLK, e.nodeid, lk(b, 5n, true), 0)).error, 0, 'flock free after RELEASE');
    assert.equal(await close(abi.Opcode.RELEASE, b, abi.ReleaseFlags.FLOCK_UNLOCK, 5n), 0);
    await disconnectDaemon(env);
    const r = env.daemon.exitReport<Report>();
    // LOOKUP, 2 OPENs, 2 FLUSHes, 2 RELEASEs and the 7 SETLKs natively.
    assert.equal(sum(r.nativePerQueue), 14, JSON.stringify(r));
    assert.equal(r.nativeOpcodesPerQueue?.['1']?.SETLK, 7, JSON.stringify(r));
  });
});
