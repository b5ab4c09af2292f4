/**
 * Driver side of a virtio split virtqueue (virtio 1.2, section 2.7 "Split Virtqueues") over
 * GuestMemory: what the guest kernel's virtio_ring.c does, for our test front end.
 *
 * Layout (as Linux's vring_create_virtqueue_split with VIRTIO_PCI_VRING_ALIGN): descriptor
 * table page aligned, avail ring right after it, used ring aligned to `usedAlign` (4096 by
 * default; the spec minimum is 4). Ordering follows the spec: chain entries and the avail
 * slot are written before avail.idx is published with a release store; used.idx is read with
 * an acquire load before the used entries; a full fence separates publishing avail.idx from
 * reading the device's avail_event / used.flags (the store-load order x86 does not give).
 *
 * Besides the well-behaved path (addChain / publish / needsKick / popUsed) there is a raw
 * layer to write arbitrary descriptors and avail entries for bad-input tests: any
 * addr/len/flags/next, loops, indirect tables inside indirect tables, chains longer than the
 * queue, addresses outside guest memory.
 */
import { native } from '../../src/native';
import { GuestMemory, GuestBuffer } from './guest-memory';

export const VirtqDescFlags = Object.freeze({ NEXT: 1, WRITE: 2, INDIRECT: 4 } as const);
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const DESC_SIZE = 16;
export const USED_ELEM_SIZE = 8;
/** Largest split queue the spec allows. */
export const MAX_QUEUE_SIZE = 32768;

/** One device-visible buffer: a guest-physical range. */
export interface Segment {
  gpa: number;
  len: number;
}

/** A descriptor exactly as it sits in memory; addr may be any u64. */
export interface RawDescriptor {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

export interface UsedElem {
  id: number;
  len: number;
  /** false when id is not the head of a chain this queue made (raw tests, device bugs). */
  known: boolean;
}

export interface VirtqueueOptions {
  /** Queue size: a power of two up to 32768 (virtio-fs backends take up to 1024). */
  size: number;
  /** VIRTIO_RING_F_EVENT_IDX negotiated: use used_event / avail_event. */
  eventIdx: boolean;
  /** Region the rings are placed in (default: first fit). */
  region?: number;
  /** Alignment of the used ring (default 4096, minimum 4). */
  usedAlign?: number;
}

export interface AddChainOptions {
  /** Put the chain in an indirect table (one ring descriptor with VIRTQ_DESC_F_INDIRECT). */
  indirect?: boolean;
}

export class VirtqueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtqueueError';
  }
}

/** Not enough free descriptors for the chain; retry after completions. */
export class QueueFullError extends VirtqueueError {
  constructor(message: string) {
    super(message);
    this.name = 'QueueFullError';
  }
}

export function encodeDescriptor(buf: Buffer, off: number, d: RawDescriptor): void {
  buf.writeBigUInt64LE(BigInt.asUintN(64, BigInt(d.addr)), off);
  buf.writeUInt32LE(d.len >>> 0, off + 8);
  buf.writeUInt16LE(d.flags & 0xffff, off + 12);
  buf.writeUInt16LE(d.next & 0xffff, off + 14);
}

export function decodeDescriptor(buf: Buffer, off: number): RawDescriptor {
  return {
    addr: buf.readBigUInt64LE(off),
    len: buf.readUInt32LE(off + 8),
    flags: buf.readUInt16LE(off + 12),
    next: buf.readUInt16LE(off + 14),
  };
}

/** vring_need_event: notify when new_idx passed event_idx since old (all mod 2^16). */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Byte sizes of the three parts of a split ring of `size` entries. */
export function splitRingSizes(size: number): { desc: number; avail: number; used: number } {
  return {
    desc: DESC_SIZE * size,
    avail: 4 + 2 * size + 2, // flags, idx, ring[size], used_event
    used: 4 + USED_ELEM_SIZE * size + 2, // flags, idx, ring[size], avail_event
  };
}

interface ChainRecord {
  descs: number[];
  indirect: GuestBuffer | null;
}

export class Virtqueue {
  readonly size: number;
  readonly eventIdx: boolean;
  readonly descGpa: number;
  readonly availGpa: number;
  readonly usedGpa: number;
  private readonly mem: GuestMemory;
  private readonly ringMem: GuestBuffer;
  private readonly desc: Buffer;
  private readonly avail: Buffer;
  private readonly used: Buffer;
  private readonly usedEventOff: number;
  private readonly availEventOff: number;
  private freeList: number[] = [];
  private readonly chains = new Map<number, ChainRecord>();
  private shadowAvail = 0;
  private lastUsed = 0;
  private interrupts = true;

