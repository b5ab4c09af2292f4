/**
 * --translate-uid/--translate-gid through the daemon: the owners the guest sees, the owner
 * of what a guest user creates and chowns on the host, and the IDs it may not use. Every
 * request goes through the native fast path and through JS (trace level), which must agree.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok } from '../frontend/fuse-client';
import { createAs } from '../support/create-as';
import { disconnectDaemon, connectEachTest } from '../support/connected';

const MAPS = [
  '--translate-uid=map:1000:2000:10',
  '--translate-gid=map:1000:3000:10',
  '--translate-uid=forbid-guest:500:10',
  '--translate-gid=forbid-guest:500:10',
  '--translate-uid=squash-host:7000:65534:10',
  '--translate-gid=squash-host:7000:65534:10',
];

const owner = (share: string, name: string): string => {
  const st = fs.lstatSync(path.join(share, name));
  return `${st.uid}:${st.gid}`;
};
const { EPERM } = os.constants.errno;
const attrOwner = (a: abi.Attr): string => `${a.uid}:${a.gid}`;

function chownArgs(uid: number, gid: number): Buffer {
  const a = Buffer.alloc(abi.SETATTR_IN_SIZE);
  abi.encodeSetattrIn(a, 0, {
    valid: abi.FattrFlags.UID | abi.FattrFlags.GID, fh: 0n, size: 0n, lockOwner: 0n, atime: 0n, mtime: 0n, ctime: 0n,
    atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0, uid, gid,
  });
  return a;
}

describe('virtiofsd-ts translates user and group IDs (--translate-uid, --translate-gid)', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  for (const [how, extra] of [['the fast path', []], ['JS (trace level)', ['--log-level=trace']]] as const) {
    it(`shows host owners as guest IDs and makes guest IDs host IDs, through ${how}`, async () => {
      const env = await connect('vfs-idmap-', [...MAPS, ...extra]);
      const { c, share } = env;
      fs.chmodSync(share, 0o1777); // guest users create here
      const files: Record<string, [number, number]> = { mapped: [2005, 3005], root: [0, 0], unmapped: [42, 43], squashed: [7003, 7004], tochown: [0, 0] };
      for (const [name, [u, g]] of Object.entries(files)) {
        fs.writeFileSync(path.join(share, name), name);
        fs.chownSync(path.join(share, name), u, g);
      }
      // Host to guest: LOOKUP, GETATTR, READDIRPLUS.
      const seen: Record<string, string> = {};
      for (const name of Object.keys(files)) seen[name] = attrOwner(ok(await c.lookup(1n, name), `LOOKUP ${name}`).attr);
      assert.deepEqual(seen, { mapped: '1005:1005', root: '0:0', unmapped: '42:43', squashed: '65534:65534', tochown: '0:0' });
      const mapped = ok(await c.lookup(1n, 'mapped'), 'LOOKUP mapped').nodeid;
      assert.equal(attrOwner(ok(await c.getattr(mapped), 'GETATTR').attr), '1005:1005');
      const dir = ok(await c.opendir(1n), 'OPENDIR').fh;
      const list = ok(await c.read(dir, 0, 8192, { opcode: abi.Opcode.READDIRPLUS, nodeid: 1n }), 'READDIRPLUS');
      const plus: Record<string, string> = {};
      for (let off = 0; off < list.length; ) {
        const d = abi.decodeDirentplus(list, off);
        if (d.entryOut.nodeid !== 0n) plus[d.dirent.name.toString()] = attrOwner(d.entryOut.attr);
        off += abi.direntplusSize(d.dirent.name.length);
      }
      assert.equal(plus.mapped, '1005:1005');
      assert.equal(plus.squashed, '65534:65534');

      // Guest to host: what guest user 1001 (group 1002) creates is host 2001:3002's, and
      // the guest sees it as its own.
      const made = await createAs(c, 'made', 1001, 1002);
      assert.equal(made.error, 0);
      assert.equal(attrOwner(made.attr!), '1001:1002');
      assert.equal(owner(share, 'made'), '2001:3002');
      // An unmapped guest ID is the same host ID.
      assert.equal((await createAs(c, 'plain', 77, 78)).error, 0);
      assert.equal(owner(share, 'plain'), '77:78');
      // chown to guest 1004:1006 is host 2004:3006.
      const chowned = ok(await c.lookup(1n, 'tochown'), 'LOOKUP tochown').nodeid;
      const r = await c.request(abi.Opcode.SETATTR, chowned, chownArgs(1004, 1006), abi.ATTR_OUT_SIZE);
      assert.equal(r.error, 0);
      assert.equal(attrOwner(abi.decodeAttrOut(r.body, 0).attr), '1004:1006');
      assert.equal(owner(share, 'tochown'), '2004:3006');

      // Forbidden guest IDs: nothing is made or given away.
      assert.equal((await createAs(c, 'refused', 505, 1000)).error, -EPERM);
      assert.equal((await createAs(c, 'refused', 1000, 509)).error, -EPERM);
      assert.ok(!fs.existsSync(path.join(share, 'refused')), 'a forbidden user created nothing');
      const denied = await c.request(abi.Opcode.SETATTR, chowned, chownArgs(505, 1006), abi.ATTR_OUT_SIZE);
      assert.equal(denied.error, -EPERM);
      assert.equal(owner(share, 'tochown'), '2004:3006', 'unchanged');

      await disconnectDaemon(env);
      const report = env.daemon.exitReport<{ nativeOpcodesPerQueue?: Record<string, Record<string, number>> }>();
      const native = report.nativeOpcodesPerQueue?.['1'] ?? {};
      if (extra.length === 0) for (const op of ['LOOKUP', 'GETATTR', 'READDIRPLUS', 'CREATE', 'SETATTR']) assert.ok(native[op] > 0, `${op} natively: ${JSON.stringify(native)}`);
      else assert.deepEqual(native, {}, 'all in JS');
    });
  }
});
