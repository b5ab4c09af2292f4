/**
 * vhost-user wire format: request codes, flags, feature bits and payload codecs, named as in
 * QEMU's docs/interop/vhost-user.rst ("Message types", "Protocol features"). Both our
 * backend and our test front end use these codecs. All integers are little-endian (host
 * order on x86_64); u64 guest addresses are carried as JS numbers and rejected above 2^53.
 */

export const HEADER_SIZE = 12;
/** Largest payload any request we know carries (GET_SHMEM_CONFIG reply: 8 + 256 * 8). */
export const MAX_PAYLOAD = 4096;
export const MAX_FDS = 8;

export enum FrontendReq {
  GET_FEATURES = 1,
  SET_FEATURES = 2,
  SET_OWNER = 3,
  RESET_OWNER = 4,
  SET_MEM_TABLE = 5,
  SET_LOG_BASE = 6,
  SET_LOG_FD = 7,
  SET_VRING_NUM = 8,
  SET_VRING_ADDR = 9,
  SET_VRING_BASE = 10,
  GET_VRING_BASE = 11,
  SET_VRING_KICK = 12,
  SET_VRING_CALL = 13,
  SET_VRING_ERR = 14,
  GET_PROTOCOL_FEATURES = 15,
  SET_PROTOCOL_FEATURES = 16,
  GET_QUEUE_NUM = 17,
  SET_VRING_ENABLE = 18,
  SEND_RARP = 19,
  NET_SET_MTU = 20,
  SET_BACKEND_REQ_FD = 21,
  IOTLB_MSG = 22,
  SET_VRING_ENDIAN = 23,
  GET_CONFIG = 24,
  SET_CONFIG = 25,
  CREATE_CRYPTO_SESSION = 26,
  CLOSE_CRYPTO_SESSION = 27,
  POSTCOPY_ADVISE = 28,
  POSTCOPY_LISTEN = 29,
  POSTCOPY_END = 30,
  GET_INFLIGHT_FD = 31,
  SET_INFLIGHT_FD = 32,
  GPU_SET_SOCKET = 33,
  RESET_DEVICE = 34,
  VRING_KICK = 35,
  GET_MAX_MEM_SLOTS = 36,
  ADD_MEM_REG = 37,
  REM_MEM_REG = 38,
  SET_STATUS = 39,
  GET_STATUS = 40,
  GET_SHARED_OBJECT = 41,
  SET_DEVICE_STATE_FD = 42,
  CHECK_DEVICE_STATE = 43,
  GET_SHMEM_CONFIG = 44,
}

/** Requests the backend sends on the backend channel (SET_BACKEND_REQ_FD). */
export enum BackendReq {
  IOTLB_MSG = 1,
  CONFIG_CHANGE_MSG = 2,
  VRING_HOST_NOTIFIER_MSG = 3,
  VRING_CALL = 4,
  VRING_ERR = 5,
  SHARED_OBJECT_ADD = 6,
  SHARED_OBJECT_REMOVE = 7,
  SHARED_OBJECT_LOOKUP = 8,
  SHMEM_MAP = 9,
  SHMEM_UNMAP = 10,
}

export const Flags = {
  VERSION: 0x1,
  VERSION_MASK: 0x3,
  REPLY: 0x4,
  NEED_REPLY: 0x8,
} as const;

/** Virtio feature bits (as bit numbers). */
export const VirtioFeature = {
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  VHOST_USER_PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  RING_RESET: 40,
} as const;

/** vhost-user protocol feature bits (as bit numbers). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
  SHMEM: 20,
} as const;

export const bit = (n: number): bigint => 1n << BigInt(n);
export const hasBit = (mask: bigint, n: number): boolean => (mask & bit(n)) !== 0n;

/** Payload of SET_VRING_KICK/CALL/ERR: queue index in bits 0-7, bit 8 set when no fd. */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

export class MessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MessageError';
  }
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export function encodeHeader(h: Header, payloadSize = h.size): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + payloadSize);
  b.writeUInt32LE(h.request, 0);
  b.writeUInt32LE(h.flags, 4);
  b.writeUInt32LE(h.size, 8);
  return b;
}

/** Reads a u64 as a JS number; rejects values above 2^53 (no real address is that large). */
export function readU64(b: Buffer, off: number): number {
  const v = b.readBigUInt64LE(off);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new MessageError(`u64 field at ${off} out of range: ${v}`);
  return Number(v);
}

export function writeU64(b: Buffer, off: number, v: number | bigint): void {
  b.writeBigUInt64LE(BigInt(v), off);
}

// ---- payloads --------------------------------------------------------------------------

export const U64_SIZE = 8;

