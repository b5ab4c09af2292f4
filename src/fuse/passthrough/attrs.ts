/**
 * Attributes for the passthrough filesystem: fuse_attr fields from the native statx layout
 * (StatxField in src/native.ts), and the ACCESS check. virtio-fs guests check permissions
 * themselves from these attributes (the mount uses default_permissions); ACCESS is answered
 * for the callers that still ask, from the same mode bits.
 */
import { StatxField } from '../../native';
import { E, FsError, type Attributes, type Context } from '../filesystem';

/** The kernel's new_encode_dev(): the dev_t layout FUSE attributes carry. */
export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** The kernel's new_decode_dev(): a guest dev_t (MKNOD rdev) as major and minor. */
export function decodeDev(dev: number): { major: number; minor: number } {
  return { major: (dev & 0xfff00) >>> 8, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

export function attrsOf(st: Float64Array): Attributes {
  return {
    ino: st[StatxField.ino],
    size: st[StatxField.size],
    blocks: st[StatxField.blocks],
    atime: st[StatxField.atimeSec],
    atimeNsec: st[StatxField.atimeNsec],
    mtime: st[StatxField.mtimeSec],
    mtimeNsec: st[StatxField.mtimeNsec],
    ctime: st[StatxField.ctimeSec],
    ctimeNsec: st[StatxField.ctimeNsec],
    mode: st[StatxField.mode],
    nlink: st[StatxField.nlink],
    uid: st[StatxField.uid],
    gid: st[StatxField.gid],
    rdev: encodeDev(st[StatxField.rdevMajor], st[StatxField.rdevMinor]),
    blksize: st[StatxField.blksize],
    flags: st[StatxField.attrFlags],
  };
}

const R_OK = 4;
const W_OK = 2;
const X_OK = 1;
const S_IFDIR = 0o040000;

/** ACCESS: throws EACCES unless the caller may do `mask` (R_OK|W_OK|X_OK; 0 = exists). */
export function checkAccess(ctx: Context, st: Float64Array, mask: number): void {
  const mode = st[StatxField.mode];
  if (mask === 0) return;
  if (ctx.uid === 0) {
    // root may read and write anything; it may execute only what someone may execute.
    if (mask & X_OK && (mode & 0o170000) !== S_IFDIR && (mode & 0o111) === 0) throw new FsError(E.EACCES);
    return;
  }
  let bits: number;
  if (ctx.uid === st[StatxField.uid]) bits = (mode >> 6) & 7;
  else if (ctx.gid === st[StatxField.gid]) bits = (mode >> 3) & 7;
  else bits = mode & 7;
  const want = mask & (R_OK | W_OK | X_OK);
  if ((bits & want) !== want) throw new FsError(E.EACCES);
}
