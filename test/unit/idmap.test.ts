/** --translate-uid/--translate-gid values (src/fuse/passthrough/idmap.ts): what parses, and the errors a user gets. */
import { strict as assert } from 'node:assert';
import { idMapWire, parseIdMap, parseIdMaps } from '../../src/fuse/passthrough/idmap';
import { parseOptions, UsageError } from '../../src/options';

describe('ID translation ranges (--translate-uid, --translate-gid)', () => {
  it('parses the Rust virtiofsd forms', () => {
    assert.deepEqual(parseIdMap('map:1000:2000:10'), { kind: 'map', from: 1000, to: 2000, count: 10 });
    assert.deepEqual(parseIdMap('guest:0:100000:65536'), { kind: 'guest', from: 0, to: 100000, count: 65536 });
    assert.deepEqual(parseIdMap('host:7000:7:1'), { kind: 'host', from: 7000, to: 7, count: 1 });
    assert.deepEqual(parseIdMap('squash-guest:0:1000:4294967295'), { kind: 'squash-guest', from: 0, to: 1000, count: 4294967295 });
    assert.deepEqual(parseIdMap('squash-host:0:65534:1'), { kind: 'squash-host', from: 0, to: 65534, count: 1 });
    assert.deepEqual(parseIdMap('forbid-guest:500:10'), { kind: 'forbid-guest', from: 500, to: 0, count: 10 });
    assert.deepEqual([...idMapWire(parseIdMaps(['map:1:2:3', 'forbid-guest:9:1']))], [4, 1, 2, 3, 5, 9, 0, 1]);
  });

  it('refuses unknown kinds, wrong counts, non-numbers, empty ranges and ranges past 2^32', () => {
    assert.throws(() => parseIdMap('swap:1:2:3'), /kind must be one of/);
    assert.throws(() => parseIdMap('map:1:2'), /takes 3 numbers, got 2/);
    assert.throws(() => parseIdMap('forbid-guest:1:2:3'), /takes 2 numbers/);
    assert.throws(() => parseIdMap('map:1:x:3'), /'x' is not an ID/);
    assert.throws(() => parseIdMap('map:-1:2:3'), /not an ID/);
    assert.throws(() => parseIdMap('map:1:2:0'), /empty range/);
    assert.throws(() => parseIdMap('map:4294967295:0:2'), /goes past/);
  });

  it('refuses overlapping ranges of one direction, and allows them across directions', () => {
    // forbid-guest:G:N counts N IDs from G: 1001..2999 covers map:2000's guest 2000.
    assert.throws(() => parseIdMaps(['forbid-guest:0:1000', 'map:1000:1000:1', 'forbid-guest:1001:1999', 'map:2000:2000:1']), /overlaps 'forbid-guest:1001:1999' \(guest IDs 2000 to 2000\)/);
    parseIdMaps(['forbid-guest:0:1000', 'map:1000:1000:1', 'forbid-guest:1001:999', 'map:2000:2000:1']);
    assert.throws(() => parseIdMaps(['map:0:5000:10', 'host:5005:0:1']), /host IDs 5005 to 5005/);
    // guest-to-host and host-to-guest ranges may cover the same numbers.
    parseIdMaps(['guest:0:5000:10', 'host:0:5000:10', 'squash-host:100:0:10']);
  });

  it('makes a bad value a usage error of the command line', () => {
    assert.throws(() => parseOptions(['--socket-path=/s', '--shared-dir=/d', '--translate-uid=map:1:2']), (e: Error) => e instanceof UsageError && /takes 3 numbers/.test(e.message));
    const o = parseOptions(['--socket-path=/s', '--shared-dir=/d', '--translate-uid=map:1000:2000:1', '--translate-uid=forbid-guest:0:1000', '--translate-gid=squash-guest:0:100:65536']);
    assert.deepEqual(o.translateUid, ['map:1000:2000:1', 'forbid-guest:0:1000']);
    assert.deepEqual(o.translateGid, ['squash-guest:0:100:65536']);
  });
});
