/**
 * A FUSE client over virtio-fs queues, playing the guest kernel's fs/fuse/virtio_fs.c part
 * for tests and benchmarks. Wire structs come from src/fuse/abi.ts (Linux
 * include/uapi/linux/fuse.h).
 *
 * A request is a chain of device-readable buffers (fuse_in_header, then the op's input,
 * then any data) followed by device-writable ones (fuse_out_header, then room for the
 * reply). With the default 'linux' layout each of those parts is its own descriptor, as
 * virtio_fs.c builds them, and the chain goes in an indirect table when INDIRECT_DESC is
 * negotiated (Linux uses one whenever a chain has more than one descriptor). Replies are
 * matched by head id; any number of requests may be outstanding (queue depth N), and
 * requests beyond the ring's free descriptors wait in FIFO order.
 *
 * FORGET and BATCH_FORGET go to the hiprio queue (0), have no reply, and complete when the
 * device returns the chain (used length 0).
 */
import { constants as osConstants } from 'node:os';
import * as abi from '../../src/fuse/abi';
import { VirtioFeature } from '../../src/vhost/messages';
import type { FrontendQueue, VhostUserFrontend } from './frontend';
import type { GuestBuffer, GuestMemory } from './guest-memory';
import type { Segment, UsedElem } from './vring';

/** What Debian's 6.1 guest kernel sends in FUSE_INIT (see PROTOCOL.md). */
export const LINUX_6_1_INIT = Object.freeze({
  major: 7,
  minor: 38,
  maxReadahead: 131072,
  flags: 0x7bfffffb,
  flags2: 0xb,
});

export type ChainLayout = 'linux' | 'single';
export type IndirectPolicy = 'auto' | 'always' | 'never';

export interface FuseClientOptions {
  /** Request queue index (default 1). */
  queue?: number;
  /** Hiprio queue index (default 0). */
  hiprioQueue?: number;
  uid?: number;
  gid?: number;
  pid?: number;
  /** Per-request timeout (default: the queue's, 10 s). */
  timeoutMs?: number;
  /** 'linux': header, op input, data, out header, reply each a descriptor; 'single': one readable + one writable. */
  layout?: ChainLayout;
  /** Split data and reply payloads into descriptors of this many bytes (e.g. 4096, like pages). */
  dataSegment?: number;
  /** 'auto' (default): indirect when negotiated and the chain has > 1 descriptor, as Linux. */
  indirect?: IndirectPolicy;
  /** Throw FuseProtocolError on malformed replies (default true). */
  strict?: boolean;
  /**
   * Zero each reply buffer before the request goes out (default true), so that bytes the
   * device never wrote read as zeros. The benchmark turns it off: a 1 MiB READ would cost
   * the front end a 1 MiB memset per request.
   */
  zeroReplies?: boolean;
}

export interface RequestOptions {
  timeoutMs?: number;
  /** fuse_in_header.total_extlen: the last this many 8-byte units of `args` are extensions. */
  totalExtlen?: number;
  /** Use this queue instead of the client's request queue. */
  queue?: number;
  /** fuse_in_header.len as sent, when not the request's true length (malformed-request tests). */
  headerLen?: number;
  /**
   * The reply body is a view of guest memory instead of a copy, valid only until a later
   * request reuses that memory. For the benchmark: a fresh 1 MiB copy per READ costs the
   * front end page faults that would swamp the daemon's own time.
   */
  borrowBody?: boolean;
}

export interface FuseReply {
  /** 0 or a negative errno (fuse_out_header.error). */
  error: number;
  unique: bigint;
  /** fuse_out_header.len, which the guest trusts. */
  len: number;
  /** Length the device reported in the used ring. */
  usedLen: number;
  /** The reply after the out header: out.len - 16 bytes (clamped to the room we gave). */
  body: Buffer;
  head: number;
}

export interface FuseResult<T> {
  error: number;
  /** Decoded reply when error is 0. */
  value: T | null;
  reply: FuseReply;
}

export class FuseProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FuseProtocolError';
  }
}

/** A FUSE request answered with an error, thrown by ok(). */
export class FuseReplyError extends Error {
  readonly errno: number;
  readonly code: string;
  constructor(what: string, error: number) {
    const code = errnoName(-error);
    super(`${what} failed: ${code} (${error})`);
    this.name = 'FuseReplyError';
    this.errno = -error;
    this.code = code;
  }
}

