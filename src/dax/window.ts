/**
 * The DAX window: file ranges mapped into the front end's shared-memory region 0, so that
 * the guest reads and writes the host's page cache directly instead of copying through the
 * queues. The guest's FUSE_SETUPMAPPING and FUSE_REMOVEMAPPING arrive here; the mapping
 * itself is the front end's to do: we send it the file's descriptor with BACKEND_SHMEM_MAP
 * (and BACKEND_SHMEM_UNMAP) on the backend channel and wait for its REPLY_ACK
 * (docs/interop/vhost-user.rst, "Shared memory regions"; ../shared/docs/PROTOCOL.md, DAX).
 *
 * The table of what is mapped is kept here, by 2 MiB chunk (the alignment we ask of the
 * guest with FUSE_MAP_ALIGNMENT; Linux maps ranges of exactly that size): the front end
 * refuses a mapping over a live one, so a range the guest maps again (a read mapping
 * upgraded for writing, or a hostile guest's overlap) is unmapped first, whole mappings at a
 * time. Reclaim is the guest's: it removes the ranges it wants back. A device reset or a new
 * connection empties the table (the front end drops its mappings then); a new FUSE session
 * on the same device unmaps whatever the last one left.
 *
 * Requests on the backend channel go one at a time, their replies read as the socket turns
 * readable (never blocking the JS thread: the front end may be waiting for a reply of ours on
 * the main channel before it reads the backend channel).
 */

import type { Logger } from '../log';
import { native } from '../native';
import { MessageReader } from '../vhost/message-reader';
import { BackendReq, encodeHeader, encodeShmemMap, Flags, SHMEM_MAP_F_WRITE } from '../vhost/messages';

/** log2 of the alignment asked of the guest (FUSE_MAP_ALIGNMENT): 2 MiB, what Linux maps. */
export const DAX_ALIGNMENT_SHIFT = 21;
export const DAX_CHUNK = 1 << DAX_ALIGNMENT_SHIFT;
/** How long the front end may take to answer a map or unmap before the request fails (EIO). */
const REPLY_TIMEOUT_MS = 5000;
/** Largest window accepted (--dax-window-size). */
export const MAX_DAX_WINDOW = 2 ** 40;

/** An error the guest gets as its errno. */
export class DaxError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

interface Mapping {
  /** First chunk of the window it covers, and how many. */
  chunk: number;
  chunks: number;
  write: boolean;
}

interface Pending {
  request: BackendReq;
  resolve: (ok: boolean) => void;
  timer: NodeJS.Timeout;
}

export class DaxWindow {
  /** The mapping covering each chunk of the window, if any. */
  private readonly byChunk: Array<Mapping | undefined>;
  private channel = -1;
  private replyAck = false;
  private reader: MessageReader | null = null;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  private pending: Pending | null = null;
  /** Why the channel can no longer be used (a reply that never came could still come late). */
  private broken: string | null = null;
  /** Requests to the front end, one after the other. */
  private queue: Promise<unknown> = Promise.resolve();
  private mapped = 0;

  constructor(
    /** The window's size in bytes, a multiple of DAX_CHUNK. */
    readonly size: number,
    private readonly log: Logger,
  ) {
    this.byChunk = new Array<Mapping | undefined>(size / DAX_CHUNK);
  }

  /** Ranges mapped now. */
  get mappings(): number {
    return this.mapped;
  }

  /**
   * The backend channel arrived (fd) or is about to be closed (-1); replyAck: REPLY_ACK was
   * negotiated, without which the front end's answer cannot be known.
   */
  setChannel(fd: number, replyAck: boolean): void {
    this.watcher?.close();
    this.watcher = null;
    this.reader = null;
    this.failPending();
    this.channel = fd;
    this.replyAck = replyAck;
    this.broken = null;
    if (fd < 0) return;
    this.reader = new MessageReader(fd, 8);
    this.watcher = new native.FdWatcher(fd, false, () => this.onReadable());
    this.watcher.start();
  }

  /** The device was reset or the connection ended: the front end dropped every mapping. */
  reset(): void {
    this.byChunk.fill(undefined);
    this.mapped = 0;
  }

  /** A new FUSE session (INIT): what the last one mapped goes. */
  async sessionStart(): Promise<void> {
    if (this.mapped === 0) return;
    const all: Mapping[] = [...new Set(this.byChunk.filter((m): m is Mapping => m !== undefined))];
    for (const m of all) await this.unmap(m).catch(() => undefined);
  }

  /**
   * FUSE_SETUPMAPPING: len bytes of the file behind fd from foffset, at moffset of the window.
   * The caller keeps fd (the front end receives its own copy) and closes it afterwards.
   */
  async map(fd: number, foffset: number, len: number, moffset: number, write: boolean): Promise<void> {
    const [chunk, chunks] = this.chunksOf(moffset, len);
    if (foffset % DAX_CHUNK !== 0) throw new DaxError(22, `file offset ${foffset} is not 2 MiB-aligned`);
    // Whole mappings in the way go first: the front end maps nothing over a live one.
    const inTheWay = new Set<Mapping>();
    for (let i = chunk; i < chunk + chunks; i++) {
      const m = this.byChunk[i];
      if (m) inTheWay.add(m);
    }
    for (const m of inTheWay) await this.unmap(m);
    const ok = await this.send(BackendReq.SHMEM_MAP, { shmid: 0, fdOffset: foffset, shmOffset: moffset, len, flags: write ? SHMEM_MAP_F_WRITE : 0 }, [fd]);
    if (!ok) throw new DaxError(5, `the front end refused to map ${len} bytes at ${moffset} of the window`);
    const m: Mapping = { chunk, chunks, write };
    for (let i = chunk; i < chunk + chunks; i++) this.byChunk[i] = m;
    this.mapped++;
  }

