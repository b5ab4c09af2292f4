// Tests for src/fuse/abi.ts: struct sizes and field offsets against Linux
// include/uapi/linux/fuse.h (7.38, plus fuse_statx* of 7.39 and the 7.40 field names),
// round trips, padding, bounds and name parsing.
import { strict as assert } from 'node:assert';
import * as abi from '../../src/fuse/abi';

type Kind = 'u16' | 'u32' | 'i32' | 'u64' | 'i64';
type Field = readonly [at: number, kind: Kind, value: number | bigint];

const WIDTH: Record<Kind, number> = { u16: 2, u32: 4, i32: 4, u64: 8, i64: 8 };

function readField(buf: Buffer, at: number, kind: Kind): number | bigint {
  switch (kind) {
    case 'u16':
      return buf.readUInt16LE(at);
    case 'u32':
      return buf.readUInt32LE(at);
    case 'i32':
      return buf.readInt32LE(at);
    case 'u64':
      return buf.readBigUInt64LE(at);
    case 'i64':
      return buf.readBigInt64LE(at);
  }
}

function shift(fields: Field[], by: number): Field[] {
  return fields.map(([at, kind, value]) => [at + by, kind, value] as const);
}

interface Case<T> {
  name: string;
  size: number;
  value: T;
  /** Every non-padding field: offset in the struct (from fuse.h), type, expected value. */
  layout(v: T): Field[];
  /** Shortest input the decoder accepts, when an older, shorter layout is valid. */
  minSize?: number;
  encode(buf: Buffer, off: number, v: T): number;
  decode(buf: Buffer, off: number): T;
}

// Distinctive values: 64-bit ones above 2^53, 32-bit ones with the top bit set, each distinct.
const big = (i: number): bigint => 0xf000_0000_0000_0000n + BigInt(i) * 0x0001_0001_0001_0001n;
const u32 = (i: number): number => 0x8000_0000 + i * 0x0101_0101;
const u16 = (i: number): number => 0x8000 + i * 0x0101;

const attr: abi.Attr = {
  ino: 0xfedc_ba98_7654_3210n,
  size: 0x0020_0000_0000_0001n, // 2^53 + 1
  blocks: big(1),
  atime: -1_234_567_890n,
  mtime: 0x7fff_ffff_ffff_fffen,
  ctime: -(1n << 63n),
  atimensec: 999_999_999,
  mtimensec: 123_456_789,
  ctimensec: 1,
  mode: 0o100644,
  nlink: 0xffff_fffe,
  uid: u32(1),
  gid: u32(2),
  rdev: u32(3),
  blksize: 4096,
  flags: abi.AttrFlags.SUBMOUNT | abi.AttrFlags.DAX,
};
const attrLayout = (a: abi.Attr): Field[] => [
  [0, 'u64', a.ino],
  [8, 'u64', a.size],
  [16, 'u64', a.blocks],
  [24, 'i64', a.atime],
  [32, 'i64', a.mtime],
  [40, 'i64', a.ctime],
  [48, 'u32', a.atimensec],
  [52, 'u32', a.mtimensec],
  [56, 'u32', a.ctimensec],
  [60, 'u32', a.mode],
  [64, 'u32', a.nlink],
  [68, 'u32', a.uid],
  [72, 'u32', a.gid],
  [76, 'u32', a.rdev],
  [80, 'u32', a.blksize],
  [84, 'u32', a.flags],
];

const sxTimeLayout = (t: abi.SxTime): Field[] => [
  [0, 'i64', t.tvSec],
  [8, 'u32', t.tvNsec],
];
const statx: abi.Statx = {
  mask: 0x0000_0fff,
  blksize: 4096,
  attributes: big(2),
  nlink: u32(4),
  uid: u32(5),
  gid: u32(6),
  mode: 0o120777,
  ino: big(3),
  size: big(4),
  blocks: big(5),
  attributesMask: big(6),
  atime: { tvSec: -5n, tvNsec: 1 },
  btime: { tvSec: 0x7000_0000_0000_0001n, tvNsec: 2 },
  ctime: { tvSec: -(1n << 40n), tvNsec: 999_999_999 },
  mtime: { tvSec: 1_700_000_000n, tvNsec: 4 },
  rdevMajor: u32(7),
  rdevMinor: u32(8),
  devMajor: u32(9),
  devMinor: u32(10),
};
const statxLayout = (s: abi.Statx): Field[] => [
  [0, 'u32', s.mask],
  [4, 'u32', s.blksize],
  [8, 'u64', s.attributes],
  [16, 'u32', s.nlink],
  [20, 'u32', s.uid],
  [24, 'u32', s.gid],
  [28, 'u16', s.mode],
  [32, 'u64', s.ino],
  [40, 'u64', s.size],
  [48, 'u64', s.blocks],
  [56, 'u64', s.attributesMask],
  ...shift(sxTimeLayout(s.atime), 64),
  ...shift(sxTimeLayout(s.btime), 80),
  ...shift(sxTimeLayout(s.ctime), 96),
  ...shift(sxTimeLayout(s.mtime), 112),
  [128, 'u32', s.rdevMajor],
  [132, 'u32', s.rdevMinor],
  [136, 'u32', s.devMajor],
  [140, 'u32', s.devMinor],
];

const fileLock: abi.FileLock = {
  start: big(7),
  end: 0x7fff_ffff_ffff_ffffn, // OFFSET_MAX
  type: abi.LockType.F_WRLCK,
  pid: u32(11),
};
const fileLockLayout = (l: abi.FileLock): Field[] => [
  [0, 'u64', l.start],
  [8, 'u64', l.end],
  [16, 'u32', l.type],
  [20, 'u32', l.pid],
];

const kstatfs: abi.Kstatfs = {
  blocks: big(8),
  bfree: big(9),
  bavail: big(10),
  files: big(11),
  ffree: big(12),
  bsize: u32(12),
  namelen: 255,
  frsize: u32(13),
};
const kstatfsLayout = (s: abi.Kstatfs): Field[] => [
  [0, 'u64', s.blocks],
  [8, 'u64', s.bfree],
  [16, 'u64', s.bavail],
  [24, 'u64', s.files],
  [32, 'u64', s.ffree],
  [40, 'u32', s.bsize],
  [44, 'u32', s.namelen],
  [48, 'u32', s.frsize],
];

const entryOut: abi.EntryOut = {
  nodeid: big(13),
  generation: big(14),
  entryValid: big(15),
  attrValid: big(16),
  entryValidNsec: 999_999_999,
  attrValidNsec: 500_000_000,
  attr,
};
const entryOutLayout = (e: abi.EntryOut): Field[] => [
  [0, 'u64', e.nodeid],
  [8, 'u64', e.generation],
  [16, 'u64', e.entryValid],
  [24, 'u64', e.attrValid],
  [32, 'u32', e.entryValidNsec],
  [36, 'u32', e.attrValidNsec],
  ...shift(attrLayout(e.attr), 40),
];

function c<T>(x: Case<T>): Case<unknown> {
  return x as Case<unknown>;
}