const ERRNO_NAMES = new Map<number, string>();
for (const [k, v] of Object.entries(osConstants.errno)) if (!ERRNO_NAMES.has(v)) ERRNO_NAMES.set(v, k);
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `errno ${errno}`;
}

/** The value of a successful result; throws FuseReplyError otherwise. */
export function ok<T>(r: FuseResult<T>, what = 'request'): T {
  if (r.error !== 0) throw new FuseReplyError(what, r.error);
  return r.value as T;
}

/** A copy of b zero-padded to at least n bytes (replies of older, shorter layouts). */
function padTo(b: Buffer, n: number): Buffer {
  if (b.length >= n) return b;
  const out = Buffer.alloc(n);
  b.copy(out);
  return out;
}

function big(n: bigint | number): bigint {
  return typeof n === 'bigint' ? n : BigInt(n);
}

export class FuseClient {
  readonly frontend: VhostUserFrontend;
  readonly mem: GuestMemory;
  readonly options: Required<Omit<FuseClientOptions, 'timeoutMs' | 'dataSegment'>> &
    Pick<FuseClientOptions, 'timeoutMs' | 'dataSegment'>;
  /** INIT reply once init() succeeded. */
  initOut: abi.InitOut | null = null;
  /** Negotiated max_write (4096 until INIT says otherwise, as the kernel assumes). */
  maxWrite = 4096;
  private uniqueCounter = 0n;

  constructor(frontend: VhostUserFrontend, opts: FuseClientOptions = {}) {
    if (!frontend.memory) throw new FuseProtocolError('FuseClient needs a negotiated front end');
    this.frontend = frontend;
    this.mem = frontend.memory;
    this.options = {
      queue: opts.queue ?? 1,
      hiprioQueue: opts.hiprioQueue ?? 0,
      uid: opts.uid ?? 0,
      gid: opts.gid ?? 0,
      pid: opts.pid ?? process.pid,
      layout: opts.layout ?? 'linux',
      indirect: opts.indirect ?? 'auto',
      strict: opts.strict ?? true,
      zeroReplies: opts.zeroReplies ?? true,
      timeoutMs: opts.timeoutMs,
      dataSegment: opts.dataSegment,
    };
    frontend.queue(this.options.queue);
    frontend.queue(this.options.hiprioQueue);
  }

  /** Next unique id; Linux steps by 2 (FUSE_REQ_ID_STEP), the low bit marks interrupts. */
  nextUnique(): bigint {
    this.uniqueCounter += 2n;
    return this.uniqueCounter;
  }

  private useIndirect(ndesc: number): boolean {
    switch (this.options.indirect) {
      case 'always':
        return true;
      case 'never':
        return false;
      default:
        return ndesc > 1 && this.frontend.hasFeature(VirtioFeature.RING_INDIRECT_DESC);
    }
  }

  private segments(b: GuestBuffer, start: number, len: number, split: number | undefined): Segment[] {
    if (len === 0) return [];
    if (!split || split >= len) return [{ gpa: b.gpa + start, len }];
    const out: Segment[] = [];
    for (let o = 0; o < len; o += split) out.push({ gpa: b.gpa + start + o, len: Math.min(split, len - o) });
    return out;
  }

  private writeHeader(buf: Buffer, opcode: number, nodeid: bigint, unique: bigint, len: number, totalExtlen = 0): void {
    abi.encodeInHeader(buf, 0, {
      len,
      opcode,
      unique,
      nodeid,
      uid: this.options.uid,
      gid: this.options.gid,
      pid: this.options.pid,
      totalExtlen,
    });
  }

