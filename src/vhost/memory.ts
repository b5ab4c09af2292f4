/**
 * Guest memory as one JS thread sees it: translation of guest-physical addresses (used in
 * descriptors) into Buffer views of the mapped regions. The regions themselves live in a native memory table shared by all
 * threads (native/memory.cc); this class holds this thread's views of them and refreshes
 * them when the table's generation changes (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG).
 *
 * JS uses these views to copy replies out and request bytes beyond the ring's prefetch in
 * (the rings themselves are native/vring.cc's); file
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

  /** Copies n guest bytes at gpa into dst (a checked range; splits at chunk and region ends). */
  copyOut(gpa: number, dst: Buffer, dstOff: number, n: number): void {
    const p = this.within(gpa, n);
    if (p) p.buf.copy(dst, dstOff, p.off, p.off + n);
    else this.pieces(gpa, n, (buf, off, len, done) => buf.copy(dst, dstOff + done, off, off + len));
  }

  /**
   * Copies n bytes of src into guest memory at gpa, through the table as it is now: a reply
   * may come long after its request was taken (a lock wait), the table changed meanwhile.
   */
  copyIn(gpa: number, src: Buffer, srcOff: number, n: number): void {
    this.refresh();
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
}
