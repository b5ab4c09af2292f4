/**
 * The FUSE server: decodes a request, dispatches it to the Filesystem and encodes the reply
 * (Linux include/uapi/linux/fuse.h, protocol 7.38). It knows nothing of virtqueues: it
 * works on a FuseTransfer, two byte streams (request in, reply out) that a descriptor chain
 * or a /dev/fuse buffer can provide. Bulk data (READ, WRITE) moves as guest ranges between
 * the file and the transfer's memory, never through a JS buffer; everything else is copied
 * through this server's scratch buffers (one server per thread).
 *
 * Malformed requests (short, lengths that disagree, names without NUL) get EINVAL, never an
 * exception out of handle(). Requests without a reply (FORGET, BATCH_FORGET, INTERRUPT)
 * return 0 bytes. A SETLKW that must wait resolves later (handle() returns a Promise) and
 * holds no thread meanwhile.
 */
import { REPLIED_BY_POOL, type GuestRanges, type PoolReplied, type Vring } from '../native';
import type { Logger } from '../log';
import * as abi from './abi';
import {
  E, errnoOf, FsError, type Attributes, type Context, type CreateReply, type Entry, type Filesystem,
  type OpenReply, type XattrReply,
} from './filesystem';

/** The two byte streams of one request (DescriptorChain implements this). */
export interface FuseTransfer {
  readonly readableLen: number;
  readonly readableLeft: number;
  readonly writableLen: number;
  read(dst: Buffer, dstOff: number, n: number): number;
  /** The next n request bytes as guest ranges (WRITE data), advancing past them. */
  readRanges(n: number): GuestRanges;
  writeAt(pos: number, src: Buffer, srcOff: number, n: number): number;
  /** Reply bytes [pos, pos+n) as guest ranges (READ data). */
  writeRanges(pos: number, n: number): GuestRanges;
  /** The virtqueue the request came on and its chain's head, when it came on one. */
  readonly ring?: Vring | null;
  readonly head?: number;
}

/** Largest request we copy into JS (header, args, names, xattr values); WRITE data stays put. */
const MAX_IN_COPY = 64 * 1024 + 8192;
/** Largest reply body built in JS (directory listings, xattr values and lists, link targets). */
const MAX_OUT_BODY = 128 * 1024;

/** The largest file offset (off_t); the kernel refuses a transfer beyond it with EINVAL. */
const MAX_OFFSET = (1n << 63n) - 1n;
/** The most one read, write or copy moves in Linux (INT_MAX rounded down to a page). */
const MAX_RW_COUNT = 0x7ffff000;
/** The largest integer a JS number holds exactly (2^53 - 1). */
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * A node id or file handle the guest sent, as a JS number. Ours are small sequence numbers,
 * so one past 2^53 names nothing we handed out: EBADF (a double would round it into another).
 */
function idOf(v: bigint): number {
  if (v > MAX_SAFE) throw new FsError(E.EBADF);
  return Number(v);
}

/**
 * An offset, length, size or time the guest sent, as a JS number; past 2^53, EOVERFLOW (a
 * value too large for the type JS carries it in) rather than a rounded one. The fast path
 * serves READ, WRITE, FALLOCATE, LSEEK and COPY_FILE_RANGE offsets over the whole 64-bit
 * range; what reaches JS with such a value: a SETATTR of a size or time past 2^53
 * (attributes travel as doubles), a COPY_FILE_RANGE of 4 GiB or more, FALLOCATE and
 * COPY_FILE_RANGE on a queue without a kick thread, and every request at --log-level=trace.
 */
function numberOf(v: bigint): number {
  if (v > MAX_SAFE || v < -MAX_SAFE) throw new FsError(E.EOVERFLOW);
  return Number(v);
}

/** A FORGET's count: past 2^53 it is more than any node holds, so all of them. */
function lookupsOf(v: bigint): number {
  return v > MAX_SAFE ? Number.MAX_SAFE_INTEGER : Number(v);
}

/** A lock's range must lie in [0, OFFSET_MAX], as fcntl's does (the kernel never sends one past). */
function checkLockRange(lk: abi.FileLock): void {
  if (lk.start > MAX_OFFSET || lk.end > MAX_OFFSET) throw new FsError(E.EINVAL);
}

/** Our protocol version. */
export const OUR_MINOR = abi.FUSE_KERNEL_MINOR_VERSION;

/** Per-opcode request counters, for tests and the exit report. */
export type OpcodeCounts = Map<number, number>;
/** The key under which OpcodeCounts counts every opcode it does not know. */
export const UNKNOWN_OPCODES = -1;

