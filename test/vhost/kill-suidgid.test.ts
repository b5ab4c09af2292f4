/**
 * Clearing setuid and setgid for a guest process without CAP_FSETID. Linux marks such a
 * process's requests: FUSE_WRITE_KILL_SUIDGID on a WRITE (always on a direct write), and,
 * once the daemon offers FUSE_HANDLE_KILLPRIV_V2 (--killpriv-v2), FUSE_OPEN_KILL_SUIDGID on
 * an OPEN or CREATE that truncates and FATTR_KILL_SUIDGID on a SETATTR of the size. The
 * daemon runs as root here, as it usually does: a root write keeps the bits, so the files'
 * modes on the host show whether the request was honoured. Each request goes through the
 * native fast path and through JS (trace level), with and without the I/O pool, and the
 * requests without the flag must leave the bits alone.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { FuseClient, ok } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest } from '../support/connected';

const { O_WRONLY, O_TRUNC, O_CREAT } = fs.constants;
const SUID_SGID_X = 0o6755;
/** setgid without group execute: Linux keeps it on a write (it marks mandatory locking). */
const SGID_NO_GX = 0o2745;

const modeOf = (share: string, name: string): string => (fs.statSync(path.join(share, name)).mode & 0o7777).toString(8);

interface Report {
  requestsPerQueue?: Record<string, number>;
  nativePerQueue?: Record<string, number>;
  pooledPerQueue?: Record<string, number>;
  nativeOpcodesPerQueue?: Record<string, Record<string, number>>;
}
const sum = (r: Record<string, number> | undefined): number => Object.values(r ?? {}).reduce((a, b) => a + b, 0);

const CONFIGS = [
  { name: 'fast path', args: ['--thread-pool-size=0'], native: true, pooled: false },
  { name: 'fast path and the I/O pool', args: ['--thread-pool-size=4'], native: true, pooled: true },
  { name: 'JS (trace level)', args: ['--thread-pool-size=0', '--log-level=trace'], native: false, pooled: false },
  { name: 'JS (trace level) and the I/O pool', args: ['--thread-pool-size=4', '--log-level=trace'], native: false, pooled: true },
];

