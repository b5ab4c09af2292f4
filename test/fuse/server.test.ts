/**
 * The FUSE server's decoding and encoding, through virtiofsd-ts's real socket with our front
 * end, for requests a busybox guest does not send on its own: RENAME2 with flags, STATX,
 * INTERRUPT (no reply), IOCTL (ENOTTY), SETXATTR's layout, CREATE and TMPFILE replies,
 * READDIRPLUS records, SYMLINK's two names, LSEEK.
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

describe('FUSE server through the socket (virtiofsd-ts)', function () {
  this.timeout(20000);
  let dir: string;
  let daemon: Daemon;
  let fe: VhostUserFrontend;
  let c: FuseClient;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-srv-'));
    fs.mkdirSync(path.join(dir, 'share'));
    fs.writeFileSync(path.join(dir, 'share', 'a'), 'AAAA');
    fs.writeFileSync(path.join(dir, 'share', 'b'), 'BB');
    daemon = startDaemon('ts', { sharedDir: path.join(dir, 'share'), socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: ['--xattr'] });
    fe = await daemon.connect();
    await fe.negotiate();
    c = new FuseClient(fe, { timeoutMs: 5000 });
    ok(await c.init(), 'INIT');
  });

  afterEach(async () => {
    fe.close();
    await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('RENAME2: NOREPLACE refuses, EXCHANGE swaps', async () => {
    const r2 = (flags: number, from: string, to: string): Promise<number> => {
      const args = Buffer.alloc(abi.RENAME2_IN_SIZE);
      abi.encodeRename2In(args, 0, { newdir: 1n, flags });
      return c.request(abi.Opcode.RENAME2, 1n, Buffer.concat([args, cstr(from), cstr(to)]), 0).then((r) => r.error);
    };
    assert.equal(await r2(1, 'a', 'b'), -E.EEXIST);
    assert.equal(await r2(2, 'a', 'b'), 0);
    assert.equal(fs.readFileSync(path.join(dir, 'share', 'a'), 'utf8'), 'BB');
    assert.equal(fs.readFileSync(path.join(dir, 'share', 'b'), 'utf8'), 'AAAA');
  });

  it('STATX answers with the birth time and the size', async () => {
    const e = ok(await c.lookup(1n, 'a'), 'LOOKUP');
    const args = Buffer.alloc(abi.STATX_IN_SIZE);
    abi.encodeStatxIn(args, 0, { getattrFlags: 0, fh: 0n, sxFlags: 0, sxMask: 0x7ff });
    const r = await c.request(abi.Opcode.STATX, e.nodeid, args, abi.STATX_OUT_SIZE);
    assert.equal(r.error, 0);
    const x = abi.decodeStatxOut(r.body, 0);
    assert.equal(x.stat.size, 4n);
    assert.equal(x.stat.ino, e.attr.ino);
    assert.ok(x.stat.btime.tvSec > 0n, 'birth time filled');
  });

  it('INTERRUPT gets no reply; IOCTL gets ENOTTY; an unknown opcode ENOSYS', async () => {
    const q = fe.queue(1);
    const mem = fe.memory!;
    const req = mem.alloc(abi.IN_HEADER_SIZE + 8);
    abi.encodeInHeader(req.buf, 0, { len: abi.IN_HEADER_SIZE + 8, opcode: abi.Opcode.INTERRUPT, unique: 99n, nodeid: 0n, uid: 0, gid: 0, pid: 1, totalExtlen: 0 });
    const out = mem.alloc(64);
    const used = await q.submit([{ gpa: req.gpa, len: abi.IN_HEADER_SIZE + 8 }], [{ gpa: out.gpa, len: 64 }]);
    assert.equal(used.len, 0, 'no reply to INTERRUPT');
    const ioctl = await c.request(abi.Opcode.IOCTL, 1n, Buffer.alloc(abi.IOCTL_IN_SIZE), 64);
    assert.equal(ioctl.error, -E.ENOTTY);
    const unknown = await c.request(200, 1n, Buffer.alloc(0), 0);
    assert.equal(unknown.error, -E.ENOSYS);
  });

  it('SETXATTR, GETXATTR (size and value), LISTXATTR, REMOVEXATTR', async () => {
    const e = ok(await c.lookup(1n, 'a'), 'LOOKUP');
    const value = Buffer.from('sky blue');
    const head = Buffer.alloc(8);
    head.writeUInt32LE(value.length, 0);
    const set = await c.request(abi.Opcode.SETXATTR, e.nodeid, Buffer.concat([head, cstr('user.color'), value]), 0);
    assert.equal(set.error, 0);
    const sizeQ = Buffer.alloc(abi.GETXATTR_IN_SIZE);
    const g0 = await c.request(abi.Opcode.GETXATTR, e.nodeid, Buffer.concat([sizeQ, cstr('user.color')]), abi.GETXATTR_OUT_SIZE);
    assert.equal(g0.body.readUInt32LE(0), value.length);
    const want = Buffer.alloc(abi.GETXATTR_IN_SIZE);
    want.writeUInt32LE(100, 0);
    const g1 = await c.request(abi.Opcode.GETXATTR, e.nodeid, Buffer.concat([want, cstr('user.color')]), 100);
    assert.deepEqual(g1.body, value);
    const l = await c.request(abi.Opcode.LISTXATTR, e.nodeid, want, 100);
    assert.ok(l.body.toString().split('\0').includes('user.color'));
    assert.equal((await c.request(abi.Opcode.REMOVEXATTR, e.nodeid, cstr('user.color'), 0)).error, 0);
    assert.equal((await c.request(abi.Opcode.GETXATTR, e.nodeid, Buffer.concat([want, cstr('user.color')]), 100)).error, -E.ENODATA);
  });

  it('CREATE and TMPFILE reply with an entry and an open handle; WRITE, LSEEK', async () => {
    const args = Buffer.alloc(abi.CREATE_IN_SIZE);
    abi.encodeCreateIn(args, 0, { flags: fs.constants.O_RDWR, mode: 0o100644, umask: 0, openFlags: 0 });
    const r = await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([args, cstr('new')]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
    assert.equal(r.error, 0);
    const entry = abi.decodeEntryOut(r.body, 0);
    const open = abi.decodeOpenOut(r.body, abi.ENTRY_OUT_SIZE);
    assert.equal(entry.attr.mode & 0o7777, 0o644);
    ok(await c.write(open.fh, 4096, Buffer.from('xyz'), { nodeid: entry.nodeid }), 'WRITE');
    const seek = Buffer.alloc(abi.LSEEK_IN_SIZE);
    abi.encodeLseekIn(seek, 0, { fh: open.fh, offset: 0n, whence: 3 /* SEEK_DATA */ });
    const s = await c.request(abi.Opcode.LSEEK, entry.nodeid, seek, abi.LSEEK_OUT_SIZE);
    assert.equal(s.error, 0);
    assert.equal(abi.decodeLseekOut(s.body, 0).offset, 4096n);
    const t = await c.request(abi.Opcode.TMPFILE, 1n, args, abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
    assert.equal(t.error, 0);
    assert.equal(abi.decodeEntryOut(t.body, 0).attr.nlink, 0);
  });

  it('SYMLINK carries two names; READDIRPLUS lists entries with their attributes', async () => {
    const s = await c.request(abi.Opcode.SYMLINK, 1n, Buffer.concat([cstr('link'), cstr('a')]), abi.ENTRY_OUT_SIZE);
    assert.equal(s.error, 0);
    assert.equal(fs.readlinkSync(path.join(dir, 'share', 'link')), 'a');
    const o = ok(await c.opendir(1n), 'OPENDIR');
    const d = ok(await c.read(o.fh, 0, 4096, { opcode: abi.Opcode.READDIRPLUS, nodeid: 1n }), 'READDIRPLUS');
    const names = new Map<string, abi.EntryOut>();
    for (let p = 0; p < d.length; ) {
      const eo = abi.decodeEntryOut(d, p);
      const de = abi.decodeDirent(d, p + abi.ENTRY_OUT_SIZE);
      names.set(de.name.toString(), eo);
      p += abi.ENTRY_OUT_SIZE + abi.direntSize(de.name.length);
    }
    assert.deepEqual([...names.keys()].sort(), ['.', '..', 'a', 'b', 'link']);
    assert.equal(names.get('a')!.attr.size, 4n);
    assert.equal(names.get('link')!.attr.mode & 0o170000, 0o120000);
    assert.equal(names.get('.')!.nodeid, 0n);
  });
});
