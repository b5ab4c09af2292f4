/**
 * Cache policy: a pure mapping from the user's cache options to what the guest is told, so
 * that the whole trade between coherence and speed is one table (test/unit/policy.test.ts):
 * entry/attribute timeouts, how long a missing name may be cached as missing, the FOPEN
 * flags of files and directories, the cache-related INIT flags, and how a guest's open
 * flags become the host's. The modes are the Rust virtiofsd's (docs/ANCHORS.md), so a user
 * switching daemons sees the same coherence:
 *
 *   never     0 s, DIRECT_IO on files, no READDIRPLUS: every access reaches the host
 *   metadata  86400 s, DIRECT_IO on files, directories cached
 *   auto      1 s, page cache dropped at each open (close-to-open)
 *   always    86400 s, page cache kept across opens, directories cached
 *
 * Beyond it: metadata and always also cache a missing name as missing for the entry timeout
 * (a negative entry), which builds that stat missing files again and again ask for. And auto
 * keeps the guest's page cache at an open when the host file has not changed since the
 * previous open (ctime and size as then: libfuse's auto_cache), so re-reading an unchanged
 * file costs no READ, while a changed one is still read afresh at the next open; with
 * AUTO_INVAL_DATA the guest also drops cached data of an open file whose mtime it sees change
 * once the 1 s attribute timeout has passed.
 */
import { FopenFlags, InitFlags } from '../fuse/abi';

export type CacheMode = 'never' | 'metadata' | 'auto' | 'always';

/** Parses a --cache value; `none` is the C virtiofsd's and libvirt's name for never. */
export function parseCacheMode(s: string): CacheMode {
  if (s === 'none') return 'never';
  if (s === 'never' || s === 'metadata' || s === 'auto' || s === 'always') return s;
  throw new Error(`unknown cache mode '${s}' (never, metadata, auto, always; none = never)`);
}

/** The options that decide what the guest may cache. */
export interface CacheOptions {
  mode: CacheMode;
  /** --writeback: the guest may cache writes (FUSE_WRITEBACK_CACHE). */
  writeback: boolean;
  /** false with --no-readdirplus. */
  readdirplus: boolean;
  /** --allow-mmap: shared mmap of DIRECT_IO files (never, metadata). */
  allowMmap: boolean;
  /** --allow-direct-io: the guest's O_DIRECT reaches the host file. */
  allowDirectIo: boolean;
}

export interface CachePolicy {
  /** Seconds the guest may trust a name lookup. */
  entryTimeout: number;
  /** Seconds the guest may trust attributes. */
  attrTimeout: number;
  /** Seconds a name found missing may be cached as missing; 0: not cached. */
  negativeTimeout: number;
  /** FOPEN_* flags for opened files. */
  fileOpenFlags: number;
  /** FOPEN_* flags for opened directories. */
  dirOpenFlags: number;
  /** Add KEEP_CACHE at an open when the file is unchanged since its previous open. */
  keepCacheIfUnchanged: boolean;
  /** INIT flags this policy asks for (the server keeps only those the guest offered). */
  initFlags: bigint;
}

const DAY = 86400;

