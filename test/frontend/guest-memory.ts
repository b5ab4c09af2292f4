/**
 * Guest memory for the test front end, laid out the way QEMU describes it to a vhost-user
 * backend (docs/interop/vhost-user.rst, "Memory regions description"): each region is a
 * shared memfd range with a guest-physical address (gpa), a size, the front end's own
 * virtual address of it (uaddr, which SET_VRING_ADDR uses) and an mmap offset into its fd.
 *
 * The uaddr values are fake (we never hand out our real pointers): they only have to be
 * distinct from the gpa values so that a backend mixing up the two translations fails.
 * Memory can be split into two regions, either two memfds or one memfd seen at two
 * mmap offsets, with a gpa hole between them, to exercise multi-region translation.
 *
 * A first-fit allocator with coalescing hands out buffers; gpa <-> Buffer helpers let the
 * ring and FUSE code read and write guest memory. For benchmarks, where the same few sizes
 * are allocated and freed over and over, it can keep freed buffers by size and hand them out
 * again without a search (`recycle`), so that the front end costs the daemons' share of the
 * machine as little as it can.
 */
import { native } from '../../src/native';
import type { MemoryRegion } from '../../src/vhost/messages';

export const PAGE_SIZE = 4096;
export const DEFAULT_MEMORY_SIZE = 64 * 1024 * 1024;
export const DEFAULT_UADDR_BASE = 0x7f00_0000_0000;
/** Distance between the fake userspace addresses of consecutive regions. */
const UADDR_STRIDE = 0x10_0000_0000;

export interface GuestMemoryOptions {
  /** Total bytes over all regions (default 64 MiB); each region is a multiple of 4 KiB. */
  size?: number;
  /** Guest-physical address of region 0 (default 0; try 0x1_0000_0000). */
  gpaBase?: number;
  /** Fake front-end virtual address of region 0 (default 0x7f00_0000_0000). */
  uaddrBase?: number;
  /** 1 (default) or 2 regions, the size split in halves. */
  regions?: 1 | 2;
  /** With 2 regions: one memfd seen at two mmap offsets instead of two memfds. */
  sharedFd?: boolean;
  /** With 2 regions: gpa hole between the end of region 0 and region 1 (default 1 GiB). */
  regionGap?: number;
  /** alloc() without a region alternates between regions (default false: first fit). */
  interleave?: boolean;
  /**
   * Keep freed buffers by size (up to RECYCLE_PER_SIZE each) and hand them out again first
   * (default false). Placement is then no longer first fit; they return to the free list
   * when an allocation finds no room.
   */
  recycle?: boolean;
}

/** Freed buffers kept per size with `recycle`. */
const RECYCLE_PER_SIZE = 64;

/** One region: the vhost-user description plus our fd and mapping. */
export interface GuestRegion extends MemoryRegion {
  /** The memfd (shared by both regions with sharedFd). */
  fd: number;
  /** Our mapping of [mmapOffset, mmapOffset + memorySize) of fd. */
  view: Buffer;
}

/** A buffer allocated in guest memory. `buf` is a live view of the guest bytes. */
export interface GuestBuffer {
  gpa: number;
  len: number;
  region: number;
  buf: Buffer;
}

export class GuestMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

interface FreeRange {
  start: number; // offset in the region
  end: number;
}

function isPageMultiple(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && n % PAGE_SIZE === 0;
}

export class GuestMemory {
  readonly regions: GuestRegion[] = [];
  private readonly fds: number[] = [];
  private readonly freeRanges: FreeRange[][] = [];
  /** gpa -> size of live allocations (for free()). */
  private readonly live = new Map<number, { region: number; len: number; anyRegion: boolean }>();
  /** With `recycle`: freed buffers of alloc() calls without a region, by size. */
  private readonly recycled: Map<number, GuestBuffer[]> | null;
  private readonly interleave: boolean;
  private nextRegion = 0;
  private closed = false;

