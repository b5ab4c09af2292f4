/**
 * A descriptor chain popped from a virtqueue, seen as two byte streams: the device-readable
 * part (the request) and the device-writable part (room for the reply), whatever the
 * descriptor boundaries (virtio 1.2, 2.7.4 "Message Framing"). Each stream is a list of
 * guest ranges, (guest-physical address, length) pairs already checked against guest memory
 * by the virtqueue. Request headers come from the copy pop() made; other small pieces are
 * copied between JS buffers and guest memory through this thread's views; bulk data is handed on as GuestRanges for the native preadv/pwritev,
 * so file data never passes through a JS buffer.
 */
import type { GuestRanges, Vring } from '../native';
import type { GuestMemory } from './memory';

/** Visits the pieces of bytes [start, start+n) of a range list: f(gpa, len, doneSoFar). */
function forRanges(pairs: readonly number[], start: number, n: number, f: (gpa: number, len: number, done: number) => void): number {
  let done = 0;
  let skip = start;
  for (let i = 0; i < pairs.length && done < n; i += 2) {
    const len = pairs[i + 1];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const take = Math.min(len - skip, n - done);
    f(pairs[i] + skip, take, done);
    done += take;
    skip = 0;
  }
  return done;
}

/** The ranges covering bytes [start, start+n) of a range list (clipped to its end). */
export function sliceRanges(pairs: readonly number[], start: number, n: number): number[] {
  const out: number[] = [];
  forRanges(pairs, start, n, (gpa, len) => out.push(gpa, len));
  return out;
}

export class DescriptorChain {
  /** Bytes of the readable stream consumed so far by read()/readRanges(). */
  readPos = 0;

  constructor(
    readonly head: number,
    private readonly mem: GuestMemory,
    readonly readable: readonly number[],
    readonly readableLen: number,
    readonly writable: readonly number[],
    readonly writableLen: number,
    private prefetch: Buffer | null = null,
    private prefetched = 0,
    /** The ring the chain came from, for a reply the I/O pool puts there itself. */
    readonly ring: Vring | null = null,
  ) {}

  /**
   * The virtqueue's copy of the first request bytes is reused by the next pop(): the queue
   * runner calls this once the handler's synchronous part (which parses the request) is over.
   */
  dropPrefetch(): void {
    this.prefetch = null;
    this.prefetched = 0;
  }

  get readableLeft(): number {
    return this.readableLen - this.readPos;
  }

  /** Copies the next n readable bytes into dst at dstOff; returns how many there were. */
  read(dst: Buffer, dstOff: number, n: number): number {
    // The usual case: a header or arguments that pop() already copied.
    if (this.readPos + n <= this.prefetched) {
      this.prefetch!.copy(dst, dstOff, this.readPos, this.readPos + n);
      this.readPos += n;
      return n;
    }
    // A header or arguments inside the first descriptor, without closures.
    const r = this.readable;
    if (r.length >= 2 && this.readPos + n <= r[1]) {
      this.mem.copyOut(r[0] + this.readPos, dst, dstOff, n);
      this.readPos += n;
      return n;
    }
    const got = forRanges(this.readable, this.readPos, n, (gpa, len, done) => this.mem.copyOut(gpa, dst, dstOff + done, len));
    this.readPos += got;
    return got;
  }

  /** The next n readable bytes as guest ranges (for a write to a file), advancing past them. */
  readRanges(n: number): GuestRanges {
    const pairs = sliceRanges(this.readable, this.readPos, n);
    this.readPos += Math.min(n, this.readableLeft);
    return { table: this.mem.tableId, pairs };
  }

  /** Copies n bytes of src into the writable stream at byte pos; returns bytes copied. */
  writeAt(pos: number, src: Buffer, srcOff: number, n: number): number {
    const w = this.writable;
    if (w.length >= 2 && pos + n <= w[1]) {
      this.mem.copyIn(w[0] + pos, src, srcOff, n);
      return n;
    }
    return forRanges(this.writable, pos, n, (gpa, len, done) => this.mem.copyIn(gpa, src, srcOff + done, len));
  }

  /** Writable bytes [pos, pos+n) as guest ranges (for a read from a file). */
  writeRanges(pos: number, n: number): GuestRanges {
    return { table: this.mem.tableId, pairs: sliceRanges(this.writable, pos, n) };
  }
}