  /**
   * Sends one request and waits for its reply. `args` is the op input (names included),
   * `dataOut` bulk data after it (WRITE), `replyCapacity` the room after the out header.
   */
  async request(
    opcode: number,
    nodeid: bigint | number,
    args: Buffer,
    replyCapacity: number,
    dataOut?: Buffer,
    opts: RequestOptions = {},
  ): Promise<FuseReply> {
    const q = this.frontend.queue(opts.queue ?? this.options.queue);
    const unique = this.nextUnique();
    const data = dataOut ?? Buffer.alloc(0);
    const inLen = abi.IN_HEADER_SIZE + args.length + data.length;
    // Header, arguments and data fill the request buffer whole: no need to zero it.
    const rd = this.mem.alloc(inLen, 64, undefined, false);
    this.writeHeader(rd.buf, opcode, big(nodeid), unique, opts.headerLen ?? inLen, opts.totalExtlen);
    args.copy(rd.buf, abi.IN_HEADER_SIZE);
    data.copy(rd.buf, abi.IN_HEADER_SIZE + args.length);
    const outLen = abi.OUT_HEADER_SIZE + replyCapacity;
    const wr = this.mem.alloc(outLen, 64, undefined, this.options.zeroReplies);
    let readable: Segment[];
    let writable: Segment[];
    if (this.options.layout === 'single') {
      readable = [{ gpa: rd.gpa, len: inLen }];
      writable = [{ gpa: wr.gpa, len: outLen }];
    } else {
      readable = [
        { gpa: rd.gpa, len: abi.IN_HEADER_SIZE },
        ...this.segments(rd, abi.IN_HEADER_SIZE, args.length, undefined),
        ...this.segments(rd, abi.IN_HEADER_SIZE + args.length, data.length, this.options.dataSegment),
      ];
      writable = [
        { gpa: wr.gpa, len: abi.OUT_HEADER_SIZE },
        ...this.segments(wr, abi.OUT_HEADER_SIZE, replyCapacity, this.options.dataSegment),
      ];
    }
    const label = `FUSE ${abi.opcodeName(opcode)} unique ${unique}`;
    // On a timeout the device may still own the buffers: they stay allocated (leaked)
    // rather than being reused under its feet.
    const used = await q.submit(readable, writable, {
      label,
      timeoutMs: opts.timeoutMs ?? this.options.timeoutMs,
      indirect: this.useIndirect(readable.length + writable.length),
    });
    try {
      return this.parseReply(label, unique, wr.buf, replyCapacity, used, opts.borrowBody ?? false);
    } finally {
      this.mem.free(rd);
      this.mem.free(wr);
    }
  }

  private parseReply(label: string, unique: bigint, out: Buffer, capacity: number, used: UsedElem, borrow: boolean): FuseReply {
    const h = abi.decodeOutHeader(out, 0);
    const strict = this.options.strict;
    const fail = (why: string): never => {
      throw new FuseProtocolError(`${label}: ${why} (out_header len ${h.len} error ${h.error} unique ${h.unique}, used len ${used.len})`);
    };
    if (strict) {
      if (h.unique !== unique) fail(`reply carries unique ${h.unique}`);
      if (h.len < abi.OUT_HEADER_SIZE) fail('out_header.len shorter than the header');
      if (h.len > abi.OUT_HEADER_SIZE + capacity) fail(`out_header.len exceeds the ${capacity} bytes of room`);
      if (h.error > 0 || h.error < -4095) fail('error is not 0 or a negative errno');
    }
    const bodyLen = Math.max(0, Math.min(h.len, abi.OUT_HEADER_SIZE + capacity) - abi.OUT_HEADER_SIZE);
    const body = out.subarray(abi.OUT_HEADER_SIZE, abi.OUT_HEADER_SIZE + bodyLen);
    return {
      error: h.error,
      unique: h.unique,
      len: h.len,
      usedLen: used.len,
      body: borrow ? body : Buffer.from(body),
      head: used.id,
    };
  }

  /**
   * A request without a reply (FORGET, BATCH_FORGET) on the hiprio queue: one readable
   * descriptor holding header and input, as virtio_fs.c sends it. Resolves with the used
   * element once the device returns the chain.
   */
  async requestNoReply(opcode: number, nodeid: bigint | number, args: Buffer, opts: RequestOptions = {}): Promise<UsedElem> {
    const q: FrontendQueue = this.frontend.queue(opts.queue ?? this.options.hiprioQueue);
    const unique = this.nextUnique();
    const len = abi.IN_HEADER_SIZE + args.length;
    const rd = this.mem.alloc(len, 64);
    this.writeHeader(rd.buf, opcode, big(nodeid), unique, len);
    args.copy(rd.buf, abi.IN_HEADER_SIZE);
    const used = await q.submit([{ gpa: rd.gpa, len }], [], {
      label: `FUSE ${abi.opcodeName(opcode)} unique ${unique}`,
      timeoutMs: opts.timeoutMs ?? this.options.timeoutMs,
    });
    this.mem.free(rd);
    return used;
  }