  constructor(opts: GuestMemoryOptions = {}) {
    const size = opts.size ?? DEFAULT_MEMORY_SIZE;
    const nregions = opts.regions ?? 1;
    const gpaBase = opts.gpaBase ?? 0;
    const uaddrBase = opts.uaddrBase ?? DEFAULT_UADDR_BASE;
    const gap = opts.regionGap ?? 0x4000_0000;
    this.interleave = opts.interleave ?? false;
    this.recycled = opts.recycle ? new Map() : null;
    const sizes = nregions === 1 ? [size] : [size / 2, size / 2];
    for (const s of sizes) {
      if (!isPageMultiple(s)) throw new GuestMemoryError(`region size ${s} is not a positive multiple of ${PAGE_SIZE}`);
    }
    const aligned = (n: number): boolean => Number.isSafeInteger(n) && n >= 0 && n % PAGE_SIZE === 0;
    if (!aligned(gpaBase) || !aligned(gap) || !aligned(uaddrBase)) {
      throw new GuestMemoryError('gpaBase, uaddrBase and regionGap must be multiples of 4 KiB');
    }
    if (nregions === 2 && opts.sharedFd) {
      const fd = native.memfdCreate('guest-ram', size);
      this.fds.push(fd);
      let gpa = gpaBase;
      let mmapOffset = 0;
      sizes.forEach((s, i) => {
        this.regions.push({
          guestPhysAddr: gpa,
          memorySize: s,
          userspaceAddr: uaddrBase + i * UADDR_STRIDE,
          mmapOffset,
          fd,
          view: native.mmapShared(fd, s, mmapOffset),
        });
        gpa += s + gap;
        mmapOffset += s;
      });
    } else {
      let gpa = gpaBase;
      sizes.forEach((s, i) => {
        const fd = native.memfdCreate(`guest-ram${i}`, s);
        this.fds.push(fd);
        this.regions.push({
          guestPhysAddr: gpa,
          memorySize: s,
          userspaceAddr: uaddrBase + i * UADDR_STRIDE,
          mmapOffset: 0,
          fd,
          view: native.mmapShared(fd, s, 0),
        });
        gpa += s + gap;
      });
    }
    for (const r of this.regions) this.freeRanges.push([{ start: 0, end: r.memorySize }]);
  }

  /** The regions as vhost-user messages carry them (without fds). */
  describe(): MemoryRegion[] {
    return this.regions.map((r) => ({
      guestPhysAddr: r.guestPhysAddr,
      memorySize: r.memorySize,
      userspaceAddr: r.userspaceAddr,
      mmapOffset: r.mmapOffset,
    }));
  }

  /** The fd to send with each region (same order as describe()). */
  regionFds(): number[] {
    return this.regions.map((r) => r.fd);
  }

  get totalSize(): number {
    return this.regions.reduce((a, r) => a + r.memorySize, 0);
  }

  // ---- allocation -------------------------------------------------------------------

  /**
   * Allocates len bytes aligned to `align` (a power of two), zero-filled unless `zero` is
   * false (for a buffer the caller fills whole). Without a region, first fit over all
   * regions (or alternating with `interleave`). Throws when full.
   */
  alloc(len: number, align = 16, region?: number, zero = true): GuestBuffer {
    this.checkOpen();
    if (!Number.isSafeInteger(len) || len <= 0) throw new GuestMemoryError(`bad allocation size ${len}`);
    if (align <= 0 || (align & (align - 1)) !== 0) throw new GuestMemoryError(`bad alignment ${align}`);
    const kept = region === undefined ? this.recycled?.get(len) : undefined;
    if (kept && kept.length > 0 && kept[kept.length - 1].gpa % align === 0) {
      const b = kept.pop()!;
      this.live.set(b.gpa, { region: b.region, len, anyRegion: true });
      if (zero) b.buf.fill(0);
      return b;
    }
    try {
      return this.allocFirstFit(len, align, region, zero);
    } catch (e) {
      // Full: what recycling keeps goes back to the free list, and the search runs again.
      if (!(e instanceof GuestMemoryError) || !this.recycled || this.recycled.size === 0) throw e;
      for (const list of this.recycled.values()) for (const b of list) this.release(b.gpa, b.region, b.len);
      this.recycled.clear();
      return this.allocFirstFit(len, align, region, zero);
    }
  }

  private allocFirstFit(len: number, align: number, region: number | undefined, zero: boolean): GuestBuffer {
    const order: number[] = [];
    if (region !== undefined) {
      if (region < 0 || region >= this.regions.length) throw new GuestMemoryError(`no region ${region}`);
      order.push(region);
    } else if (this.interleave) {
      for (let i = 0; i < this.regions.length; i++) order.push((this.nextRegion + i) % this.regions.length);
      this.nextRegion = (this.nextRegion + 1) % this.regions.length;
    } else {
      for (let i = 0; i < this.regions.length; i++) order.push(i);
    }
    for (const ri of order) {
      const b = this.allocIn(ri, len, align, zero);
      if (b) {
        this.live.set(b.gpa, { region: ri, len, anyRegion: region === undefined });
        return b;
      }
    }
    throw new GuestMemoryError(
      `guest memory full: cannot allocate ${len} bytes (align ${align})` +
        (region !== undefined ? ` in region ${region}` : '') +
        `; ${this.live.size} live allocations`,
    );
  }

