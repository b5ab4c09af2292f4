/**
 * The FUSE server: decodes a request, dispatches it to the Filesystem and encodes the reply
 * (Linux include/uapi/linux/fuse.h, protocol 7.38). It knows nothing of virtqueues: it
 * works on a FuseTransfer, two byte streams (request in, reply out) that a descriptor chain
 * or a /dev/fuse buffer can provide. Bulk data (READ, WRITE) moves as guest ranges between
 * the file and the transfer's memory, never through a JS buffer.
 *
 * Malformed requests (short, lengths that disagree, names without NUL) get EINVAL, never an
 * exception out of handle().
 */
import type { GuestRanges } from '../native';
import type { Logger } from '../log';
import * as abi from './abi';
import { E, errnoOf, FsError, type Attributes, type Context, type Entry, type Filesystem } from './filesystem';

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
}

/** Largest request we copy into JS (header, args, names, xattr values); WRITE data stays put. */
const MAX_IN_COPY = 64 * 1024 + 8192;

/** Our protocol version. */
export const OUR_MINOR = abi.FUSE_KERNEL_MINOR_VERSION;

/** Per-opcode request counters, for tests and the exit report. */
export type OpcodeCounts = Map<number, number>;

export class FuseServer {
  private readonly inBuf = Buffer.alloc(MAX_IN_COPY);
  private readonly outBuf = Buffer.alloc(8192);
  private minor = 0;
  readonly counts: OpcodeCounts = new Map();

  constructor(
    private readonly fs: Filesystem,
    private readonly log: Logger,
  ) {}

  /** Serves one request; returns the number of reply bytes written (0: no reply). */
  handle(t: FuseTransfer): number {
    if (t.readableLen < abi.IN_HEADER_SIZE) {
      this.log.warn({ len: t.readableLen }, 'FUSE request shorter than its header; dropped');
      return 0;
    }
    t.read(this.inBuf, 0, abi.IN_HEADER_SIZE);
    const h = abi.decodeInHeader(this.inBuf, 0);
    this.counts.set(h.opcode, (this.counts.get(h.opcode) ?? 0) + 1);
    const ctx: Context = { uid: h.uid, gid: h.gid, pid: h.pid };
    if (h.len < abi.IN_HEADER_SIZE || h.len > t.readableLen) {
      this.log.warn({ opcode: h.opcode, len: h.len, have: t.readableLen }, 'FUSE request length disagrees with its buffer');
      return this.error(t, h.unique, E.EINVAL, h.opcode);
    }
    // Args end where the header says; WRITE leaves its data in place for pwritev.
    const argLen = h.opcode === abi.Opcode.WRITE ? Math.min(abi.WRITE_IN_SIZE, h.len - abi.IN_HEADER_SIZE) : h.len - abi.IN_HEADER_SIZE;
    if (argLen > MAX_IN_COPY) return this.error(t, h.unique, E.E2BIG, h.opcode);
    t.read(this.inBuf, 0, argLen);
    const args = this.inBuf.subarray(0, argLen);
    try {
      return this.dispatch(t, h, ctx, args);
    } catch (e) {
      const errno = e instanceof abi.FuseAbiError ? E.EINVAL : errnoOf(e);
      if (errno === E.EIO && !(e instanceof FsError)) this.log.error({ err: e, opcode: abi.opcodeName(h.opcode) }, 'request failed');
      if (h.opcode === abi.Opcode.FORGET || h.opcode === abi.Opcode.BATCH_FORGET) return 0;
      return this.error(t, h.unique, errno, h.opcode);
    }
  }

