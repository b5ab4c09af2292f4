/**
 * --posix-acl through the daemon. With it the daemon offers FUSE_POSIX_ACL, FUSE_DONT_MASK and
 * FUSE_SETXATTR_EXT together; the guest then sends new files' modes unmasked with the
 * caller's umask, which the host must apply only where the parent has no default ACL, and
 * marks an access ACL change that must clear setgid (FUSE_SETXATTR_ACL_KILL_SGID). What a
 * user checks is on the host: the modes of the files made, the ACL a file inherited, the
 * setgid bit. Each case runs through the native fast path and through JS (trace level).
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok, type FuseClient } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest } from '../support/connected';

const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
const ACL_FLAGS = abi.InitFlags.POSIX_ACL | abi.InitFlags.DONT_MASK | abi.InitFlags.SETXATTR_EXT;

// The xattr form of an ACL (include/uapi/linux/posix_acl_xattr.h): a version, then
// (tag u16, perm u16, id u32) entries in tag order.
const TAG = { USER_OBJ: 0x01, USER: 0x02, GROUP_OBJ: 0x04, GROUP: 0x08, MASK: 0x10, OTHER: 0x20 } as const;
const NO_ID = 0xffffffff;
function aclXattr(entries: Array<[number, number, number?]>): Buffer {
  const b = Buffer.alloc(4 + 8 * entries.length);
  b.writeUInt32LE(2, 0);
  entries.forEach(([tag, perm, id], i) => {
    b.writeUInt16LE(tag, 4 + 8 * i);
    b.writeUInt16LE(perm, 6 + 8 * i);
    b.writeUInt32LE(id ?? NO_ID, 8 + 8 * i);
  });
  return b;
}
function aclUsers(x: Buffer): number[] {
  const ids: number[] = [];
  for (let at = 4; at + 8 <= x.length; at += 8) if (x.readUInt16LE(at) === TAG.USER) ids.push(x.readUInt32LE(at + 4));
  return ids;
}

const modeOf = (share: string, name: string): string => (fs.statSync(path.join(share, name)).mode & 0o7777).toString(8);

async function setxattr(c: FuseClient, nodeid: bigint, name: string, value: Buffer, ext: boolean, setxattrFlags = 0): Promise<number> {
  const a = Buffer.alloc(abi.setxattrInSize(ext));
  abi.encodeSetxattrIn(a, 0, { size: value.length, flags: 0, setxattrFlags }, ext);
  return (await c.request(abi.Opcode.SETXATTR, nodeid, Buffer.concat([a, Buffer.from(`${name}\0`), value]), 0)).error;
}

async function getxattr(c: FuseClient, nodeid: bigint, name: string): Promise<{ error: number; value: Buffer }> {
  const a = Buffer.alloc(abi.GETXATTR_IN_SIZE);
  a.writeUInt32LE(4096, 0);
  const r = await c.request(abi.Opcode.GETXATTR, nodeid, Buffer.concat([a, Buffer.from(`${name}\0`)]), 4096);
  return { error: r.error, value: r.body };
}

async function mkdir(c: FuseClient, parent: bigint, name: string, mode: number, umask: number): Promise<bigint> {
  const a = Buffer.alloc(abi.MKDIR_IN_SIZE);
  abi.encodeMkdirIn(a, 0, { mode, umask });
  const r = await c.request(abi.Opcode.MKDIR, parent, Buffer.concat([a, Buffer.from(`${name}\0`)]), abi.ENTRY_OUT_SIZE);
  assert.equal(r.error, 0, `MKDIR ${name}`);
  return abi.decodeEntryOut(r.body, 0).nodeid;
}

async function create(c: FuseClient, parent: bigint, name: string, mode: number, umask: number): Promise<bigint> {
  const a = Buffer.alloc(abi.CREATE_IN_SIZE);
  abi.encodeCreateIn(a, 0, { flags: O_WRONLY | O_CREAT | O_EXCL, mode: fs.constants.S_IFREG | mode, umask, openFlags: 0 });
  const r = await c.request(abi.Opcode.CREATE, parent, Buffer.concat([a, Buffer.from(`${name}\0`)]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
  assert.equal(r.error, 0, `CREATE ${name}`);
  return abi.decodeEntryOut(r.body, 0).nodeid;
}

async function mknod(c: FuseClient, parent: bigint, name: string, mode: number, umask: number): Promise<void> {
  const a = Buffer.alloc(abi.MKNOD_IN_SIZE);
  abi.encodeMknodIn(a, 0, { mode: fs.constants.S_IFIFO | mode, rdev: 0, umask });
  const r = await c.request(abi.Opcode.MKNOD, parent, Buffer.concat([a, Buffer.from(`${name}\0`)]), abi.ENTRY_OUT_SIZE);
  assert.equal(r.error, 0, `MKNOD ${name}`);
}

interface Report {
  nativeOpcodesPerQueue?: Record<string, Record<string, number>>;
}

const CONFIGS = [
  { name: 'fast path', args: [] as string[], native: true },
  { name: 'JS (trace level)', args: ['--log-level=trace'], native: false },
];

describe('virtiofsd-ts with --posix-acl', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  for (const cfg of CONFIGS) {
    it(`through the ${cfg.name}: umask applied on the host unless a default ACL replaces it, ACLs inherited, setgid cleared for a caller outside the group`, async () => {
      const env = await connect('vfs-acl-', ['--cache=never', '--posix-acl', ...cfg.args]);
      const { c, share } = env;
      assert.ok(c.initOut, 'INIT done');
      assert.equal(BigInt(c.initOut.flags >>> 0) & ACL_FLAGS, ACL_FLAGS, 'POSIX_ACL, DONT_MASK and SETXATTR_EXT answered');

      // No default ACL at the root: the caller's umask applies, as the guest no longer applies it.
      await mkdir(c, 1n, 'plain', 0o777, 0o022);
      await create(c, 1n, 'plain-file', 0o666, 0o027);
      await mknod(c, 1n, 'plain-fifo', 0o666, 0o077);
      assert.equal(modeOf(share, 'plain'), '755', 'MKDIR 0777 under umask 022');
      assert.equal(modeOf(share, 'plain-file'), '640', 'CREATE 0666 under umask 027');
      assert.equal(modeOf(share, 'plain-fifo'), '600', 'MKNOD 0666 under umask 077');

      // A default ACL set through SETXATTR (the 16-byte layout) on a new directory: what is
      // made in it inherits the ACL, and the umask (077 here) does not apply.
      const inherit = await mkdir(c, 1n, 'inherit', 0o755, 0);
      const dflt = aclXattr([[TAG.USER_OBJ, 7], [TAG.USER, 7, 1000], [TAG.GROUP_OBJ, 5], [TAG.MASK, 7], [TAG.OTHER, 5]]);
      assert.equal(await setxattr(c, inherit, 'system.posix_acl_default', dflt, true), 0, 'SETXATTR of a default ACL');
      const file = await create(c, inherit, 'file', 0o666, 0o077);
      const sub = await mkdir(c, inherit, 'sub', 0o777, 0o077);
      assert.equal(modeOf(share, 'inherit/file'), '664', 'the default ACL, not the umask, shaped the new file (group = mask rw, other r)');
      assert.equal(modeOf(share, 'inherit/sub'), '775', 'and the new directory');
      const acc = await getxattr(c, file, 'system.posix_acl_access');
      assert.equal(acc.error, 0, 'the new file has an access ACL');
      assert.deepEqual(aclUsers(acc.value), [1000], 'naming user 1000');
      const subDefault = await getxattr(c, sub, 'system.posix_acl_default');
      assert.equal(subDefault.error, 0, 'the new directory inherited the default ACL');
      assert.deepEqual(aclUsers(subDefault.value), [1000]);

      // An access ACL set by a caller outside the file's group: with ACL_KILL_SGID setgid goes
      // (the host kernel decides, for that caller); without the flag (root) it stays.
      for (const name of ['sg', 'sg-keep']) {
        fs.writeFileSync(path.join(share, name), 'x');
        fs.chownSync(path.join(share, name), 1000, 2000);
        fs.chmodSync(path.join(share, name), 0o2770);
      }
      const minimal = aclXattr([[TAG.USER_OBJ, 7], [TAG.GROUP_OBJ, 5], [TAG.OTHER, 0]]);
      const sg = ok(await c.lookup(1n, 'sg'), 'LOOKUP sg').nodeid;
      c.options.uid = 1000;
      c.options.gid = 1000;
      assert.equal(await setxattr(c, sg, 'system.posix_acl_access', minimal, true, abi.SetxattrFlags.ACL_KILL_SGID), 0, 'SETXATTR as user 1000');
      c.options.uid = 0;
      c.options.gid = 0;
      const keep = ok(await c.lookup(1n, 'sg-keep'), 'LOOKUP sg-keep').nodeid;
      assert.equal(await setxattr(c, keep, 'system.posix_acl_access', minimal, true), 0, 'SETXATTR as root');
      assert.equal(modeOf(share, 'sg'), '750', 'the ACL became the mode and setgid went');
      assert.equal(modeOf(share, 'sg-keep'), '2750', 'setgid stays for a privileged caller');

      await disconnectDaemon(env);
      const report = env.daemon.exitReport<Report>();
      const served = report.nativeOpcodesPerQueue?.['1'] ?? {};
      for (const op of ['MKDIR', 'CREATE', 'MKNOD']) {
        if (cfg.native) assert.ok((served[op] ?? 0) > 0, `${op} natively: ${JSON.stringify(served)}`);
        else assert.equal(served[op] ?? 0, 0, `${op} through JS`);
      }
    });
  }

  it('without --posix-acl none of the three is answered and SETXATTR keeps the 8-byte layout', async () => {
    const env = await connect('vfs-acl-', ['--cache=never', '--xattr']);
    const { c, share } = env;
    assert.ok(c.initOut);
    assert.equal(BigInt(c.initOut.flags >>> 0) & ACL_FLAGS, 0n);
    const n = await mkdir(c, 1n, 'd', 0o755, 0);
    assert.equal(await setxattr(c, n, 'user.x', Buffer.from('v'), false), 0);
    const got = await getxattr(c, n, 'user.x');
    assert.equal(got.value.toString(), 'v');
    // The mode arrives masked; the daemon takes nothing more away.
    await create(c, 1n, 'f', 0o666, 0o077);
    assert.equal(modeOf(share, 'f'), '666');
  });

  it('with a guest that does not offer all three, the daemon says so and serves without ACLs', async () => {
    const offered = Number(BigInt(0x7bfffffb) & ~abi.InitFlags.SETXATTR_EXT);
    const env = await connect('vfs-acl-', ['--cache=never', '--posix-acl'], {}, undefined, {}, undefined, { flags: offered });
    const { c } = env;
    assert.ok(c.initOut);
    assert.equal(BigInt(c.initOut.flags >>> 0) & ACL_FLAGS, 0n, 'nothing of the three');
    await disconnectDaemon(env);
    const line = env.daemon.logLine<{ level: number }>('POSIX ACLs not enabled: the guest kernel does not offer FUSE_POSIX_ACL, FUSE_DONT_MASK and FUSE_SETXATTR_EXT');
    assert.ok(line.level >= 50, 'an error');
  });
});
