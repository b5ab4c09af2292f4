/**
 * Device state for live migration (vhost-user DEVICE_STATE), as QEMU drives it: on the source,
 * with the queues stopped, SET_DEVICE_STATE_FD (save) hands over one end of a pipe that the
 * daemon fills with its state, then CHECK_DEVICE_STATE; on the destination, a second daemon
 * on the same share reads the state the same way before its queues start. The guest then goes
 * on with the node ids, lookup counts and handles it had (test/guest/migration.test.ts does
 * this under real QEMUs). Also: what cannot travel (a removed file, a path gone on the
 * destination) fails the migration, or is left out with --migration-on-error=guest-error; a
 * stream that names paths outside the share, through a symlink or '..', reaches nothing there.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native';
import * as abi from '../../src/fuse/abi';
import { bit, encodeDeviceStateFd, FrontendReq, ProtocolFeature, TransferDirection } from '../../src/vhost/messages';
import { startDaemon, type Daemon } from '../frontend/daemons';
import { defaultProtocolMask, type VhostUserFrontend } from '../frontend/frontend';
import { FuseClient, ok } from '../frontend/fuse-client';
import { connectDaemon, disconnectDaemon, type ConnectedDaemon } from '../support/connected';
import { checkState, readState, setStateFd, writeState } from '../support/device-state';

const MASK = defaultProtocolMask() | bit(ProtocolFeature.DEVICE_STATE);
const NEGOTIATE = { protocolMask: MASK };

/** The source's half: queues stopped, the state read to EOF, then checked. */
async function save(fe: VhostUserFrontend): Promise<{ state: Buffer; check: bigint }> {
  await fe.stopQueues();
  return readState(fe);
}

const load = writeState;

interface Destination {
  daemon: Daemon;
  fe: VhostUserFrontend;
  c: FuseClient;
  dir: string;
}

/** A second daemon on `share`, negotiated as QEMU's destination is, its queues stopped, no INIT. */
async function destination(share: string, args: string[] = []): Promise<Destination> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-migdst-'));
  const daemon = startDaemon('ts', { sharedDir: share, socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: ['--cache=never', ...args] });
  const fe = await daemon.connect();
  await fe.negotiate({ memory: { size: 64 << 20 }, ...NEGOTIATE });
  await fe.stopQueues();
  return { daemon, fe, c: new FuseClient(fe, { timeoutMs: 60000 }), dir };
}

async function stopDestination(d: Destination): Promise<void> {
  d.fe.close();
  await d.daemon.stop();
  fs.rmSync(d.dir, { recursive: true, force: true });
}