export function cachePolicy(o: CacheOptions): CachePolicy {
  let p: Omit<CachePolicy, 'initFlags'>;
  switch (o.mode) {
    case 'never':
      p = { entryTimeout: 0, attrTimeout: 0, negativeTimeout: 0, fileOpenFlags: FopenFlags.DIRECT_IO, dirOpenFlags: 0, keepCacheIfUnchanged: false };
      break;
    case 'metadata':
      p = {
        entryTimeout: DAY,
        attrTimeout: DAY,
        negativeTimeout: DAY,
        fileOpenFlags: FopenFlags.DIRECT_IO,
        dirOpenFlags: FopenFlags.CACHE_DIR | FopenFlags.KEEP_CACHE,
        keepCacheIfUnchanged: false,
      };
      break;
    case 'auto':
      p = { entryTimeout: 1, attrTimeout: 1, negativeTimeout: 0, fileOpenFlags: 0, dirOpenFlags: 0, keepCacheIfUnchanged: true };
      break;
    case 'always':
      p = {
        entryTimeout: DAY,
        attrTimeout: DAY,
        negativeTimeout: DAY,
        fileOpenFlags: FopenFlags.KEEP_CACHE,
        dirOpenFlags: FopenFlags.CACHE_DIR | FopenFlags.KEEP_CACHE,
        keepCacheIfUnchanged: false,
      };
      break;
  }
  // PARALLEL_DIROPS: lookups and readdirs in one directory need not wait for each other.
  let initFlags = InitFlags.PARALLEL_DIROPS;
  // With never nothing READDIRPLUS returns could be kept: it would only cost lookups.
  if (o.readdirplus && o.mode !== 'never') initFlags |= InitFlags.DO_READDIRPLUS | InitFlags.READDIRPLUS_AUTO;
  if (o.mode === 'auto') initFlags |= InitFlags.AUTO_INVAL_DATA;
  if (o.writeback) initFlags |= InitFlags.WRITEBACK_CACHE;
  if (o.allowMmap) initFlags |= InitFlags.DIRECT_IO_ALLOW_MMAP;
  return { ...p, initFlags };
}

/**
 * What a FUSE session negotiated that every queue thread must honour (stateSession bits):
 * the writeback cache changes how files are opened; SUBMOUNTS marks entries that are another
 * mount's root (native/state.h, MarkSubmount); SETXATTR_EXT changes a SETXATTR's layout;
 * POSIX_ACL makes creations apply the caller's umask on the host (native/umask.cc).
 */
export const SessionFlags = Object.freeze({
  WRITEBACK: 1,
  SUBMOUNTS: 2,
  /** fuse_setxattr_in is the 16-byte layout, with setxattr_flags. */
  SETXATTR_EXT: 4,
  /** POSIX ACLs (with FUSE_DONT_MASK): new files are made under the caller's umask. */
  POSIX_ACL: 8,
  /** An INIT began the session and no DESTROY ended it: until then only INIT is served. */
  STARTED: 16,
});

/** The session flags for the INIT flags the guest was answered with. */
export function sessionFlagsOf(negotiated: bigint): number {
  return (
    (negotiated & InitFlags.WRITEBACK_CACHE ? SessionFlags.WRITEBACK : 0) |
    (negotiated & InitFlags.SUBMOUNTS ? SessionFlags.SUBMOUNTS : 0) |
    (negotiated & InitFlags.SETXATTR_EXT ? SessionFlags.SETXATTR_EXT : 0) |
    (negotiated & InitFlags.POSIX_ACL && negotiated & InitFlags.DONT_MASK ? SessionFlags.POSIX_ACL : 0)
  );
}

const O_ACCMODE = 0o3;
const O_WRONLY = 0o1;
const O_RDWR = 0o2;
const O_APPEND = 0o2000;
const O_DIRECT = 0o40000;

/**
 * A guest's open flags as the host file is opened with them, for the cache side:
 * - writeback cache: the guest's page cache reads around a partial write, so a write-only
 *   open becomes read-write; and the guest computes where an append goes (its WRITE carries
 *   the offset), so O_APPEND on the host would misplace data and is dropped;
 * - O_DIRECT only with --allow-direct-io (the guest's O_DIRECT already bypasses its own
 *   cache; on the host it would demand aligned I/O and skip the host page cache).
 */
export function hostOpenFlags(guestFlags: number, session: number, allowDirectIo: boolean): number {
  let f = guestFlags;
  if (session & SessionFlags.WRITEBACK) {
    if ((f & O_ACCMODE) === O_WRONLY) f = (f & ~O_ACCMODE) | O_RDWR;
    f &= ~O_APPEND;
  }
  if (!allowDirectIo) f &= ~O_DIRECT;
  return f;
}