const FATTR_SIZE = 1 << 3;
const FATTR_ATIME = 1 << 4;
const FATTR_MTIME = 1 << 5;
const FATTR_FH = 1 << 6;
/** The requests the kernel expects no reply to. */
const NO_REPLY: ReadonlySet<number> = new Set([abi.Opcode.FORGET, abi.Opcode.BATCH_FORGET, abi.Opcode.INTERRUPT]);

/**
 * The reply bodies of fixed size, by opcode: a request whose reply buffer cannot hold its
 * reply gets EINVAL before anything is done, not after (a CREATE or OPEN would leave a
 * handle open that the guest never learns of, a LOOKUP or MKDIR a count on the node).
 */
const FIXED_REPLY: ReadonlyMap<number, number> = (() => {
  const O = abi.Opcode;
  const m = new Map<number, number>();
  for (const op of [O.LOOKUP, O.MKNOD, O.MKDIR, O.SYMLINK, O.LINK]) m.set(op, abi.ENTRY_OUT_SIZE);
  for (const op of [O.CREATE, O.TMPFILE]) m.set(op, abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
  for (const op of [O.OPEN, O.OPENDIR]) m.set(op, abi.OPEN_OUT_SIZE);
  for (const op of [O.GETATTR, O.SETATTR]) m.set(op, abi.ATTR_OUT_SIZE);
  for (const op of [O.WRITE, O.COPY_FILE_RANGE]) m.set(op, abi.WRITE_OUT_SIZE);
  m.set(O.STATX, abi.STATX_OUT_SIZE);
  m.set(O.STATFS, abi.STATFS_OUT_SIZE);
  m.set(O.LSEEK, abi.LSEEK_OUT_SIZE);
  m.set(O.GETLK, abi.LK_OUT_SIZE);
  return m;
})();

/** The requests that make a file, and may carry its security context (FUSE_SECURITY_CTX). */
const CREATING: ReadonlySet<number> = new Set([abi.Opcode.CREATE, abi.Opcode.MKNOD, abi.Opcode.MKDIR, abi.Opcode.SYMLINK, abi.Opcode.TMPFILE]);

export class FuseServer {
  private readonly inBuf = Buffer.alloc(MAX_IN_COPY);
  private readonly outBuf = Buffer.alloc(abi.OUT_HEADER_SIZE + MAX_OUT_BODY);
  /** Header of a reply whose body is already in guest memory (copied out at once, so shared). */
  private readonly headerBuf = Buffer.alloc(abi.OUT_HEADER_SIZE);
  readonly counts: OpcodeCounts = new Map();
  /** Requests without a session are logged once per server (a guest may send many). */
  private warnedNoSession = false;

  constructor(
    private readonly fs: Filesystem,
    private readonly log: Logger,
  ) {}

  /** The queue stops: requests still waiting give up (they complete with EINTR). */
  cancelWaits(): void {
    this.fs.cancelWaits();
  }

  /**
   * Serves one request; returns the number of reply bytes written (0: no reply), or
   * REPLIED_BY_POOL when the I/O pool took the request and replies itself.
   */
  handle(t: FuseTransfer): number | Promise<number> | PoolReplied {
    if (t.readableLen < abi.IN_HEADER_SIZE) {
      this.log.warn({ len: t.readableLen }, 'FUSE request shorter than its header; dropped');
      return 0;
    }
    t.read(this.inBuf, 0, abi.IN_HEADER_SIZE);
    const h = abi.decodeInHeader(this.inBuf, 0);
    // Opcodes this server does not know share one count: a guest sending every u32 would
    // otherwise grow the map without bound.
    const counted = abi.Opcode[h.opcode] !== undefined ? h.opcode : UNKNOWN_OPCODES;
    this.counts.set(counted, (this.counts.get(counted) ?? 0) + 1);
    const ctx: Context = { uid: h.uid, gid: h.gid, pid: h.pid };
    if (h.len < abi.IN_HEADER_SIZE || h.len > t.readableLen) {
      this.log.warn({ opcode: h.opcode, len: h.len, have: t.readableLen }, 'FUSE request length disagrees with its buffer');
      return this.error(t, h.unique, E.EINVAL, h.opcode);
    }
    if (h.opcode !== abi.Opcode.INIT && !this.fs.sessionStarted) {
      if (NO_REPLY.has(h.opcode)) return 0;
      if (!this.warnedNoSession) {
        this.warnedNoSession = true;
        this.log.warn({ opcode: abi.opcodeName(h.opcode) }, 'FUSE request before INIT or after DESTROY: EIO (logged once)');
      }
      return this.error(t, h.unique, E.EIO, h.opcode);
    }
    const fixed = FIXED_REPLY.get(h.opcode);
    if (t.writableLen < abi.OUT_HEADER_SIZE + (fixed ?? 0) && !NO_REPLY.has(h.opcode)) {
      this.log.warn({ opcode: abi.opcodeName(h.opcode), need: abi.OUT_HEADER_SIZE + (fixed ?? 0), have: t.writableLen }, "reply does not fit the request's reply buffer; not done");
      return this.error(t, h.unique, E.EINVAL, h.opcode);
    }
    // Args end where the header says; WRITE leaves its data in place for pwritev.
    const argLen = h.opcode === abi.Opcode.WRITE ? Math.min(abi.WRITE_IN_SIZE, h.len - abi.IN_HEADER_SIZE) : h.len - abi.IN_HEADER_SIZE;
    if (argLen > MAX_IN_COPY) return this.error(t, h.unique, E.E2BIG, h.opcode);
    t.read(this.inBuf, 0, argLen);
    const args = this.inBuf.subarray(0, argLen);
    try {
      const r = this.dispatch(t, h, ctx, args);
      if (typeof r === 'number' || r === REPLIED_BY_POOL) return r;
      return r.catch((e: unknown) => this.failed(t, h, e));
    } catch (e) {
      return this.failed(t, h, e);
    }
  }

  private failed(t: FuseTransfer, h: abi.InHeader, e: unknown): number {
    const errno = e instanceof abi.FuseAbiError ? E.EINVAL : errnoOf(e);
    if (errno === E.EIO && !(e instanceof FsError)) this.log.error({ err: e, opcode: abi.opcodeName(h.opcode) }, 'request failed');
    if (NO_REPLY.has(h.opcode)) return 0;
    return this.error(t, h.unique, errno, h.opcode);
  }

  /** Offers READ, WRITE and FSYNC replies of `replyLen` header bytes to the I/O pool. */
  private poolReply(t: FuseTransfer, ctx: Context, unique: bigint, replyLen: number): void {
    if (t.ring && t.head !== undefined && this.fs.replyOnPool && t.writableLen >= replyLen) {
      ctx.reply = { ring: t.ring, head: t.head, unique, header: t.writeRanges(0, replyLen) };
    }
  }

  private dispatch(t: FuseTransfer, h: abi.InHeader, ctx: Context, a: Buffer): number | Promise<number> | PoolReplied {
    const fs = this.fs;
    // INIT carries no node; any other request naming one past 2^53 gets EBADF.
    const nodeid = h.opcode === abi.Opcode.INIT ? 0 : idOf(h.nodeid);
    const u = h.unique;
    const O = abi.Opcode;
    if (h.totalExtlen > 0 && CREATING.has(h.opcode)) ctx.securityContext = abi.securityContextOf(a, h.totalExtlen) ?? undefined;
    switch (h.opcode as abi.Opcode) {
      case O.INIT:
        return this.init(t, h, a);
      case O.DESTROY:
        fs.destroy();
        return this.ok(t, u, 0);
      case O.FORGET:
        fs.forget(nodeid, lookupsOf(abi.decodeForgetIn(a, 0).nlookup));
        return 0;
      case O.BATCH_FORGET: {
        const { count } = abi.decodeBatchForgetIn(a, 0);
        if (abi.BATCH_FORGET_IN_SIZE + count * abi.FORGET_ONE_SIZE > a.length) throw new abi.FuseAbiError('BATCH_FORGET count past its buffer');
        for (let i = 0; i < count; i++) {
          const one = abi.decodeForgetOne(a, abi.BATCH_FORGET_IN_SIZE + i * abi.FORGET_ONE_SIZE);
          if (one.nodeid <= MAX_SAFE) fs.forget(Number(one.nodeid), lookupsOf(one.nlookup));
        }
        return 0;
      }
      case O.INTERRUPT:
        // virtio-fs guests do not send it; every request here completes on its own.
        return 0;
      case O.LOOKUP:
        return this.entry(t, u, fs.lookup(ctx, nodeid, name(a, 0)));
      case O.GETATTR: {
        const g = a.length >= abi.GETATTR_IN_SIZE ? abi.decodeGetattrIn(a, 0) : { getattrFlags: 0, fh: 0n };
        const fh = g.getattrFlags & abi.GetattrFlags.FH ? idOf(g.fh) : null;
        return this.attr(t, u, fs.getattr(ctx, nodeid, fh));
      }
      case O.STATX: {
        const x = abi.decodeStatxIn(a, 0);
        const fh = x.getattrFlags & abi.GetattrFlags.FH ? idOf(x.fh) : null;
        const r = fs.statx(ctx, nodeid, fh, x.sxMask);
        const at = r.attr;
        const sx = (sec: number, nsec: number): abi.SxTime => ({ tvSec: BigInt(sec), tvNsec: nsec });
        this.outBuf.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + abi.STATX_OUT_SIZE);
        abi.encodeStatxOut(this.outBuf, abi.OUT_HEADER_SIZE, {
          attrValid: BigInt(Math.floor(r.attrTimeout)),
          attrValidNsec: nsecOf(r.attrTimeout),
          flags: 0,
          stat: {
            mask: r.mask, blksize: at.blksize, attributes: 0n, nlink: at.nlink, uid: at.uid, gid: at.gid, mode: at.mode & 0xffff,
            ino: at.ino, size: BigInt(at.size), blocks: BigInt(at.blocks), attributesMask: 0n,
            atime: sx(at.atime, at.atimeNsec), btime: sx(r.btime, r.btimeNsec), ctime: sx(at.ctime, at.ctimeNsec), mtime: sx(at.mtime, at.mtimeNsec),
            rdevMajor: (at.rdev >>> 8) & 0xfff, rdevMinor: (at.rdev & 0xff) | ((at.rdev >>> 12) & 0xfff00),
            devMajor: r.devMajor, devMinor: r.devMinor,
          },
        });
        return this.ok(t, u, abi.STATX_OUT_SIZE);
      }
      case O.SETATTR: {
        const s = abi.decodeSetattrIn(a, 0);
        return this.attr(
          t,
          u,
          fs.setattr(ctx, nodeid, {
            valid: s.valid,
            fh: s.valid & FATTR_FH ? idOf(s.fh) : 0,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            size: s.valid & FATTR_SIZE ? numberOf(s.size) : 0,
            atime: s.valid & FATTR_ATIME ? numberOf(s.atime) : 0,
            atimeNsec: s.atimensec,
            mtime: s.valid & FATTR_MTIME ? numberOf(s.mtime) : 0,
            mtimeNsec: s.mtimensec,
          }),
        );
      }
      case O.READLINK:
        return this.body(t, u, fs.readlink(ctx, nodeid));
      case O.SYMLINK: {
        const n = name(a, 0);
        const target = abi.readCString(a, n.length + 1).value;
        return this.entry(t, u, fs.symlink(ctx, nodeid, n, target));
      }
      case O.MKNOD: {
        const m = abi.decodeMknodIn(a, 0);
        return this.entry(t, u, fs.mknod(ctx, nodeid, name(a, abi.MKNOD_IN_SIZE), m.mode, m.rdev, m.umask));
      }
      case O.MKDIR: {
        const m = abi.decodeMkdirIn(a, 0);
        return this.entry(t, u, fs.mkdir(ctx, nodeid, name(a, abi.MKDIR_IN_SIZE), m.mode, m.umask));
      }
      case O.UNLINK:
        fs.unlink(ctx, nodeid, name(a, 0));
        return this.ok(t, u, 0);
      case O.RMDIR:
        fs.rmdir(ctx, nodeid, name(a, 0));
        return this.ok(t, u, 0);
      case O.RENAME:
      case O.RENAME2: {
        const two = h.opcode === O.RENAME2;
        const r = two ? abi.decodeRename2In(a, 0) : { ...abi.decodeRenameIn(a, 0), flags: 0 };
        const at = two ? abi.RENAME2_IN_SIZE : abi.RENAME_IN_SIZE;
        const oldName = name(a, at);
        const newName = name(a, at + oldName.length + 1);
        fs.rename(ctx, nodeid, oldName, idOf(r.newdir), newName, r.flags);
        return this.ok(t, u, 0);
      }
      case O.LINK: {
        const l = abi.decodeLinkIn(a, 0);
        return this.entry(t, u, fs.link(ctx, idOf(l.oldnodeid), nodeid, name(a, abi.LINK_IN_SIZE)));
      }
      case O.OPEN:
      case O.OPENDIR: {
        const o = abi.decodeOpenIn(a, 0);
        return this.open(t, u, h.opcode === O.OPEN ? fs.open(ctx, nodeid, o.flags, o.openFlags) : fs.opendir(ctx, nodeid, o.flags));
      }
      case O.CREATE: {
        const c = abi.decodeCreateIn(a, 0);
        return this.created(t, u, fs.create(ctx, nodeid, name(a, abi.CREATE_IN_SIZE), c.flags, c.mode, c.openFlags, c.umask));
      }
      case O.TMPFILE: {
        const c = abi.decodeCreateIn(a, 0);
        return this.created(t, u, fs.tmpfile(ctx, nodeid, c.flags, c.mode, c.umask));
      }
      case O.READ: {
        const r = abi.decodeReadIn(a, 0);
        if (r.offset > MAX_OFFSET) return this.error(t, u, E.EINVAL, h.opcode);
        const room = t.writableLen - abi.OUT_HEADER_SIZE;
        if (room < 0) return 0;
        const size = Math.min(r.size, room);
        this.poolReply(t, ctx, u, abi.OUT_HEADER_SIZE);
        const n = fs.read(ctx, nodeid, idOf(r.fh), numberOf(r.offset), size, t.writeRanges(abi.OUT_HEADER_SIZE, size));
        if (n === REPLIED_BY_POOL) return n;
        if (typeof n !== 'number') return n.then((got) => this.header(t, u, 0, got));
        return this.header(t, u, 0, n);
      }
      case O.WRITE: {
        const w = abi.decodeWriteIn(a, 0);
        if (w.offset > MAX_OFFSET) return this.error(t, u, E.EINVAL, h.opcode);
        // The data is what the header's length leaves after the arguments (and is in the buffers).
        const carried = Math.min(t.readableLeft, h.len - abi.IN_HEADER_SIZE - abi.WRITE_IN_SIZE);
        if (w.size > carried) throw new abi.FuseAbiError(`WRITE of ${w.size} bytes with ${carried} in the request`);
        this.poolReply(t, ctx, u, abi.OUT_HEADER_SIZE + abi.WRITE_OUT_SIZE);
        const n = fs.write(ctx, nodeid, idOf(w.fh), numberOf(w.offset), t.readRanges(w.size), w.writeFlags);
        if (n === REPLIED_BY_POOL) return n;
        const done = (wrote: number): number => {
          abi.encodeWriteOut(this.outBuf, abi.OUT_HEADER_SIZE, { size: wrote });
          return this.ok(t, u, abi.WRITE_OUT_SIZE);
        };
        return typeof n === 'number' ? done(n) : n.then(done);
      }
      case O.FLUSH: {
        const f = abi.decodeFlushIn(a, 0);
        // The handle is not used (the owner's locks on the node go), so any value will do.
        fs.flush(ctx, nodeid, f.fh > MAX_SAFE ? 0 : Number(f.fh), f.lockOwner);
        return this.ok(t, u, 0);
      }
      case O.RELEASE:
      case O.RELEASEDIR: {
        const r = abi.decodeReleaseIn(a, 0);
        if (h.opcode === O.RELEASE) fs.release(ctx, nodeid, idOf(r.fh), r.releaseFlags, r.lockOwner);
        else fs.releasedir(ctx, nodeid, idOf(r.fh));
        return this.ok(t, u, 0);
      }
      case O.FSYNC:
      case O.FSYNCDIR: {
        const f = abi.decodeFsyncIn(a, 0);
        const datasync = (f.fsyncFlags & abi.FsyncFlags.FDATASYNC) !== 0;
        this.poolReply(t, ctx, u, abi.OUT_HEADER_SIZE);
        const r = h.opcode === O.FSYNC ? fs.fsync(ctx, nodeid, idOf(f.fh), datasync) : fs.fsyncdir(ctx, nodeid, idOf(f.fh), datasync);
        if (r === REPLIED_BY_POOL) return r;
        if (r instanceof Promise) return r.then(() => this.ok(t, u, 0));
        return this.ok(t, u, 0);
      }
      case O.READDIR:
      case O.READDIRPLUS: {
        const r = abi.decodeReadIn(a, 0);
        const size = Math.max(0, Math.min(r.size, t.writableLen - abi.OUT_HEADER_SIZE, MAX_OUT_BODY));
        const out = this.outBuf.subarray(abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + size);
        const n = fs.readdir(ctx, nodeid, idOf(r.fh), r.offset, out, h.opcode === O.READDIRPLUS);
        return this.ok(t, u, n);
      }
      case O.STATFS: {
        const s = fs.statfs(ctx, nodeid);
        abi.encodeStatfsOut(this.outBuf, abi.OUT_HEADER_SIZE, {
          st: {
            blocks: BigInt(s.blocks), bfree: BigInt(s.bfree), bavail: BigInt(s.bavail), files: BigInt(s.files),
            ffree: BigInt(s.ffree), bsize: s.bsize, namelen: s.namelen, frsize: s.frsize,
          },
        });
        return this.ok(t, u, abi.STATFS_OUT_SIZE);
      }
      case O.ACCESS:
        fs.access(ctx, nodeid, abi.decodeAccessIn(a, 0).mask);
        return this.ok(t, u, 0);
      case O.SETXATTR: {
        // 16 bytes with FUSE_SETXATTR_EXT (asked for with POSIX ACLs), else the 8-byte layout.
        const ext = fs.setxattrExtended;
        const x = abi.decodeSetxattrIn(a, 0, ext);
        const n = name(a, abi.setxattrInSize(ext));
        const at = abi.setxattrInSize(ext) + n.length + 1;
        if (at + x.size > a.length) throw new abi.FuseAbiError('SETXATTR value past its request');
        fs.setxattr(ctx, nodeid, n, a.subarray(at, at + x.size), x.flags, x.setxattrFlags);
        return this.ok(t, u, 0);
      }
      case O.GETXATTR: {
        const g = abi.decodeGetxattrIn(a, 0);
        return this.xattr(t, u, fs.getxattr(ctx, nodeid, name(a, abi.GETXATTR_IN_SIZE), g.size));
      }
      case O.LISTXATTR:
        return this.xattr(t, u, fs.listxattr(ctx, nodeid, abi.decodeGetxattrIn(a, 0).size));
      case O.REMOVEXATTR:
        fs.removexattr(ctx, nodeid, name(a, 0));
        return this.ok(t, u, 0);
      case O.FALLOCATE: {
        const f = abi.decodeFallocateIn(a, 0);
        const r = fs.fallocate(ctx, nodeid, idOf(f.fh), numberOf(f.offset), numberOf(f.length), f.mode);
        return r instanceof Promise ? r.then(() => this.ok(t, u, 0)) : this.ok(t, u, 0);
      }
      case O.LSEEK: {
        const l = abi.decodeLseekIn(a, 0);
        const off = fs.lseek(ctx, nodeid, idOf(l.fh), numberOf(l.offset), l.whence);
        abi.encodeLseekOut(this.outBuf, abi.OUT_HEADER_SIZE, { offset: BigInt(off) });
        return this.ok(t, u, abi.LSEEK_OUT_SIZE);
      }
      case O.COPY_FILE_RANGE: {
        const c = abi.decodeCopyFileRangeIn(a, 0);
        // No flag is defined (copy_file_range(2) refuses any): past 32 bits the native call
        // would see only the low ones.
        if (c.flags > 0xffffffffn) throw new FsError(E.EINVAL);
        // At most what one call may move (Linux's MAX_RW_COUNT), so that the count fits the
        // reply's 32 bits whatever the host file system copies at once.
        const len = Math.min(numberOf(c.len), MAX_RW_COUNT);
        const n = fs.copyFileRange(ctx, idOf(c.fhIn), numberOf(c.offIn), idOf(c.fhOut), numberOf(c.offOut), len, Number(c.flags));
        const done = (copied: number): number => {
          abi.encodeWriteOut(this.outBuf, abi.OUT_HEADER_SIZE, { size: copied });
          return this.ok(t, u, abi.WRITE_OUT_SIZE);
        };
        return typeof n === 'number' ? done(n) : n.then(done);
      }
      case O.SETUPMAPPING: {
        const m = abi.decodeSetupmappingIn(a, 0);
        // Linux sends fh -1 (the file is the request's node); flags: READ 2, WRITE 1.
        const write = (m.flags & abi.SetupmappingFlags.WRITE) !== 0n;
        return fs.setupMapping(ctx, nodeid, numberOf(m.foffset), numberOf(m.len), numberOf(m.moffset), write).then(() => this.ok(t, u, 0));
      }
      case O.REMOVEMAPPING: {
        const { count } = abi.decodeRemovemappingIn(a, 0);
        // Bounded by what the request carries only: a guest with 64 KiB pages sends up to 4096.
        if (count === 0 || a.length < abi.REMOVEMAPPING_IN_SIZE + count * abi.REMOVEMAPPING_ONE_SIZE) {
          throw new FsError(E.EINVAL);
        }
        const ranges = [];
        for (let i = 0; i < count; i++) {
          const r = abi.decodeRemovemappingOne(a, abi.REMOVEMAPPING_IN_SIZE + i * abi.REMOVEMAPPING_ONE_SIZE);
          ranges.push({ moffset: numberOf(r.moffset), len: numberOf(r.len) });
        }
        return fs.removeMapping(ctx, ranges).then(() => this.ok(t, u, 0));
      }
      case O.SYNCFS: {
        const r = fs.syncfs(ctx, nodeid);
        return r instanceof Promise ? r.then(() => this.ok(t, u, 0)) : this.ok(t, u, 0);
      }
      case O.GETLK: {
        const l = abi.decodeLkIn(a, 0);
        checkLockRange(l.lk);
        const r = fs.getlk(ctx, nodeid, idOf(l.fh), l.owner, l.lk);
        abi.encodeLkOut(this.outBuf, abi.OUT_HEADER_SIZE, { lk: r });
        return this.ok(t, u, abi.LK_OUT_SIZE);
      }
      case O.SETLK:
      case O.SETLKW: {
        const l = abi.decodeLkIn(a, 0);
        const flock = (l.lkFlags & abi.LkFlags.FLOCK) !== 0;
        if (!flock) checkLockRange(l.lk);
        if (this.log.isLevelEnabled('trace')) {
          this.log.trace({ op: abi.opcodeName(h.opcode), nodeid, owner: l.owner.toString(16), type: l.lk.type, start: String(l.lk.start), end: String(l.lk.end), flock }, 'lock request');
        }
        const r = fs.setlk(ctx, nodeid, idOf(l.fh), l.owner, l.lk, flock, h.opcode === O.SETLKW);
        if (r instanceof Promise) return r.then(() => this.ok(t, u, 0));
        return this.ok(t, u, 0);
      }
      case O.IOCTL:
        // No ioctl is passed through to host files: the answer a file without them gives.
        throw new FsError(E.ENOTTY);
      default:
        throw new FsError(E.ENOSYS);
    }
  }

  private init(t: FuseTransfer, h: abi.InHeader, a: Buffer): number {
    const i = abi.decodeInitIn(a, 0);
    const o = this.outBuf;
    if (i.major < 7) return this.error(t, h.unique, E.EPROTO, h.opcode);
    if (i.major > 7) {
      // The kernel retries with our major version when we answer with it.
      o.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + 8);
      o.writeUInt32LE(abi.FUSE_KERNEL_VERSION, abi.OUT_HEADER_SIZE);
      o.writeUInt32LE(OUR_MINOR, abi.OUT_HEADER_SIZE + 4);
      return this.ok(t, h.unique, 8);
    }
    const minor = Math.min(i.minor, OUR_MINOR);
    const size = minor < 5 ? 8 : minor < 23 ? 24 : abi.INIT_OUT_SIZE;
    // Refused before the session is touched (fs.init ends the last one).
    if (t.writableLen < abi.OUT_HEADER_SIZE + size) return this.ok(t, h.unique, size);
    const offered = abi.initInFlags(i);
    const want = this.fs.init(offered);
    let flags = want.flags & offered;
    if ((flags >> 32n) !== 0n) flags |= abi.InitFlags.INIT_EXT;
    const { flags: lo, flags2 } = abi.splitInitFlags(flags & (offered | abi.InitFlags.INIT_EXT));
    o.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + abi.INIT_OUT_SIZE);
    abi.encodeInitOut(o, abi.OUT_HEADER_SIZE, {
      major: abi.FUSE_KERNEL_VERSION,
      minor: OUR_MINOR,
      maxReadahead: i.maxReadahead,
      flags: lo,
      maxBackground: 256,
      congestionThreshold: 192,
      maxWrite: want.maxWrite,
      timeGran: want.timeGran,
      maxPages: want.maxPages,
      mapAlignment: want.mapAlignment ?? 0,
      flags2,
      maxStackDepth: 0,
    });
    this.log.info({ kernel: `${i.major}.${i.minor}`, flags: `0x${flags.toString(16)}` }, 'FUSE session started');
    return this.ok(t, h.unique, size);
  }

  private entry(t: FuseTransfer, unique: bigint, e: Entry): number {
    encodeEntry(this.outBuf, abi.OUT_HEADER_SIZE, e);
    return this.ok(t, unique, abi.ENTRY_OUT_SIZE);
  }

  private attr(t: FuseTransfer, unique: bigint, r: { attr: Attributes; attrTimeout: number }): number {
    const o = this.outBuf;
    const b = abi.OUT_HEADER_SIZE;
    o.fill(0, b, b + abi.ATTR_OUT_SIZE);
    writeTimeout(o, b, r.attrTimeout);
    o.writeUInt32LE(nsecOf(r.attrTimeout), b + 8);
    writeAttr(o, b + 16, r.attr);
    return this.ok(t, unique, abi.ATTR_OUT_SIZE);
  }

  private open(t: FuseTransfer, unique: bigint, r: OpenReply): number {
    const o = this.outBuf;
    o.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + abi.OPEN_OUT_SIZE);
    o.writeBigUInt64LE(BigInt(r.fh), abi.OUT_HEADER_SIZE);
    o.writeUInt32LE(r.openFlags, abi.OUT_HEADER_SIZE + 8);
    return this.ok(t, unique, abi.OPEN_OUT_SIZE);
  }

  private created(t: FuseTransfer, unique: bigint, r: CreateReply): number {
    const o = this.outBuf;
    const b = abi.OUT_HEADER_SIZE;
    encodeEntry(o, b, r.entry);
    o.fill(0, b + abi.ENTRY_OUT_SIZE, b + abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
    o.writeBigUInt64LE(BigInt(r.open.fh), b + abi.ENTRY_OUT_SIZE);
    o.writeUInt32LE(r.open.openFlags, b + abi.ENTRY_OUT_SIZE + 8);
    return this.ok(t, unique, abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
  }

  private xattr(t: FuseTransfer, unique: bigint, r: XattrReply): number {
    if ('size' in r) {
      this.outBuf.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + abi.GETXATTR_OUT_SIZE);
      this.outBuf.writeUInt32LE(r.size, abi.OUT_HEADER_SIZE);
      return this.ok(t, unique, abi.GETXATTR_OUT_SIZE);
    }
    return this.body(t, unique, r.value);
  }

  /** A reply whose body is a buffer (link targets, xattr values). */
  private body(t: FuseTransfer, unique: bigint, b: Buffer): number {
    if (b.length > MAX_OUT_BODY) throw new FsError(E.ERANGE);
    if (b.buffer !== this.outBuf.buffer || b.byteOffset !== this.outBuf.byteOffset + abi.OUT_HEADER_SIZE) {
      b.copy(this.outBuf, abi.OUT_HEADER_SIZE);
    }
    return this.ok(t, unique, b.length);
  }

  /** Writes outBuf[0, 16+bodyLen) (header filled here) into the reply. */
  private ok(t: FuseTransfer, unique: bigint, bodyLen: number): number {
    const len = abi.OUT_HEADER_SIZE + bodyLen;
    if (t.writableLen < len) {
      this.log.warn({ need: len, have: t.writableLen }, "reply does not fit the request's reply buffer");
      return this.error(t, unique, E.EINVAL, 0);
    }
    abi.encodeOutHeader(this.outBuf, 0, { len, error: 0, unique });
    t.writeAt(0, this.outBuf, 0, len);
    return len;
  }

  /** Writes a header for a body already placed in the reply (READ), or an empty one. */
  private header(t: FuseTransfer, unique: bigint, error: number, bodyLen: number): number {
    const len = abi.OUT_HEADER_SIZE + bodyLen;
    const hb = this.headerBuf;
    abi.encodeOutHeader(hb, 0, { len, error, unique });
    t.writeAt(0, hb, 0, abi.OUT_HEADER_SIZE);
    return len;
  }

  private error(t: FuseTransfer, unique: bigint, errno: number, opcode: number): number {
    if (t.writableLen < abi.OUT_HEADER_SIZE) return 0;
    if (errno === E.ENOSYS) this.log.debug({ opcode: abi.opcodeName(opcode) }, 'not implemented');
    return this.header(t, unique, -errno, 0);
  }
}