export interface VringState { index: number; num: number }
export const VRING_STATE_SIZE = 8;
export function decodeVringState(b: Buffer): VringState {
  return { index: b.readUInt32LE(0), num: b.readUInt32LE(4) };
}
export function encodeVringState(v: VringState): Buffer {
  const b = Buffer.alloc(VRING_STATE_SIZE);
  b.writeUInt32LE(v.index, 0);
  b.writeUInt32LE(v.num, 4);
  return b;
}

/** vhost_vring_addr. Note the field order: used before avail. */
export interface VringAddr {
  index: number;
  flags: number;
  desc: number;
  used: number;
  avail: number;
  log: number;
}
export const VRING_ADDR_SIZE = 40;
export const VRING_ADDR_F_LOG = 0x1;

/** VhostUserLog: the SET_LOG_BASE payload (the log's size and its offset in the fd). */
export const LOG_SIZE = 16;
export function decodeLog(b: Buffer): { size: bigint; offset: bigint } {
  return { size: b.readBigUInt64LE(0), offset: b.readBigUInt64LE(8) };
}
export function encodeLog(v: { size: bigint; offset: bigint }): Buffer {
  const b = Buffer.alloc(LOG_SIZE);
  b.writeBigUInt64LE(v.size, 0);
  b.writeBigUInt64LE(v.offset, 8);
  return b;
}
export function decodeVringAddr(b: Buffer): VringAddr {
  return {
    index: b.readUInt32LE(0),
    flags: b.readUInt32LE(4),
    desc: readU64(b, 8),
    used: readU64(b, 16),
    avail: readU64(b, 24),
    log: Number(b.readBigUInt64LE(32) & 0xffffffffffffn),
  };
}
export function encodeVringAddr(v: VringAddr): Buffer {
  const b = Buffer.alloc(VRING_ADDR_SIZE);
  b.writeUInt32LE(v.index, 0);
  b.writeUInt32LE(v.flags, 4);
  writeU64(b, 8, v.desc);
  writeU64(b, 16, v.used);
  writeU64(b, 24, v.avail);
  writeU64(b, 32, v.log);
  return b;
}

/** One region of VhostUserMemory / VhostUserMemRegMsg. */
export interface MemoryRegion {
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}
export const MEMORY_REGION_SIZE = 32;
export const MAX_MEM_REGIONS = 8;

function decodeRegion(b: Buffer, off: number): MemoryRegion {
  return {
    guestPhysAddr: readU64(b, off),
    memorySize: readU64(b, off + 8),
    userspaceAddr: readU64(b, off + 16),
    mmapOffset: readU64(b, off + 24),
  };
}
function encodeRegion(b: Buffer, off: number, r: MemoryRegion): void {
  writeU64(b, off, r.guestPhysAddr);
  writeU64(b, off + 8, r.memorySize);
  writeU64(b, off + 16, r.userspaceAddr);
  writeU64(b, off + 24, r.mmapOffset);
}

/** SET_MEM_TABLE: {nregions u32, padding u32, regions[8]}; QEMU sends only nregions entries. */
export function memoryTableSize(nregions: number): number {
  return 8 + nregions * MEMORY_REGION_SIZE;
}
export function decodeMemoryTable(b: Buffer): MemoryRegion[] {
  if (b.length < 8) throw new MessageError('memory table shorter than its header');
  const n = b.readUInt32LE(0);
  if (n === 0 || n > MAX_MEM_REGIONS) throw new MessageError(`memory table with ${n} regions`);
  if (b.length < memoryTableSize(n)) throw new MessageError(`memory table of ${n} regions in ${b.length} bytes`);
  const out: MemoryRegion[] = [];
  for (let i = 0; i < n; i++) out.push(decodeRegion(b, 8 + i * MEMORY_REGION_SIZE));
  return out;
}
export function encodeMemoryTable(regions: MemoryRegion[]): Buffer {
  const b = Buffer.alloc(memoryTableSize(regions.length));
  b.writeUInt32LE(regions.length, 0);
  regions.forEach((r, i) => encodeRegion(b, 8 + i * MEMORY_REGION_SIZE, r));
  return b;
}

/** ADD_MEM_REG / REM_MEM_REG: {padding u64, region}. */
export const MEM_REG_MSG_SIZE = 8 + MEMORY_REGION_SIZE;
export function decodeMemRegMsg(b: Buffer): MemoryRegion {
  return decodeRegion(b, 8);
}
export function encodeMemRegMsg(r: MemoryRegion): Buffer {
  const b = Buffer.alloc(MEM_REG_MSG_SIZE);
  encodeRegion(b, 8, r);
  return b;
}

