/**
 * The device side of a split virtqueue (virtio 1.2, 2.7 "Split Virtqueues"), with
 * INDIRECT_DESC (2.7.5.3) and EVENT_IDX (2.7.7, 2.7.10). It works over GuestMemory views, so
 * unit tests can drive it over a plain memfd.
 *
 * Everything the driver wrote is untrusted: indices are reduced modulo the queue size,
 * addresses are translated with bounds checks, chains are bounded (a loop or a chain longer
 * than its table is an error), and an indirect table inside an indirect table is refused.
 * A malformed chain marks the queue broken: it stops being processed and the error is
 * reported to the caller, which logs it and signals the front end's error eventfd.
 */
import { native } from '../native';
import { DescriptorChain } from './chain';
import { GuestMemory, GuestMemoryError, type Place } from './memory';

export const DESC_SIZE = 16;
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
export const MAX_QUEUE_SIZE = 32768;
/** Upper bound on the descriptors of one indirect table. */
export const MAX_INDIRECT = 4096;

export class QueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueueError';
  }
}

/** Front-end virtual addresses of the three ring parts (SET_VRING_ADDR). */
export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
}

/** Bytes of the avail ring: flags, idx, ring[n], used_event. */
export function availSize(n: number): number {
  return 6 + 2 * n;
}
/** Bytes of the used ring: flags, idx, ring[n], avail_event. */
export function usedSize(n: number): number {
  return 6 + 8 * n;
}
/** Offset of used_event in the avail ring (EVENT_IDX). */
const usedEventOffset = (n: number): number => 4 + 2 * n;
/** Offset of avail_event in the used ring (EVENT_IDX). */
const availEventOffset = (n: number): number => 4 + 8 * n;

export class Virtqueue {
  /** Next avail-ring index to process (what GET_VRING_BASE reports). */
  lastAvail: number;
  /** Shadow of used.idx: entries pushed, published by flush(). */
  private usedIdx: number;
  private signalledUsed: number;
  private desc!: Place;
  private avail!: Place;
  private used!: Place;
  private memGen = -1;

  constructor(
    readonly mem: GuestMemory,
    readonly size: number,
    readonly addrs: RingAddresses,
    base: number,
    readonly eventIdx: boolean,
  ) {
    if (size === 0 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new QueueError(`queue size ${size} is not a power of two up to ${MAX_QUEUE_SIZE}`);
    }
    this.lastAvail = base & 0xffff;
    this.usedIdx = base & 0xffff;
    this.signalledUsed = this.usedIdx;
    this.translate();
  }

  /** (Re)computes the ring views; called at start and whenever the memory table changed. */
  translate(): void {
    const { desc, avail, used } = this.addrs;
    if (desc % 16 || avail % 2 || used % 4) throw new QueueError('misaligned ring address');
    try {
      this.desc = this.mem.placeOfUaddr(desc, DESC_SIZE * this.size);
      this.avail = this.mem.placeOfUaddr(avail, availSize(this.size));
      this.used = this.mem.placeOfUaddr(used, usedSize(this.size));
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new QueueError(`ring outside guest memory: ${e.message}`);
      throw e;
    }
    this.memGen = this.mem.generation;
  }

  /** Picks up a changed memory table before touching the rings. */
  syncMemory(): void {
    if (this.mem.refresh() || this.mem.generation !== this.memGen) this.translate();
  }

  /** Number of available chains not yet popped; throws if the driver's index is impossible. */
  pending(): number {
    const idx = native.loadAcquire16(this.avail.buf, this.avail.off + 2);
    const n = (idx - this.lastAvail) & 0xffff;
    if (n > this.size) throw new QueueError(`avail index ${idx} is ${n} entries ahead of ${this.lastAvail}`);
    return n;
  }

  /** Pops the next available chain, or returns null when the ring is empty. */
  pop(): DescriptorChain | null {
    if (this.pending() === 0) return null;
    const slot = this.lastAvail % this.size;
    const head = this.avail.buf.readUInt16LE(this.avail.off + 4 + 2 * slot);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return this.walk(head);
  }