  private result<T>(reply: FuseReply, size: number, decode: (b: Buffer, off: number) => T): FuseResult<T> {
    if (reply.error !== 0) return { error: reply.error, value: null, reply };
    return { error: 0, value: decode(padTo(reply.body, size), 0), reply };
  }

  // ---- operations -------------------------------------------------------------------

  /** FUSE_INIT as Linux 6.1 sends it (overridable); remembers max_write. */
  async init(over: Partial<abi.InitIn> = {}): Promise<FuseResult<abi.InitOut>> {
    const args = Buffer.alloc(abi.INIT_IN_SIZE);
    abi.encodeInitIn(args, 0, { ...LINUX_6_1_INIT, ...over });
    const reply = await this.request(abi.Opcode.INIT, 0n, args, abi.INIT_OUT_SIZE);
    const r = this.result(reply, abi.INIT_OUT_SIZE, abi.decodeInitOut);
    if (r.value) {
      this.initOut = r.value;
      this.maxWrite = r.value.maxWrite;
    }
    return r;
  }

  async lookup(parent: bigint | number, name: string | Buffer): Promise<FuseResult<abi.EntryOut>> {
    const n = typeof name === 'string' ? Buffer.from(name) : name;
    const args = Buffer.concat([n, Buffer.alloc(1)]);
    const reply = await this.request(abi.Opcode.LOOKUP, parent, args, abi.ENTRY_OUT_SIZE);
    return this.result(reply, abi.ENTRY_OUT_SIZE, abi.decodeEntryOut);
  }

  async getattr(nodeid: bigint | number, fh?: bigint | number): Promise<FuseResult<abi.AttrOut>> {
    const args = Buffer.alloc(abi.GETATTR_IN_SIZE);
    abi.encodeGetattrIn(args, 0, {
      getattrFlags: fh === undefined ? 0 : abi.GetattrFlags.FH,
      fh: fh === undefined ? 0n : big(fh),
    });
    const reply = await this.request(abi.Opcode.GETATTR, nodeid, args, abi.ATTR_OUT_SIZE);
    return this.result(reply, abi.ATTR_OUT_SIZE, abi.decodeAttrOut);
  }

  async open(nodeid: bigint | number, flags: number, opcode: number = abi.Opcode.OPEN): Promise<FuseResult<abi.OpenOut>> {
    const args = Buffer.alloc(abi.OPEN_IN_SIZE);
    abi.encodeOpenIn(args, 0, { flags, openFlags: 0 });
    const reply = await this.request(opcode, nodeid, args, abi.OPEN_OUT_SIZE);
    return this.result(reply, abi.OPEN_OUT_SIZE, abi.decodeOpenOut);
  }

  opendir(nodeid: bigint | number, flags = 0): Promise<FuseResult<abi.OpenOut>> {
    return this.open(nodeid, flags, abi.Opcode.OPENDIR);
  }

  /** READ (or READDIR / READDIRPLUS with opcode): the data read is the value. */
  async read(
    fh: bigint | number,
    offset: bigint | number,
    size: number,
    opts: { flags?: number; nodeid?: bigint | number; opcode?: number } & RequestOptions = {},
  ): Promise<FuseResult<Buffer>> {
    const args = Buffer.alloc(abi.READ_IN_SIZE);
    abi.encodeReadIn(args, 0, { fh: big(fh), offset: big(offset), size, readFlags: 0, lockOwner: 0n, flags: opts.flags ?? 0 });
    const reply = await this.request(opts.opcode ?? abi.Opcode.READ, opts.nodeid ?? 0n, args, size, undefined, opts);
    if (reply.error !== 0) return { error: reply.error, value: null, reply };
    return { error: 0, value: reply.body, reply };
  }

