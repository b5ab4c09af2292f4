/** --xattrmap rules (src/fuse/passthrough/xattrmap.ts): what parses, how names map each way, and the errors a user gets. */
import { strict as assert } from 'node:assert';
import { parseOptions, UsageError } from '../../src/options';
import { mappedCapabilityName, parseXattrMap, XattrMap } from '../../src/fuse/passthrough/xattrmap';

const host = (m: XattrMap, name: string): string => {
  const r = m.toHost(Buffer.from(name));
  return 'errno' in r ? `errno ${r.errno}` : r.name.toString();
};
const guest = (m: XattrMap, name: string): string | null => m.toGuest(Buffer.from(name))?.toString() ?? null;
const list = (m: XattrMap, names: string[]): string[] =>
  m.listToGuest(Buffer.from(names.map((n) => `${n}\0`).join(''))).toString().split('\0').filter(Boolean);

describe('xattr name mapping (--xattrmap)', () => {
  it('map with an empty key: every guest name gets the prefix, and host names without it are hidden', () => {
    const m = new XattrMap(parseXattrMap(':map::user.virtiofs.:'));
    assert.equal(host(m, 'security.selinux'), 'user.virtiofs.security.selinux');
    assert.equal(host(m, 'user.color'), 'user.virtiofs.user.color');
    assert.equal(guest(m, 'user.virtiofs.trusted.overlay.opaque'), 'trusted.overlay.opaque');
    assert.equal(guest(m, 'security.selinux'), null, "the host's own label stays hidden");
    assert.deepEqual(list(m, ['security.selinux', 'user.virtiofs.user.a', 'user.b', 'user.virtiofs.trusted.x']), ['user.a', 'trusted.x']);
  });

  it('map with a key: only that prefix moves; the guest cannot reach the target directly, nor see host names under the key', () => {
    const m = new XattrMap(parseXattrMap('/map/trusted./user.virtiofs./'));
    assert.equal(host(m, 'trusted.overlay.opaque'), 'user.virtiofs.trusted.overlay.opaque');
    assert.equal(host(m, 'user.color'), 'user.color');
    assert.equal(host(m, 'user.virtiofs.trusted.x'), 'errno 1', 'EPERM: the mapped names are not the guest\'s to touch');
    assert.deepEqual(list(m, ['trusted.host', 'user.virtiofs.trusted.g', 'user.color', 'security.selinux']), ['trusted.g', 'user.color', 'security.selinux']);
  });

  it('explicit rules: the first match decides; bad is EPERM and hides, unsupported is EOPNOTSUPP; unmatched names are refused and hidden', () => {
    const rules = parseXattrMap(`
      :prefix:client:trusted.:user.virtiofs.:
      :prefix:server::user.virtiofs.:
      :bad:all:security.:security.:
      :unsupported:client:system.:system.:
      :ok:client:user.::
      :ok:server::user.:`);
    assert.equal(rules.length, 6);
    const m = new XattrMap(rules);
    assert.equal(host(m, 'trusted.a'), 'user.virtiofs.trusted.a');
    assert.equal(host(m, 'security.selinux'), 'errno 1');
    assert.equal(host(m, 'system.posix_acl_access'), 'errno 95');
    assert.equal(host(m, 'user.a'), 'user.a');
    assert.equal(host(m, 'other.a'), 'errno 1', 'no rule matches: EPERM');
    assert.deepEqual(list(m, ['user.virtiofs.trusted.a', 'security.selinux', 'user.b', 'system.posix_acl_access', 'user.virtiofs.']), ['trusted.a', 'user.b']);
  });

  it('refuses malformed rules with a usage error naming the rule', () => {
    const bad: Array<[string, RegExp]> = [
      [':prefix:client:trusted.:user.', /rule 1: unterminated/],
      [':ok:all:::/frob/all///', /rule 2: unknown type 'frob'/],
      [':ok:nowhere:::', /rule 1: unknown scope 'nowhere'/],
      [':map::user.virtiofs.::ok:all:::', /the map rule must be the last/],
      ['   ', /no rules/],
    ];
    for (const [text, why] of bad) {
      assert.throws(() => parseXattrMap(text), why, text);
      assert.throws(() => parseOptions(['--socket-path=/s', '--shared-dir=/d', `--xattrmap=${text}`]), (e: Error) => e instanceof UsageError && why.test(e.message));
    }
    assert.equal(parseOptions(['--socket-path=/s', '--shared-dir=/d', '--xattrmap=:map::user.virtiofs.:']).xattrmap, ':map::user.virtiofs.:');
  });

  it('finds the host name a map gives security.capability, when it is another', () => {
    assert.equal(mappedCapabilityName(parseXattrMap(':map:security.capability:user.virtiofs.:')), 'user.virtiofs.security.capability');
    assert.equal(mappedCapabilityName(parseXattrMap(':map::user.virtiofs.:')), 'user.virtiofs.security.capability');
    assert.equal(mappedCapabilityName(parseXattrMap(':map:trusted.:user.virtiofs.:')), null, 'left as it is');
    assert.equal(mappedCapabilityName(parseXattrMap(':prefix:all:trusted.:user.virtiofs.: :bad:all:security.capability:: :ok:all:::')), null, 'refused: nothing stored to remove');
  });
});
