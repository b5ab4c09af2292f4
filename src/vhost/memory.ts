/**
 * Guest memory as one JS thread sees it: translation of guest-physical addresses (used in
 * descriptors) and front-end virtual addresses (used in SET_VRING_ADDR) into Buffer views
 * of the mapped regions. The regions themselves live in a native memory table shared by all
 * threads (native/memory.cc); this class holds this thread's views of them and refreshes
 * them when the table's generation changes (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG).
 *
 * JS uses these views for the rings and to copy request headers in and replies out; file
 * data never passes here (it goes natively, see native/io.cc). Every translation is
 * bounds-checked: an address range that is not entirely inside mapped memory is an error,
 * never an access.
 */
import { native, type RegionView } from '../native';

/** Views are split in chunks of this size (must match kChunk in native/memory.cc). */
export const CHUNK_SIZE = 2 ** 30;

export class GuestMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

/** A contiguous piece of mapped memory: a view and an offset inside it. */
export interface Place {
  buf: Buffer;
  off: number;
}

export class GuestMemory {
  private regions: RegionView[] = [];
  private gen = -1;

  constructor(readonly tableId: number) {
    this.refresh();
  }

  get generation(): number {
    return this.gen;
  }

  /** Re-reads the views when the shared table changed. Returns true when it did. */
  refresh(): boolean {
    const g = native.memTableGeneration(this.tableId);
    if (g === this.gen) return false;
    const v = native.memTableViews(this.tableId);
    this.regions = v.regions;
    this.gen = v.generation;
    return true;
  }

  get empty(): boolean {
    return this.regions.length === 0;
  }

  /**
   * Finds `len` contiguous bytes at a front-end virtual address (ring addresses).
   * The whole range must fall in one view chunk.
   */
  placeOfUaddr(uaddr: number, len: number): Place {
    for (const r of this.regions) {
      if (uaddr >= r.uaddr && uaddr < r.uaddr + r.size) {
        return this.placeIn(r, uaddr - r.uaddr, len, `front-end address 0x${uaddr.toString(16)}`);
      }
    }
    throw new GuestMemoryError(`front-end address 0x${uaddr.toString(16)} is not in guest memory`);
  }

  /** Finds `len` contiguous bytes at a guest-physical address (one view chunk). */
  placeOfGpa(gpa: number, len: number): Place {
    const r = this.regionOfGpa(gpa);
    if (!r) throw new GuestMemoryError(`guest address 0x${gpa.toString(16)} is not in guest memory`);
    return this.placeIn(r, gpa - r.gpa, len, `guest address 0x${gpa.toString(16)}`);
  }

  /** Throws unless every byte of [gpa, gpa+len) is mapped (it may span regions). */
  checkRange(gpa: number, len: number): void {
    while (len > 0) {
      const r = this.regionOfGpa(gpa);
      if (!r) throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+${len} is not in guest memory`);
      const n = Math.min(len, r.gpa + r.size - gpa);
      gpa += n;
      len -= n;
    }
  }

  /** Copies n guest bytes at gpa into dst (a checked range; splits at chunk and region ends). */
  copyOut(gpa: number, dst: Buffer, dstOff: number, n: number): void {
    const p = this.within(gpa, n);
    if (p) p.buf.copy(dst, dstOff, p.off, p.off + n);
    else this.pieces(gpa, n, (buf, off, len, done) => buf.copy(dst, dstOff + done, off, off + len));
  }

  /** Copies n bytes of src into guest memory at gpa. */
  copyIn(gpa: number, src: Buffer, srcOff: number, n: number): void {
    const p = this.within(gpa, n);
    if (p) src.copy(p.buf, p.off, srcOff, srcOff + n);
    else this.pieces(gpa, n, (buf, off, len, done) => src.copy(buf, off, srcOff + done, srcOff + done + len));
  }

  /** The place of [gpa, gpa+n) when it lies in one chunk of one region (the usual case). */
  private within(gpa: number, n: number): Place | null {
    const r = this.regionOfGpa(gpa);
    if (!r) return null;
    const rel = gpa - r.gpa;
    const chunk = Math.floor(rel / CHUNK_SIZE);
    const off = rel - chunk * CHUNK_SIZE;
    const buf = r.chunks[chunk];
    return off + n <= buf.length ? { buf, off } : null;
  }

  private pieces(gpa: number, len: number, f: (buf: Buffer, off: number, len: number, done: number) => void): void {
    let done = 0;
    while (len > 0) {
      const r = this.regionOfGpa(gpa);
      if (!r) throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+${len} is not in guest memory`);
      const rel = gpa - r.gpa;
      const chunk = Math.floor(rel / CHUNK_SIZE);
      const inChunk = rel - chunk * CHUNK_SIZE;
      const buf = r.chunks[chunk];
      const n = Math.min(len, buf.length - inChunk);
      f(buf, inChunk, n, done);
      gpa += n;
      len -= n;
      done += n;
    }
  }

  private regionOfGpa(gpa: number): RegionView | undefined {
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa < r.gpa + r.size) return r;
    }
    return undefined;
  }

  private placeIn(r: RegionView, rel: number, len: number, what: string): Place {
    const chunk = Math.floor(rel / CHUNK_SIZE);
    const off = rel - chunk * CHUNK_SIZE;
    const buf = r.chunks[chunk];
    if (len < 0 || off + len > buf.length) {
      throw new GuestMemoryError(`${what} + ${len} bytes runs past the end of its memory region`);
    }
    return { buf, off };
  }
}
