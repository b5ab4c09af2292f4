/**
 * Cache policy: a pure mapping from the user's cache options to what the guest is told —
 * entry/attribute timeouts and the FOPEN flags of files and directories. The semantics are
 * the Rust virtiofsd's (docs/ANCHORS.md), so a user switching daemons sees the same
 * coherence: never (0 s, DIRECT_IO), metadata (86400 s, DIRECT_IO on files, cached dirs),
 * auto (1 s, close-to-open), always (86400 s, KEEP_CACHE).
 */
import { FopenFlags } from '../fuse/abi';

export type CacheMode = 'never' | 'metadata' | 'auto' | 'always';

/** Parses a --cache value; `none` is the C virtiofsd's and libvirt's name for never. */
export function parseCacheMode(s: string): CacheMode {
  if (s === 'none') return 'never';
  if (s === 'never' || s === 'metadata' || s === 'auto' || s === 'always') return s;
  throw new Error(`unknown cache mode '${s}' (never, metadata, auto, always; none = never)`);
}

export interface CachePolicy {
  /** Seconds the guest may trust a name lookup. */
  entryTimeout: number;
  /** Seconds the guest may trust attributes. */
  attrTimeout: number;
  /** FOPEN_* flags for opened files. */
  fileOpenFlags: number;
  /** FOPEN_* flags for opened directories. */
  dirOpenFlags: number;
}

const DAY = 86400;

export function cachePolicy(mode: CacheMode): CachePolicy {
  switch (mode) {
    case 'never':
      return { entryTimeout: 0, attrTimeout: 0, fileOpenFlags: FopenFlags.DIRECT_IO, dirOpenFlags: 0 };
    case 'metadata':
      return {
        entryTimeout: DAY,
        attrTimeout: DAY,
        fileOpenFlags: FopenFlags.DIRECT_IO,
        dirOpenFlags: FopenFlags.CACHE_DIR | FopenFlags.KEEP_CACHE,
      };
    case 'auto':
      return { entryTimeout: 1, attrTimeout: 1, fileOpenFlags: 0, dirOpenFlags: 0 };
    case 'always':
      return {
        entryTimeout: DAY,
        attrTimeout: DAY,
        fileOpenFlags: FopenFlags.KEEP_CACHE,
        dirOpenFlags: FopenFlags.CACHE_DIR | FopenFlags.KEEP_CACHE,
      };
  }
}