  async write(
    fh: bigint | number,
    offset: bigint | number,
    data: Buffer,
    opts: { flags?: number; nodeid?: bigint | number; writeFlags?: number } & RequestOptions = {},
  ): Promise<FuseResult<abi.WriteOut>> {
    const args = Buffer.alloc(abi.WRITE_IN_SIZE);
    abi.encodeWriteIn(args, 0, {
      fh: big(fh),
      offset: big(offset),
      size: data.length,
      writeFlags: opts.writeFlags ?? 0,
      lockOwner: 0n,
      flags: opts.flags ?? 0,
    });
    const reply = await this.request(abi.Opcode.WRITE, opts.nodeid ?? 0n, args, abi.WRITE_OUT_SIZE, data, opts);
    return this.result(reply, abi.WRITE_OUT_SIZE, abi.decodeWriteOut);
  }

  /** RELEASE (or RELEASEDIR with opcode). */
  async release(
    fh: bigint | number,
    opts: { nodeid?: bigint | number; flags?: number; opcode?: number } = {},
  ): Promise<FuseResult<null>> {
    const args = Buffer.alloc(abi.RELEASE_IN_SIZE);
    abi.encodeReleaseIn(args, 0, { fh: big(fh), flags: opts.flags ?? 0, releaseFlags: 0, lockOwner: 0n });
    const reply = await this.request(opts.opcode ?? abi.Opcode.RELEASE, opts.nodeid ?? 0n, args, 0);
    return { error: reply.error, value: null, reply };
  }

  /** ACCESS of nodeid with mask (R_OK, W_OK, X_OK; 0: that it exists). */
  async access(nodeid: bigint | number = abi.FUSE_ROOT_ID, mask = 0): Promise<FuseResult<null>> {
    const args = Buffer.alloc(abi.ACCESS_IN_SIZE);
    abi.encodeAccessIn(args, 0, { mask });
    const reply = await this.request(abi.Opcode.ACCESS, nodeid, args, 0);
    return { error: reply.error, value: null, reply };
  }

  /**
   * IOCTL of nodeid: a request only the FUSE server in JS serves, which answers ENOTTY (no
   * ioctl is passed through to host files). error is 0 for that answer, and the errno of
   * any other.
   */
  async ioctl(nodeid: bigint | number = abi.FUSE_ROOT_ID): Promise<FuseResult<null>> {
    const reply = await this.request(abi.Opcode.IOCTL, nodeid, Buffer.alloc(abi.IOCTL_IN_SIZE), 0);
    const { ENOTTY, EPROTO } = osConstants.errno;
    return { error: reply.error === -ENOTTY ? 0 : reply.error || -EPROTO, value: null, reply };
  }

  async statfs(nodeid: bigint | number = abi.FUSE_ROOT_ID): Promise<FuseResult<abi.StatfsOut>> {
    const reply = await this.request(abi.Opcode.STATFS, nodeid, Buffer.alloc(0), abi.STATFS_OUT_SIZE);
    return this.result(reply, abi.STATFS_OUT_SIZE, abi.decodeStatfsOut);
  }

  async destroy(): Promise<FuseResult<null>> {
    const reply = await this.request(abi.Opcode.DESTROY, 0n, Buffer.alloc(0), 0);
    return { error: reply.error, value: null, reply };
  }

  /** FORGET on the hiprio queue; resolves with the used element (len should be 0). */
  forget(nodeid: bigint | number, nlookup: bigint | number = 1n): Promise<UsedElem> {
    const args = Buffer.alloc(abi.FORGET_IN_SIZE);
    abi.encodeForgetIn(args, 0, { nlookup: big(nlookup) });
    return this.requestNoReply(abi.Opcode.FORGET, nodeid, args);
  }

  batchForget(entries: Array<{ nodeid: bigint | number; nlookup: bigint | number }>): Promise<UsedElem> {
    const args = Buffer.alloc(abi.BATCH_FORGET_IN_SIZE + entries.length * abi.FORGET_ONE_SIZE);
    abi.encodeBatchForgetIn(args, 0, { count: entries.length });
    entries.forEach((e, i) =>
      abi.encodeForgetOne(args, abi.BATCH_FORGET_IN_SIZE + i * abi.FORGET_ONE_SIZE, {
        nodeid: big(e.nodeid),
        nlookup: big(e.nlookup),
      }),
    );
    return this.requestNoReply(abi.Opcode.BATCH_FORGET, 0n, args);
  }
}
