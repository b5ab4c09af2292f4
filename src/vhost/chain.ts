/**
 * A descriptor chain popped from a virtqueue, seen as two byte streams: the device-readable
 * part (the request) and the device-writable part (room for the reply), whatever the
 * descriptor boundaries (virtio 1.2, 2.7.4 "Message Framing"). Small headers are copied out
 * into JS buffers; bulk data is handed over as segment lists for preadv/pwritev, so file
 * data never passes through a JS buffer.
 */
import type { Segments } from '../native';

/** Copies n bytes starting at byte `start` of a segment list into dst. Returns bytes copied. */
export function copyFromSegments(segs: Segments, start: number, dst: Buffer, dstOff: number, n: number): number {
  let done = 0;
  let skip = start;
  for (let i = 0; i < segs.length && done < n; i += 3) {
    const len = segs[i + 2] as number;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const buf = segs[i] as Buffer;
    const off = (segs[i + 1] as number) + skip;
    const take = Math.min(len - skip, n - done);
    buf.copy(dst, dstOff + done, off, off + take);
    done += take;
    skip = 0;
  }
  return done;
}

/** Copies n bytes of src into a segment list at byte `start`. Returns bytes copied. */
export function copyToSegments(segs: Segments, start: number, src: Buffer, srcOff: number, n: number): number {
  let done = 0;
  let skip = start;
  for (let i = 0; i < segs.length && done < n; i += 3) {
    const len = segs[i + 2] as number;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const buf = segs[i] as Buffer;
    const off = (segs[i + 1] as number) + skip;
    const take = Math.min(len - skip, n - done);
    src.copy(buf, off, srcOff + done, srcOff + done + take);
    done += take;
    skip = 0;
  }
  return done;
}

/** The segments covering bytes [start, start+n) of a segment list (clipped to its end). */
export function sliceSegments(segs: Segments, start: number, n: number): Segments {
  const out: Segments = [];
  let skip = start;
  let left = n;
  for (let i = 0; i < segs.length && left > 0; i += 3) {
    const len = segs[i + 2] as number;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const take = Math.min(len - skip, left);
    out.push(segs[i] as Buffer, (segs[i + 1] as number) + skip, take);
    left -= take;
    skip = 0;
  }
  return out;
}

export class DescriptorChain {
  /** Bytes of the readable stream consumed so far by read()/readSegments(). */
  readPos = 0;

  constructor(
    readonly head: number,
    readonly readable: Segments,
    readonly readableLen: number,
    readonly writable: Segments,
    readonly writableLen: number,
  ) {}

  get readableLeft(): number {
    return this.readableLen - this.readPos;
  }

  /** Copies the next n readable bytes into dst at dstOff; returns how many there were. */
  read(dst: Buffer, dstOff: number, n: number): number {
    const got = copyFromSegments(this.readable, this.readPos, dst, dstOff, n);
    this.readPos += got;
    return got;
  }

  /** Views of the next n readable bytes (for pwritev), advancing past them. */
  readSegments(n: number): Segments {
    const s = sliceSegments(this.readable, this.readPos, n);
    this.readPos += Math.min(n, this.readableLeft);
    return s;
  }

  /** Copies n bytes of src into the writable stream at byte pos; returns bytes copied. */
  writeAt(pos: number, src: Buffer, srcOff: number, n: number): number {
    return copyToSegments(this.writable, pos, src, srcOff, n);
  }

  /** Views of writable bytes [pos, pos+n) (for preadv). */
  writeSegments(pos: number, n: number): Segments {
    return sliceSegments(this.writable, pos, n);
  }
}