describe('virtiofsd-ts clears setuid and setgid when the guest says the caller lacks CAP_FSETID', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  for (const cfg of CONFIGS) {
    it(`with --killpriv-v2, through the ${cfg.name}: WRITE, truncating OPEN and CREATE, SETATTR of the size`, async () => {
      const env = await connect('vfs-killpriv-', ['--cache=auto', '--killpriv-v2', ...cfg.args]);
      const { c, share } = env;
      assert.ok(c.initOut && BigInt(c.initOut.flags >>> 0) & abi.InitFlags.HANDLE_KILLPRIV_V2, 'HANDLE_KILLPRIV_V2 offered');
      for (const name of ['w', 'w1m', 'keep', 'o', 'o-keep', 'c', 't', 't-keep']) {
        fs.writeFileSync(path.join(share, name), 'contents');
        fs.chmodSync(path.join(share, name), SUID_SGID_X);
      }
      fs.writeFileSync(path.join(share, 'g'), 'contents');
      fs.chmodSync(path.join(share, 'g'), SGID_NO_GX);
      const node = async (name: string): Promise<bigint> => ok(await c.lookup(1n, name), `LOOKUP ${name}`).nodeid;
      const openFile = async (name: string, flags: number, openFlags = 0): Promise<bigint> => {
        const args = Buffer.alloc(abi.OPEN_IN_SIZE);
        abi.encodeOpenIn(args, 0, { flags, openFlags });
        const r = await c.request(abi.Opcode.OPEN, await node(name), args, abi.OPEN_OUT_SIZE);
        assert.equal(r.error, 0, `OPEN ${name}`);
        return abi.decodeOpenOut(r.body, 0).fh;
      };
      const kill = { writeFlags: abi.WriteFlags.KILL_SUIDGID };

      // WRITE: 4 KiB and 1 MiB with the flag, 4 KiB without; setgid without group execute stays.
      const w = await openFile('w', O_WRONLY);
      assert.equal(ok(await c.write(w, 0, Buffer.alloc(4096, 1), kill), 'WRITE w').size, 4096);
      const big = await openFile('w1m', O_WRONLY);
      assert.equal(ok(await c.write(big, 4096, Buffer.alloc(1 << 20, 2), kill), 'WRITE w1m').size, 1 << 20);
      const keep = await openFile('keep', O_WRONLY);
      assert.equal(ok(await c.write(keep, 0, Buffer.alloc(4096, 3)), 'WRITE keep').size, 4096);
      const g = await openFile('g', O_WRONLY);
      assert.equal(ok(await c.write(g, 0, Buffer.alloc(4096, 4), kill), 'WRITE g').size, 4096);
      assert.equal(modeOf(share, 'w'), '755', 'a write by a caller without CAP_FSETID clears both bits');
      assert.equal(modeOf(share, 'w1m'), '755', 'a 1 MiB write too');
      assert.equal(fs.statSync(path.join(share, 'w1m')).size, 4096 + (1 << 20), 'the data went in');
      assert.equal(modeOf(share, 'keep'), '6755', 'a write without the flag (a root caller) keeps them');
      assert.equal(modeOf(share, 'g'), '2745', 'setgid without group execute stays, as on a local file');

      // OPEN with O_TRUNC and FUSE_OPEN_KILL_SUIDGID; without the flag the bits stay.
      await openFile('o', O_WRONLY | O_TRUNC, abi.OpenInFlags.KILL_SUIDGID);
      assert.equal(modeOf(share, 'o'), '755', 'a truncating open clears both bits');
      assert.equal(fs.statSync(path.join(share, 'o')).size, 0, 'and truncates');
      await openFile('o-keep', O_WRONLY | O_TRUNC);
      assert.equal(modeOf(share, 'o-keep'), '6755');

      // CREATE of an existing name with O_TRUNC and the flag.
      const ca = Buffer.alloc(abi.CREATE_IN_SIZE);
      abi.encodeCreateIn(ca, 0, { flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o100644, umask: 0, openFlags: abi.OpenInFlags.KILL_SUIDGID });
      const cr = await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([ca, Buffer.from('c\0')]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
      assert.equal(cr.error, 0, 'CREATE c');
      assert.equal(modeOf(share, 'c'), '755', 'CREATE of an existing file, truncating');

      // SETATTR of the size, with and without FATTR_KILL_SUIDGID.
      const truncate = async (name: string, valid: number): Promise<void> => {
        const a = Buffer.alloc(abi.SETATTR_IN_SIZE);
        abi.encodeSetattrIn(a, 0, {
          valid, fh: 0n, size: 2n, lockOwner: 0n, atime: 0n, mtime: 0n, ctime: 0n, atimensec: 0, mtimensec: 0, ctimensec: 0, mode: 0, uid: 0, gid: 0,
        });
        const r = await c.request(abi.Opcode.SETATTR, await node(name), a, abi.ATTR_OUT_SIZE);
        assert.equal(r.error, 0, `SETATTR ${name}`);
        assert.equal(abi.decodeAttrOut(r.body, 0).attr.mode & 0o7777, parseInt(modeOf(share, name), 8), 'the reply has the new mode');
      };
      await truncate('t', abi.FattrFlags.SIZE | abi.FattrFlags.KILL_SUIDGID);
      await truncate('t-keep', abi.FattrFlags.SIZE);
      assert.equal(modeOf(share, 't'), '755', 'a truncation for a caller without CAP_FSETID');
      assert.equal(modeOf(share, 't-keep'), '6755');
      assert.equal(fs.statSync(path.join(share, 't')).size, 2);

      await disconnectDaemon(env);
      const report = env.daemon.exitReport<Report>();
      // Every request but INIT natively, or none.
      assert.equal(sum(report.requestsPerQueue), 22, JSON.stringify(report));
      assert.equal(sum(report.nativePerQueue), cfg.native ? 21 : 0, `where they were served: ${JSON.stringify(report)}`);
      // Pooled, the WRITEs finish on a pool thread (this share's file system does not do
      // RWF_NOWAIT writes), which dropped the capability itself.
      if (cfg.pooled) assert.ok(sum(report.pooledPerQueue) >= 1, `some WRITEs finished on the pool: ${JSON.stringify(report)}`);
    });
  }

  // FALLOCATE and COPY_FILE_RANGE carry no KILL_SUIDGID flag: with HANDLE_KILLPRIV_V2 the
  // guest (Linux 6.1 on: file_modified() in fuse_file_fallocate and copy_file_range) leaves
  // the clearing to us, so a caller other than root clears the bits; root keeps them.
  for (const cfg of [CONFIGS[0], CONFIGS[2]]) {
    for (const killpriv of [true, false]) {
      it(`${killpriv ? 'with' : 'without'} --killpriv-v2, through the ${cfg.name}: FALLOCATE and COPY_FILE_RANGE by a user ${killpriv ? 'clear' : 'leave'} the bits${killpriv ? ', by root keep them' : ' (the guest clears them itself)'}`, async () => {
        const env = await connect('vfs-killpriv-', ['--cache=never', ...(killpriv ? ['--killpriv-v2'] : []), ...cfg.args]);
        const { c, share } = env;
        const user = new FuseClient(env.fe, { timeoutMs: 10000, uid: 1000, gid: 1000 });
        fs.writeFileSync(path.join(share, 'src'), 'copied bytes');
        for (const name of ['fa', 'fa-root', 'cp', 'cp-root']) {
          fs.writeFileSync(path.join(share, name), 'contents');
          fs.chmodSync(path.join(share, name), SUID_SGID_X);
        }
        const opened = async (name: string, flags: number): Promise<{ nodeid: bigint; fh: bigint }> => {
          const nodeid = ok(await c.lookup(1n, name), `LOOKUP ${name}`).nodeid;
          return { nodeid, fh: BigInt(ok(await c.open(nodeid, flags), `OPEN ${name}`).fh) };
        };
        const fallocate = async (client: FuseClient, name: string): Promise<void> => {
          const f = await opened(name, O_WRONLY);
          const a = Buffer.alloc(abi.FALLOCATE_IN_SIZE);
          abi.encodeFallocateIn(a, 0, { fh: f.fh, offset: 0n, length: 65536n, mode: 0 });
          assert.equal((await client.request(abi.Opcode.FALLOCATE, f.nodeid, a, 0)).error, 0, `FALLOCATE ${name}`);
          assert.equal(fs.statSync(path.join(share, name)).size, 65536);
        };
        const copy = async (client: FuseClient, name: string): Promise<void> => {
          const from = await opened('src', fs.constants.O_RDONLY);
          const to = await opened(name, O_WRONLY);
          const a = Buffer.alloc(abi.COPY_FILE_RANGE_IN_SIZE);
          abi.encodeCopyFileRangeIn(a, 0, { fhIn: from.fh, offIn: 0n, nodeidOut: to.nodeid, fhOut: to.fh, offOut: 0n, len: 12n, flags: 0n });
          const r = await client.request(abi.Opcode.COPY_FILE_RANGE, from.nodeid, a, abi.WRITE_OUT_SIZE);
          assert.equal(r.error, 0, `COPY_FILE_RANGE into ${name}`);
          assert.equal(fs.readFileSync(path.join(share, name), 'utf8'), 'copied bytes');
        };
        await fallocate(user, 'fa');
        await fallocate(c, 'fa-root');
        await copy(user, 'cp');
        await copy(c, 'cp-root');
        const cleared = killpriv ? '755' : '6755';
        const modes = Object.fromEntries(['fa', 'cp', 'fa-root', 'cp-root'].map((n) => [n, modeOf(share, n)]));
        assert.deepEqual(modes, { fa: cleared, cp: cleared, 'fa-root': '6755', 'cp-root': '6755' }, 'by a user: fa (FALLOCATE), cp (COPY_FILE_RANGE into it); by root: the others');
        await disconnectDaemon(env);
        const report = env.daemon.exitReport<Report>();
        for (const op of ['FALLOCATE', 'COPY_FILE_RANGE']) {
          assert.equal(report.nativeOpcodesPerQueue?.['1']?.[op] ?? 0, cfg.native ? 2 : 0, `${op}: where they were served: ${JSON.stringify(report)}`);
        }
      });
    }
  }

  it('without --killpriv-v2 the capability is not offered, and a WRITE with the flag (what Linux sends for a direct write) still clears the bits', async () => {
    const env = await connect('vfs-killpriv-', ['--cache=never']);
    const { c, share } = env;
    assert.ok(c.initOut, 'INIT done');
    assert.equal(BigInt(c.initOut.flags >>> 0) & abi.InitFlags.HANDLE_KILLPRIV_V2, 0n, 'not offered');
    fs.writeFileSync(path.join(share, 'w'), 'contents');
    fs.chmodSync(path.join(share, 'w'), SUID_SGID_X);
    const n = ok(await c.lookup(1n, 'w'), 'LOOKUP w').nodeid;
    const fh = ok(await c.open(n, O_WRONLY), 'OPEN w').fh;
    ok(await c.write(fh, 0, Buffer.from('x')), 'WRITE as root');
    assert.equal(modeOf(share, 'w'), '6755');
    ok(await c.write(fh, 0, Buffer.from('y'), { writeFlags: abi.WriteFlags.KILL_SUIDGID }), 'WRITE as a user');
    assert.equal(modeOf(share, 'w'), '755');
    // The queue thread has CAP_FSETID back: a root write afterwards keeps bits set again.
    fs.chmodSync(path.join(share, 'w'), SUID_SGID_X);
    ok(await c.write(fh, 0, Buffer.from('z')), 'WRITE as root again');
    assert.equal(modeOf(share, 'w'), '6755');
  });
});
