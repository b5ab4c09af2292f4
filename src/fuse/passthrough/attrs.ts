/**
 * Attributes for the passthrough filesystem: fuse_attr fields from the native statx layout
 * (StatxField in src/native.ts). virtio-fs guests check permissions themselves from these
 * attributes (the mount uses default_permissions); ACCESS, for the callers that still ask, is
 * judged natively from the same mode bits (AccessNode in native/state.cc).
 */
import { exactIno, StatxField } from '../../native';
import type { Attributes } from '../filesystem';

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
    ino: exactIno(st),
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
