/**
 * The native file-system state (native/state.cc) and guest I/O (native/io.cc) on a temp
 * directory: lookup counts, hard links as one inode, pins that outlive FORGET, RELEASE and
 * a new session, ids that are never handed out twice, and guest ranges that are refused
 * when they leave guest memory.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { guestIo, native, StatxField, STATX_FIELDS } from '../../src/native';

const O_PATH = 0o10000000;
const AT_EMPTY_PATH = 0x1000;
const EBADF = os.constants.errno.EBADF;

/** Descriptors this process has open (to see that the table closes what it owns). */
function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('native file-system state', () => {
  let dir: string;
  let id: number;
  const st = new Float64Array(STATX_FIELDS);

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-state-'));
    fs.writeFileSync(path.join(dir, 'a'), 'aaaa');
    fs.linkSync(path.join(dir, 'a'), path.join(dir, 'hardlink'));
    fs.mkdirSync(path.join(dir, 'sub'));
    id = native.stateCreate();
    const root = native.openat(-100, dir, O_PATH);
    assert.ok(root >= 0);
    assert.equal(native.statx(root, '', AT_EMPTY_PATH, st), 0);
    native.inodeSetRoot(id, root, st[StatxField.devMajor], st[StatxField.devMinor], st[StatxField.ino], st[StatxField.mntId]);
  });

  afterEach(() => {
    native.stateDestroy(id);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('counts lookups and frees the inode and its descriptor at the matching FORGET', () => {
    const before = openFds();
    const n1 = native.nodeLookup(id, 1, 'a', st);
    assert.ok(n1 > 1);
    assert.equal(st[StatxField.size], 4);
    assert.equal(native.nodeLookup(id, 1, 'a', st), n1, 'the same file is the same nodeid');
    assert.equal(native.inodeLookups(id, n1), 2);
    assert.equal(openFds(), before + 1, 'one descriptor per inode, however often looked up');
    native.inodeForget(id, n1, 1);
    assert.equal(native.inodeLookups(id, n1), 1);
    native.inodeForget(id, n1, 1);
    assert.equal(native.inodeLookups(id, n1), -1);
    assert.equal(openFds(), before);
    assert.equal(native.nodeStatx(id, n1, st), -EBADF, 'a forgotten nodeid is unknown');
  });

  it('gives hard links one nodeid, and the root its own nodeid for ".." of a child', () => {
    const a = native.nodeLookup(id, 1, 'a', st);
    assert.equal(native.nodeLookup(id, 1, 'hardlink', st), a);
    const sub = native.nodeLookup(id, 1, 'sub', st);
    assert.equal(native.nodeLookup(id, sub, '..', st), 1);
  });

  it('never follows a symlink and refuses names with a slash', () => {
    fs.symlinkSync('/etc', path.join(dir, 'link'));
    const n = native.nodeLookup(id, 1, 'link', st);
    assert.ok(n > 1);
    assert.equal(st[StatxField.mode] & 0o170000, 0o120000, 'the link itself, not /etc');
    assert.equal(native.nodeLookup(id, 1, 'sub/../a', st), -os.constants.errno.EINVAL);
    assert.equal(native.nodeLookup(id, 1, 'missing', st), -os.constants.errno.ENOENT);
  });

  it('keeps a pinned inode open through FORGET and a new session, closes it at the unpin', () => {
    const n = native.nodeLookup(id, 1, 'a', st);
    const fd = native.inodeAcquire(id, n);
    assert.ok(fd >= 0);
    native.inodeForget(id, n, 1);
    assert.equal(native.statx(fd, '', AT_EMPTY_PATH, st), 0, 'still open while pinned');
    native.stateClear(id);
    assert.equal(native.statx(fd, '', AT_EMPTY_PATH, st), 0, 'still open after a new session');
    native.inodeRelease(id, n);
    assert.equal(native.inodeLookups(id, n), -1);
    assert.equal(native.nodeStatx(id, 1, st), 0, 'the root survives a new session');
  });

  it('keeps a pinned handle open through RELEASE; a released fh is refused', () => {
    const n = native.nodeLookup(id, 1, 'a', st);
    const fh = native.nodeOpen(id, n, fs.constants.O_RDONLY);
    assert.ok(fh > 0);
    const fd = native.handleAcquire(id, fh);
    assert.equal(native.handleRemove(id, fh), 0);
    assert.equal(native.handleRemove(id, fh), -EBADF, 'a second RELEASE is refused');
    assert.equal(native.handleAcquire(id, fh), -EBADF, 'a released fh cannot be used');
    assert.equal(fs.readSync(fd, Buffer.alloc(4), 0, 4, 0), 4, 'the pinned descriptor is still open');
    native.handleRelease(id, fh);
    assert.deepEqual(native.stateCounts(id), [2, 0]);
  });

  it('a new session forgets the locks a migration\'s save let go of: a later save or resume does not bring them back', () => {
    const F_WRLCK = 1;
    const n = native.nodeLookup(id, 1, 'a', st);
    const fh = native.nodeOpen(id, n, fs.constants.O_RDWR);
    assert.equal(native.nodeSetlk(id, n, fh, 1n, F_WRLCK, 0n, 99n, 0), 0, 'owner 1 write-locks 0-99');
    assert.equal(native.handleFlock(id, fh, 2 /* LOCK_EX */), 0);
    assert.equal(native.stateSave(id, false, false).locks, 1, 'the save carries the lock');
    // The guest mounts again (INIT) before any queue of this session started.
    native.stateClear(id);
    assert.equal(native.stateSave(id, false, false).locks, 0, 'a second save carries nothing of the old session');
    assert.deepEqual(native.stateResume(id), [], 'nothing to take back');
    const n2 = native.nodeLookup(id, 1, 'a', st);
    const fh2 = native.nodeOpen(id, n2, fs.constants.O_RDWR);
    const out = new BigInt64Array(4);
    assert.equal(native.nodeGetlk(id, n2, fh2, 2n, F_WRLCK, 0n, 99n, out), 0);
    assert.equal(out[0], 2n /* F_UNLCK */, 'no lock of the old session is held on the host');
    assert.equal(native.nodeSetlk(id, n2, fh2, 2n, F_WRLCK, 0n, 99n, 0), 0, 'another owner gets the range');
    assert.equal(native.handleFlock(id, fh2, 2 | 4 /* LOCK_EX | LOCK_NB */), 0, 'and the flock()');
  });

  it('a source that goes on after a save takes each owner\'s locks back whole or not at all, with the handle and process they came through', () => {
    const F_WRLCK = 1;
    const F_UNLCK = 2;
    const n = native.nodeLookup(id, 1, 'a', st);
    const fh = native.nodeOpen(id, n, fs.constants.O_RDWR);
    const fh2 = native.nodeOpen(id, n, fs.constants.O_RDWR);
    assert.equal(native.nodeSetlk(id, n, fh, 1n, F_WRLCK, 0n, 9n, 0, 41), 0, 'owner 1 write-locks 0-9');
    assert.equal(native.nodeSetlk(id, n, fh, 1n, F_WRLCK, 100n, 109n, 0, 41), 0, 'and 100-109');
    assert.equal(native.nodeSetlk(id, n, fh2, 4n, F_WRLCK, 200n, 209n, 0, 44), 0, 'owner 4 write-locks 200-209 through fh2');
    assert.equal(native.stateSave(id, false, false).locks, 2);
    // While the locks are let go of, another owner takes one of owner 1's ranges.
    assert.equal(native.nodeSetlk(id, n, fh, 2n, F_WRLCK, 100n, 109n, 0), 0, 'owner 2 takes 100-109 meanwhile');
    const lost = native.stateResume(id);
    assert.equal(lost.length, 1, JSON.stringify(lost));
    const out = new BigInt64Array(4);
    assert.equal(native.nodeGetlk(id, n, fh, 3n, F_WRLCK, 0n, 9n, out), 0);
    assert.equal(out[0], BigInt(F_UNLCK), 'owner 1 kept nothing of what it could not have whole');
    assert.equal(native.nodeGetlk(id, n, fh, 3n, F_WRLCK, 200n, 200n, out), 0);
    assert.deepEqual([...out], [BigInt(F_WRLCK), 200n, 209n, 44n], 'owner 4\'s lock is back, naming its process');
    // fh2's RELEASE ends owner 4's lock, as before the save (an open file's lock).
    assert.equal(native.handleRemove(id, fh2), 0);
    assert.equal(native.nodeSetlk(id, n, fh, 3n, F_WRLCK, 200n, 209n, 0), 0, 'owner 4\'s lock went with fh2');
  });

  it('never hands out a nodeid or fh twice, across forgets and sessions', () => {
    const seen = new Set<number>();
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 50; i++) {
        const n = native.nodeLookup(id, 1, 'a', st);
        const fh = native.nodeOpen(id, n, fs.constants.O_RDONLY);
        assert.ok(!seen.has(fh));
        seen.add(fh);
        native.handleRemove(id, fh);
        native.inodeForget(id, n, 1);
        assert.ok(!seen.has(-n), `nodeid ${n} came back`);
        seen.add(-n);
      }
      native.stateClear(id);
    }
  });
});