/** SHMEM map/unmap on the backend channel: {shmid u8, pad[7], fd_offset, shm_offset, len, flags}. */
export interface ShmemMap {
  shmid: number;
  fdOffset: number;
  shmOffset: number;
  len: number;
  flags: number;
}
export const SHMEM_MAP_SIZE = 40;
export const SHMEM_MAP_F_WRITE = 1;
export function encodeShmemMap(m: ShmemMap): Buffer {
  const b = Buffer.alloc(SHMEM_MAP_SIZE);
  b.writeUInt8(m.shmid, 0);
  writeU64(b, 8, m.fdOffset);
  writeU64(b, 16, m.shmOffset);
  writeU64(b, 24, m.len);
  writeU64(b, 32, m.flags);
  return b;
}
export function decodeShmemMap(b: Buffer): ShmemMap {
  return {
    shmid: b.readUInt8(0),
    fdOffset: readU64(b, 8),
    shmOffset: readU64(b, 16),
    len: readU64(b, 24),
    flags: readU64(b, 32),
  };
}

/** GET_CONFIG / SET_CONFIG: {offset u32, size u32, flags u32, payload[size]}; at most 256 bytes. */
export const CONFIG_HEADER_SIZE = 12;
export const MAX_CONFIG_SIZE = 256;
export interface ConfigRequest {
  offset: number;
  size: number;
  flags: number;
}
export function decodeConfig(b: Buffer): ConfigRequest {
  if (b.length < CONFIG_HEADER_SIZE) throw new RangeError(`config message of ${b.length} bytes, shorter than its header`);
  const c = { offset: b.readUInt32LE(0), size: b.readUInt32LE(4), flags: b.readUInt32LE(8) };
  if (c.size > MAX_CONFIG_SIZE || c.offset > MAX_CONFIG_SIZE - c.size) throw new RangeError(`config range ${c.offset}+${c.size} past ${MAX_CONFIG_SIZE} bytes`);
  return c;
}
/** The GET_CONFIG reply: the request's header and `size` bytes of `space` from `offset` (zeros past its end). */
export function encodeConfig(c: ConfigRequest, space: Buffer): Buffer {
  const b = Buffer.alloc(CONFIG_HEADER_SIZE + c.size);
  b.writeUInt32LE(c.offset, 0);
  b.writeUInt32LE(c.size, 4);
  b.writeUInt32LE(c.flags, 8);
  if (c.offset < space.length) space.copy(b, CONFIG_HEADER_SIZE, c.offset, Math.min(space.length, c.offset + c.size));
  return b;
}

/** GET_SHMEM_CONFIG reply: {nregions u32, padding u32, memory_sizes u64[256]}. */
export const SHMEM_CONFIG_SIZE = 8 + 256 * 8;
export function encodeShmemConfig(sizes: number[]): Buffer {
  const b = Buffer.alloc(SHMEM_CONFIG_SIZE);
  b.writeUInt32LE(sizes.length, 0);
  sizes.forEach((s, i) => writeU64(b, 8 + i * 8, s));
  return b;
}
export function decodeShmemConfig(b: Buffer): number[] {
  const n = b.readUInt32LE(0);
  if (n > 256) throw new MessageError(`shmem config with ${n} regions`);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(readU64(b, 8 + i * 8));
  return out;
}

/** SET_DEVICE_STATE_FD payload: {transfer direction u32, migration phase u32}. */
export const DEVICE_STATE_FD_SIZE = 8;
export enum TransferDirection {
  SAVE = 0,
  LOAD = 1,
}
/** The only migration phase defined: the device is stopped. */
export const PHASE_STOPPED = 0;
/** SET_DEVICE_STATE_FD reply bit: the back end gives no descriptor of its own (the front end's is used). */
export const DEVICE_STATE_NO_FD = 0x100n;
export function decodeDeviceStateFd(p: Buffer): { direction: number; phase: number } {
  return { direction: p.readUInt32LE(0), phase: p.readUInt32LE(4) };
}
export function encodeDeviceStateFd(v: { direction: number; phase: number }): Buffer {
  const b = Buffer.alloc(DEVICE_STATE_FD_SIZE);
  b.writeUInt32LE(v.direction, 0);
  b.writeUInt32LE(v.phase, 4);
  return b;
}

