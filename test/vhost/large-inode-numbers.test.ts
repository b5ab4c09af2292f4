/**
 * A share whose inode numbers lie past 2^53: overlayfs with xino=on over layers on two file
 * systems puts the layer's number in the top bits (2^63 and up for the lower layer). Such
 * numbers do not survive a double, and two files whose numbers round alike once shared one
 * node id: reads of one returned the other's data. Here each file keeps its own node id and
 * the guest sees its exact inode number, whether the fast path or JS answers.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ok } from '../frontend/fuse-client';
import { connectEachTest } from '../support/connected';

describe('virtiofsd-ts on a share with inode numbers past 2^53 (overlayfs, xino=on)', function () {
  this.timeout(60000);
  const connect = connectEachTest();
  let dir = '';
  const mounts: string[] = [];
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-xino-'));
    for (const d of ['lower', 'up', 'merged']) fs.mkdirSync(path.join(dir, d));
    // Files made one after another get neighbouring inode numbers: past 2^63 they round to
    // the same double.
    for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(dir, 'lower', `f${i}`), `file ${i}`);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', path.join(dir, 'up')]);
    mounts.push(path.join(dir, 'up'));
    for (const d of ['upper', 'work']) fs.mkdirSync(path.join(dir, 'up', d));
    const o = `lowerdir=${dir}/lower,upperdir=${dir}/up/upper,workdir=${dir}/up/work,xino=on`;
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', o, path.join(dir, 'merged')]);
    mounts.unshift(path.join(dir, 'merged'));
  });
  afterEach(() => {
    for (const m of mounts.splice(0)) execFileSync('umount', [m]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const extra of [[], ['--log-level=trace']]) {
    it(`each file its own node id, data and exact inode number${extra.length ? ' (JS serves)' : ' (the fast path serves)'}`, async () => {
      const share = path.join(dir, 'merged');
      const inos = Array.from({ length: 8 }, (_, i) => BigInt.asUintN(64, fs.statSync(path.join(share, `f${i}`), { bigint: true }).ino));
      assert.ok(inos.every((n) => n >= 1n << 53n), `inode numbers past 2^53 (what this test needs): ${inos.join(' ')}`);
      assert.ok(new Set(inos.map(Number)).size < inos.length, 'some of them round to the same double (what this test needs)');
      const env = await connect('vfs-xino-', ['--cache=never', ...extra], {}, share);
      const nodes = new Set<bigint>();
      for (let i = 0; i < 8; i++) {
        const e = ok(await env.c.lookup(1n, `f${i}`), `LOOKUP f${i}`);
        assert.ok(!nodes.has(e.nodeid), `f${i} has a node id of its own`);
        nodes.add(e.nodeid);
        assert.equal(e.attr.ino, inos[i], `f${i}'s inode number`);
        assert.equal(ok(await env.c.getattr(e.nodeid), `GETATTR f${i}`).attr.ino, inos[i]);
        const fh = ok(await env.c.open(e.nodeid, fs.constants.O_RDONLY), `OPEN f${i}`).fh;
        assert.equal(ok(await env.c.read(fh, 0, 100, { nodeid: e.nodeid }), `READ f${i}`).toString(), `file ${i}`);
        ok(await env.c.release(fh, { nodeid: e.nodeid }), `RELEASE f${i}`);
      }
    });
  }
});