  constructor(mem: GuestMemory, opts: VirtqueueOptions) {
    const { size } = opts;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new VirtqueueError(`queue size ${size} is not a power of two in 1..${MAX_QUEUE_SIZE}`);
    }
    const usedAlign = opts.usedAlign ?? 4096;
    if (usedAlign < 4 || (usedAlign & (usedAlign - 1)) !== 0) throw new VirtqueueError(`bad used ring alignment ${usedAlign}`);
    this.mem = mem;
    this.size = size;
    this.eventIdx = opts.eventIdx;
    const s = splitRingSizes(size);
    const availOff = s.desc;
    const usedOff = Math.ceil((availOff + s.avail) / usedAlign) * usedAlign;
    this.ringMem = mem.alloc(usedOff + s.used, 4096, opts.region);
    this.descGpa = this.ringMem.gpa;
    this.availGpa = this.ringMem.gpa + availOff;
    this.usedGpa = this.ringMem.gpa + usedOff;
    this.desc = this.ringMem.buf.subarray(0, s.desc);
    this.avail = this.ringMem.buf.subarray(availOff, availOff + s.avail);
    this.used = this.ringMem.buf.subarray(usedOff, usedOff + s.used);
    this.usedEventOff = 4 + 2 * size;
    this.availEventOff = 4 + USED_ELEM_SIZE * size;
    this.reset();
  }

  /** Zeroes the rings and forgets all chains (a guest driver re-initialising the queue). */
  reset(): void {
    for (const rec of this.chains.values()) if (rec.indirect) this.mem.free(rec.indirect);
    this.chains.clear();
    this.ringMem.buf.fill(0);
    this.freeList = [];
    for (let i = this.size - 1; i >= 0; i--) this.freeList.push(i);
    this.shadowAvail = 0;
    this.lastUsed = 0;
    this.interrupts = true;
  }

  /** The three ring addresses as the front end's virtual addresses (SET_VRING_ADDR). */
  ringUaddrs(): { desc: number; avail: number; used: number } {
    return {
      desc: this.mem.toUaddr(this.descGpa),
      avail: this.mem.toUaddr(this.availGpa),
      used: this.mem.toUaddr(this.usedGpa),
    };
  }

  get numFree(): number {
    return this.freeList.length;
  }

  /** Chains made by addChain and not yet returned by the device. */
  get inFlight(): number {
    return this.chains.size;
  }

  /** Our next avail index (published or not). */
  get availIdx(): number {
    return this.shadowAvail;
  }

  /** The used index we have consumed up to. */
  get lastUsedIdx(): number {
    return this.lastUsed;
  }

  /** Descriptors a chain of n segments takes. */
  descriptorsFor(n: number, indirect: boolean): number {
    return indirect ? 1 : n;
  }

  canAdd(nsegs: number, indirect: boolean): boolean {
    return this.freeList.length >= this.descriptorsFor(nsegs, indirect);
  }

  /**
   * Adds a chain: readable segments, then writable ones, each one descriptor. Writes the
   * avail slot but does not publish it (call publish()). Returns the head id.
   */
  addChain(readable: Segment[], writable: Segment[], opts: AddChainOptions = {}): number {
    const n = readable.length + writable.length;
    if (n === 0) throw new VirtqueueError('a chain needs at least one buffer');
    const indirect = opts.indirect ?? false;
    if (!indirect && n > this.size) throw new VirtqueueError(`chain of ${n} descriptors exceeds queue size ${this.size}`);
    if (!this.canAdd(n, indirect)) {
      throw new QueueFullError(`queue full: chain needs ${this.descriptorsFor(n, indirect)} descriptors, ${this.freeList.length} free`);
    }
    const segs = [...readable.map((s) => ({ s, w: false })), ...writable.map((s) => ({ s, w: true }))];
    let head: number;
    let rec: ChainRecord;
    if (indirect) {
      const table = this.mem.alloc(n * DESC_SIZE, 16);
      segs.forEach(({ s, w }, i) => {
        encodeDescriptor(table.buf, i * DESC_SIZE, {
          addr: s.gpa,
          len: s.len,
          flags: (w ? VirtqDescFlags.WRITE : 0) | (i + 1 < n ? VirtqDescFlags.NEXT : 0),
          next: i + 1 < n ? i + 1 : 0,
        });
      });
      head = this.freeList.pop() as number;
      encodeDescriptor(this.desc, head * DESC_SIZE, {
        addr: table.gpa,
        len: n * DESC_SIZE,
        flags: VirtqDescFlags.INDIRECT,
        next: 0,
      });
      rec = { descs: [head], indirect: table };
    } else {
      const ids: number[] = [];
      for (let i = 0; i < n; i++) ids.push(this.freeList.pop() as number);
      segs.forEach(({ s, w }, i) => {
        encodeDescriptor(this.desc, ids[i] * DESC_SIZE, {
          addr: s.gpa,
          len: s.len,
          flags: (w ? VirtqDescFlags.WRITE : 0) | (i + 1 < n ? VirtqDescFlags.NEXT : 0),
          next: i + 1 < n ? ids[i + 1] : 0,
        });
      });
      head = ids[0];
      rec = { descs: ids, indirect: null };
    }
    this.chains.set(head, rec);
    this.pushAvailRaw(head);
    return head;
  }

  /**
   * Publishes every avail slot written so far: release-store of avail.idx, so the device
   * that acquire-loads it sees the descriptors and slots written before.
   */
  publish(): { oldIdx: number; newIdx: number } {
    const oldIdx = this.readAvailIdx();
    native.storeRelease16(this.avail, 2, this.shadowAvail);
    return { oldIdx, newIdx: this.shadowAvail };
  }

  /**
   * Whether the device wants a kick for avail moving from oldIdx to newIdx. The full fence
   * orders our avail.idx store before the load of avail_event / used.flags; without it the
   * device could go to sleep after we read a stale "no notify" (lost wake-up).
   */
  needsKick(oldIdx: number, newIdx: number): boolean {
    native.fence();
    if (this.eventIdx) return vringNeedEvent(this.readAvailEvent(), newIdx, oldIdx);
    return (this.used.readUInt16LE(0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /** The device's used.idx (acquire: used entries written before it are visible after). */
  readUsedIdx(): number {
    return native.loadAcquire16(this.used, 2);
  }

  /** Entries the device has published that we have not consumed. */
  pendingUsed(): number {
    return (this.readUsedIdx() - this.lastUsed) & 0xffff;
  }

  hasUsed(): boolean {
    return this.readUsedIdx() !== this.lastUsed;
  }

  /**
   * Consumes one used entry; frees its chain's descriptors when it is ours. Throws when the
   * device has run used.idx further ahead than the queue size (a device bug).
   */
  popUsed(): UsedElem | null {
    const pending = this.pendingUsed();
    if (pending === 0) return null;
    if (pending > this.size) {
      throw new VirtqueueError(
        `device used.idx ${this.readUsedIdx()} is ${pending} entries ahead of ${this.lastUsed} (queue size ${this.size})`,
      );
    }
    const slot = this.lastUsed % this.size;
    const off = 4 + slot * USED_ELEM_SIZE;
    const id = this.used.readUInt32LE(off);
    const len = this.used.readUInt32LE(off + 4);
    this.lastUsed = (this.lastUsed + 1) & 0xffff;
    const rec = this.chains.get(id);
    if (rec) {
      this.chains.delete(id);
      for (let i = rec.descs.length - 1; i >= 0; i--) this.freeList.push(rec.descs[i]);
      if (rec.indirect) this.mem.free(rec.indirect);
    }
    if (this.interrupts && this.eventIdx) {
      // As Linux: ask for an interrupt at the next completion; the store must be visible
      // before we look at used.idx again.
      native.storeRelease16(this.avail, this.usedEventOff, this.lastUsed);
      native.fence();
    }
    return { id, len, known: rec !== undefined };
  }

  /**
   * Asks the device for interrupts again (virtqueue_enable_cb). Returns true when the used
   * ring is still empty afterwards, so it is safe to sleep until the next call; false when
   * more entries arrived meanwhile and the caller must poll again.
   */
  enableInterrupts(): boolean {
    this.interrupts = true;
    if (this.eventIdx) {
      native.storeRelease16(this.avail, this.usedEventOff, this.lastUsed);
    } else {
      native.storeRelease16(this.avail, 0, this.avail.readUInt16LE(0) & ~VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
    native.fence();
    return !this.hasUsed();
  }

  /** Tells the device we poll (virtqueue_disable_cb). Only a hint to the device. */
  disableInterrupts(): void {
    this.interrupts = false;
    if (this.eventIdx) {
      // Linux writes 0 here too: interrupts then come only when used.idx wraps to 0.
      native.storeRelease16(this.avail, this.usedEventOff, 0);
    } else {
      native.storeRelease16(this.avail, 0, this.avail.readUInt16LE(0) | VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }

  /**
   * The avail and used rings as bytes, for a driver outside this object (the benchmark's
   * native ring driver) that runs the queue for a while with none of our chains in flight;
   * resumeAt() takes over again from the indices it stopped at.
   */
  ringBuffers(): { avail: Buffer; used: Buffer } {
    if (this.chains.size > 0) throw new VirtqueueError(`${this.chains.size} chains in flight: the ring cannot be lent`);
    return { avail: this.avail, used: this.used };
  }

  /** Continues from the avail index published and the used index consumed by another driver. */
  resumeAt(availIdx: number, lastUsed: number): void {
    this.shadowAvail = availIdx & 0xffff;
    this.lastUsed = lastUsed & 0xffff;
  }

  // ---- raw access for bad-input tests ----------------------------------------------

  /** Removes n descriptor ids from the free list, for hand-built chains. */
  takeDescriptors(n: number): number[] {
    if (n > this.freeList.length) throw new QueueFullError(`${n} descriptors wanted, ${this.freeList.length} free`);
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.freeList.pop() as number);
    return out;
  }

  /** Gives hand-built descriptor ids back to the free list. */
  releaseDescriptors(ids: number[]): void {
    for (const id of ids) {
      if (id < 0 || id >= this.size || this.freeList.includes(id)) throw new VirtqueueError(`descriptor ${id} is not taken`);
      this.freeList.push(id);
    }
  }

  writeDescriptor(index: number, d: RawDescriptor): void {
    if (index < 0 || index >= this.size) throw new VirtqueueError(`descriptor ${index} outside table of ${this.size}`);
    encodeDescriptor(this.desc, index * DESC_SIZE, d);
  }

  readDescriptor(index: number): RawDescriptor {
    if (index < 0 || index >= this.size) throw new VirtqueueError(`descriptor ${index} outside table of ${this.size}`);
    return decodeDescriptor(this.desc, index * DESC_SIZE);
  }

  /** Allocates and fills an indirect table in guest memory (any contents). */
  writeIndirectTable(entries: RawDescriptor[], region?: number): GuestBuffer {
    const t = this.mem.alloc(Math.max(entries.length, 1) * DESC_SIZE, 16, region);
    entries.forEach((d, i) => encodeDescriptor(t.buf, i * DESC_SIZE, d));
    return t;
  }

  /** Writes any head id (even out of range) in the next avail slot; publish() to expose. */
  pushAvailRaw(head: number): void {
    this.avail.writeUInt16LE(head & 0xffff, 4 + 2 * (this.shadowAvail % this.size));
    this.shadowAvail = (this.shadowAvail + 1) & 0xffff;
  }

  /** Release-stores any avail.idx (e.g. far ahead of the slots written). */
  setAvailIdxRaw(idx: number): void {
    this.shadowAvail = idx & 0xffff;
    native.storeRelease16(this.avail, 2, this.shadowAvail);
  }

  readAvailIdx(): number {
    return this.avail.readUInt16LE(2);
  }

  setAvailFlags(flags: number): void {
    native.storeRelease16(this.avail, 0, flags);
  }

  setUsedEvent(idx: number): void {
    native.storeRelease16(this.avail, this.usedEventOff, idx & 0xffff);
  }

  /** avail_event, the device's "kick me when avail.idx passes this" (EVENT_IDX). */
  readAvailEvent(): number {
    return native.loadAcquire16(this.used, this.availEventOff);
  }

  readUsedFlags(): number {
    return native.loadAcquire16(this.used, 0);
  }

  /** The used entry in slot i (no consumption). */
  readUsedElem(slot: number): { id: number; len: number } {
    const off = 4 + (slot % this.size) * USED_ELEM_SIZE;
    return { id: this.used.readUInt32LE(off), len: this.used.readUInt32LE(off + 4) };
  }

  /** A one-line state summary for error messages. */
  describeState(): string {
    return (
      `avail.idx=${this.readAvailIdx()} (next ${this.shadowAvail}), used.idx=${this.readUsedIdx()}, ` +
      `consumed up to ${this.lastUsed}, in flight ${this.chains.size}, free descriptors ${this.freeList.length}` +
      (this.eventIdx ? `, avail_event=${this.readAvailEvent()}` : `, used.flags=${this.readUsedFlags()}`)
    );
  }
}