  /**
   * With EVENT_IDX, tells the driver which avail index we wait for next, then re-checks for
   * entries that arrived meanwhile. Returns true when the ring is really empty (safe to
   * sleep until the next kick).
   */
  enableNotification(): boolean {
    if (this.eventIdx) {
      this.used.buf.writeUInt16LE(this.lastAvail, this.used.off + availEventOffset(this.size));
    } else {
      this.used.buf.writeUInt16LE(0, this.used.off);
    }
    // Store-load barrier: the driver must see avail_event before we re-read avail.idx,
    // or a kick it decided to skip could be lost (virtio 1.2, 2.7.10).
    native.fence();
    return this.pending() === 0;
  }

  /** Puts a completed chain on the used ring (visible to the driver after flush()). */
  push(head: number, len: number): void {
    const slot = this.usedIdx % this.size;
    const off = this.used.off + 4 + 8 * slot;
    this.used.buf.writeUInt32LE(head, off);
    this.used.buf.writeUInt32LE(len >>> 0, off + 4);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  /** Publishes pushed entries; returns true when the driver wants an interrupt for them. */
  flush(): boolean {
    // Release: the used elements written by push() become visible before the new index.
    native.storeRelease16(this.used.buf, this.used.off + 2, this.usedIdx);
    if (this.usedIdx === this.signalledUsed) return false;
    // Full barrier: used.idx must be visible before we read the driver's used_event/flags.
    native.fence();
    const old = this.signalledUsed;
    const now = this.usedIdx;
    this.signalledUsed = now;
    if (this.eventIdx) {
      const usedEvent = this.avail.buf.readUInt16LE(this.avail.off + usedEventOffset(this.size));
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (this.avail.buf.readUInt16LE(this.avail.off) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  private walk(head: number): DescriptorChain {
    if (head >= this.size) throw new QueueError(`chain head ${head} outside a queue of ${this.size}`);
    const readable: number[] = [];
    const writable: number[] = [];
    let rlen = 0;
    let wlen = 0;
    let table = this.desc;
    let tableSize = this.size;
    let indirect = false;
    let i = head;
    let count = 0;
    for (;;) {
      if (i >= tableSize) throw new QueueError(`descriptor ${i} outside a table of ${tableSize}`);
      if (++count > tableSize) throw new QueueError(`descriptor chain from head ${head} loops or exceeds its table`);
      const off = table.off + i * DESC_SIZE;
      const lo = table.buf.readUInt32LE(off);
      const hi = table.buf.readUInt32LE(off + 4);
      const len = table.buf.readUInt32LE(off + 8);
      const flags = table.buf.readUInt16LE(off + 12);
      const next = table.buf.readUInt16LE(off + 14);
      if (hi >= 0x200000) throw new QueueError(`descriptor address 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} out of range`);
      const addr = hi * 0x100000000 + lo;
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (indirect) throw new QueueError('indirect table inside an indirect table');
        if (flags & VIRTQ_DESC_F_NEXT) throw new QueueError('indirect descriptor with NEXT set');
        if (len === 0 || len % DESC_SIZE !== 0 || len / DESC_SIZE > MAX_INDIRECT) {
          throw new QueueError(`indirect table of ${len} bytes`);
        }
        table = this.place(addr, len);
        tableSize = len / DESC_SIZE;
        indirect = true;
        i = 0;
        count = 0;
        continue;
      }
      try {
        this.mem.checkRange(addr, len);
      } catch (e) {
        if (e instanceof GuestMemoryError) throw new QueueError(`descriptor ${i}: ${e.message}`);
        throw e;
      }
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable.push(addr, len);
        wlen += len;
      } else {
        if (wlen > 0) throw new QueueError('readable descriptor after a writable one');
        readable.push(addr, len);
        rlen += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      i = next;
    }
    return new DescriptorChain(head, this.mem, readable, rlen, writable, wlen);
  }

  private place(addr: number, len: number): Place {
    try {
      return this.mem.placeOfGpa(addr, len);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new QueueError(`indirect table: ${e.message}`);
      throw e;
    }
  }
}