const cases: Case<unknown>[] = [
  c<abi.InHeader>({
    name: 'fuse_in_header',
    size: abi.IN_HEADER_SIZE,
    encode: abi.encodeInHeader,
    decode: abi.decodeInHeader,
    value: {
      len: u32(20),
      opcode: abi.Opcode.STATX,
      unique: abi.FUSE_UNIQUE_RESEND | 0x1234n,
      nodeid: big(20),
      uid: abi.FUSE_INVALID_UIDGID,
      gid: u32(21),
      pid: u32(22),
      totalExtlen: u16(1),
    },
    layout: (v) => [
      [0, 'u32', v.len],
      [4, 'u32', v.opcode],
      [8, 'u64', v.unique],
      [16, 'u64', v.nodeid],
      [24, 'u32', v.uid],
      [28, 'u32', v.gid],
      [32, 'u32', v.pid],
      [36, 'u16', v.totalExtlen],
    ],
  }),
  c<abi.OutHeader>({
    name: 'fuse_out_header',
    size: abi.OUT_HEADER_SIZE,
    encode: abi.encodeOutHeader,
    decode: abi.decodeOutHeader,
    value: { len: u32(23), error: -38, unique: big(21) },
    layout: (v) => [
      [0, 'u32', v.len],
      [4, 'i32', v.error],
      [8, 'u64', v.unique],
    ],
  }),
  c<abi.Attr>({
    name: 'fuse_attr',
    size: abi.ATTR_SIZE,
    encode: abi.encodeAttr,
    decode: abi.decodeAttr,
    value: attr,
    layout: attrLayout,
  }),
  c<abi.EntryOut>({
    name: 'fuse_entry_out',
    size: abi.ENTRY_OUT_SIZE,
    encode: abi.encodeEntryOut,
    decode: abi.decodeEntryOut,
    value: entryOut,
    layout: entryOutLayout,
  }),
  c<abi.GetattrIn>({
    name: 'fuse_getattr_in',
    size: abi.GETATTR_IN_SIZE,
    encode: abi.encodeGetattrIn,
    decode: abi.decodeGetattrIn,
    value: { getattrFlags: abi.GetattrFlags.FH, fh: big(22) },
    layout: (v) => [
      [0, 'u32', v.getattrFlags],
      [8, 'u64', v.fh],
    ],
  }),
  c<abi.AttrOut>({
    name: 'fuse_attr_out',
    size: abi.ATTR_OUT_SIZE,
    encode: abi.encodeAttrOut,
    decode: abi.decodeAttrOut,
    value: { attrValid: big(23), attrValidNsec: u32(24), attr },
    layout: (v) => [
      [0, 'u64', v.attrValid],
      [8, 'u32', v.attrValidNsec],
      ...shift(attrLayout(v.attr), 16),
    ],
  }),
  c<abi.SxTime>({
    name: 'fuse_sx_time',
    size: abi.SX_TIME_SIZE,
    encode: abi.encodeSxTime,
    decode: abi.decodeSxTime,
    value: { tvSec: -86_400n, tvNsec: 7 },
    layout: sxTimeLayout,
  }),
  c<abi.Statx>({
    name: 'fuse_statx',
    size: abi.STATX_SIZE,
    encode: abi.encodeStatx,
    decode: abi.decodeStatx,
    value: statx,
    layout: statxLayout,
  }),
  c<abi.StatxIn>({
    name: 'fuse_statx_in',
    size: abi.STATX_IN_SIZE,
    encode: abi.encodeStatxIn,
    decode: abi.decodeStatxIn,
    value: { getattrFlags: abi.GetattrFlags.FH, fh: big(24), sxFlags: 0x800, sxMask: u32(25) },
    layout: (v) => [
      [0, 'u32', v.getattrFlags],
      [8, 'u64', v.fh],
      [16, 'u32', v.sxFlags],
      [20, 'u32', v.sxMask],
    ],
  }),
  c<abi.StatxOut>({
    name: 'fuse_statx_out',
    size: abi.STATX_OUT_SIZE,
    encode: abi.encodeStatxOut,
    decode: abi.decodeStatxOut,
    value: { attrValid: big(25), attrValidNsec: u32(26), flags: u32(27), stat: statx },
    layout: (v) => [
      [0, 'u64', v.attrValid],
      [8, 'u32', v.attrValidNsec],
      [12, 'u32', v.flags],
      ...shift(statxLayout(v.stat), 32),
    ],
  }),
  c<abi.SetattrIn>({
    name: 'fuse_setattr_in',
    size: abi.SETATTR_IN_SIZE,
    encode: abi.encodeSetattrIn,
    decode: abi.decodeSetattrIn,
    value: {
      valid: abi.FattrFlags.MODE | abi.FattrFlags.SIZE | abi.FattrFlags.KILL_SUIDGID,
      fh: big(26),
      size: big(27),
      lockOwner: big(28),
      atime: -1n,
      mtime: -(1n << 62n),
      ctime: 0x7000_0000_0000_0000n,
      atimensec: u32(28) & 0x3fff_ffff,
      mtimensec: 2,
      ctimensec: 3,
      mode: 0o4755,
      uid: u32(29),
      gid: u32(30),
    },
    layout: (v) => [
      [0, 'u32', v.valid],
      [8, 'u64', v.fh],
      [16, 'u64', v.size],
      [24, 'u64', v.lockOwner],
      [32, 'i64', v.atime],
      [40, 'i64', v.mtime],
      [48, 'i64', v.ctime],
      [56, 'u32', v.atimensec],
      [60, 'u32', v.mtimensec],
      [64, 'u32', v.ctimensec],
      [68, 'u32', v.mode],
      [76, 'u32', v.uid],
      [80, 'u32', v.gid],
    ],
  }),
  c<abi.ForgetIn>({
    name: 'fuse_forget_in',
    size: abi.FORGET_IN_SIZE,
    encode: abi.encodeForgetIn,
    decode: abi.decodeForgetIn,
    value: { nlookup: big(29) },
    layout: (v) => [[0, 'u64', v.nlookup]],
  }),
  c<abi.ForgetOne>({
    name: 'fuse_forget_one',
    size: abi.FORGET_ONE_SIZE,
    encode: abi.encodeForgetOne,
    decode: abi.decodeForgetOne,
    value: { nodeid: big(30), nlookup: big(31) },
    layout: (v) => [
      [0, 'u64', v.nodeid],
      [8, 'u64', v.nlookup],
    ],
  }),
  c<abi.BatchForgetIn>({
    name: 'fuse_batch_forget_in',
    size: abi.BATCH_FORGET_IN_SIZE,
    encode: abi.encodeBatchForgetIn,
    decode: abi.decodeBatchForgetIn,
    value: { count: u32(31) },
    layout: (v) => [[0, 'u32', v.count]],
  }),
  c<abi.MknodIn>({
    name: 'fuse_mknod_in',
    size: abi.MKNOD_IN_SIZE,
    encode: abi.encodeMknodIn,
    decode: abi.decodeMknodIn,
    value: { mode: 0o20620, rdev: u32(32), umask: 0o022 },
    layout: (v) => [
      [0, 'u32', v.mode],
      [4, 'u32', v.rdev],
      [8, 'u32', v.umask],
    ],
  }),
  c<abi.MkdirIn>({
    name: 'fuse_mkdir_in',
    size: abi.MKDIR_IN_SIZE,
    encode: abi.encodeMkdirIn,
    decode: abi.decodeMkdirIn,
    value: { mode: 0o40755, umask: 0o077 },
    layout: (v) => [
      [0, 'u32', v.mode],
      [4, 'u32', v.umask],
    ],
  }),
  c<abi.RenameIn>({
    name: 'fuse_rename_in',
    size: abi.RENAME_IN_SIZE,
    encode: abi.encodeRenameIn,
    decode: abi.decodeRenameIn,
    value: { newdir: big(32) },
    layout: (v) => [[0, 'u64', v.newdir]],
  }),
  c<abi.Rename2In>({
    name: 'fuse_rename2_in',
    size: abi.RENAME2_IN_SIZE,
    encode: abi.encodeRename2In,
    decode: abi.decodeRename2In,
    value: { newdir: big(33), flags: abi.RenameFlags.EXCHANGE | abi.RenameFlags.WHITEOUT },
    layout: (v) => [
      [0, 'u64', v.newdir],
      [8, 'u32', v.flags],
    ],
  }),
  c<abi.LinkIn>({
    name: 'fuse_link_in',
    size: abi.LINK_IN_SIZE,
    encode: abi.encodeLinkIn,
    decode: abi.decodeLinkIn,
    value: { oldnodeid: big(34) },
    layout: (v) => [[0, 'u64', v.oldnodeid]],
  }),
  c<abi.OpenIn>({
    name: 'fuse_open_in',
    size: abi.OPEN_IN_SIZE,
    encode: abi.encodeOpenIn,
    decode: abi.decodeOpenIn,
    value: { flags: u32(33), openFlags: abi.OpenInFlags.KILL_SUIDGID },
    layout: (v) => [
      [0, 'u32', v.flags],
      [4, 'u32', v.openFlags],
    ],
  }),
  c<abi.CreateIn>({
    name: 'fuse_create_in',
    size: abi.CREATE_IN_SIZE,
    encode: abi.encodeCreateIn,
    decode: abi.decodeCreateIn,
    value: { flags: u32(34), mode: 0o100600, umask: 0o002, openFlags: u32(35) },
    layout: (v) => [
      [0, 'u32', v.flags],
      [4, 'u32', v.mode],
      [8, 'u32', v.umask],
      [12, 'u32', v.openFlags],
    ],
  }),
  c<abi.OpenOut>({
    name: 'fuse_open_out',
    size: abi.OPEN_OUT_SIZE,
    encode: abi.encodeOpenOut,
    decode: abi.decodeOpenOut,
    value: {
      fh: big(35),
      openFlags: abi.FopenFlags.KEEP_CACHE | abi.FopenFlags.PARALLEL_DIRECT_WRITES,
      backingId: -7,
    },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u32', v.openFlags],
      [12, 'i32', v.backingId],
    ],
  }),
  c<abi.ReleaseIn>({
    name: 'fuse_release_in',
    size: abi.RELEASE_IN_SIZE,
    encode: abi.encodeReleaseIn,
    decode: abi.decodeReleaseIn,
    value: {
      fh: big(36),
      flags: u32(36),
      releaseFlags: abi.ReleaseFlags.FLUSH | abi.ReleaseFlags.FLOCK_UNLOCK,
      lockOwner: big(37),
    },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u32', v.flags],
      [12, 'u32', v.releaseFlags],
      [16, 'u64', v.lockOwner],
    ],
  }),
  c<abi.FlushIn>({
    name: 'fuse_flush_in',
    size: abi.FLUSH_IN_SIZE,
    encode: abi.encodeFlushIn,
    decode: abi.decodeFlushIn,
    value: { fh: big(38), lockOwner: big(39) },
    layout: (v) => [
      [0, 'u64', v.fh],
      [16, 'u64', v.lockOwner],
    ],
  }),
  c<abi.ReadIn>({
    name: 'fuse_read_in',
    size: abi.READ_IN_SIZE,
    encode: abi.encodeReadIn,
    decode: abi.decodeReadIn,
    value: {
      fh: big(40),
      offset: big(41),
      size: 1 << 20,
      readFlags: abi.ReadFlags.LOCKOWNER,
      lockOwner: big(42),
      flags: u32(37),
    },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.offset],
      [16, 'u32', v.size],
      [20, 'u32', v.readFlags],
      [24, 'u64', v.lockOwner],
      [32, 'u32', v.flags],
    ],
  }),
  c<abi.WriteIn>({
    name: 'fuse_write_in',
    size: abi.WRITE_IN_SIZE,
    encode: abi.encodeWriteIn,
    decode: abi.decodeWriteIn,
    value: {
      fh: big(43),
      offset: big(44),
      size: u32(38),
      writeFlags: abi.WriteFlags.CACHE | abi.WriteFlags.LOCKOWNER | abi.WriteFlags.KILL_SUIDGID,
      lockOwner: big(45),
      flags: u32(39),
    },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.offset],
      [16, 'u32', v.size],
      [20, 'u32', v.writeFlags],
      [24, 'u64', v.lockOwner],
      [32, 'u32', v.flags],
    ],
  }),
  c<abi.WriteOut>({
    name: 'fuse_write_out',
    size: abi.WRITE_OUT_SIZE,
    encode: abi.encodeWriteOut,
    decode: abi.decodeWriteOut,
    value: { size: u32(40) },
    layout: (v) => [[0, 'u32', v.size]],
  }),
  c<abi.FsyncIn>({
    name: 'fuse_fsync_in',
    size: abi.FSYNC_IN_SIZE,
    encode: abi.encodeFsyncIn,
    decode: abi.decodeFsyncIn,
    value: { fh: big(46), fsyncFlags: abi.FsyncFlags.FDATASYNC },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u32', v.fsyncFlags],
    ],
  }),
  c<abi.FallocateIn>({
    name: 'fuse_fallocate_in',
    size: abi.FALLOCATE_IN_SIZE,
    encode: abi.encodeFallocateIn,
    decode: abi.decodeFallocateIn,
    value: { fh: big(47), offset: big(48), length: big(49), mode: u32(41) },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.offset],
      [16, 'u64', v.length],
      [24, 'u32', v.mode],
    ],
  }),
  c<abi.LseekIn>({
    name: 'fuse_lseek_in',
    size: abi.LSEEK_IN_SIZE,
    encode: abi.encodeLseekIn,
    decode: abi.decodeLseekIn,
    value: { fh: big(50), offset: big(51), whence: 4 /* SEEK_HOLE */ },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.offset],
      [16, 'u32', v.whence],
    ],
  }),
  c<abi.LseekOut>({
    name: 'fuse_lseek_out',
    size: abi.LSEEK_OUT_SIZE,
    encode: abi.encodeLseekOut,
    decode: abi.decodeLseekOut,
    value: { offset: big(52) },
    layout: (v) => [[0, 'u64', v.offset]],
  }),
  c<abi.CopyFileRangeIn>({
    name: 'fuse_copy_file_range_in',
    size: abi.COPY_FILE_RANGE_IN_SIZE,
    encode: abi.encodeCopyFileRangeIn,
    decode: abi.decodeCopyFileRangeIn,
    value: {
      fhIn: big(53),
      offIn: big(54),
      nodeidOut: big(55),
      fhOut: big(56),
      offOut: big(57),
      len: big(58),
      flags: big(59),
    },
    layout: (v) => [
      [0, 'u64', v.fhIn],
      [8, 'u64', v.offIn],
      [16, 'u64', v.nodeidOut],
      [24, 'u64', v.fhOut],
      [32, 'u64', v.offOut],
      [40, 'u64', v.len],
      [48, 'u64', v.flags],
    ],
  }),
  c<abi.Kstatfs>({
    name: 'fuse_kstatfs',
    size: abi.KSTATFS_SIZE,
    encode: abi.encodeKstatfs,
    decode: abi.decodeKstatfs,
    value: kstatfs,
    layout: kstatfsLayout,
  }),
  c<abi.StatfsOut>({
    name: 'fuse_statfs_out',
    size: abi.STATFS_OUT_SIZE,
    encode: abi.encodeStatfsOut,
    decode: abi.decodeStatfsOut,
    value: { st: kstatfs },
    layout: (v) => kstatfsLayout(v.st),
  }),
  c<abi.SyncfsIn>({
    name: 'fuse_syncfs_in',
    size: abi.SYNCFS_IN_SIZE,
    encode: abi.encodeSyncfsIn,
    decode: abi.decodeSyncfsIn,
    value: {},
    layout: () => [],
  }),
  c<abi.SetxattrIn>({
    name: 'fuse_setxattr_in (SETXATTR_EXT)',
    size: abi.SETXATTR_IN_SIZE,
    encode: (b, o, v) => abi.encodeSetxattrIn(b, o, v, true),
    decode: (b, o) => abi.decodeSetxattrIn(b, o, true),
    value: { size: u32(42), flags: 2 /* XATTR_REPLACE */, setxattrFlags: 1 },
    layout: (v) => [
      [0, 'u32', v.size],
      [4, 'u32', v.flags],
      [8, 'u32', v.setxattrFlags],
    ],
  }),
  c<abi.SetxattrIn>({
    name: 'fuse_setxattr_in (compat)',
    size: abi.FUSE_COMPAT_SETXATTR_IN_SIZE,
    encode: (b, o, v) => abi.encodeSetxattrIn(b, o, v, false),
    decode: (b, o) => abi.decodeSetxattrIn(b, o, false),
    value: { size: u32(43), flags: 1 /* XATTR_CREATE */, setxattrFlags: 0 },
    layout: (v) => [
      [0, 'u32', v.size],
      [4, 'u32', v.flags],
    ],
  }),
  c<abi.GetxattrIn>({
    name: 'fuse_getxattr_in',
    size: abi.GETXATTR_IN_SIZE,
    encode: abi.encodeGetxattrIn,
    decode: abi.decodeGetxattrIn,
    value: { size: u32(44) },
    layout: (v) => [[0, 'u32', v.size]],
  }),
  c<abi.GetxattrOut>({
    name: 'fuse_getxattr_out',
    size: abi.GETXATTR_OUT_SIZE,
    encode: abi.encodeGetxattrOut,
    decode: abi.decodeGetxattrOut,
    value: { size: u32(45) },
    layout: (v) => [[0, 'u32', v.size]],
  }),
  c<abi.FileLock>({
    name: 'fuse_file_lock',
    size: abi.FILE_LOCK_SIZE,
    encode: abi.encodeFileLock,
    decode: abi.decodeFileLock,
    value: fileLock,
    layout: fileLockLayout,
  }),
  c<abi.LkIn>({
    name: 'fuse_lk_in',
    size: abi.LK_IN_SIZE,
    encode: abi.encodeLkIn,
    decode: abi.decodeLkIn,
    value: { fh: big(60), owner: big(61), lk: fileLock, lkFlags: abi.LkFlags.FLOCK },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.owner],
      ...shift(fileLockLayout(v.lk), 16),
      [40, 'u32', v.lkFlags],
    ],
  }),
  c<abi.LkOut>({
    name: 'fuse_lk_out',
    size: abi.LK_OUT_SIZE,
    encode: abi.encodeLkOut,
    decode: abi.decodeLkOut,
    value: { lk: fileLock },
    layout: (v) => fileLockLayout(v.lk),
  }),
  c<abi.AccessIn>({
    name: 'fuse_access_in',
    size: abi.ACCESS_IN_SIZE,
    encode: abi.encodeAccessIn,
    decode: abi.decodeAccessIn,
    value: { mask: 7 },
    layout: (v) => [[0, 'u32', v.mask]],
  }),
  c<abi.InitIn>({
    name: 'fuse_init_in',
    size: abi.INIT_IN_SIZE,
    encode: abi.encodeInitIn,
    decode: abi.decodeInitIn,
    minSize: abi.FUSE_COMPAT_INIT_IN_SIZE,
    value: { major: 7, minor: 38, maxReadahead: 0x20000, flags: 0x7bfffffb, flags2: 0xb },
    layout: (v) => [
      [0, 'u32', v.major],
      [4, 'u32', v.minor],
      [8, 'u32', v.maxReadahead],
      [12, 'u32', v.flags],
      [16, 'u32', v.flags2],
    ],
  }),
  c<abi.InitOut>({
    name: 'fuse_init_out',
    size: abi.INIT_OUT_SIZE,
    encode: abi.encodeInitOut,
    decode: abi.decodeInitOut,
    value: {
      major: 7,
      minor: 38,
      maxReadahead: u32(46),
      flags: u32(47),
      maxBackground: u16(1),
      congestionThreshold: u16(2),
      maxWrite: u32(48),
      timeGran: 1,
      maxPages: u16(3),
      mapAlignment: 21,
      flags2: u32(49),
      maxStackDepth: 2,
    },
    layout: (v) => [
      [0, 'u32', v.major],
      [4, 'u32', v.minor],
      [8, 'u32', v.maxReadahead],
      [12, 'u32', v.flags],
      [16, 'u16', v.maxBackground],
      [18, 'u16', v.congestionThreshold],
      [20, 'u32', v.maxWrite],
      [24, 'u32', v.timeGran],
      [28, 'u16', v.maxPages],
      [30, 'u16', v.mapAlignment],
      [32, 'u32', v.flags2],
      [36, 'u32', v.maxStackDepth],
    ],
  }),
  c<abi.InterruptIn>({
    name: 'fuse_interrupt_in',
    size: abi.INTERRUPT_IN_SIZE,
    encode: abi.encodeInterruptIn,
    decode: abi.decodeInterruptIn,
    value: { unique: big(62) },
    layout: (v) => [[0, 'u64', v.unique]],
  }),
  c<abi.BmapIn>({
    name: 'fuse_bmap_in',
    size: abi.BMAP_IN_SIZE,
    encode: abi.encodeBmapIn,
    decode: abi.decodeBmapIn,
    value: { block: big(63), blocksize: 4096 },
    layout: (v) => [
      [0, 'u64', v.block],
      [8, 'u32', v.blocksize],
    ],
  }),
  c<abi.BmapOut>({
    name: 'fuse_bmap_out',
    size: abi.BMAP_OUT_SIZE,
    encode: abi.encodeBmapOut,
    decode: abi.decodeBmapOut,
    value: { block: big(64) },
    layout: (v) => [[0, 'u64', v.block]],
  }),
  c<abi.IoctlIn>({
    name: 'fuse_ioctl_in',
    size: abi.IOCTL_IN_SIZE,
    encode: abi.encodeIoctlIn,
    decode: abi.decodeIoctlIn,
    value: {
      fh: big(65),
      flags: abi.IoctlFlags.UNRESTRICTED | abi.IoctlFlags._32BIT,
      cmd: u32(50),
      arg: big(66),
      inSize: u32(51),
      outSize: u32(52),
    },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u32', v.flags],
      [12, 'u32', v.cmd],
      [16, 'u64', v.arg],
      [24, 'u32', v.inSize],
      [28, 'u32', v.outSize],
    ],
  }),
  c<abi.IoctlIovec>({
    name: 'fuse_ioctl_iovec',
    size: abi.IOCTL_IOVEC_SIZE,
    encode: abi.encodeIoctlIovec,
    decode: abi.decodeIoctlIovec,
    value: { base: big(67), len: big(68) },
    layout: (v) => [
      [0, 'u64', v.base],
      [8, 'u64', v.len],
    ],
  }),
  c<abi.IoctlOut>({
    name: 'fuse_ioctl_out',
    size: abi.IOCTL_OUT_SIZE,
    encode: abi.encodeIoctlOut,
    decode: abi.decodeIoctlOut,
    value: { result: -25, flags: abi.IoctlFlags.RETRY, inIovs: u32(53), outIovs: u32(54) },
    layout: (v) => [
      [0, 'i32', v.result],
      [4, 'u32', v.flags],
      [8, 'u32', v.inIovs],
      [12, 'u32', v.outIovs],
    ],
  }),
  c<abi.PollIn>({
    name: 'fuse_poll_in',
    size: abi.POLL_IN_SIZE,
    encode: abi.encodePollIn,
    decode: abi.decodePollIn,
    value: { fh: big(69), kh: big(70), flags: abi.PollFlags.SCHEDULE_NOTIFY, events: u32(55) },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.kh],
      [16, 'u32', v.flags],
      [20, 'u32', v.events],
    ],
  }),
  c<abi.PollOut>({
    name: 'fuse_poll_out',
    size: abi.POLL_OUT_SIZE,
    encode: abi.encodePollOut,
    decode: abi.decodePollOut,
    value: { revents: u32(56) },
    layout: (v) => [[0, 'u32', v.revents]],
  }),
  c<abi.SetupmappingIn>({
    name: 'fuse_setupmapping_in',
    size: abi.SETUPMAPPING_IN_SIZE,
    encode: abi.encodeSetupmappingIn,
    decode: abi.decodeSetupmappingIn,
    value: {
      fh: 0xffff_ffff_ffff_ffffn,
      foffset: big(71),
      len: 2n << 20n,
      flags: abi.SetupmappingFlags.WRITE | abi.SetupmappingFlags.READ,
      moffset: big(72),
    },
    layout: (v) => [
      [0, 'u64', v.fh],
      [8, 'u64', v.foffset],
      [16, 'u64', v.len],
      [24, 'u64', v.flags],
      [32, 'u64', v.moffset],
    ],
  }),
  c<abi.RemovemappingIn>({
    name: 'fuse_removemapping_in',
    size: abi.REMOVEMAPPING_IN_SIZE,
    encode: abi.encodeRemovemappingIn,
    decode: abi.decodeRemovemappingIn,
    value: { count: u32(57) },
    layout: (v) => [[0, 'u32', v.count]],
  }),
  c<abi.RemovemappingOne>({
    name: 'fuse_removemapping_one',
    size: abi.REMOVEMAPPING_ONE_SIZE,
    encode: abi.encodeRemovemappingOne,
    decode: abi.decodeRemovemappingOne,
    value: { moffset: big(73), len: big(74) },
    layout: (v) => [
      [0, 'u64', v.moffset],
      [8, 'u64', v.len],
    ],
  }),
  c<abi.ExtHeader>({
    name: 'fuse_ext_header',
    size: abi.EXT_HEADER_SIZE,
    encode: abi.encodeExtHeader,
    decode: abi.decodeExtHeader,
    value: { size: u32(58), type: abi.ExtType.GROUPS },
    layout: (v) => [
      [0, 'u32', v.size],
      [4, 'u32', v.type],
    ],
  }),
  c<abi.SecctxHeader>({
    name: 'fuse_secctx_header',
    size: abi.SECCTX_HEADER_SIZE,
    encode: abi.encodeSecctxHeader,
    decode: abi.decodeSecctxHeader,
    value: { size: u32(59), nrSecctx: 1 },
    layout: (v) => [
      [0, 'u32', v.size],
      [4, 'u32', v.nrSecctx],
    ],
  }),
  c<abi.Secctx>({
    name: 'fuse_secctx',
    size: abi.SECCTX_SIZE,
    encode: abi.encodeSecctx,
    decode: abi.decodeSecctx,
    value: { size: u32(60) },
    layout: (v) => [[0, 'u32', v.size]],
  }),
];

