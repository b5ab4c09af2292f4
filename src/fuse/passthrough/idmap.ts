/**
 * UID/GID translation between guest and host (--translate-uid, --translate-gid), in the
 * Rust virtiofsd's syntax, each option one range, repeatable:
 *   guest:G:H:N         guest IDs G..G+N-1 are host IDs H..H+N-1 (guest to host only)
 *   host:H:G:N          host IDs H..H+N-1 are shown to the guest as G..G+N-1 (host to guest only)
 *   squash-guest:G:H:N  guest IDs G..G+N-1 all become host ID H
 *   squash-host:H:G:N   host IDs H..H+N-1 all show as guest ID G
 *   map:G:H:N           both directions, one to one
 *   forbid-guest:G:N    guest IDs G..G+N-1 may not create or own anything (EPERM)
 * Guest to host applies to a request's caller (who creates a file) and a chown's target;
 * host to guest to every owner in the attributes the guest gets. An ID no range covers stays
 * as it is. Ranges of one direction may not overlap. The native state applies them
 * (IdTranslation, native/state.h); this module parses and checks them.
 */

export type IdMapKind = 'guest' | 'host' | 'squash-guest' | 'squash-host' | 'map' | 'forbid-guest';

export interface IdMapRange {
  kind: IdMapKind;
  from: number;
  /** Unused for forbid-guest. */
  to: number;
  count: number;
}

/** Wire codes of stateSetIdMaps, in IdMapKind order. */
const KINDS: readonly IdMapKind[] = ['guest', 'host', 'squash-guest', 'squash-host', 'map', 'forbid-guest'];
const U32_MAX = 0xffffffff;

/** One --translate-* value as a range; throws an Error saying what is wrong. */
export function parseIdMap(text: string): IdMapRange {
  const m = /^([a-z-]+):(.*)$/.exec(text.trim().toLowerCase());
  if (!m || !KINDS.includes(m[1] as IdMapKind)) throw new Error(`'${text}': the kind must be one of ${KINDS.join(', ')}`);
  const kind = m[1] as IdMapKind;
  const fields = m[2].split(':');
  const want = kind === 'forbid-guest' ? 2 : 3;
  if (fields.length !== want) throw new Error(`'${text}': ${kind} takes ${want} numbers, got ${fields.length}`);
  const n = fields.map((f) => {
    if (!/^\d+$/.test(f) || Number(f) > U32_MAX) throw new Error(`'${text}': '${f}' is not an ID (0 to ${U32_MAX})`);
    return Number(f);
  });
  const [from, to, count] = kind === 'forbid-guest' ? [n[0], 0, n[1]] : [n[0], n[1], n[2]];
  if (count === 0) throw new Error(`'${text}': an empty range`);
  const oneToOne = kind === 'guest' || kind === 'host' || kind === 'map';
  if (from + count - 1 > U32_MAX || (oneToOne && to + count - 1 > U32_MAX)) throw new Error(`'${text}': the range goes past ${U32_MAX}`);
  return { kind, from, to, count };
}

/** The [first, last] IDs a range takes in each direction it applies to. */
function spans(r: IdMapRange): { toHost?: [number, number]; toGuest?: [number, number] } {
  const last = (a: number): number => a + r.count - 1;
  switch (r.kind) {
    case 'guest':
    case 'squash-guest':
    case 'forbid-guest':
      return { toHost: [r.from, last(r.from)] };
    case 'host':
    case 'squash-host':
      return { toGuest: [r.from, last(r.from)] };
    case 'map':
      return { toHost: [r.from, last(r.from)], toGuest: [r.to, last(r.to)] };
  }
}

/** All values of one option, checked: ranges of one direction must not overlap. */
export function parseIdMaps(texts: readonly string[]): IdMapRange[] {
  const ranges = texts.map(parseIdMap);
  for (let i = 0; i < ranges.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = spans(ranges[i]);
      const b = spans(ranges[j]);
      for (const dir of ['toHost', 'toGuest'] as const) {
        const x = a[dir];
        const y = b[dir];
        if (x && y && x[0] <= y[1] && y[0] <= x[1]) {
          throw new Error(`'${texts[i]}' overlaps '${texts[j]}' (${dir === 'toHost' ? 'guest' : 'host'} IDs ${Math.max(x[0], y[0])} to ${Math.min(x[1], y[1])})`);
        }
      }
    }
  }
  return ranges;
}

/** The ranges as stateSetIdMaps takes them: (kind code, from, to, count) each. */
export function idMapWire(ranges: readonly IdMapRange[]): Float64Array {
  return Float64Array.from(ranges.flatMap((r) => [KINDS.indexOf(r.kind), r.from, r.to, r.count]));
}