/** The daemon's log so far, a record per line. */
function lines(d: Daemon): Array<Record<string, unknown>> {
  return d
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Waits (up to 5 s) for a log line that pred accepts; fails with the log. */
async function logged(d: Daemon, pred: (l: Record<string, unknown>) => boolean): Promise<void> {
  for (const end = Date.now() + 5000; !lines(d).some(pred); ) {
    if (Date.now() > end) assert.fail(`no such log line in:\n${d.output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** QEMU's precopy begins: a dirty log, then logging on, while the guest runs on. Returns the log's descriptor. */
async function startPrecopy(fe: VhostUserFrontend, d: Daemon): Promise<number> {
  const logBytes = (64 << 20) / 4096 / 8;
  const logFd = native.memfdCreate('dirty-log', logBytes);
  try {
    await fe.setLogBase(logFd, logBytes);
    await fe.setFeatures(fe.ackedFeatures | (1n << 26n), true);
    await logged(d, (l) => l.msg === 'dirty-page logging on (migration started)');
  } catch (e) {
    native.close(logFd);
    throw e;
  }
  return logFd;
}

/** The names a READDIR reply lists. */
function names(body: Buffer): string[] {
  const out: string[] = [];
  for (let off = 0; off + 24 <= body.length; ) {
    const len = body.readUInt32LE(off + 16);
    out.push(body.subarray(off + 24, off + 24 + len).toString());
    off += (24 + len + 7) & ~7;
  }
  return out;
}

async function readdir(c: FuseClient, nodeid: bigint, fh: bigint): Promise<string[]> {
  const a = Buffer.alloc(abi.READ_IN_SIZE);
  abi.encodeReadIn(a, 0, { fh, offset: 0n, size: 4096, readFlags: 0, lockOwner: 0n, flags: 0 });
  const r = await c.request(abi.Opcode.READDIR, nodeid, a, 4096);
  assert.equal(r.error, 0, `READDIR: ${r.error}`);
  return names(r.body).sort();
}

describe('device state for live migration (SET_DEVICE_STATE_FD, CHECK_DEVICE_STATE)', function () {
  this.timeout(60000);
  let src: ConnectedDaemon | null = null;
  let dst: Destination | null = null;
  afterEach(async () => {
    if (dst) await stopDestination(dst).catch(() => undefined);
    if (src) await disconnectDaemon(src).catch(() => undefined);
    src = dst = null;
  });

  // Also under --seccomp=kill (the transfer's pipe calls are in the filter's list), with every
  // inode kept as a file handle (the source opens each one again to read its path).
  for (const extra of [[], ['--seccomp=kill', '--inode-file-handles=mandatory']]) {
    it(`a second daemon on the share goes on with the node ids, lookup counts, handles and session of the first (${extra.join(' ') || 'defaults'})`, async () => {
      // --writeback: the session's writeback cache makes an O_WRONLY open readable on the host,
      // which shows whether the destination knows the session it never saw an INIT of.
      src = await connectDaemon('vfs-migsrc-', ['--cache=never', '--writeback', ...extra], {}, undefined, NEGOTIATE);
      const { c, share } = src;
      fs.mkdirSync(path.join(share, 'd'));
      fs.writeFileSync(path.join(share, 'd', 'f'), 'before the move\n');
      fs.writeFileSync(path.join(share, 'g'), 'g\n');
      const d = ok(await c.lookup(1n, 'd'), 'LOOKUP d').nodeid;
      const f = ok(await c.lookup(d, 'f'), 'LOOKUP f').nodeid;
      assert.equal(ok(await c.lookup(d, 'f'), 'LOOKUP f again').nodeid, f);
      const fh = ok(await c.open(f, fs.constants.O_RDWR), 'OPEN f').fh;
      const dh = ok(await c.opendir(d), 'OPENDIR d').fh;
      const g = ok(await c.lookup(1n, 'g'), 'LOOKUP g').nodeid;
      // A file made and opened by CREATE (its host descriptor is O_NOFOLLOW).
      const ca = Buffer.alloc(abi.CREATE_IN_SIZE);
      abi.encodeCreateIn(ca, 0, { flags: fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND, mode: 0o100644, umask: 0, openFlags: 0 });
      const cr = await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([ca, Buffer.from('log\0')]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
      assert.equal(cr.error, 0, 'CREATE log');
      const logNode = abi.decodeEntryOut(cr.body, 0).nodeid;
      const logFh = abi.decodeOpenOut(cr.body, abi.ENTRY_OUT_SIZE).fh;
      ok(await c.write(logFh, 0, Buffer.from('source\n'), { nodeid: logNode }), 'WRITE log');
      // Renamed on the host after the lookups: the state must carry where the files are now.
      fs.renameSync(path.join(share, 'd'), path.join(share, 'd2'));
      const { state, check } = await save(src.fe);
      // No lock held: the stream's flags say only how inodes travel, so that it also loads into a
      // daemon of before the lock flag (which refuses flags it does not know).
      assert.equal(state.readUInt32LE(8), 0, 'stream flags');
      assert.equal(check, 0n, 'the save worked');
      await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.inodes === 4 && l.handles === 3);

      dst = await destination(share, extra);
      assert.equal(await load(dst.fe, state), 0n, `the load worked:\n${dst.daemon.output()}`);
      await dst.fe.startQueues(dst.fe.queues.map(() => 0));
      const dc = dst.c;
      const st = fs.statSync(path.join(share, 'd2', 'f'));
      assert.equal(ok(await dc.getattr(f), 'GETATTR f').attr.ino, BigInt(st.ino));
      assert.equal(ok(await dc.getattr(g), 'GETATTR g').attr.ino, BigInt(fs.statSync(path.join(share, 'g')).ino));
      assert.equal(ok(await dc.read(fh, 0, 100, { nodeid: f }), 'READ f').toString(), 'before the move\n');
      ok(await dc.write(fh, 0, Buffer.from('AFTER!'), { nodeid: f }), 'WRITE f');
      assert.equal(fs.readFileSync(path.join(share, 'd2', 'f'), 'utf8'), 'AFTER! the move\n');
      assert.deepEqual(await readdir(dc, d, dh), ['.', '..', 'f']);
      ok(await dc.write(logFh, 7, Buffer.from('destination\n'), { nodeid: logNode }), 'WRITE log');
      assert.equal(fs.readFileSync(path.join(share, 'log'), 'utf8'), 'source\ndestination\n', 'written through the CREATE handle');
      // The session: writeback, so a write-only open can be read from.
      const wo = ok(await dc.open(g, fs.constants.O_WRONLY), 'OPEN g write-only').fh;
      assert.equal(ok(await dc.read(wo, 0, 10, { nodeid: g }), 'READ through a write-only handle').toString(), 'g\n');
      // A name the guest looks up again is the node id it had.
      assert.equal(ok(await dc.lookup(1n, 'g'), 'LOOKUP g on the destination').nodeid, g, 'g looked up again');
      assert.equal(ok(await dc.lookup(d, 'f'), 'LOOKUP f on the destination').nodeid, f, 'f looked up again');
      await dc.forget(g, 1);
      await dc.forget(f, 1);
      // A new name gets an id of its own, not one of the source's.
      fs.writeFileSync(path.join(share, 'new'), '');
      const fresh = ok(await dc.lookup(1n, 'new'), 'LOOKUP new').nodeid;
      assert.ok(![d, f, g, logNode].includes(fresh), `node id ${fresh} handed out again`);
      // f came with two lookups: it stays after one FORGET and goes after the second.
      await dc.forget(f, 1);
      ok(await dc.getattr(f), 'GETATTR f after one FORGET');
      await dc.forget(f, 1);
      assert.notEqual((await dc.getattr(f)).error, 0, 'f is forgotten after its two lookups');
    });
  }

  for (const [extra, fromPrecopy] of [[['--seccomp=kill'], 2], [['--migration-confirm-paths'], 0]] as const) {
    it(`paths found during the precopy (dirty logging on) serve the save; files renamed on the host since are found again then (${extra.join(' ') || 'defaults'})`, async () => {
      src = await connectDaemon('vfs-migsrc-', ['--cache=never', ...extra], {}, undefined, NEGOTIATE);
      const { c, share } = src;
      fs.mkdirSync(path.join(share, 'd'));
      for (const f of ['a', 'b', 'c']) fs.writeFileSync(path.join(share, 'd', f), `file ${f}`);
      const d = ok(await c.lookup(1n, 'd'), 'LOOKUP d').nodeid;
      const ids = new Map<string, bigint>();
      for (const f of ['a', 'b', 'c']) ids.set(f, ok(await c.lookup(d, f), `LOOKUP ${f}`).nodeid);
      const logFd = await startPrecopy(src.fe, src.daemon);
      try {
        // The preparation's thread has 4 inodes to look at.
        await new Promise((r) => setTimeout(r, 1000));
        // On the host, before the switch-over: a renamed; b renamed and another file made under its name.
        fs.renameSync(path.join(share, 'd', 'a'), path.join(share, 'd', 'a2'));
        fs.renameSync(path.join(share, 'd', 'b'), path.join(share, 'd', 'b.old'));
        fs.writeFileSync(path.join(share, 'd', 'b'), 'another b');
        const { state, check } = await save(src.fe);
        assert.equal(check, 0n);
        // d and c as the precopy found them; a and b walked again at the save (all four with
        // --migration-confirm-paths).
        await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.inodes === 4 && l.pathsFromPrecopy === fromPrecopy);
        dst = await destination(share);
        assert.equal(await load(dst.fe, state), 0n, dst.daemon.output());
        await dst.fe.startQueues(dst.fe.queues.map(() => 0));
        // Each node id is still the file the guest looked up, under its new name.
        for (const [f, want] of [['a', 'file a'], ['b', 'file b'], ['c', 'file c']]) {
          const n = ids.get(f)!;
          const fh: bigint = ok(await dst.c.open(n, fs.constants.O_RDONLY), `OPEN ${f}`).fh;
          assert.equal(ok(await dst.c.read(fh, 0, 64, { nodeid: n }), `READ ${f}`).toString(), want);
        }
      } finally {
        native.close(logFd);
      }
    });
  }

  it('paths whose directories kept their timestamps since the precopy serve the save without a look at their files; a change on the host since is seen through them', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    const write = (rel: string, text: string): void => fs.writeFileSync(path.join(share, rel), text);
    for (const d of ['a', 'b/sub', 'c', 's/app/lib', 's/app.new/lib']) fs.mkdirSync(path.join(share, d), { recursive: true });
    for (const rel of ['a/f1', 'a/f2', 'b/g', 'b/sub/h', 'r', 's/app/lib/x', 's/app.new/lib/x']) write(rel, `${rel} as the guest saw it`);
    // Settled: their last change is more than 2 s old when the precopy stamps them.
    await new Promise((r) => setTimeout(r, 2200));
    // Changed just before the precopy (c) and made then (fresh): their timestamps cannot
    // stand for their entries.
    fs.mkdirSync(path.join(share, 'c', 'fresh'));
    write('c/fresh/x', 'c/fresh/x as the guest saw it');
    const ids = new Map<string, bigint>();
    const rels = ['a', 'b', 'b/sub', 'c', 'c/fresh', 's', 's/app', 's/app/lib', 's/app.new', 's/app.new/lib'];
    rels.push('a/f1', 'a/f2', 'b/g', 'b/sub/h', 'r', 'c/fresh/x', 's/app/lib/x');
    for (const rel of rels) {
      const dir = path.dirname(rel);
      ids.set(rel, ok(await c.lookup(dir === '.' ? 1n : ids.get(dir)!, path.basename(rel)), `LOOKUP ${rel}`).nodeid);
    }
    const logFd = await startPrecopy(src.fe, src.daemon);
    try {
      await new Promise((r) => setTimeout(r, 1000));
      // On the host, before the switch-over: a/f1 renamed and another a/f1 made in its
      // place; b/g renamed; s/app swapped for s/app.new (a release directory's deploy).
      fs.renameSync(path.join(share, 'a', 'f1'), path.join(share, 'a', 'f1.moved'));
      write('a/f1', 'an impostor');
      fs.renameSync(path.join(share, 'b', 'g'), path.join(share, 'b', 'g2'));
      fs.renameSync(path.join(share, 's', 'app'), path.join(share, 's', 'app.old'));
      fs.renameSync(path.join(share, 's', 'app.new'), path.join(share, 's', 'app'));
      const { state, check } = await save(src.fe);
      assert.equal(check, 0n);
      // Without a look: a, b, c, r and s (the root kept its stamps). By their links, as the
      // precopy found them: a/f2, b/sub, b/sub/h (a and b changed), c/fresh and c/fresh/x (c too
      // new to stamp). Walked again: a/f1, b/g and the five below s.
      await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.inodes === 17);
      const saved = lines(src.daemon).find((l) => l.msg === 'device state saved for migration')!;
      assert.deepEqual([saved.pathsFromPrecopy, saved.pathsInUnchangedDirs], [10, 5], JSON.stringify(saved));
      dst = await destination(share);
      assert.equal(await load(dst.fe, state), 0n, dst.daemon.output());
      await dst.fe.startQueues(dst.fe.queues.map(() => 0));
      // Each node id is still the file the guest looked up, wherever it is now.
      for (const rel of ['a/f1', 'a/f2', 'b/g', 'b/sub/h', 'r', 'c/fresh/x', 's/app/lib/x']) {
        const n = ids.get(rel)!;
        const fh: bigint = ok(await dst.c.open(n, fs.constants.O_RDONLY), `OPEN ${rel}`).fh;
        assert.equal(ok(await dst.c.read(fh, 0, 64, { nodeid: n }), `READ ${rel}`).toString(), `${rel} as the guest saw it`);
      }
      for (const [rel, now] of [['s/app', 's/app.old'], ['s/app.new', 's/app'], ['s/app/lib', 's/app.old/lib']]) {
        assert.equal(ok(await dst.c.getattr(ids.get(rel)!), `GETATTR ${rel}`).attr.ino, BigInt(fs.statSync(path.join(share, now)).ino), `${rel} is now ${now}`);
      }
    } finally {
      native.close(logFd);
    }
  });

  it('thousands of inodes are saved (on several threads) and put back: each node id is its own file, found again by a lookup', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    // 2,600 inodes: the save describes them on more than one thread (one per 512).
    const dirs = Array.from({ length: 1300 }, (_, i) => `d${i}`);
    for (const d of dirs) {
      fs.mkdirSync(path.join(share, d));
      fs.writeFileSync(path.join(share, d, 'f'), d);
    }
    const ids = new Map<string, bigint>();
    for (const d of dirs) {
      const dn = ok(await c.lookup(1n, d), `LOOKUP ${d}`).nodeid;
      ids.set(d, dn);
      ids.set(`${d}/f`, ok(await c.lookup(dn, 'f'), `LOOKUP ${d}/f`).nodeid);
    }
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.inodes === 2600);
    dst = await destination(share);
    assert.equal(await load(dst.fe, state), 0n, dst.daemon.output().slice(-2000));
    await dst.fe.startQueues(dst.fe.queues.map(() => 0));
    for (const [rel, n] of ids) {
      const ino: bigint = ok(await dst.c.getattr(n), `GETATTR ${rel}`).attr.ino;
      assert.equal(ino, BigInt(fs.statSync(path.join(share, rel)).ino), `node id ${n} is ${rel}`);
    }
    for (const d of dirs.filter((_, i) => i % 50 === 0)) {
      assert.equal(ok(await dst.c.lookup(1n, d), `LOOKUP ${d} again`).nodeid, ids.get(d));
      assert.equal(ok(await dst.c.lookup(ids.get(d)!, 'f'), `LOOKUP ${d}/f again`).nodeid, ids.get(`${d}/f`));
    }
  });

  it('a precopy cancelled (dirty logging off before any save) drops the paths it found; the next save walks them itself', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    for (const f of ['a', 'b', 'c']) fs.writeFileSync(path.join(share, f), `file ${f}`);
    for (const f of ['a', 'b', 'c']) ok(await c.lookup(1n, f), `LOOKUP ${f}`);
    const logFd = await startPrecopy(src.fe, src.daemon);
    try {
      await new Promise((r) => setTimeout(r, 1000));
      // QEMU cancels the migration: logging goes off, the guest goes on.
      await src.fe.setFeatures(src.fe.ackedFeatures & ~(1n << 26n), true);
      await logged(src.daemon, (l) => l.msg === 'migration cancelled: the paths found during its precopy are dropped' && l.paths === 3);
      const { state, check } = await save(src.fe);
      assert.equal(check, 0n);
      await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.inodes === 3 && l.pathsFromPrecopy === 0);
      dst = await destination(share);
      assert.equal(await load(dst.fe, state), 0n, dst.daemon.output());
    } finally {
      native.close(logFd);
    }
  });

  it('a device reset during a precopy drops the paths it found', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    for (const f of ['a', 'b']) fs.writeFileSync(path.join(share, f), `file ${f}`);
    for (const f of ['a', 'b']) ok(await c.lookup(1n, f), `LOOKUP ${f}`);
    const logFd = await startPrecopy(src.fe, src.daemon);
    try {
      await new Promise((r) => setTimeout(r, 500));
      await src.fe.stopQueues();
      await src.fe.resetDevice();
      await logged(src.daemon, (l) => l.msg === 'migration cancelled: the paths found during its precopy are dropped' && l.paths === 2);
    } finally {
      native.close(logFd);
    }
  });

  it('a file removed while the guest holds it open: the destination refuses it (abort, the default); the source serves on', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.writeFileSync(path.join(share, 'gone'), 'x');
    const n = ok(await c.lookup(1n, 'gone'), 'LOOKUP').nodeid;
    const fh = ok(await c.open(n, fs.constants.O_RDONLY), 'OPEN').fh;
    fs.unlinkSync(path.join(share, 'gone'));
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n, 'the source sends what it has; the destination judges');
    await logged(src.daemon, (l) => l.level === 40 && /1 inodes cannot be described.*it was removed/.test(String(l.msg)));
    dst = await destination(share);
    assert.equal(await load(dst.fe, state), 1n, 'the destination refused');
    await logged(dst.daemon, (l) => /cannot be put back.*on the source: it was removed/.test(String(l.msg)));
    // The migration failed; QEMU starts the source's queues again and the guest goes on.
    await src.fe.startQueues(src.fe.queues.map((q) => q.vq.availIdx));
    assert.equal(ok(await c.read(fh, 0, 10, { nodeid: n }), 'READ the removed file').toString(), 'x');
  });

  it('--migration-mode=file-handles carries a file removed while the guest holds it open', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never', '--migration-mode=file-handles'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.mkdirSync(path.join(share, 'd'));
    fs.writeFileSync(path.join(share, 'd', 'gone'), 'still here');
    const d = ok(await c.lookup(1n, 'd'), 'LOOKUP d').nodeid;
    const n = ok(await c.lookup(d, 'gone'), 'LOOKUP').nodeid;
    const fh = ok(await c.open(n, fs.constants.O_RDWR), 'OPEN').fh;
    fs.unlinkSync(path.join(share, 'd', 'gone'));
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.inodes === 2 && l.mode === 'file-handles');
    dst = await destination(share);
    assert.equal(await load(dst.fe, state), 0n, dst.daemon.output());
    await dst.fe.startQueues(dst.fe.queues.map(() => 0));
    assert.equal(ok(await dst.c.read(fh, 0, 100, { nodeid: n }), 'READ the removed file on the destination').toString(), 'still here');
    ok(await dst.c.write(fh, 0, Buffer.from('STILL'), { nodeid: n }), 'WRITE it');
    assert.equal(ok(await dst.c.read(fh, 0, 100, { nodeid: n }), 'READ').toString(), 'STILL here');
    assert.equal(ok(await dst.c.getattr(d), 'GETATTR d').attr.ino, BigInt(fs.statSync(path.join(share, 'd')).ino));
  });

  it('a file handle naming a file outside the destination\'s share opens nothing there', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never', '--migration-mode=file-handles'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.writeFileSync(path.join(share, 'secret'), 'not for the destination');
    fs.mkdirSync(path.join(share, 'sub'));
    ok(await c.lookup(1n, 'secret'), 'LOOKUP');
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    // The destination serves a subdirectory of the source's share: same file system, and
    // the handle opens the file, but the file is not below its share.
    dst = await destination(path.join(share, 'sub'));
    assert.equal(await load(dst.fe, state), 1n);
    await logged(dst.daemon, (l) => /cannot be put back.*names a file outside the share/.test(String(l.msg)));
  });

  it('a file handle naming a file hidden under the share\'s mount point opens nothing, though its path reads like one in the share', async () => {
    // The destination's share is a bind mount of another directory; the handle names a file
    // of the directory mounted over, on the same file system. Its /proc/self/fd link is the
    // path from the file system's root, which starts with the share's path.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-mighidden-'));
    const share = path.join(dir, 'share');
    fs.mkdirSync(share);
    fs.mkdirSync(path.join(dir, 'other'));
    fs.writeFileSync(path.join(share, 'hidden'), 'under the mount point');
    let mounted = false;
    try {
      src = await connectDaemon('vfs-migsrc-', ['--cache=never', '--sandbox=none', '--migration-mode=file-handles'], {}, share, NEGOTIATE);
      ok(await src.c.lookup(1n, 'hidden'), 'LOOKUP hidden');
      const { state, check } = await save(src.fe);
      assert.equal(check, 0n);
      execFileSync('mount', ['--bind', path.join(dir, 'other'), share]);
      mounted = true;
      dst = await destination(share, ['--sandbox=none']);
      assert.equal(await load(dst.fe, state), 1n, 'refused');
      await logged(dst.daemon, (l) => /cannot be put back.*names a file outside the share/.test(String(l.msg)));
    } finally {
      if (dst) await stopDestination(dst);
      dst = null;
      if (mounted) execFileSync('umount', [share]);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--migration-verify-handles: a file replaced under its name before the destination opens it is refused', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never', '--migration-verify-handles'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.writeFileSync(path.join(share, 'f'), 'one');
    ok(await c.lookup(1n, 'f'), 'LOOKUP');
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    // Another file under the same name (a save by rename, on the host), kept open so that
    // its inode number cannot be the old one's.
    const old = fs.openSync(path.join(share, 'f'), 'r');
    fs.writeFileSync(path.join(share, 'f.new'), 'two');
    fs.renameSync(path.join(share, 'f.new'), path.join(share, 'f'));
    try {
      dst = await destination(share);
      assert.equal(await load(dst.fe, state), 1n);
      await logged(dst.daemon, (l) => /cannot be put back.*file handles differ/.test(String(l.msg)));
    } finally {
      fs.closeSync(old);
    }
  });

  it('--migration-on-error=guest-error on the destination leaves out what cannot travel; the guest gets errors on just that', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.writeFileSync(path.join(share, 'gone'), 'x');
    fs.writeFileSync(path.join(share, 'kept'), 'k');
    const gone = ok(await c.lookup(1n, 'gone'), 'LOOKUP gone').nodeid;
    ok(await c.open(gone, fs.constants.O_RDONLY), 'OPEN gone');
    const kept = ok(await c.lookup(1n, 'kept'), 'LOOKUP kept').nodeid;
    fs.unlinkSync(path.join(share, 'gone'));
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    dst = await destination(share, ['--migration-on-error=guest-error']);
    assert.equal(await load(dst.fe, state), 0n);
    // The inode and its handle are left behind.
    await logged(dst.daemon, (l) => l.level === 40 && /2 inodes or handles of the source are missing here/.test(String(l.msg)));
    await dst.fe.startQueues(dst.fe.queues.map(() => 0));
    ok(await dst.c.getattr(kept), 'GETATTR kept');
    assert.notEqual((await dst.c.getattr(gone)).error, 0, 'the removed file is unknown on the destination');
  });

  it('the destination refuses a state whose files are not in its share (abort), and keeps nothing of it', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.writeFileSync(path.join(share, 'a'), 'a');
    fs.writeFileSync(path.join(share, 'b'), 'b');
    const a = ok(await c.lookup(1n, 'a'), 'LOOKUP a').nodeid;
    ok(await c.lookup(1n, 'b'), 'LOOKUP b');
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    fs.unlinkSync(path.join(share, 'b'));
    dst = await destination(share);
    assert.equal(await load(dst.fe, state), 1n, 'refused');
    await logged(dst.daemon, (l) => /cannot be put back.*not in the share here/.test(String(l.msg)));
    await dst.fe.startQueues(dst.fe.queues.map(() => 0));
    assert.notEqual((await dst.c.getattr(a)).error, 0, 'nothing of the refused state was kept');
  });

  it('a stream naming paths outside the share (.., a symlink, an absolute path) reaches nothing there; a malformed one is refused', async () => {
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-migout-'));
    fs.writeFileSync(path.join(outside, 'secret'), 'host only');
    const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-migshare-'));
    fs.symlinkSync(outside, path.join(share, 'link'));
    fs.mkdirSync(path.join(share, 'sub'));
    const str = (b: Buffer): Buffer => Buffer.concat([Buffer.from(Uint32Array.of(b.length).buffer), b]);
    fs.symlinkSync(outside, path.join(share, 'sub', 'link'));
    // The file's inode (regular, with a handle on it), after the directory "sub" when given:
    // the destination then opens the file's path from sub's descriptor, not from the share.
    const stream = (rel: string, withHandle: boolean, withSub = false): Buffer => {
      const head = Buffer.alloc(28);
      head.write('VTSM', 0);
      head.writeUInt32LE(1, 4); // version
      head.writeUInt32LE(0, 8); // by path
      head.writeUInt32LE(0, 12); // session
      head.writeUInt32LE(withSub ? 2 : 1, 16); // inodes
      head.writeUInt32LE(withHandle ? 1 : 0, 20);
      head.writeUInt32LE(0, 24); // lock owners
      const inode = (id: bigint, type: number, p: string): Buffer => {
        const ino = Buffer.alloc(20);
        ino.writeBigUInt64LE(id, 0);
        ino.writeBigUInt64LE(1n, 8);
        ino.writeUInt32LE(type, 16);
        return Buffer.concat([ino, str(Buffer.from(p)), str(Buffer.alloc(0)), str(Buffer.alloc(0))]);
      };
      const hd = Buffer.alloc(withHandle ? 24 : 0);
      if (withHandle) {
        hd.writeBigUInt64LE((1n << 4n) | 2n, 0);
        hd.writeBigUInt64LE((5n << 4n) | 3n, 8);
        hd.writeUInt32LE(fs.constants.O_RDONLY, 16);
      }
      // The file first: the destination must still put the directory first.
      return Buffer.concat([head, inode((5n << 4n) | 3n, fs.constants.S_IFREG, rel), ...(withSub ? [inode((6n << 4n) | 1n, fs.constants.S_IFDIR, 'sub')] : []), hd]);
    };
    try {
      const escapes = ['../' + path.basename(outside) + '/secret', 'link/secret', 'sub/../../' + path.basename(outside) + '/secret', outside + '/secret', 'sub//x', ''];
      const fromSub = ['sub/..', 'sub/link/secret', 'sub/../link/secret', 'sub/.'];
      for (const [rel, withSub] of [...escapes.map((r) => [r, false] as const), ...fromSub.map((r) => [r, true] as const)]) {
        dst = await destination(share);
        assert.equal(await load(dst.fe, stream(rel, true, withSub)), 1n, `path ${JSON.stringify(rel)} refused`);
        await logged(dst.daemon, (l) => /cannot be put back/.test(String(l.msg)));
        await stopDestination(dst);
        dst = null;
      }
      // The same stream with a path that stays in the share loads (so the refusals above are
      // the paths', not the stream's).
      fs.writeFileSync(path.join(share, 'sub', 'plain'), 'in the share');
      dst = await destination(share);
      assert.equal(await load(dst.fe, stream('sub/plain', true, true)), 0n, dst.daemon.output());
      await logged(dst.daemon, (l) => l.msg === 'device state loaded from migration' && l.inodes === 2 && l.handles === 1);
      await stopDestination(dst);
      dst = null;
      // Cut short, bytes past the end, another magic, another version: refused as a whole.
      const good = stream('sub', false);
      const lyingLocks = Buffer.concat([good, Buffer.alloc(20)]);
      lyingLocks.writeUInt32LE(1, 24);
      lyingLocks.writeUInt32LE(0xffffffff, good.length + 16);
      for (const bad of [lyingLocks, good.subarray(0, good.length - 1), Buffer.concat([good, Buffer.alloc(1)]), Buffer.concat([Buffer.from('XXXX'), good.subarray(4)]), Buffer.alloc(3)]) {
        dst = await destination(share);
        assert.equal(await load(dst.fe, bad), 1n);
        await logged(dst.daemon, (l) => l.msg === 'device state not transferred: device state cut short, with bytes past its end or a value out of range' || /not a virtiofsd-ts device state/.test(String(l.msg)));
        await dst.fe.startQueues(dst.fe.queues.map(() => 0));
        // No session came: the daemon answers EIO until an INIT begins one, then serves.
        assert.equal((await dst.c.statfs()).error, -os.constants.errno.EIO, 'STATFS before an INIT');
        ok(await dst.c.init(), 'INIT');
        ok(await dst.c.statfs(), 'STATFS: the daemon serves on');
        await stopDestination(dst);
        dst = null;
      }
    } finally {
      fs.rmSync(outside, { recursive: true, force: true });
      fs.rmSync(share, { recursive: true, force: true });
    }
  });

  it('a stream\'s node id or handle past 2^53 is refused: the ids the destination hands out later do not wrap around onto the root or a live one', async () => {
    // An id near 2^64 would set its shard's sequence near 2^60, and the next id of that
    // shard (sequence << 4) would wrap to a small one: node id 1, the root, among them.
    const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-migshare-'));
    for (const n of ['a', 'b']) fs.writeFileSync(path.join(share, n), n);
    for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(share, `f${i}`), String(i));
    const str = (b: Buffer): Buffer => Buffer.concat([Buffer.from(Uint32Array.of(b.length).buffer), b]);
    const inode = (id: bigint, p: string): Buffer => {
      const ino = Buffer.alloc(20);
      ino.writeBigUInt64LE(id, 0);
      ino.writeBigUInt64LE(1n, 8);
      ino.writeUInt32LE(fs.constants.S_IFREG, 16);
      return Buffer.concat([ino, str(Buffer.from(p)), str(Buffer.alloc(0)), str(Buffer.alloc(0))]);
    };
    const head = Buffer.alloc(28);
    head.write('VTSM', 0);
    head.writeUInt32LE(1, 4); // version
    head.writeUInt32LE(2, 16); // inodes
    head.writeUInt32LE(1, 20); // handles
    const b = (5n << 4n) | 3n;
    const hd = Buffer.alloc(24);
    hd.writeBigUInt64LE(0xfffffffffffffff2n, 0);
    hd.writeBigUInt64LE(b, 8);
    hd.writeUInt32LE(fs.constants.O_RDONLY, 16);
    try {
      dst = await destination(share, ['--migration-on-error=guest-error']);
      assert.equal(await load(dst.fe, Buffer.concat([head, inode(0xfffffffffffffff1n, 'a'), inode(b, 'b'), hd])), 0n);
      await logged(dst.daemon, (l) => l.level === 40 && /2 inodes or handles of the source are missing here/.test(String(l.msg)));
      await dst.fe.startQueues(dst.fe.queues.map(() => 0));
      const ids = new Set<bigint>([b]);
      for (let i = 0; i < 100; i++) {
        const id = BigInt(ok(await dst.c.lookup(1n, `f${i}`), `LOOKUP f${i}`).nodeid);
        assert.ok(id > 1n && id < 1n << 53n && !ids.has(id), `f${i} got node id ${id}`);
        ids.add(id);
      }
      assert.equal(ok(await dst.c.getattr(1n), 'GETATTR of the root').attr.mode & fs.constants.S_IFMT, fs.constants.S_IFDIR);
      assert.equal(ok(await dst.c.getattr(b), 'GETATTR b').attr.size, 1n);
    } finally {
      fs.rmSync(share, { recursive: true, force: true });
    }
  });

  it('POSIX and flock() locks go with the guest: the destination holds them, ends an open file\'s lock at its handle\'s RELEASE and names the process that took it; a source that goes on takes them back', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const { c, share } = src;
    fs.writeFileSync(path.join(share, 'f'), 'locked');
    const n = ok(await c.lookup(1n, 'f'), 'LOOKUP').nodeid;
    const fh = ok(await c.open(n, fs.constants.O_RDWR), 'OPEN').fh;
    const fh2 = ok(await c.open(n, fs.constants.O_RDWR), 'OPEN again').fh;
    const lk = (h: bigint, owner: bigint, flock = false, start = 0n, pid = 1): Buffer => {
      const b = Buffer.alloc(abi.LK_IN_SIZE);
      abi.encodeLkIn(b, 0, { fh: h, owner, lk: { start, end: start + 99n, type: 1, pid }, lkFlags: flock ? abi.LkFlags.FLOCK : 0 });
      return b;
    };
    // Owner 1 (guest process 4242) write-locks bytes 0-99; handle fh holds an exclusive
    // flock(); owner 3, a guest's F_OFD_SETLK through fh2 (its owner is that open file, which
    // no FLUSH names), write-locks 200-299.
    assert.equal((await c.request(abi.Opcode.SETLK, n, lk(fh, 1n, false, 0n, 4242), 0)).error, 0, 'SETLK owner 1');
    assert.equal((await c.request(abi.Opcode.SETLK, n, lk(fh, 7n, true), 0)).error, 0, 'flock LOCK_EX');
    assert.equal((await c.request(abi.Opcode.SETLK, n, lk(fh2, 3n, false, 200n), 0)).error, 0, 'SETLK owner 3');
    // What the locks look like to another owner and another handle: taken, by process 4242.
    const held = async (cl: FuseClient, label: string): Promise<void> => {
      assert.equal((await cl.request(abi.Opcode.SETLK, n, lk(fh2, 2n), 0)).error, -os.constants.errno.EAGAIN, `${label}: owner 2 is refused`);
      const g = await cl.request(abi.Opcode.GETLK, n, lk(fh2, 2n), abi.LK_OUT_SIZE);
      assert.equal(g.error, 0);
      assert.deepEqual(abi.decodeLkOut(g.body, 0).lk, { start: 0n, end: 99n, type: 1, pid: 4242 }, `${label}: GETLK sees the write lock of process 4242`);
      assert.equal((await cl.request(abi.Opcode.SETLK, n, lk(fh2, 8n, true), 0)).error, -os.constants.errno.EAGAIN, `${label}: another flock() is refused`);
      assert.equal((await cl.request(abi.Opcode.SETLK, n, lk(fh, 2n, false, 200n), 0)).error, -os.constants.errno.EAGAIN, `${label}: owner 3's lock holds`);
    };
    await held(c, 'source');
    const { state, check } = await save(src.fe);
    assert.equal(check, 0n);
    assert.equal(state.readUInt32LE(8) & 2, 2, 'the stream carries each lock owner\'s handle and process');
    await logged(src.daemon, (l) => l.msg === 'device state saved for migration' && l.lockOwners === 2);

    dst = await destination(share);
    assert.equal(await load(dst.fe, state), 0n, dst.daemon.output());
    await logged(dst.daemon, (l) => l.msg === 'device state loaded from migration' && l.lockOwners === 2 && l.handles === 2);
    await dst.fe.startQueues(dst.fe.queues.map(() => 0));
    await held(dst.c, 'destination');
    // The owner itself may unlock, and then owner 2 gets the range.
    const unlock = Buffer.alloc(abi.LK_IN_SIZE);
    abi.encodeLkIn(unlock, 0, { fh, owner: 1n, lk: { start: 0n, end: 99n, type: 2, pid: 1 }, lkFlags: 0 });
    assert.equal((await dst.c.request(abi.Opcode.SETLK, n, unlock, 0)).error, 0);
    assert.equal((await dst.c.request(abi.Opcode.SETLK, n, lk(fh2, 2n), 0)).error, 0, 'owner 2 after the unlock');
    // The guest closes the open file owner 3's lock came through: its lock goes.
    ok(await dst.c.release(fh2, { nodeid: n }), 'RELEASE fh2');
    assert.equal((await dst.c.request(abi.Opcode.SETLK, n, lk(fh, 4n, false, 200n), 0)).error, 0, 'owner 3\'s lock went with its handle');
    await stopDestination(dst);
    dst = null;

    // A second save on a source whose migration failed: its locks are free on the host until
    // it goes on, and then they are its own again, each with its handle and process.
    await src.fe.startQueues(src.fe.queues.map((q) => q.vq.availIdx));
    await logged(src.daemon, (l) => l.msg === 'the guest goes on here after its state was saved: its locks are taken again');
    await held(c, 'source after the failed migration');
    ok(await c.release(fh2, { nodeid: n }), 'RELEASE fh2 on the source');
    assert.equal((await c.request(abi.Opcode.SETLK, n, lk(fh, 4n, false, 200n), 0)).error, 0, 'owner 3\'s lock went with its handle on the source');
  });

  it('refuses a transfer while a queue runs, in an unknown phase or direction, and a check with no transfer', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never'], {}, undefined, NEGOTIATE);
    const running = await setStateFd(src.fe, TransferDirection.SAVE);
    native.close(running.ours);
    assert.equal(running.reply & 0xffn, 1n, 'refused while the queues run');
    assert.equal(await checkState(src.fe), 1n, 'nothing to check');
    await src.fe.stopQueues();
    for (const [direction, phase] of [[0, 1], [2, 0]]) {
      const r = await setStateFd(src.fe, direction, phase);
      native.close(r.ours);
      assert.equal(r.reply & 0xffn, 1n, `direction ${direction} phase ${phase} refused`);
    }
    // A descriptor that is neither a pipe nor a socket (net.Socket threw on it, an unhandled
    // rejection that ended the process): refused, for both directions.
    for (const direction of [TransferDirection.SAVE, TransferDirection.LOAD]) {
      for (const fd of [native.eventfdCreate(), fs.openSync(path.join(src.share, 'plain-file'), 'w')]) {
        try {
          const r = await src.fe.request(FrontendReq.SET_DEVICE_STATE_FD, encodeDeviceStateFd({ direction, phase: 0 }), { hasReply: true, fds: [fd] });
          assert.equal(r!.readBigUInt64LE(0) & 0xffn, 1n, `direction ${direction}: a descriptor that is not a pipe refused`);
        } finally {
          native.close(fd);
        }
      }
    }
    await src.fe.startQueues(src.fe.queues.map((q) => q.vq.availIdx));
    ok(await src.c.statfs(), 'STATFS');
    for (const why of ['queue 0 is running', 'migration phase 1', 'transfer direction 2', 'not a pipe or a socket']) {
      await logged(src.daemon, (l) => l.request === 'SET_DEVICE_STATE_FD' && String(l.msg).includes(why));
    }
    await logged(src.daemon, (l) => l.request === 'CHECK_DEVICE_STATE' && /no device-state transfer/.test(String(l.msg)));
  });

  it('is offered only as a protocol feature the front end may take', async () => {
    src = await connectDaemon('vfs-migsrc-', ['--cache=never']);
    assert.ok((src.fe.protocolFeatures & bit(ProtocolFeature.DEVICE_STATE)) !== 0n, 'offered');
    const r = await setStateFd(src.fe, TransferDirection.SAVE);
    native.close(r.ours);
    assert.equal(r.reply & 0xffn, 1n, 'refused when not negotiated');
  });
});