describe('fuse/abi', () => {
  describe('struct sizes match the kernel', () => {
    // sizeof() of each struct in include/uapi/linux/fuse.h (x86_64 and every other arch:
    // the structs are padded to 64 bits on purpose).
    const expected: Array<[string, number, number]> = [
      ['fuse_in_header', abi.IN_HEADER_SIZE, 40],
      ['fuse_out_header', abi.OUT_HEADER_SIZE, 16],
      ['fuse_attr', abi.ATTR_SIZE, 88],
      ['fuse_entry_out', abi.ENTRY_OUT_SIZE, 128],
      ['fuse_attr_out', abi.ATTR_OUT_SIZE, 104],
      ['fuse_getattr_in', abi.GETATTR_IN_SIZE, 16],
      ['fuse_setattr_in', abi.SETATTR_IN_SIZE, 88],
      ['fuse_open_in', abi.OPEN_IN_SIZE, 8],
      ['fuse_open_out', abi.OPEN_OUT_SIZE, 16],
      ['fuse_create_in', abi.CREATE_IN_SIZE, 16],
      ['fuse_release_in', abi.RELEASE_IN_SIZE, 24],
      ['fuse_flush_in', abi.FLUSH_IN_SIZE, 24],
      ['fuse_read_in', abi.READ_IN_SIZE, 40],
      ['fuse_write_in', abi.WRITE_IN_SIZE, 40],
      ['fuse_write_out', abi.WRITE_OUT_SIZE, 8],
      ['fuse_kstatfs', abi.KSTATFS_SIZE, 80],
      ['fuse_statfs_out', abi.STATFS_OUT_SIZE, 80],
      ['fuse_fsync_in', abi.FSYNC_IN_SIZE, 16],
      ['fuse_setxattr_in', abi.SETXATTR_IN_SIZE, 16],
      ['fuse_getxattr_in', abi.GETXATTR_IN_SIZE, 8],
      ['fuse_getxattr_out', abi.GETXATTR_OUT_SIZE, 8],
      ['fuse_file_lock', abi.FILE_LOCK_SIZE, 24],
      ['fuse_lk_in', abi.LK_IN_SIZE, 48],
      ['fuse_lk_out', abi.LK_OUT_SIZE, 24],
      ['fuse_access_in', abi.ACCESS_IN_SIZE, 8],
      ['fuse_init_in', abi.INIT_IN_SIZE, 64],
      ['fuse_init_out', abi.INIT_OUT_SIZE, 64],
      ['fuse_interrupt_in', abi.INTERRUPT_IN_SIZE, 8],
      ['fuse_bmap_in', abi.BMAP_IN_SIZE, 16],
      ['fuse_bmap_out', abi.BMAP_OUT_SIZE, 8],
      ['fuse_ioctl_in', abi.IOCTL_IN_SIZE, 32],
      ['fuse_ioctl_iovec', abi.IOCTL_IOVEC_SIZE, 16],
      ['fuse_ioctl_out', abi.IOCTL_OUT_SIZE, 16],
      ['fuse_poll_in', abi.POLL_IN_SIZE, 24],
      ['fuse_poll_out', abi.POLL_OUT_SIZE, 8],
      ['fuse_fallocate_in', abi.FALLOCATE_IN_SIZE, 32],
      ['fuse_batch_forget_in', abi.BATCH_FORGET_IN_SIZE, 8],
      ['fuse_forget_one', abi.FORGET_ONE_SIZE, 16],
      ['fuse_forget_in', abi.FORGET_IN_SIZE, 8],
      ['fuse_mknod_in', abi.MKNOD_IN_SIZE, 16],
      ['fuse_mkdir_in', abi.MKDIR_IN_SIZE, 8],
      ['fuse_rename_in', abi.RENAME_IN_SIZE, 8],
      ['fuse_rename2_in', abi.RENAME2_IN_SIZE, 16],
      ['fuse_link_in', abi.LINK_IN_SIZE, 8],
      ['fuse_lseek_in', abi.LSEEK_IN_SIZE, 24],
      ['fuse_lseek_out', abi.LSEEK_OUT_SIZE, 8],
      ['fuse_copy_file_range_in', abi.COPY_FILE_RANGE_IN_SIZE, 56],
      ['fuse_setupmapping_in', abi.SETUPMAPPING_IN_SIZE, 40],
      ['fuse_removemapping_in', abi.REMOVEMAPPING_IN_SIZE, 4],
      ['fuse_removemapping_one', abi.REMOVEMAPPING_ONE_SIZE, 16],
      ['fuse_syncfs_in', abi.SYNCFS_IN_SIZE, 8],
      ['fuse_sx_time', abi.SX_TIME_SIZE, 16],
      ['fuse_statx', abi.STATX_SIZE, 256],
      ['fuse_statx_in', abi.STATX_IN_SIZE, 24],
      ['fuse_statx_out', abi.STATX_OUT_SIZE, 288],
      ['fuse_secctx', abi.SECCTX_SIZE, 8],
      ['fuse_secctx_header', abi.SECCTX_HEADER_SIZE, 8],
      ['fuse_ext_header', abi.EXT_HEADER_SIZE, 8],
      ['fuse_supp_groups', abi.SUPP_GROUPS_SIZE, 4],
      ['offsetof(fuse_dirent, name)', abi.FUSE_NAME_OFFSET, 24],
      ['offsetof(fuse_direntplus, dirent.name)', abi.FUSE_NAME_OFFSET_DIRENTPLUS, 152],
    ];
    for (const [name, actual, size] of expected) {
      it(`${name} is ${size} bytes`, () => assert.equal(actual, size));
    }

    it('compat sizes', () => {
      assert.equal(abi.FUSE_COMPAT_ENTRY_OUT_SIZE, 120);
      assert.equal(abi.FUSE_COMPAT_ATTR_OUT_SIZE, 96);
      assert.equal(abi.FUSE_COMPAT_MKNOD_IN_SIZE, 8);
      assert.equal(abi.FUSE_COMPAT_WRITE_IN_SIZE, 24);
      assert.equal(abi.FUSE_COMPAT_STATFS_SIZE, 48);
      assert.equal(abi.FUSE_COMPAT_SETXATTR_IN_SIZE, 8);
      assert.equal(abi.FUSE_COMPAT_INIT_OUT_SIZE, 8);
      assert.equal(abi.FUSE_COMPAT_22_INIT_OUT_SIZE, 24);
      assert.equal(abi.FUSE_COMPAT_INIT_IN_SIZE, 16);
    });
  });

  describe('layout, round trip, padding and bounds of every struct', () => {
    for (const tc of cases) {
      describe(tc.name, () => {
        const off = 5; // deliberately unaligned
        const fill = 0xa5;
        const encoded = (): Buffer => {
          const buf = Buffer.alloc(off + tc.size + 7, fill);
          assert.equal(tc.encode(buf, off, tc.value), tc.size);
          return buf;
        };

        it('puts every field at its fuse.h offset', () => {
          const buf = encoded();
          for (const [at, kind, value] of tc.layout(tc.value)) {
            assert.ok(at + WIDTH[kind] <= tc.size, `${tc.name}: field at ${at} past the end`);
            assert.equal(readField(buf, off + at, kind), value, `${tc.name}: field at ${at}`);
          }
        });

        it('zeroes padding and writes nothing outside the struct', () => {
          const buf = encoded();
          const covered = new Array<boolean>(tc.size).fill(false);
          for (const [at, kind] of tc.layout(tc.value)) {
            for (let i = 0; i < WIDTH[kind]; i++) {
              assert.ok(!covered[at + i], `${tc.name}: fields overlap at ${at + i}`);
              covered[at + i] = true;
            }
          }
          covered.forEach((isField, i) => {
            if (!isField) assert.equal(buf[off + i], 0, `${tc.name}: padding byte ${i}`);
          });
          for (let i = 0; i < off; i++) assert.equal(buf[i], fill);
          for (let i = off + tc.size; i < buf.length; i++) assert.equal(buf[i], fill);
        });

        it('decodes what it encodes', () => {
          assert.deepEqual(tc.decode(encoded(), off), tc.value);
        });

        it('refuses short buffers and bad offsets', () => {
          const buf = encoded();
          const short = buf.subarray(0, off + tc.size - 1);
          const tooShort = buf.subarray(0, off + (tc.minSize ?? tc.size) - 1);
          assert.throws(() => tc.decode(tooShort, off), abi.FuseAbiError);
          assert.throws(() => tc.decode(buf, -1), abi.FuseAbiError);
          assert.throws(() => tc.decode(buf, 0.5), abi.FuseAbiError);
          assert.throws(() => tc.decode(Buffer.alloc(0), 0), abi.FuseAbiError);
          assert.throws(() => tc.encode(short, off, tc.value), abi.FuseAbiError);
        });
      });
    }
  });

  describe('known byte layouts', () => {
    it('fuse_in_header', () => {
      const bytes = Buffer.from(
        '2d000000' + // len 45
          '01000000' + // opcode LOOKUP
          '0807060504030201' + // unique
          '0100000000000000' + // nodeid FUSE_ROOT_ID
          'e8030000' + // uid 1000
          'e9030000' + // gid 1001
          '92100000' + // pid 4242
          '0200' + // total_extlen 2
          '0000', // padding
        'hex',
      );
      assert.equal(bytes.length, abi.IN_HEADER_SIZE);
      const h = abi.decodeInHeader(bytes, 0);
      assert.deepEqual(h, {
        len: 45,
        opcode: abi.Opcode.LOOKUP,
        unique: 0x0102030405060708n,
        nodeid: abi.FUSE_ROOT_ID,
        uid: 1000,
        gid: 1001,
        pid: 4242,
        totalExtlen: 2,
      });
      const out = Buffer.alloc(abi.IN_HEADER_SIZE, 0xff);
      abi.encodeInHeader(out, 0, h);
      assert.equal(out.toString('hex'), bytes.toString('hex'));
    });

    it('fuse_out_header carries a negative errno', () => {
      const out = Buffer.alloc(abi.OUT_HEADER_SIZE);
      abi.encodeOutHeader(out, 0, { len: 16, error: -2, unique: 0x0102030405060708n });
      assert.equal(out.toString('hex'), '10000000' + 'feffffff' + '0807060504030201');
    });

    it('fuse_entry_out: nodeid at 0, generation at 8, timeouts at 16..40, attr at 40', () => {
      const e: abi.EntryOut = {
        nodeid: 0x1122334455667788n,
        generation: 2n,
        entryValid: 3n,
        attrValid: 4n,
        entryValidNsec: 5,
        attrValidNsec: 6,
        attr: { ...attr, ino: 0x99n, flags: 0 },
      };
      const buf = Buffer.alloc(abi.ENTRY_OUT_SIZE);
      abi.encodeEntryOut(buf, 0, e);
      assert.equal(
        buf.subarray(0, 48).toString('hex'),
        '8877665544332211' + // nodeid
          '0200000000000000' + // generation
          '0300000000000000' + // entry_valid
          '0400000000000000' + // attr_valid
          '05000000' + // entry_valid_nsec
          '06000000' + // attr_valid_nsec
          '9900000000000000', // attr.ino
      );
      assert.equal(buf.readUInt32LE(40 + 60), attr.mode); // attr.mode at 100
      assert.equal(buf.readUInt32LE(124), 0); // attr.flags, last field
      assert.deepEqual(abi.decodeAttr(buf, 40), e.attr);
    });
  });

  describe('u64 and i64 fields', () => {
    it('keep values above 2^53 exactly', () => {
      const buf = Buffer.alloc(abi.IN_HEADER_SIZE);
      const unique = (1n << 64n) - 1n;
      const nodeid = (1n << 53n) + 1n;
      abi.encodeInHeader(buf, 0, {
        len: 40,
        opcode: 3,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: 0,
        totalExtlen: 0,
      });
      const h = abi.decodeInHeader(buf, 0);
      assert.equal(h.unique, unique);
      assert.equal(h.nodeid, nodeid);
    });

    it('read timestamp seconds signed (time64_t)', () => {
      const buf = Buffer.alloc(abi.ATTR_SIZE);
      abi.encodeAttr(buf, 0, { ...attr, mtime: -1n });
      assert.equal(buf.readBigUInt64LE(32), 0xffff_ffff_ffff_ffffn);
      assert.equal(abi.decodeAttr(buf, 0).mtime, -1n);
    });

    it('reject values that do not fit', () => {
      const buf = Buffer.alloc(abi.FORGET_IN_SIZE);
      assert.throws(() => abi.encodeForgetIn(buf, 0, { nlookup: 1n << 64n }), RangeError);
      assert.throws(() => abi.encodeForgetIn(buf, 0, { nlookup: -1n }), RangeError);
    });
  });

  describe('fuse_init_in', () => {
    it('decodes the pre-7.36 16-byte layout with flags2 = 0', () => {
      const buf = Buffer.alloc(abi.FUSE_COMPAT_INIT_IN_SIZE);
      buf.writeUInt32LE(7, 0);
      buf.writeUInt32LE(31, 4);
      buf.writeUInt32LE(0x20000, 8);
      buf.writeUInt32LE(0x0000_ffff, 12);
      assert.deepEqual(abi.decodeInitIn(buf, 0), {
        major: 7,
        minor: 31,
        maxReadahead: 0x20000,
        flags: 0xffff,
        flags2: 0,
      });
      assert.throws(() => abi.decodeInitIn(buf.subarray(0, 15), 0), abi.FuseAbiError);
    });

    it("reads Debian 6.1's INIT flags (0x7BFFFFFB, flags2 0xB)", () => {
      const buf = Buffer.alloc(abi.INIT_IN_SIZE);
      abi.encodeInitIn(buf, 0, {
        major: 7,
        minor: 38,
        maxReadahead: 0x20000,
        flags: 0x7bfffffb,
        flags2: 0xb,
      });
      const f = abi.initInFlags(abi.decodeInitIn(buf, 0));
      const F = abi.InitFlags;
      assert.equal(f, 0xb_7bff_fffbn);
      for (const bit of [
        F.ASYNC_READ,
        F.INIT_EXT,
        F.SECURITY_CTX,
        F.HAS_INODE_DAX,
        F.HAS_EXPIRE_ONLY,
        F.SETXATTR_EXT,
        F.DO_READDIRPLUS,
      ]) {
        assert.notEqual(f & bit, 0n, `bit ${bit.toString(16)}`);
      }
      // MAP_ALIGNMENT (bit 26) is only asked for when the guest has a DAX window.
      const unset = [
        F.FILE_OPS,
        F.MAP_ALIGNMENT,
        F.INIT_RESERVED,
        F.CREATE_SUPP_GROUP,
        F.PASSTHROUGH,
      ];
      for (const bit of unset) {
        assert.equal(f & bit, 0n, `bit ${bit.toString(16)}`);
      }
    });

    it('ignores flags2 without INIT_EXT', () => {
      const v = { major: 7, minor: 38, maxReadahead: 0, flags: 0x1, flags2: 0xff };
      assert.equal(abi.initInFlags(v), 1n);
    });
  });

  describe('INIT flag helpers', () => {
    it('join and split are inverse', () => {
      const F = abi.InitFlags;
      const all = F.INIT_RESERVED | F.ASYNC_READ | F.OVER_IO_URING;
      const { flags, flags2 } = abi.splitInitFlags(all);
      assert.equal(flags, 0x8000_0001);
      assert.equal(flags2, 1 << 9);
      assert.equal(abi.joinInitFlags(flags, flags2), all);
      assert.equal(abi.joinInitFlags(0xffff_ffff, 0xffff_ffff), (1n << 64n) - 1n);
      assert.deepEqual(abi.splitInitFlags((1n << 64n) - 1n), {
        flags: 0xffff_ffff,
        flags2: 0xffff_ffff,
      });
    });

    it('has the fuse.h bit positions', () => {
      const F = abi.InitFlags;
      assert.equal(F.ASYNC_READ, 1n);
      assert.equal(F.EXPORT_SUPPORT, 1n << 4n);
      assert.equal(F.WRITEBACK_CACHE, 1n << 16n);
      assert.equal(F.MAX_PAGES, 1n << 22n);
      assert.equal(F.MAP_ALIGNMENT, 1n << 26n);
      assert.equal(F.SUBMOUNTS, 1n << 27n);
      assert.equal(F.HANDLE_KILLPRIV_V2, 1n << 28n);
      assert.equal(F.INIT_EXT, 1n << 30n);
      assert.equal(F.SECURITY_CTX, 1n << 32n);
      assert.equal(F.CREATE_SUPP_GROUP, 1n << 34n);
      assert.equal(F.DIRECT_IO_ALLOW_MMAP, 1n << 36n);
      assert.equal(F.PASSTHROUGH, 1n << 37n);
      assert.equal(F.HAS_RESEND, 1n << 39n);
      assert.equal(F.OVER_IO_URING, 1n << 41n);
    });
  });

  describe('constants', () => {
    it('versions and ids', () => {
      assert.equal(abi.FUSE_KERNEL_VERSION, 7);
      assert.equal(abi.FUSE_KERNEL_MINOR_VERSION, 38);
      assert.equal(abi.FUSE_ROOT_ID, 1n);
      assert.equal(abi.FUSE_MIN_READ_BUFFER, 8192);
      assert.equal(abi.FUSE_UNIQUE_RESEND, 0x8000_0000_0000_0000n);
    });

    it('opcodes', () => {
      const O = abi.Opcode;
      const expected: Array<[number, number]> = [
        [O.LOOKUP, 1], [O.FORGET, 2], [O.GETATTR, 3], [O.SETATTR, 4], [O.READLINK, 5],
        [O.SYMLINK, 6], [O.MKNOD, 8], [O.MKDIR, 9], [O.UNLINK, 10], [O.RMDIR, 11],
        [O.RENAME, 12], [O.LINK, 13], [O.OPEN, 14], [O.READ, 15], [O.WRITE, 16],
        [O.STATFS, 17], [O.RELEASE, 18], [O.FSYNC, 20], [O.SETXATTR, 21], [O.GETXATTR, 22],
        [O.LISTXATTR, 23], [O.REMOVEXATTR, 24], [O.FLUSH, 25], [O.INIT, 26], [O.OPENDIR, 27],
        [O.READDIR, 28], [O.RELEASEDIR, 29], [O.FSYNCDIR, 30], [O.GETLK, 31], [O.SETLK, 32],
        [O.SETLKW, 33], [O.ACCESS, 34], [O.CREATE, 35], [O.INTERRUPT, 36], [O.BMAP, 37],
        [O.DESTROY, 38], [O.IOCTL, 39], [O.POLL, 40], [O.NOTIFY_REPLY, 41],
        [O.BATCH_FORGET, 42], [O.FALLOCATE, 43], [O.READDIRPLUS, 44], [O.RENAME2, 45],
        [O.LSEEK, 46], [O.COPY_FILE_RANGE, 47], [O.SETUPMAPPING, 48], [O.REMOVEMAPPING, 49],
        [O.SYNCFS, 50], [O.TMPFILE, 51], [O.STATX, 52],
      ];
      for (const [actual, value] of expected) assert.equal(actual, value);
      assert.equal(abi.opcodeName(48), 'SETUPMAPPING');
      assert.equal(abi.opcodeName(7), 'UNKNOWN(7)');
      assert.equal(abi.opcodeName(4096), 'UNKNOWN(4096)');
    });

    it('flag values', () => {
      assert.equal(abi.FattrFlags.MODE, 1);
      assert.equal(abi.FattrFlags.FH, 1 << 6);
      assert.equal(abi.FattrFlags.CTIME, 1 << 10);
      assert.equal(abi.FattrFlags.KILL_SUIDGID, 1 << 11);
      assert.equal(abi.FopenFlags.DIRECT_IO, 1);
      assert.equal(abi.FopenFlags.CACHE_DIR, 8);
      assert.equal(abi.FopenFlags.NOFLUSH, 32);
      assert.equal(abi.FopenFlags.PASSTHROUGH, 128);
      assert.equal(abi.ReleaseFlags.FLOCK_UNLOCK, 2);
      assert.equal(abi.FsyncFlags.FDATASYNC, 1);
      assert.equal(abi.LkFlags.FLOCK, 1);
      assert.equal(abi.WriteFlags.LOCKOWNER, 2);
      assert.equal(abi.WriteFlags.KILL_PRIV, abi.WriteFlags.KILL_SUIDGID);
      assert.equal(abi.ReadFlags.LOCKOWNER, 2);
      assert.equal(abi.GetattrFlags.FH, 1);
      assert.equal(abi.SetupmappingFlags.WRITE, 1n);
      assert.equal(abi.SetupmappingFlags.READ, 2n);
      assert.deepEqual({ ...abi.RenameFlags }, { NOREPLACE: 1, EXCHANGE: 2, WHITEOUT: 4 });
      assert.equal(abi.ExtType.MAX_NR_SECCTX, 31);
      assert.equal(abi.ExtType.GROUPS, 32);
      assert.ok(Object.isFrozen(abi.InitFlags));
    });
  });

  describe('directory entries', () => {
    it('direntSize pads to 8 bytes', () => {
      assert.equal(abi.direntSize(0), 24);
      assert.equal(abi.direntSize(1), 32);
      assert.equal(abi.direntSize(8), 32);
      assert.equal(abi.direntSize(9), 40);
      assert.equal(abi.direntSize(255), 280);
      assert.equal(abi.direntSize(0xffff_ffff), 0x1_0000_0018); // no 32-bit wrap
      assert.equal(abi.recAlign(0), 0);
      assert.equal(abi.direntplusSize(1), 160);
      assert.equal(abi.direntplusSize(8), 160);
      assert.equal(abi.direntplusSize(9), 168);
    });

    it('encodes a dirent with zeroed padding', () => {
      const buf = Buffer.alloc(48, 0xee);
      const d: abi.Dirent = {
        ino: big(80),
        off: 3n,
        type: abi.direntTypeFromMode(0o40755),
        name: Buffer.from('abc'),
      };
      assert.equal(abi.encodeDirent(buf, 0, d), 32);
      assert.equal(buf.readBigUInt64LE(0), d.ino);
      assert.equal(buf.readBigUInt64LE(8), 3n);
      assert.equal(buf.readUInt32LE(16), 3); // namelen
      assert.equal(buf.readUInt32LE(20), 4); // DT_DIR
      assert.equal(buf.subarray(24, 32).toString('hex'), '6162630000000000');
      assert.equal(buf[32], 0xee);
      const back = abi.decodeDirent(buf, 0);
      assert.deepEqual({ ...back, name: back.name.toString() }, { ...d, name: 'abc' });
    });

    it('lays out entries back to back', () => {
      const names = ['.', '..', 'a-rather-long-name', 'exactly8'];
      const buf = Buffer.alloc(256);
      let p = 0;
      names.forEach((n, i) => {
        p += abi.encodeDirent(buf, p, {
          ino: BigInt(i + 1),
          off: BigInt(i + 1),
          type: 8,
          name: Buffer.from(n),
        });
        assert.equal(p % 8, 0);
      });
      let q = 0;
      for (const n of names) {
        const d = abi.decodeDirent(buf, q);
        assert.equal(d.name.toString(), n);
        q += abi.direntSize(d.name.length);
      }
      assert.equal(q, p);
    });

    it('encodes a direntplus: entry_out then dirent, name at 152', () => {
      const buf = Buffer.alloc(200, 0xee);
      const d: abi.Direntplus = {
        entryOut: { ...entryOut, nodeid: 0n },
        dirent: { ino: attr.ino, off: 1n, type: 4, name: Buffer.from('.') },
      };
      assert.equal(abi.encodeDirentplus(buf, 0, d), 160);
      assert.equal(buf.readBigUInt64LE(0), 0n);
      assert.deepEqual(abi.decodeAttr(buf, 40), entryOut.attr);
      assert.equal(buf.readBigUInt64LE(128), attr.ino);
      assert.equal(buf.readUInt32LE(144), 1);
      assert.equal(buf.subarray(152, 160).toString('hex'), '2e00000000000000');
      assert.equal(buf[160], 0xee);
      const back = abi.decodeDirentplus(buf, 0);
      assert.deepEqual(back.entryOut, d.entryOut);
      assert.equal(back.dirent.name.toString(), '.');
    });

    it('refuses truncated entries and small buffers', () => {
      const buf = Buffer.alloc(32);
      abi.encodeDirent(buf, 0, { ino: 1n, off: 1n, type: 8, name: Buffer.from('abc') });
      assert.throws(() => abi.decodeDirent(buf.subarray(0, 31), 0), abi.FuseAbiError);
      assert.throws(() => abi.decodeDirent(buf.subarray(0, 20), 0), abi.FuseAbiError);
      buf.writeUInt32LE(0xffff_ffff, 16); // namelen
      assert.throws(() => abi.decodeDirent(buf, 0), abi.FuseAbiError);
      const abc: abi.Dirent = { ino: 1n, off: 1n, type: 8, name: Buffer.from('abc') };
      assert.throws(() => abi.encodeDirent(Buffer.alloc(31), 0, abc), abi.FuseAbiError);
      assert.throws(() => abi.decodeDirentplus(Buffer.alloc(151), 0), abi.FuseAbiError);
    });
  });

  describe('readCString', () => {
    const buf = Buffer.from('old\0new\0tail', 'latin1');

    it('reads consecutive names', () => {
      const a = abi.readCString(buf, 0);
      assert.equal(a.value.toString(), 'old');
      assert.equal(a.next, 4);
      const b = abi.readCString(buf, a.next);
      assert.equal(b.value.toString(), 'new');
      assert.equal(b.next, 8);
    });

    it('accepts an empty string', () => {
      assert.deepEqual(abi.readCString(Buffer.from([0]), 0), { value: Buffer.alloc(0), next: 1 });
    });

    it('rejects a missing NUL', () => {
      assert.throws(() => abi.readCString(buf, 8), abi.FuseAbiError);
      assert.throws(() => abi.readCString(buf, 0, 3), abi.FuseAbiError); // NUL just past end
      assert.throws(() => abi.readCString(Buffer.alloc(0), 0), abi.FuseAbiError);
    });

    it('rejects bad ranges', () => {
      assert.throws(() => abi.readCString(buf, -1), abi.FuseAbiError);
      assert.throws(() => abi.readCString(buf, 5, 4), abi.FuseAbiError);
      assert.throws(() => abi.readCString(buf, 0, buf.length + 1), abi.FuseAbiError);
      assert.throws(() => abi.readCString(buf, buf.length + 1), abi.FuseAbiError);
    });
  });

  describe('request extensions', () => {
    // A supplementary-group extension (size 16: header, nr_groups = 1, one gid, pad) after
    // an empty security context header (size 8, nr_secctx = 0).
    function area(): Buffer {
      const buf = Buffer.alloc(24);
      abi.encodeSecctxHeader(buf, 0, { size: 8, nrSecctx: 0 });
      abi.encodeExtHeader(buf, 8, { size: 16, type: abi.ExtType.GROUPS });
      abi.encodeSuppGroups(buf, 16, { groups: [1234] });
      return buf;
    }

    it('splits the extension area', () => {
      const exts = abi.parseExtensions(area(), 0, 24);
      assert.equal(exts.length, 2);
      assert.equal(exts[0].type, 0);
      assert.equal(exts[0].data.length, 0);
      assert.equal(exts[1].type, abi.ExtType.GROUPS);
      assert.deepEqual(abi.decodeSuppGroups(exts[1].data, 0), { groups: [1234] });
      assert.deepEqual(abi.parseExtensions(area(), 24, 0), []);
    });

    it('rejects malformed extension headers', () => {
      const bad = (mutate: (b: Buffer) => void, len = 24): void => {
        const b = area();
        mutate(b);
        assert.throws(() => abi.parseExtensions(b, 0, len), abi.FuseAbiError);
      };
      bad(() => undefined, 20); // trailing partial header
      bad(() => undefined, 28); // area past the buffer
      bad((b) => b.writeUInt32LE(0, 8)); // size 0 would loop forever
      bad((b) => b.writeUInt32LE(12, 8)); // not a multiple of 8
      bad((b) => b.writeUInt32LE(24, 8)); // past the area
    });

    it('supplementary groups: size and bounds', () => {
      assert.equal(abi.suppGroupsSize(0), 4);
      assert.equal(abi.suppGroupsSize(3), 16);
      const buf = Buffer.alloc(16);
      assert.equal(abi.encodeSuppGroups(buf, 0, { groups: [1, 0xffff_fffe, 3] }), 16);
      assert.deepEqual(abi.decodeSuppGroups(buf, 0), { groups: [1, 0xffff_fffe, 3] });
      assert.throws(() => abi.decodeSuppGroups(buf.subarray(0, 15), 0), abi.FuseAbiError);
      buf.writeUInt32LE(0xffff_ffff, 0);
      assert.throws(() => abi.decodeSuppGroups(buf, 0), abi.FuseAbiError);
      const one = { groups: [1] };
      assert.throws(() => abi.encodeSuppGroups(Buffer.alloc(7), 0, one), abi.FuseAbiError);
    });
  });
});
