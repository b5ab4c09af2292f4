/**
 * The device side of a split virtqueue (virtio 1.2, 2.7 "Split Virtqueues"), with
 * INDIRECT_DESC (2.7.5.3) and EVENT_IDX (2.7.7, 2.7.10). The ring work itself runs in native
 * code (native/vring.cc): per request it replaces a dozen JS buffer reads and N-API calls by
 * one pop() and one complete(). This class gives it the shape the queue runner and the tests
 * use, and turns what pop() leaves in a shared Float64Array into a DescriptorChain.
 *
 * Everything the driver wrote is untrusted: indices are reduced modulo the queue size,
 * addresses are translated with bounds checks, chains are bounded (a loop or a chain longer
 * than its table is an error), and an indirect table inside an indirect table is refused.
 * A malformed chain marks the queue broken: it stops being processed and the error is
 * reported to the caller, which logs it and signals the front end's error eventfd.
 */
import { native, type NativeChainServer, type Vring } from '../native';
import { DescriptorChain } from './chain';
import type { GuestMemory } from './memory';

/**
 * How often a spin for the next chain caught one (hits) or gave up and slept (misses), of
 * the misses how many ended early because another thread needed the CPU (gaveWay), and how
 * often serving the ring stopped for a turn of the thread's event loop while chains kept
 * coming (yields: a loop that ran its time, kServeBudgetNs).
 */
export interface PollCounts {
  hits: number;
  misses: number;
  gaveWay: number;
  yields: number;
}

export const NO_POLLS: PollCounts = { hits: 0, misses: 0, gaveWay: 0, yields: 0 };

export const MAX_QUEUE_SIZE = 32768;
/** Upper bound on the descriptors of one indirect table (kMaxIndirect in native/vring.cc). */
export const MAX_INDIRECT = 4096;
/** Request bytes pop() copies for the parser: a FUSE header and the arguments of most requests. */
const PREFETCH = 512;
const EMPTY = -1;
const BROKEN = -2;

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

export class Virtqueue {
  private readonly ring: Vring;
  private readonly out: Float64Array;
  private readonly prefetch = Buffer.alloc(PREFETCH);

  constructor(
    readonly mem: GuestMemory,
    readonly size: number,
    readonly addrs: RingAddresses,
    base: number,
    readonly eventIdx: boolean,
    callFd = -1,
  ) {
    if (size === 0 || size > MAX_QUEUE_SIZE || (size & (size - 1)) !== 0) {
      throw new QueueError(`queue size ${size} is not a power of two up to ${MAX_QUEUE_SIZE}`);
    }
    if (addrs.desc % 16 || addrs.avail % 2 || addrs.used % 4) throw new QueueError('misaligned ring address');
    this.out = new Float64Array(5 + 2 * (size + MAX_INDIRECT));
    this.ring = new native.Vring(mem.tableId, size, addrs.desc, addrs.avail, addrs.used, base & 0xffff, eventIdx, callFd, this.out, this.prefetch);
    this.check(this.ring.sync());
  }

  /** Next avail-ring index to process (what GET_VRING_BASE reports). */
  get lastAvail(): number {
    return this.ring.lastAvail();
  }

  setCallFd(fd: number): void {
    this.ring.setCallFd(fd);
  }

  /** Picks up a changed memory table before touching the rings. */
  syncMemory(): void {
    this.mem.refresh();
    this.check(this.ring.sync());
  }

  /**
   * Attaches a native server (null: detaches it) that pop() offers each chain to first:
   * chains it serves never reach JS.
   */
  setChainServer(server: NativeChainServer | null): void {
    this.ring.setChainServer(server);
  }

  /**
   * The native ring, for a kick watcher that serves kicks natively while the chain server
   * takes every chain (native FdWatcher with a vring).
   */
  get native(): Vring {
    return this.ring;
  }

  /** JS has requests of its own in flight: kicks must come to JS's loop. */
  setJsBusy(busy: boolean): void {
    this.ring.setJsBusy(busy);
  }

  /**
   * Chains the native server served, of those how many it handed to the I/O pool, and the
   * kicks served to the end without JS.
   */
  chainServerStats(): { served: number; pooled: number; kicks: number; yields: number } {
    const [served, pooled, kicks, yields] = this.ring.chainServerStats();
    return { served, pooled, kicks, yields };
  }

  /** Pops the next available chain (one the native server declined), or null when the ring is empty. */
  pop(): DescriptorChain | null {
    return this.chainAt(this.ring.pop());
  }

  /**
   * With a kick thread, which pops every chain itself: the next one it declined and queued
   * for JS, or null when there is none.
   */
  takeHandedOff(): DescriptorChain | null {
    return this.chainAt(this.ring.takeHandedOff());
  }

  /** The chain `out` and `prefetch` describe, after a pop or take that returned head. */
  private chainAt(head: number): DescriptorChain | null {
    if (head === EMPTY) return null;
    this.check(head);
    const o = this.out;
    const nr = o[0];
    const nw = o[1];
    const readable: number[] = new Array(2 * nr);
    for (let i = 0; i < 2 * nr; i++) readable[i] = o[5 + i];
    const writable: number[] = new Array(2 * nw);
    for (let i = 0; i < 2 * nw; i++) writable[i] = o[5 + 2 * nr + i];
    return new DescriptorChain(head, this.mem, readable, o[2], writable, o[3], this.prefetch, o[4], this.ring);
  }

  /**
   * Asks the driver for a kick at the next chain (avail_event with EVENT_IDX, else clearing
   * NO_NOTIFY), then re-checks for chains that arrived meanwhile. Returns true when the ring
   * is really empty (safe to sleep until the next kick).
   */
  enableNotification(): boolean {
    const r = this.ring.enableNotification();
    this.check(r);
    return r === 1;
  }

  /** The longest pollAvail() may spin, in nanoseconds (0: never poll). */
  setPolling(maxNs: number): void {
    this.ring.setPolling(maxNs);
  }

  /**
   * Called when pop() found the ring empty: spins for the next chain within the adaptive
   * window (native/vring.cc) instead of going to sleep at once. True when one arrived.
   */
  pollAvail(): boolean {
    const r = this.ring.pollAvail();
    this.check(r);
    return r === 1;
  }

  /** How often pollAvail() caught the next chain, and how often its window closed first. */
  pollStats(): Omit<PollCounts, 'yields'> {
    const [hits, misses, , gaveWay] = this.ring.pollStats();
    return { hits, misses, gaveWay };
  }

  /** How long pollAvail() would spin now at most, in nanoseconds (the adaptive window). */
  get pollWindowNs(): number {
    return this.ring.pollStats()[2];
  }

  /** Puts a completed chain on the used ring (visible to the driver after flush()). */
  push(head: number, len: number): void {
    this.ring.push(head, len >>> 0);
  }

  /** Publishes pushed entries; returns true when the driver wants an interrupt for them. */
  flush(): boolean {
    return this.ring.flush();
  }

  /** push + flush, and the call eventfd signalled when the driver wants it; true if it was. */
  complete(head: number, len: number): boolean {
    return this.ring.complete(head, len >>> 0) === 1;
  }

  /** Chains handed to the I/O pool whose completion has not reached the used ring yet. */
  get pendingOnPool(): number {
    return this.ring.pending();
  }

  /** The queue is broken: completions the I/O pool still has to make are dropped. */
  close(): void {
    this.ring.close();
  }

  private check(r: number): void {
    if (r === BROKEN) throw new QueueError(this.ring.error());
  }
}