describe('native guest I/O', () => {
  it('reads and writes a file through guest ranges, across two regions', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-io-'));
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, 'abcdefghij');
    const mem = native.memfdCreate('g', 2 * 4096);
    const table = native.memTableCreate();
    // Two regions, guest-contiguous at 0x10000 and 0x11000, backed by one memfd.
    native.memTableSet(table, [
      { gpa: 0x10000, size: 4096, uaddr: 0x7000_0000, mmapOffset: 0, fd: mem },
      { gpa: 0x11000, size: 4096, uaddr: 0x7000_1000, mmapOffset: 4096, fd: mem },
    ]);
    const view = native.mmapShared(mem, 2 * 4096);
    const fd = fs.openSync(file, 'r+');
    try {
      // 6 bytes straddling the region boundary, then 4 more elsewhere.
      assert.equal(guestIo.preadv(fd, 0, { table, pairs: [0x10ffd, 6, 0x11800, 4] }), 10);
      assert.equal(view.toString('latin1', 4093, 4099), 'abcdef');
      assert.equal(view.toString('latin1', 4096 + 0x800, 4096 + 0x804), 'ghij');
      view.write('XY', 100, 'latin1');
      assert.equal(guestIo.pwritev(fd, 3, { table, pairs: [0x10000 + 100, 2] }), 2);
      assert.equal(fs.readFileSync(file, 'latin1'), 'abcXYfghij');
      const EFAULT = -os.constants.errno.EFAULT;
      assert.equal(guestIo.preadv(fd, 0, { table, pairs: [0x12000, 1] }), EFAULT, 'past the last region');
      assert.equal(guestIo.preadv(fd, 0, { table, pairs: [0x11ffe, 4] }), EFAULT, 'runs off the end');
      assert.equal(guestIo.preadv(fd, 0, { table, pairs: [-1, 4] }), EFAULT);
      assert.equal(guestIo.preadv(fd, 0, { table, pairs: [65536.5, 4] }), EFAULT, 'not an integer');
      assert.equal(guestIo.preadv(fd, 0, { table, pairs: [NaN, 4] }), EFAULT);
      assert.equal(guestIo.preadv(fd, 0, { table: 999, pairs: [0x10000, 4] }), -EBADF, 'unknown table');
      assert.throws(() => native.preadv(fd, 0, table, Float64Array.of(0x10000, 4), 2), RangeError, 'count past the array');
      assert.throws(() => native.preadv(fd, 0, table, [0x10000, 4] as unknown as Float64Array, 1), TypeError);
    } finally {
      fs.closeSync(fd);
      native.memTableDestroy(table);
      native.close(mem);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