  /** FUSE_REMOVEMAPPING of one range: every mapping in it goes (whole). */
  async remove(moffset: number, len: number): Promise<void> {
    const [chunk, chunks] = this.chunksOf(moffset, len);
    const found = new Set<Mapping>();
    for (let i = chunk; i < chunk + chunks; i++) {
      const m = this.byChunk[i];
      if (m) found.add(m);
    }
    for (const m of found) await this.unmap(m);
  }

  private chunksOf(moffset: number, len: number): [number, number] {
    if (len <= 0 || moffset % DAX_CHUNK !== 0 || len % DAX_CHUNK !== 0) {
      throw new DaxError(22, `range of ${len} bytes at ${moffset} is not made of 2 MiB chunks`);
    }
    if (moffset + len > this.size) throw new DaxError(22, `range of ${len} bytes at ${moffset} runs past the ${this.size}-byte window`);
    return [moffset / DAX_CHUNK, len / DAX_CHUNK];
  }

  private async unmap(m: Mapping): Promise<void> {
    if (this.byChunk[m.chunk] !== m) return;
    const ok = await this.send(BackendReq.SHMEM_UNMAP, { shmid: 0, fdOffset: 0, shmOffset: m.chunk * DAX_CHUNK, len: m.chunks * DAX_CHUNK, flags: 0 });
    if (!ok) throw new DaxError(5, `the front end refused to unmap ${m.chunks * DAX_CHUNK} bytes at ${m.chunk * DAX_CHUNK} of the window`);
    if (this.byChunk[m.chunk] !== m) return;
    for (let i = m.chunk; i < m.chunk + m.chunks; i++) this.byChunk[i] = undefined;
    this.mapped--;
  }

  /** Sends one request and waits for the front end's answer: true when it did it. */
  private send(request: BackendReq, body: Parameters<typeof encodeShmemMap>[0], fds: number[] = []): Promise<boolean> {
    const run = async (): Promise<boolean> => {
      if (this.channel < 0) throw new DaxError(95, 'no backend channel (the front end did not negotiate BACKEND_REQ)');
      if (!this.replyAck) throw new DaxError(95, 'REPLY_ACK was not negotiated: the front end could not say whether it mapped');
      if (this.broken) throw new DaxError(5, `the backend channel is out of use: ${this.broken}`);
      const payload = encodeShmemMap(body);
      const msg = encodeHeader({ request, flags: Flags.VERSION | Flags.NEED_REPLY, size: payload.length }, 0);
      const answer = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => {
          // Its answer could still come, and be taken for the next request's: the channel is
          // given up until the front end sends a new one.
          this.broken = `${BackendReq[request]} unanswered after ${REPLY_TIMEOUT_MS} ms`;
          this.log.error(`DAX: the front end did not answer ${BackendReq[request]} within ${REPLY_TIMEOUT_MS} ms; no more mappings on this channel`);
          this.watcher?.stop();
          this.pending = null;
          resolve(false);
        }, REPLY_TIMEOUT_MS);
        this.pending = { request, resolve, timer };
      });
      try {
        native.vhostSend(this.channel, Buffer.concat([msg, payload]), fds);
      } catch (e) {
        this.failPending();
        throw new DaxError(5, `backend channel: ${(e as Error).message}`);
      }
      return answer;
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private onReadable(): void {
    for (;;) {
      const r = this.reader?.next();
      if (r === undefined || r === 'incomplete') return;
      if (r === 'closed') {
        this.log.warn('the front end closed the backend channel');
        this.broken = 'the front end closed it';
        this.watcher?.stop();
        this.failPending();
        return;
      }
      for (const fd of r.fds) native.close(fd);
      const p = this.pending;
      const good = p !== null && r.request === p.request && r.flags === (Flags.VERSION | Flags.REPLY) && r.payload !== null && r.payload.length === 8;
      if (!good) {
        this.log.warn({ request: r.request, flags: r.flags }, 'unexpected message on the backend channel; ignored');
        continue;
      }
      clearTimeout(p.timer);
      this.pending = null;
      p.resolve(r.payload!.readBigUInt64LE(0) === 0n);
    }
  }

  private failPending(): void {
    const p = this.pending;
    if (!p) return;
    clearTimeout(p.timer);
    this.pending = null;
    p.resolve(false);
  }
}

/** Bytes of a --dax-window-size value: a number with an optional K, M, G or T suffix (binary). */
export function parseDaxWindowSize(s: string): number {
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(s.trim());
  if (!m) throw new Error(`--dax-window-size: ${s} is not a size (e.g. 1G, 512M)`);
  const scale = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Number(m[1]) * scale;
  if (n % DAX_CHUNK !== 0) throw new Error(`--dax-window-size: ${s} is not a multiple of 2 MiB`);
  if (n > MAX_DAX_WINDOW) throw new Error(`--dax-window-size: ${s} is larger than 1 TiB`);
  return n;
}