/** A NUL-terminated name at off of the request's args. */
function name(a: Buffer, off: number): Buffer {
  return abi.readCString(a, off).value;
}

/**
 * A u64 field from a JS number (a safe integer >= 0) as two 32-bit halves: no BigInt on the
 * reply path (a reply of attributes would otherwise allocate a dozen of them).
 */
function writeU64(b: Buffer, off: number, x: number): void {
  b.writeUInt32LE(x >>> 0, off);
  b.writeUInt32LE(Math.floor(x / 4294967296) >>> 0, off + 4);
}

/** An i64 field (timestamps may be negative). */
function writeI64(b: Buffer, off: number, x: number): void {
  if (x >= 0) writeU64(b, off, x);
  else b.writeBigInt64LE(BigInt(x), off);
}

function writeTimeout(b: Buffer, off: number, seconds: number): void {
  writeU64(b, off, Math.floor(seconds));
}

function nsecOf(seconds: number): number {
  return Math.round((seconds - Math.floor(seconds)) * 1e9);
}

function encodeEntry(o: Buffer, b: number, e: Entry): void {
  o.fill(0, b, b + abi.ENTRY_OUT_SIZE);
  writeU64(o, b, e.nodeid);
  writeU64(o, b + 8, e.generation);
  writeTimeout(o, b + 16, e.entryTimeout);
  writeTimeout(o, b + 24, e.attrTimeout);
  o.writeUInt32LE(nsecOf(e.entryTimeout), b + 32);
  o.writeUInt32LE(nsecOf(e.attrTimeout), b + 36);
  writeAttr(o, b + 40, e.attr);
}

function writeAttr(b: Buffer, off: number, a: Attributes): void {
  b.writeBigUInt64LE(a.ino, off);
  writeU64(b, off + 8, a.size);
  writeU64(b, off + 16, a.blocks);
  writeI64(b, off + 24, a.atime);
  writeI64(b, off + 32, a.mtime);
  writeI64(b, off + 40, a.ctime);
  b.writeUInt32LE(a.atimeNsec, off + 48);
  b.writeUInt32LE(a.mtimeNsec, off + 52);
  b.writeUInt32LE(a.ctimeNsec, off + 56);
  b.writeUInt32LE(a.mode, off + 60);
  b.writeUInt32LE(a.nlink, off + 64);
  b.writeUInt32LE(a.uid, off + 68);
  b.writeUInt32LE(a.gid, off + 72);
  b.writeUInt32LE(a.rdev, off + 76);
  b.writeUInt32LE(a.blksize, off + 80);
  b.writeUInt32LE(a.flags ?? 0, off + 84);
}

