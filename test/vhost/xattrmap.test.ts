/**
 * --xattrmap through the daemon: the names the host stores for what the guest sets, what a
 * LISTXATTR shows of what the host has, and the refusals. Checked on the host with getfattr.
 * GETXATTR, which the fast path serves natively without a map, must go through the map.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok, type FuseClient } from '../frontend/fuse-client';
import { connectEachTest } from '../support/connected';

const { EPERM, ENODATA, ERANGE } = require('node:os').constants.errno as Record<string, number>;

async function setxattr(c: FuseClient, nodeid: bigint, name: string, value: string): Promise<number> {
  const a = Buffer.alloc(abi.FUSE_COMPAT_SETXATTR_IN_SIZE);
  abi.encodeSetxattrIn(a, 0, { size: Buffer.byteLength(value), flags: 0, setxattrFlags: 0 }, false);
  return (await c.request(abi.Opcode.SETXATTR, nodeid, Buffer.concat([a, Buffer.from(`${name}\0${value}`)]), 0)).error;
}
async function getxattr(c: FuseClient, nodeid: bigint, name: string, size = 256): Promise<{ error: number; body: Buffer }> {
  const a = Buffer.alloc(abi.GETXATTR_IN_SIZE);
  a.writeUInt32LE(size, 0);
  return c.request(abi.Opcode.GETXATTR, nodeid, Buffer.concat([a, Buffer.from(`${name}\0`)]), size === 0 ? abi.GETXATTR_OUT_SIZE : size);
}
async function listxattr(c: FuseClient, nodeid: bigint, size = 4096): Promise<{ error: number; body: Buffer }> {
  const a = Buffer.alloc(abi.GETXATTR_IN_SIZE);
  a.writeUInt32LE(size, 0);
  return c.request(abi.Opcode.LISTXATTR, nodeid, a, size === 0 ? abi.GETXATTR_OUT_SIZE : size);
}
async function removexattr(c: FuseClient, nodeid: bigint, name: string): Promise<number> {
  return (await c.request(abi.Opcode.REMOVEXATTR, nodeid, Buffer.from(`${name}\0`), 0)).error;
}
/** The xattr names the host has on a file (getfattr), sorted. */
function hostNames(file: string): string[] {
  const out = execFileSync('getfattr', ['--absolute-names', '-m', '-', '-d', file], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.includes('=')).map((l) => l.slice(0, l.indexOf('='))).sort();
}