  private allocIn(ri: number, len: number, align: number, zero: boolean): GuestBuffer | null {
    const list = this.freeRanges[ri];
    const r = this.regions[ri];
    for (let i = 0; i < list.length; i++) {
      const f = list[i];
      // Align the guest-physical address, not the offset (gpa bases are page aligned anyway).
      const gpaStart = r.guestPhysAddr + f.start;
      const aligned = Math.ceil(gpaStart / align) * align - r.guestPhysAddr;
      if (aligned + len > f.end) continue;
      const pieces: FreeRange[] = [];
      if (aligned > f.start) pieces.push({ start: f.start, end: aligned });
      if (aligned + len < f.end) pieces.push({ start: aligned + len, end: f.end });
      list.splice(i, 1, ...pieces);
      const gpa = r.guestPhysAddr + aligned;
      const buf = r.view.subarray(aligned, aligned + len);
      if (zero) buf.fill(0);
      return { gpa, len, region: ri, buf };
    }
    return null;
  }

  /** Returns an allocation (by buffer or its gpa) to the free list. */
  free(b: GuestBuffer | number): void {
    const gpa = typeof b === 'number' ? b : b.gpa;
    const a = this.live.get(gpa);
    if (!a) throw new GuestMemoryError(`free of 0x${gpa.toString(16)}, which is not a live allocation`);
    this.live.delete(gpa);
    if (this.recycled && a.anyRegion) {
      let kept = this.recycled.get(a.len);
      if (!kept) this.recycled.set(a.len, (kept = []));
      if (kept.length < RECYCLE_PER_SIZE) {
        const r = this.regions[a.region];
        const off = gpa - r.guestPhysAddr;
        kept.push({ gpa, len: a.len, region: a.region, buf: r.view.subarray(off, off + a.len) });
        return;
      }
    }
    this.release(gpa, a.region, a.len);
  }

  /** Puts [gpa, gpa + len) of a region back on its free list, coalescing with neighbours. */
  private release(gpa: number, region: number, len: number): void {
    const r = this.regions[region];
    const start = gpa - r.guestPhysAddr;
    const end = start + len;
    const list = this.freeRanges[region];
    let i = 0;
    while (i < list.length && list[i].start < start) i++;
    list.splice(i, 0, { start, end });
    // coalesce with the neighbours
    if (i + 1 < list.length && list[i].end === list[i + 1].start) {
      list[i].end = list[i + 1].end;
      list.splice(i + 1, 1);
    }
    if (i > 0 && list[i - 1].end === list[i].start) {
      list[i - 1].end = list[i].end;
      list.splice(i, 1);
    }
  }

  get liveAllocations(): number {
    return this.live.size;
  }

  // ---- translation ------------------------------------------------------------------

  /** Region index holding [gpa, gpa + len), or -1. */
  regionOf(gpa: number, len = 1): number {
    return this.regions.findIndex(
      (r) => gpa >= r.guestPhysAddr && gpa + len <= r.guestPhysAddr + r.memorySize,
    );
  }

  /** A live view of guest bytes [gpa, gpa + len); throws unless inside one region. */
  view(gpa: number, len: number): Buffer {
    const ri = this.regionOf(gpa, Math.max(len, 1));
    if (ri < 0) {
      throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+${len} is not inside one region`);
    }
    const off = gpa - this.regions[ri].guestPhysAddr;
    return this.regions[ri].view.subarray(off, off + len);
  }

  /** A copy of guest bytes. */
  read(gpa: number, len: number): Buffer {
    return Buffer.from(this.view(gpa, len));
  }

  write(gpa: number, data: Buffer): void {
    data.copy(this.view(gpa, data.length));
  }

  /** The fake front-end virtual address of a gpa (what SET_VRING_ADDR carries). */
  toUaddr(gpa: number): number {
    const ri = this.regionOf(gpa);
    if (ri < 0) throw new GuestMemoryError(`gpa 0x${gpa.toString(16)} is outside guest memory`);
    const r = this.regions[ri];
    return r.userspaceAddr + (gpa - r.guestPhysAddr);
  }

  fromUaddr(uaddr: number): number {
    const r = this.regions.find((x) => uaddr >= x.userspaceAddr && uaddr < x.userspaceAddr + x.memorySize);
    if (!r) throw new GuestMemoryError(`uaddr 0x${uaddr.toString(16)} is outside guest memory`);
    return r.guestPhysAddr + (uaddr - r.userspaceAddr);
  }

  /** A gpa guaranteed to be outside every region (for bad-input tests). */
  unmappedGpa(): number {
    const last = this.regions[this.regions.length - 1];
    return last.guestPhysAddr + last.memorySize + 0x1000_0000;
  }

  /** Closes the memfds. Mappings go when their Buffers are garbage-collected. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.fds) native.close(fd);
  }

  private checkOpen(): void {
    if (this.closed) throw new GuestMemoryError('guest memory is closed');
  }
}
