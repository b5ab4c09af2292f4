/**
 * Extended attribute name mapping (--xattrmap), in the Rust and C virtiofsd's syntax: a list
 * of rules, each `<sep>type<sep>scope<sep>key<sep>prepend<sep>` with the separator the rule's
 * first non-blank character, or the shorthand `<sep>map<sep>key<sep>prepend<sep>` (at most
 * one, last). The first rule that matches decides:
 *   - a name from the guest (GETXATTR, SETXATTR, REMOVEXATTR) is matched against `key` by
 *     rules of scope client or all: prefix gives the host name `prepend` + name, ok passes it
 *     unchanged, bad refuses it with EPERM, unsupported with EOPNOTSUPP;
 *   - a name the host lists (LISTXATTR) is matched against `prepend` by rules of scope server
 *     or all: prefix strips `prepend`, ok passes it, bad and unsupported hide it.
 * A guest name no rule matches is refused (EPERM), a host name no rule matches is hidden.
 * `map:key:prepend` stands for: prefix all key prepend; then, with a key, bad server '' key
 * (host names under the key that were not put there by the mapping stay hidden), bad client
 * prepend '' (the guest may not reach the mapped names directly), ok all; without a key, bad
 * all '' '' (everything the host has that is not mapped stays hidden).
 */

export type XattrRuleType = 'prefix' | 'ok' | 'bad' | 'unsupported';
export type XattrRuleScope = 'client' | 'server' | 'all';

export interface XattrRule {
  type: XattrRuleType;
  scope: XattrRuleScope;
  key: string;
  prepend: string;
}

const TYPES: readonly string[] = ['prefix', 'ok', 'bad', 'unsupported'];
const SCOPES: readonly string[] = ['client', 'server', 'all'];

/** Parses a --xattrmap value; throws an Error saying which rule is wrong and why. */
export function parseXattrMap(text: string): XattrRule[] {
  const rules: XattrRule[] = [];
  let at = 0;
  let sawMap = false;
  const n = (): number => rules.length + 1;
  for (;;) {
    while (at < text.length && /\s/.test(text[at])) at++;
    if (at >= text.length) break;
    if (sawMap) throw new Error(`xattrmap rule ${n()}: the map rule must be the last`);
    const sep = text[at];
    const fields: string[] = [];
    let from = at + 1;
    // type, scope, key and prepend, each ended by the separator (map: three fields).
    for (;;) {
      const end = text.indexOf(sep, from);
      if (end < 0) throw new Error(`xattrmap rule ${n()}: unterminated (each field ends with '${sep}')`);
      fields.push(text.slice(from, end));
      from = end + 1;
      if (fields.length === (fields[0] === 'map' ? 3 : 4)) break;
    }
    at = from;
    const [type] = fields;
    if (type === 'map') {
      const [, key, prepend] = fields;
      rules.push({ type: 'prefix', scope: 'all', key, prepend });
      if (key === '') {
        rules.push({ type: 'bad', scope: 'all', key: '', prepend: '' });
      } else {
        rules.push({ type: 'bad', scope: 'server', key: '', prepend: key });
        rules.push({ type: 'bad', scope: 'client', key: prepend, prepend: '' });
        rules.push({ type: 'ok', scope: 'all', key: '', prepend: '' });
      }
      sawMap = true;
      continue;
    }
    if (!TYPES.includes(type)) throw new Error(`xattrmap rule ${n()}: unknown type '${type}' (prefix, ok, bad, unsupported or map)`);
    const [, scope, key, prepend] = fields;
    if (!SCOPES.includes(scope)) throw new Error(`xattrmap rule ${n()}: unknown scope '${scope}' (client, server or all)`);
    rules.push({ type: type as XattrRuleType, scope: scope as XattrRuleScope, key, prepend });
  }
  if (rules.length === 0) throw new Error('xattrmap: no rules');
  return rules;
}

/** What becomes of a guest's name: the host name, or the errno to refuse it with. */
export type MappedName = { name: Buffer } | { errno: number };

const EPERM = 1;
const EOPNOTSUPP = 95;

export class XattrMap {
  private readonly client: Array<XattrRule & { keyBytes: Buffer; prependBytes: Buffer }>;
  private readonly server: Array<XattrRule & { prependBytes: Buffer }>;

  constructor(readonly rules: readonly XattrRule[]) {
    const withBytes = (r: XattrRule): XattrRule & { keyBytes: Buffer; prependBytes: Buffer } => ({
      ...r,
      keyBytes: Buffer.from(r.key),
      prependBytes: Buffer.from(r.prepend),
    });
    this.client = rules.filter((r) => r.scope !== 'server').map(withBytes);
    this.server = rules.filter((r) => r.scope !== 'client').map(withBytes);
  }

  /** The host name for a name the guest uses (GETXATTR, SETXATTR, REMOVEXATTR). */
  toHost(name: Buffer): MappedName {
    for (const r of this.client) {
      if (!startsWith(name, r.keyBytes)) continue;
      switch (r.type) {
        case 'prefix':
          return { name: Buffer.concat([r.prependBytes, name]) };
        case 'ok':
          return { name };
        case 'bad':
          return { errno: EPERM };
        case 'unsupported':
          return { errno: EOPNOTSUPP };
      }
    }
    return { errno: EPERM };
  }

  /** The name the guest sees for a host name, or null when it is hidden (LISTXATTR). */
  toGuest(name: Buffer): Buffer | null {
    for (const r of this.server) {
      if (!startsWith(name, r.prependBytes)) continue;
      if (r.type === 'prefix') return name.subarray(r.prependBytes.length);
      return r.type === 'ok' ? name : null;
    }
    return null;
  }

  /** A host LISTXATTR result (NUL-terminated names) as the guest sees it. */
  listToGuest(list: Buffer): Buffer {
    const out: Buffer[] = [];
    let at = 0;
    while (at < list.length) {
      let end = list.indexOf(0, at);
      if (end < 0) end = list.length;
      const g = this.toGuest(list.subarray(at, end));
      // A name that maps to nothing (the bare prefix) would list as an empty name: hidden.
      if (g && g.length > 0) out.push(g, ZERO);
      at = end + 1;
    }
    return Buffer.concat(out);
  }
}

const ZERO = Buffer.alloc(1);

function startsWith(name: Buffer, prefix: Buffer): boolean {
  return name.length >= prefix.length && name.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

/**
 * The host name a map gives security.capability when it is not that name, else null. The
 * host kernel clears a file's capabilities on a write, a truncation or a chown only under
 * their real name, so the daemon must remove the mapped one then (FsState::DropMappedCapability).
 */
export function mappedCapabilityName(rules: readonly XattrRule[]): string | null {
  const m = new XattrMap(rules).toHost(Buffer.from('security.capability'));
  return 'name' in m && m.name.toString() !== 'security.capability' ? m.name.toString() : null;
}