describe('virtiofsd-ts with --xattrmap', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  for (const trace of [false, true]) {
    it(`map of trusted. to user.virtiofs. (${trace ? 'JS at trace level' : 'fast path running'}): stored names, listing, refusals`, async () => {
      const env = await connect('vfs-xattrmap-', ['--cache=never', '--xattrmap=:map:trusted.:user.virtiofs.:', ...(trace ? ['--log-level=trace'] : [])]);
      const { c, share } = env;
      const file = path.join(share, 'f');
      fs.writeFileSync(file, 'x');
      // What the host has before the guest comes: a trusted. name of its own (hidden from
      // the guest) and a mapped one (shown as trusted.).
      execFileSync('setfattr', ['-n', 'trusted.host', '-v', 'h', file]);
      execFileSync('setfattr', ['-n', 'user.virtiofs.trusted.pre', '-v', 'p', file]);
      execFileSync('setfattr', ['-n', 'user.plain', '-v', 'u', file]);
      const n = ok(await c.lookup(1n, 'f'), 'LOOKUP f').nodeid;

      assert.equal(await setxattr(c, n, 'trusted.overlay.opaque', 'y'), 0, 'SETXATTR trusted.overlay.opaque');
      assert.deepEqual(hostNames(file), ['trusted.host', 'user.plain', 'user.virtiofs.trusted.overlay.opaque', 'user.virtiofs.trusted.pre']);
      const got = await getxattr(c, n, 'trusted.pre');
      assert.equal(got.error, 0);
      assert.equal(got.body.toString(), 'p', 'GETXATTR reads the mapped name (not served natively unmapped)');
      assert.equal((await getxattr(c, n, 'user.plain')).body.toString(), 'u', 'unmapped names pass');
      assert.equal((await getxattr(c, n, 'trusted.host')).error, -ENODATA, "the host's own trusted.host is not what the guest's trusted.host names");
      assert.equal((await getxattr(c, n, 'user.virtiofs.trusted.pre')).error, -EPERM, 'the mapped names are out of the guest\'s reach');
      assert.equal(await setxattr(c, n, 'user.virtiofs.trusted.evil', 'x'), -EPERM);

      const listed = await listxattr(c, n);
      assert.equal(listed.error, 0);
      const names = listed.body.toString().split('\0').filter(Boolean).sort();
      assert.deepEqual(names, ['trusted.overlay.opaque', 'trusted.pre', 'user.plain']);
      const sized = await listxattr(c, n, 0);
      assert.equal(sized.body.readUInt32LE(0), listed.body.length, 'the size LISTXATTR 0 gives is that of the mapped list');
      assert.equal((await listxattr(c, n, 10)).error, -ERANGE, 'a buffer too small for the mapped list');

      assert.equal(await removexattr(c, n, 'trusted.pre'), 0);
      assert.deepEqual(hostNames(file), ['trusted.host', 'user.plain', 'user.virtiofs.trusted.overlay.opaque']);
    });
  }

  // A file capability stored under a mapped name is cleared as the host kernel clears the
  // real one: on every write, truncation and chown (it lets a guest user who may write a
  // privileged binary keep its privileges otherwise).
  for (const [how, extra] of [['fast path', []], ['JS', ['--log-level=trace']], ['the I/O pool', ['--thread-pool-size=2']]] as const) {
    it(`security.capability mapped elsewhere is removed by a WRITE, a truncation and a chown (${how})`, async () => {
      const env = await connect('vfs-xattrmap-', ['--sandbox=none', '--cache=never', '--xattrmap=:map:security.capability:user.virtiofs.:', ...extra]);
      const { c, share } = env;
      const file = path.join(share, 'bin');
      fs.writeFileSync(file, 'binary');
      const n = ok(await c.lookup(1n, 'bin'), 'LOOKUP').nodeid;
      const capped = (): void => {
        execFileSync('setfattr', ['-n', 'user.virtiofs.security.capability', '-v', '0x01000002', file]);
        execFileSync('setfattr', ['-n', 'user.other', '-v', 'kept', file]);
      };
      capped();
      assert.equal((await getxattr(c, n, 'security.capability')).error, 0, 'the guest sees the capability');
      const fh = ok(await c.open(n, fs.constants.O_RDWR), 'OPEN').fh;
      ok(await c.write(fh, 0, Buffer.from('patched'), { nodeid: n }), 'WRITE');
      assert.deepEqual(hostNames(file), ['user.other'], 'after a WRITE');
      capped();
      const setattr = async (v: Partial<abi.SetattrIn>): Promise<number> => {
        const a = Buffer.alloc(abi.SETATTR_IN_SIZE);
        abi.encodeSetattrIn(a, 0, {
          valid: 0, fh: 0n, size: 0n, lockOwner: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0, uid: 0, gid: 0, ...v,
        });
        return (await c.request(abi.Opcode.SETATTR, n, a, abi.ATTR_OUT_SIZE)).error;
      };
      assert.equal(await setattr({ valid: abi.FattrFlags.SIZE, size: 3n }), 0);
      assert.deepEqual(hostNames(file), ['user.other'], 'after a truncation');
      capped();
      assert.equal(await setattr({ valid: abi.FattrFlags.UID | abi.FattrFlags.GID, uid: 1000, gid: 1000 }), 0);
      assert.deepEqual(hostNames(file), ['user.other'], 'after a chown');
      capped();
      assert.equal(await setattr({ valid: abi.FattrFlags.MODE, mode: 0o755 }), 0);
      assert.deepEqual(hostNames(file), ['user.other', 'user.virtiofs.security.capability'], 'a chmod keeps it, as on the host');
      // What `cp` over the binary sends: an OPEN that truncates, then FALLOCATE or COPY_FILE_RANGE.
      const t = ok(await c.open(n, fs.constants.O_WRONLY | fs.constants.O_TRUNC), 'OPEN O_TRUNC').fh;
      assert.deepEqual(hostNames(file), ['user.other'], 'after an OPEN that truncates');
      capped();
      const fa = Buffer.alloc(abi.FALLOCATE_IN_SIZE);
      abi.encodeFallocateIn(fa, 0, { fh: t, offset: 0n, length: 4096n, mode: 0 });
      assert.equal((await c.request(abi.Opcode.FALLOCATE, n, fa, 0)).error, 0, 'FALLOCATE');
      assert.deepEqual(hostNames(file), ['user.other'], 'after a FALLOCATE');
      capped();
      fs.writeFileSync(path.join(share, 'src'), 'new contents');
      const srcNode = ok(await c.lookup(1n, 'src'), 'LOOKUP src').nodeid;
      const srcFh = ok(await c.open(srcNode, fs.constants.O_RDONLY), 'OPEN src').fh;
      const cr = Buffer.alloc(abi.COPY_FILE_RANGE_IN_SIZE);
      abi.encodeCopyFileRangeIn(cr, 0, { fhIn: srcFh, offIn: 0n, nodeidOut: n, fhOut: t, offOut: 0n, len: 12n, flags: 0n });
      assert.equal((await c.request(abi.Opcode.COPY_FILE_RANGE, srcNode, cr, abi.WRITE_OUT_SIZE)).error, 0, 'COPY_FILE_RANGE');
      assert.deepEqual(hostNames(file), ['user.other'], 'after a COPY_FILE_RANGE into it');
    });
  }
});
