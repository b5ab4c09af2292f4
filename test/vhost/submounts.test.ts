/**
 * --announce-submounts (on by default, as in the Rust virtiofsd): a directory that is the
 * root of another host mount reaches the guest with FUSE_ATTR_SUBMOUNT in its entry, from
 * LOOKUP and from READDIRPLUS, through the native fast path and through JS alike, so that
 * the guest mounts it with a st_dev of its own (test/guest/boot.test.ts shows the guest
 * side). Other directories and the root never carry it, nor anything with
 * --no-announce-submounts. The share holds a tmpfs mounted by the test (root only).
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok, type FuseClient } from '../frontend/fuse-client';
import { connectDaemon, disconnectDaemon, type ConnectedDaemon } from '../support/connected';

/** The attr flags of each name LOOKUP and READDIRPLUS of the root report. */
async function flagsSeen(c: FuseClient): Promise<{ lookup: Record<string, number>; plus: Record<string, number> }> {
  const lookup: Record<string, number> = {};
  for (const name of ['sub', 'plain', 'file', '..']) lookup[name] = ok(await c.lookup(1n, name), `LOOKUP ${name}`).attr.flags;
  const dir = ok(await c.opendir(1n), 'OPENDIR /').fh;
  const r = ok(await c.read(dir, 0, 8192, { opcode: abi.Opcode.READDIRPLUS, nodeid: 1n }), 'READDIRPLUS /');
  const plus: Record<string, number> = {};
  for (let off = 0; off < r.length; ) {
    const d = abi.decodeDirentplus(r, off);
    plus[d.dirent.name.toString()] = d.entryOut.attr.flags;
    off += abi.direntplusSize(d.dirent.name.length);
  }
  return { lookup, plus };
}

describe('virtiofsd-ts announces host mounts inside the share as submounts', function () {
  this.timeout(60000);
  let base = '';
  let share = '';
  let env: ConnectedDaemon | null = null;
  before(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-submounts-'));
    share = path.join(base, 'share');
    for (const d of ['sub', 'plain']) fs.mkdirSync(path.join(share, d), { recursive: true });
    fs.writeFileSync(path.join(share, 'file'), '');
    execFileSync('mount', ['-t', 'tmpfs', 'vfs-test-sub', path.join(share, 'sub')]);
  });
  after(() => {
    execFileSync('umount', [path.join(share, 'sub')]);
    fs.rmSync(base, { recursive: true, force: true });
  });
  afterEach(async () => {
    if (env) await disconnectDaemon(env).catch(() => undefined);
    env = null;
  });

  for (const [how, args] of [['the fast path', []], ['JS (trace level)', ['--log-level=trace']]] as const) {
    it(`marks the tmpfs's root, and only it, in LOOKUP and READDIRPLUS entries, through ${how}`, async () => {
      env = await connectDaemon('vfs-submounts-', [...args], {}, share);
      assert.ok(env.c.initOut && BigInt(env.c.initOut.flags >>> 0) & abi.InitFlags.SUBMOUNTS, 'SUBMOUNTS offered');
      const seen = await flagsSeen(env.c);
      const S = abi.AttrFlags.SUBMOUNT;
      assert.deepEqual(seen.lookup, { sub: S, plain: 0, file: 0, '..': 0 });
      assert.deepEqual(seen.plus, { '.': 0, '..': 0, sub: S, plain: 0, file: 0 });
    });
  }

  it('marks nothing with --no-announce-submounts, and does not offer SUBMOUNTS', async () => {
    env = await connectDaemon('vfs-submounts-', ['--no-announce-submounts'], {}, share);
    assert.equal(BigInt(env.c.initOut!.flags >>> 0) & abi.InitFlags.SUBMOUNTS, 0n);
    const seen = await flagsSeen(env.c);
    assert.deepEqual(seen.lookup, { sub: 0, plain: 0, file: 0, '..': 0 });
    assert.deepEqual(seen.plus, { '.': 0, '..': 0, sub: 0, plain: 0, file: 0 });
  });
});
