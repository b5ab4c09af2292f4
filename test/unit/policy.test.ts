/**
 * The cache policy as a table: for every mode and option, what the guest is told (timeouts,
 * FOPEN and INIT flags) and how its open flags reach the host. The figures are the Rust
 * virtiofsd's (docs/ANCHORS.md), plus negative entries for metadata and always.
 */
import { strict as assert } from 'node:assert';
import { FopenFlags as F, InitFlags as I } from '../../src/fuse/abi';
import { cachePolicy, hostOpenFlags, parseCacheMode, SessionFlags, sessionFlagsOf, type CacheMode, type CacheOptions } from '../../src/cache/policy';

const base: CacheOptions = { mode: 'auto', writeback: false, readdirplus: true, allowMmap: false, allowDirectIo: false };
const DAY = 86400;
const PLUS = I.DO_READDIRPLUS | I.READDIRPLUS_AUTO;

describe('cache policy', () => {
  const table: Array<[CacheMode, number, number, number, number, number, boolean, bigint]> = [
    // mode        entry attr negative file flags   dir flags              keep if unchanged  INIT flags
    ['never', 0, 0, 0, F.DIRECT_IO, 0, false, I.PARALLEL_DIROPS],
    ['metadata', DAY, DAY, DAY, F.DIRECT_IO, F.CACHE_DIR | F.KEEP_CACHE, false, I.PARALLEL_DIROPS | PLUS],
    ['auto', 1, 1, 0, 0, 0, true, I.PARALLEL_DIROPS | PLUS | I.AUTO_INVAL_DATA],
    ['always', DAY, DAY, DAY, F.KEEP_CACHE, F.CACHE_DIR | F.KEEP_CACHE, false, I.PARALLEL_DIROPS | PLUS],
  ];
  for (const [mode, entry, attr, negative, file, dir, keep, init] of table) {
    it(`${mode}: entry ${entry} s, attr ${attr} s, negative ${negative} s, file 0x${file.toString(16)}, dir 0x${dir.toString(16)}${keep ? ', KEEP_CACHE when unchanged' : ''}`, () => {
      const p = cachePolicy({ ...base, mode });
      assert.deepEqual(p, {
        entryTimeout: entry, attrTimeout: attr, negativeTimeout: negative, fileOpenFlags: file, dirOpenFlags: dir,
        keepCacheIfUnchanged: keep, initFlags: init,
      });
    });
  }

  it('none is never; an unknown mode is refused', () => {
    assert.equal(parseCacheMode('none'), 'never');
    for (const m of ['never', 'metadata', 'auto', 'always']) assert.equal(parseCacheMode(m), m);
    assert.throws(() => parseCacheMode('sometimes'), /unknown cache mode/);
  });

  it('--no-readdirplus drops READDIRPLUS in every mode; --writeback and --allow-mmap add their flags', () => {
    for (const mode of ['never', 'metadata', 'auto', 'always'] as const) {
      assert.equal(cachePolicy({ ...base, mode, readdirplus: false }).initFlags & PLUS, 0n, mode);
      assert.ok(cachePolicy({ ...base, mode, writeback: true }).initFlags & I.WRITEBACK_CACHE, mode);
      assert.ok(cachePolicy({ ...base, mode, allowMmap: true }).initFlags & I.DIRECT_IO_ALLOW_MMAP, mode);
      assert.equal(cachePolicy({ ...base, mode }).initFlags & (I.WRITEBACK_CACHE | I.DIRECT_IO_ALLOW_MMAP), 0n, mode);
    }
  });

  it('the writeback session bit follows what was negotiated, not what was asked', () => {
    assert.equal(sessionFlagsOf(I.WRITEBACK_CACHE | I.ASYNC_READ), SessionFlags.WRITEBACK);
    assert.equal(sessionFlagsOf(I.ASYNC_READ), 0);
  });

  const O_RDONLY = 0, O_WRONLY = 1, O_RDWR = 2, O_APPEND = 0o2000, O_DIRECT = 0o40000, O_TRUNC = 0o1000;
  const open: Array<[string, number, number, boolean, number]> = [
    // what                               guest flags              session  direct  host flags
    ['read-only, no writeback', O_RDONLY, 0, false, O_RDONLY],
    ['write-only, no writeback', O_WRONLY | O_APPEND, 0, false, O_WRONLY | O_APPEND],
    ['write-only under writeback', O_WRONLY, SessionFlags.WRITEBACK, false, O_RDWR],
    ['append under writeback', O_WRONLY | O_APPEND | O_TRUNC, SessionFlags.WRITEBACK, false, O_RDWR | O_TRUNC],
    ['read-write append under writeback', O_RDWR | O_APPEND, SessionFlags.WRITEBACK, false, O_RDWR],
    ['O_DIRECT stripped', O_RDWR | O_DIRECT, 0, false, O_RDWR],
    ['O_DIRECT with --allow-direct-io', O_RDWR | O_DIRECT, 0, true, O_RDWR | O_DIRECT],
  ];
  for (const [what, guest, session, direct, host] of open) {
    it(`host open flags: ${what}`, () => assert.equal(hostOpenFlags(guest, session, direct), host));
  }
});
