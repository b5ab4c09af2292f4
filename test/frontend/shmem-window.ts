/**
 * The front end's side of a vhost-user shared-memory region (protocol feature SHMEM), for
 * the test front end: what QEMU's SHMEM series does with the backend's BACKEND_SHMEM_MAP and
 * BACKEND_SHMEM_UNMAP (../shared/docs/PROTOCOL.md, DAX). A map puts the descriptor's range
 * into the region with mmap (read-only unless the write flag is set, so a read-only
 * descriptor maps and a write through a read mapping would fault); it fails over a live
 * mapping or past the region's end. An unmap must name exactly one mapping. A device reset drops
 * them all (clear()). Every request is recorded for the tests to look at.
 */
import { native } from '../../src/native';
import { BackendReq, decodeShmemMap, encodeHeader, Flags, HEADER_SIZE, SHMEM_MAP_F_WRITE, SHMEM_MAP_SIZE, type ShmemMap } from '../../src/vhost/messages';
import type { BackendHandler } from './frontend';

export interface WindowMapping {
  shmOffset: number;
  len: number;
  fdOffset: number;
  write: boolean;
  /** The mapped bytes (shared with the file). */
  bytes: Buffer;
}

export interface SeenRequest extends ShmemMap {
  request: 'MAP' | 'UNMAP';
  /** 0 when the front end did it. */
  result: number;
}

export class ShmemWindow {
  readonly mappings = new Map<number, WindowMapping>();
  readonly seen: SeenRequest[] = [];
  /** The next this many maps fail (a front end out of address space, say). */
  refuseNext = 0;
  /** Requests are recorded and done, but not answered until lateAnswers() (a front end that hangs). */
  silent = false;
  private held: Array<{ request: number; result: number }> = [];

  constructor(readonly size: number) {}

  /** For NegotiateOptions.backendHandler. */
  readonly handler: BackendHandler = (m) => {
    const fds = m.fds;
    try {
      if (m.request !== BackendReq.SHMEM_MAP && m.request !== BackendReq.SHMEM_UNMAP) return 1;
      if (m.payload === null || m.payload.length !== SHMEM_MAP_SIZE) return 1;
      const req = decodeShmemMap(m.payload);
      const result = m.request === BackendReq.SHMEM_MAP ? this.map(req, fds) : this.unmap(req);
      this.seen.push({ request: m.request === BackendReq.SHMEM_MAP ? 'MAP' : 'UNMAP', ...req, result });
      if (!this.silent) return result;
      this.held.push({ request: m.request, result });
      return null;
    } finally {
      for (const fd of fds) native.close(fd);
    }
  };

  /** The answers held back while silent, as the bytes the front end would have sent. */
  lateAnswers(): Buffer {
    const out = this.held.map(({ request, result }) => {
      const b = encodeHeader({ request, flags: Flags.VERSION | Flags.REPLY, size: 8 });
      b.writeBigUInt64LE(BigInt(result), HEADER_SIZE);
      return b;
    });
    this.held = [];
    return Buffer.concat(out);
  }

  /** A mapping the backend did not ask for here (one whose answer it lost, say). */
  inject(shmOffset: number, len: number): void {
    this.mappings.set(shmOffset, { shmOffset, len, fdOffset: 0, write: false, bytes: Buffer.alloc(0) });
  }

  /** The device was reset: every mapping goes. */
  clear(): void {
    this.mappings.clear();
  }

  private overlapping(start: number, len: number): WindowMapping[] {
    return [...this.mappings.values()].filter((w) => w.shmOffset < start + len && start < w.shmOffset + w.len);
  }

  private map(r: ShmemMap, fds: number[]): number {
    if (r.shmid !== 0 || fds.length !== 1 || r.len === 0 || r.shmOffset + r.len > this.size) return 1;
    if (this.overlapping(r.shmOffset, r.len).length > 0) return 1;
    if (this.refuseNext > 0) {
      this.refuseNext--;
      return 1;
    }
    const write = (r.flags & SHMEM_MAP_F_WRITE) !== 0;
    let bytes: Buffer;
    try {
      bytes = native.mmapShared(fds[0], r.len, r.fdOffset, !write);
    } catch {
      return 1;
    }
    this.mappings.set(r.shmOffset, { shmOffset: r.shmOffset, len: r.len, fdOffset: r.fdOffset, write, bytes });
    return 0;
  }

  /** As QEMU's series: the range must be exactly one mapping's (EFAULT otherwise). */
  private unmap(r: ShmemMap): number {
    const w = this.mappings.get(r.shmOffset);
    if (r.shmid !== 0 || !w || w.len !== r.len) return 1;
    this.mappings.delete(r.shmOffset);
    return 0;
  }
}