/** Expected payload size (exact) and fd count per front-end request; null size = variable. */
export interface RequestShape {
  size: number | null;
  /** number of fds: exact, or [min, max] */
  fds: number | [number, number];
  /** a reply is always owed (GET_* requests) */
  reply: boolean;
}
export const REQUEST_SHAPES: Partial<Record<FrontendReq, RequestShape>> = {
  [FrontendReq.GET_FEATURES]: { size: 0, fds: 0, reply: true },
  [FrontendReq.SET_FEATURES]: { size: U64_SIZE, fds: 0, reply: false },
  [FrontendReq.SET_OWNER]: { size: 0, fds: 0, reply: false },
  [FrontendReq.RESET_OWNER]: { size: 0, fds: 0, reply: false },
  [FrontendReq.SET_MEM_TABLE]: { size: null, fds: [1, MAX_MEM_REGIONS], reply: false },
  // With LOG_SHMFD the front end waits for a reply (QEMU's vhost_user_set_log_base): a u64.
  [FrontendReq.SET_LOG_BASE]: { size: LOG_SIZE, fds: 1, reply: true },
  [FrontendReq.SET_LOG_FD]: { size: 0, fds: [0, 1], reply: false },
  [FrontendReq.SET_VRING_NUM]: { size: VRING_STATE_SIZE, fds: 0, reply: false },
  [FrontendReq.SET_VRING_ADDR]: { size: VRING_ADDR_SIZE, fds: 0, reply: false },
  [FrontendReq.SET_VRING_BASE]: { size: VRING_STATE_SIZE, fds: 0, reply: false },
  [FrontendReq.GET_VRING_BASE]: { size: VRING_STATE_SIZE, fds: 0, reply: true },
  [FrontendReq.SET_VRING_KICK]: { size: U64_SIZE, fds: [0, 1], reply: false },
  [FrontendReq.SET_VRING_CALL]: { size: U64_SIZE, fds: [0, 1], reply: false },
  [FrontendReq.SET_VRING_ERR]: { size: U64_SIZE, fds: [0, 1], reply: false },
  [FrontendReq.GET_PROTOCOL_FEATURES]: { size: 0, fds: 0, reply: true },
  [FrontendReq.SET_PROTOCOL_FEATURES]: { size: U64_SIZE, fds: 0, reply: false },
  [FrontendReq.GET_QUEUE_NUM]: { size: 0, fds: 0, reply: true },
  [FrontendReq.SET_VRING_ENABLE]: { size: VRING_STATE_SIZE, fds: 0, reply: false },
  [FrontendReq.SET_BACKEND_REQ_FD]: { size: 0, fds: 1, reply: false },
  [FrontendReq.RESET_DEVICE]: { size: 0, fds: 0, reply: false },
  [FrontendReq.GET_MAX_MEM_SLOTS]: { size: 0, fds: 0, reply: true },
  [FrontendReq.ADD_MEM_REG]: { size: MEM_REG_MSG_SIZE, fds: 1, reply: false },
  [FrontendReq.REM_MEM_REG]: { size: MEM_REG_MSG_SIZE, fds: [0, 1], reply: false },
  [FrontendReq.SET_STATUS]: { size: U64_SIZE, fds: 0, reply: false },
  [FrontendReq.GET_STATUS]: { size: 0, fds: 0, reply: true },
  [FrontendReq.GET_SHMEM_CONFIG]: { size: 0, fds: 0, reply: true },
  [FrontendReq.GET_CONFIG]: { size: null, fds: 0, reply: true },
  [FrontendReq.SET_CONFIG]: { size: null, fds: 0, reply: false },
  // Both answer with a u64 that can say no (an error code in its low byte).
  [FrontendReq.SET_DEVICE_STATE_FD]: { size: DEVICE_STATE_FD_SIZE, fds: 1, reply: true },
  [FrontendReq.CHECK_DEVICE_STATE]: { size: 0, fds: 0, reply: true },
};

/** Checks a received message against its request's shape; returns a reason, or null if fine. */
export function checkShape(request: number, size: number, nfds: number): string | null {
  const shape = REQUEST_SHAPES[request as FrontendReq];
  if (!shape) return `unknown request ${request}`;
  if (shape.size !== null && size !== shape.size) {
    return `${FrontendReq[request]} with payload ${size} bytes, expected ${shape.size}`;
  }
  const [lo, hi] = typeof shape.fds === 'number' ? [shape.fds, shape.fds] : shape.fds;
  if (nfds < lo || nfds > hi) return `${FrontendReq[request]} with ${nfds} fds, expected ${lo === hi ? lo : `${lo}-${hi}`}`;
  return null;
}

/** A received message, as MessageReader assembles it (message-reader.ts). */
export interface ReceivedMessage {
  request: number;
  flags: number;
  size: number;
  /** null when size exceeded the reader's maximum: the stream is no longer trustworthy. */
  payload: Buffer | null;
  fds: number[];
  truncatedFds: boolean;
}