  private dispatch(t: FuseTransfer, h: abi.InHeader, ctx: Context, a: Buffer): number {
    const fs = this.fs;
    const nodeid = Number(h.nodeid);
    switch (h.opcode as abi.Opcode) {
      case abi.Opcode.INIT:
        return this.init(t, h, a);
      case abi.Opcode.DESTROY:
        fs.destroy();
        return this.ok(t, h.unique, 0);
      case abi.Opcode.FORGET:
        fs.forget(nodeid, Number(abi.decodeForgetIn(a, 0).nlookup));
        return 0;
      case abi.Opcode.BATCH_FORGET: {
        const { count } = abi.decodeBatchForgetIn(a, 0);
        for (let i = 0; i < count; i++) {
          const one = abi.decodeForgetOne(a, abi.BATCH_FORGET_IN_SIZE + i * abi.FORGET_ONE_SIZE);
          fs.forget(Number(one.nodeid), Number(one.nlookup));
        }
        return 0;
      }
      case abi.Opcode.LOOKUP: {
        const name = abi.readCString(a, 0).value;
        return this.entry(t, h.unique, fs.lookup(ctx, nodeid, name));
      }
      case abi.Opcode.GETATTR: {
        const g = a.length >= abi.GETATTR_IN_SIZE ? abi.decodeGetattrIn(a, 0) : { getattrFlags: 0, fh: 0n };
        const fh = g.getattrFlags & abi.GetattrFlags.FH ? Number(g.fh) : null;
        const r = fs.getattr(ctx, nodeid, fh);
        const o = this.outBuf;
        o.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + abi.ATTR_OUT_SIZE);
        writeTimeout(o, abi.OUT_HEADER_SIZE, r.attrTimeout);
        writeAttr(o, abi.OUT_HEADER_SIZE + 16, r.attr);
        return this.ok(t, h.unique, abi.ATTR_OUT_SIZE);
      }
      case abi.Opcode.OPEN:
      case abi.Opcode.OPENDIR: {
        const o = abi.decodeOpenIn(a, 0);
        const r = h.opcode === abi.Opcode.OPEN ? fs.open(ctx, nodeid, o.flags) : fs.opendir(ctx, nodeid, o.flags);
        const out = this.outBuf;
        out.fill(0, abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + abi.OPEN_OUT_SIZE);
        out.writeBigUInt64LE(BigInt(r.fh), abi.OUT_HEADER_SIZE);
        out.writeUInt32LE(r.openFlags, abi.OUT_HEADER_SIZE + 8);
        return this.ok(t, h.unique, abi.OPEN_OUT_SIZE);
      }
      case abi.Opcode.READ: {
        const r = abi.decodeReadIn(a, 0);
        const room = t.writableLen - abi.OUT_HEADER_SIZE;
        if (room < 0) return 0;
        const size = Math.min(r.size, room);
        const n = fs.read(ctx, nodeid, Number(r.fh), Number(r.offset), size, t.writeRanges(abi.OUT_HEADER_SIZE, size));
        return this.header(t, h.unique, 0, n);
      }
      case abi.Opcode.FLUSH: {
        const f = abi.decodeFlushIn(a, 0);
        fs.flush(ctx, nodeid, Number(f.fh), f.lockOwner);
        return this.ok(t, h.unique, 0);
      }
      case abi.Opcode.RELEASE:
      case abi.Opcode.RELEASEDIR: {
        const r = abi.decodeReleaseIn(a, 0);
        if (h.opcode === abi.Opcode.RELEASE) fs.release(ctx, nodeid, Number(r.fh));
        else fs.releasedir(ctx, nodeid, Number(r.fh));
        return this.ok(t, h.unique, 0);
      }
      case abi.Opcode.STATFS: {
        const s = fs.statfs(ctx, nodeid);
        const o = this.outBuf;
        abi.encodeStatfsOut(o, abi.OUT_HEADER_SIZE, {
          st: {
            blocks: BigInt(s.blocks), bfree: BigInt(s.bfree), bavail: BigInt(s.bavail), files: BigInt(s.files),
            ffree: BigInt(s.ffree), bsize: s.bsize, namelen: s.namelen, frsize: s.frsize,
          },
        });
        return this.ok(t, h.unique, abi.STATFS_OUT_SIZE);
      }
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
    const offered = abi.initInFlags(i);
    const want = this.fs.init(offered);
    let flags = want.flags & offered;
    if ((flags >> 32n) !== 0n) flags |= abi.InitFlags.INIT_EXT;
    const { flags: lo, flags2 } = abi.splitInitFlags(flags & (offered | abi.InitFlags.INIT_EXT));
    this.minor = Math.min(i.minor, OUR_MINOR);
    const size = this.minor < 5 ? 8 : this.minor < 23 ? 24 : abi.INIT_OUT_SIZE;
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
      mapAlignment: 0,
      flags2,
      maxStackDepth: 0,
    });
    this.log.info({ kernel: `${i.major}.${i.minor}`, flags: `0x${flags.toString(16)}` }, 'FUSE session started');
    return this.ok(t, h.unique, size);
  }

  private entry(t: FuseTransfer, unique: bigint, e: Entry): number {
    const o = this.outBuf;
    const b = abi.OUT_HEADER_SIZE;
    o.fill(0, b, b + abi.ENTRY_OUT_SIZE);
    o.writeBigUInt64LE(BigInt(e.nodeid), b);
    o.writeBigUInt64LE(BigInt(e.generation), b + 8);
    writeTimeout(o, b + 16, e.entryTimeout);
    writeTimeout(o, b + 24, e.attrTimeout);
    o.writeUInt32LE(nsecOf(e.entryTimeout), b + 32);
    o.writeUInt32LE(nsecOf(e.attrTimeout), b + 36);
    writeAttr(o, b + 40, e.attr);
    return this.ok(t, unique, abi.ENTRY_OUT_SIZE);
  }

  /** Writes outBuf[0, 16+bodyLen) (header filled here) into the reply. */
  private ok(t: FuseTransfer, unique: bigint, bodyLen: number): number {
    const len = abi.OUT_HEADER_SIZE + bodyLen;
    if (t.writableLen < len) {
      this.log.warn({ need: len, have: t.writableLen }, 'reply does not fit the request\'s reply buffer');
      return this.error(t, unique, E.EINVAL, 0);
    }
    abi.encodeOutHeader(this.outBuf, 0, { len, error: 0, unique });
    t.writeAt(0, this.outBuf, 0, len);
    return len;
  }

  /** Writes a header for a body already placed in the reply (READ). */
  private header(t: FuseTransfer, unique: bigint, error: number, bodyLen: number): number {
    const len = abi.OUT_HEADER_SIZE + bodyLen;
    const hb = Buffer.allocUnsafe(abi.OUT_HEADER_SIZE);
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

function writeTimeout(b: Buffer, off: number, seconds: number): void {
  b.writeBigUInt64LE(BigInt(Math.floor(seconds)), off);
}

function nsecOf(seconds: number): number {
  return Math.round((seconds - Math.floor(seconds)) * 1e9);
}

function writeAttr(b: Buffer, off: number, a: Attributes): void {
  b.writeBigUInt64LE(BigInt(a.ino), off);
  b.writeBigUInt64LE(BigInt(a.size), off + 8);
  b.writeBigUInt64LE(BigInt(a.blocks), off + 16);
  b.writeBigInt64LE(BigInt(a.atime), off + 24);
  b.writeBigInt64LE(BigInt(a.mtime), off + 32);
  b.writeBigInt64LE(BigInt(a.ctime), off + 40);
  b.writeUInt32LE(a.atimeNsec, off + 48);
  b.writeUInt32LE(a.mtimeNsec, off + 52);
  b.writeUInt32LE(a.ctimeNsec, off + 56);
  b.writeUInt32LE(a.mode, off + 60);
  b.writeUInt32LE(a.nlink, off + 64);
  b.writeUInt32LE(a.uid, off + 68);
  b.writeUInt32LE(a.gid, off + 72);
  b.writeUInt32LE(a.rdev, off + 76);
  b.writeUInt32LE(a.blksize, off + 80);
  b.writeUInt32LE(0, off + 84);
}
