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
 * Operations (a map with the unmaps before it, a removal, a new session's clean-up) run one
 * at a time, each reading the table when its turn comes. Answers are read as the socket
 * turns readable, never blocking the JS thread: the front end may be waiting for a reply of
 * ours on the main channel before it reads the backend channel. A caller stops waiting after
 * 5 s or when its queue stops (EIO for the guest), but the answer, which comes in order,
 * still updates the table when it arrives.
 */

import { constants } from 'node:os';
import type { Logger } from '../log';
import { native } from '../native';
import { MessageReader } from '../vhost/message-reader';
import { BackendReq, encodeHeader, encodeShmemMap, Flags, SHMEM_MAP_F_WRITE } from '../vhost/messages';

const { EINVAL, EIO, EOPNOTSUPP } = constants.errno;

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

/** What became of a request: the front end did it, refused it, or will never say. */
type Outcome = 'done' | 'refused' | 'unknown';

/** A request sent to the front end whose answer has not come. */
interface Awaited {
  request: BackendReq;
  /** Settles the caller's wait (failed: no answer in time, or a stop); null once it gave up. */
  settle: ((result: Outcome | 'failed') => void) | null;
  /** Applied to the table when the outcome is known, even after the caller gave up (abandoned). */
  onAnswer: (outcome: Outcome, abandoned: boolean) => void;
  timer: NodeJS.Timeout | null;
}

/** Requests sent and not answered at most; past it the guest gets EIO without a send. */
const MAX_AWAITED = 64;

export class DaxWindow {
  /** The mapping covering each chunk of the window, if any. */
  private readonly byChunk: Array<Mapping | undefined>;
  private channel = -1;
  private replyAck = false;
  private shmem = false;
  private reader: MessageReader | null = null;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  /**
   * Requests sent and not answered, oldest first. Answers come in order on the stream, so
   * the oldest is the one an answer is for, also when its caller stopped waiting for it.
   */
  private readonly awaited: Awaited[] = [];
  /** Why the channel can no longer be used (its stream cannot be followed any more). */
  private broken: string | null = null;
  /** Whole operations (map, remove, a session's clean-up), one after the other. */
  private ops: Promise<unknown> = Promise.resolve();
  /** Counts abandonWaits(): an operation queued before the last one sends nothing. */
  private epoch = 0;
  private mapped = 0;

  constructor(
    /** The window's size in bytes, a multiple of DAX_CHUNK. */
    readonly size: number,
    private readonly log: Logger,
  ) {
    this.byChunk = new Array<Mapping | undefined>(size / DAX_CHUNK);
  }

  /** Ranges mapped now (as far as the front end's answers tell). */
  get mappings(): number {
    return this.mapped;
  }

  /**
   * The backend channel arrived (fd) or is about to be closed (-1). replyAck: REPLY_ACK was
   * negotiated, without which the front end's answer cannot be known; shmem: so was SHMEM,
   * without which the front end knows no map request.
   */
  setChannel(fd: number, replyAck: boolean, shmem: boolean): void {
    this.watcher?.close();
    this.watcher = null;
    this.reader?.dispose();
    this.reader = null;
    this.forgetAwaited();
    this.channel = fd;
    this.replyAck = replyAck;
    this.shmem = shmem;
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

  /**
   * A queue is stopping: callers waiting for an answer get EIO now, and operations queued
   * behind them send nothing (the front end may read no backend message until the stop is
   * over). Answers that come later still update the table.
   */
  abandonWaits(): void {
    this.epoch++;
    for (const a of this.awaited) this.giveUp(a);
  }

  /**
   * A new FUSE session (INIT): what the last one mapped goes. An entry whose unmap is not
   * answered stays until its answer comes (the front end may still hold the range).
   */
  sessionStart(): Promise<void> {
    const epoch = this.epoch;
    return this.exclusive(async () => {
      for (const m of this.mappingsIn(0, this.byChunk.length)) await this.unmap(m, epoch).catch(() => undefined);
    });
  }

  /**
   * FUSE_SETUPMAPPING: len bytes of the file behind fd from foffset, at moffset of the window.
   * The caller keeps fd (the front end receives its own copy) and closes it afterwards.
   */
  map(fd: number, foffset: number, len: number, moffset: number, write: boolean): Promise<void> {
    const [chunk, chunks] = this.chunksOf(moffset, len);
    if (foffset % DAX_CHUNK !== 0) throw new DaxError(EINVAL, `file offset ${foffset} is not 2 MiB-aligned`);
    this.checkUsable();
    const epoch = this.epoch;
    return this.exclusive(async () => {
      // Whole mappings in the way go first: the front end maps nothing over a live one.
      const inTheWay = this.mappingsIn(chunk, chunks);
      for (const m of inTheWay) await this.unmap(m, epoch);
      const body = { shmid: 0, fdOffset: foffset, shmOffset: moffset, len, flags: write ? SHMEM_MAP_F_WRITE : 0 };
      let result = await this.sendMap(body, fd, { chunk, chunks, write }, epoch);
      const old = inTheWay.length === 1 ? inTheWay[0] : undefined;
      if (result === 'refused' && write && old && !old.write && old.chunk === chunk && old.chunks === chunks) {
        // A refused upgrade: Linux keeps reading through the range it had mapped for reading,
        // which is gone now. Map it for reading again (the guest still gets EIO).
        await this.sendMap({ ...body, flags: 0 }, fd, { chunk, chunks, write: false }, epoch);
        throw new DaxError(EIO, `the front end did not map ${len} bytes at ${moffset} of the window for writing; mapped for reading again`);
      }
      if (result === 'refused' && this.mappingsIn(chunk, chunks).length === 0) {
        // Refused with nothing of ours in the way: the front end holds a mapping there that
        // the table lost (an answer that never came). Exactly this range is what Linux maps
        // and unmaps, so unmap it and try once more.
        const cleared = await this.send(BackendReq.SHMEM_UNMAP, { ...body, fdOffset: 0, flags: 0 }, [], () => undefined, epoch);
        if (cleared === 'done') result = await this.sendMap(body, fd, { chunk, chunks, write }, epoch);
      }
      if (result !== 'done') throw new DaxError(EIO, `the front end did not map ${len} bytes at ${moffset} of the window`);
    });
  }

  /** FUSE_REMOVEMAPPING of one range: every mapping in it goes (whole). */
  remove(moffset: number, len: number): Promise<void> {
    const [chunk, chunks] = this.chunksOf(moffset, len);
    this.checkUsable();
    const epoch = this.epoch;
    return this.exclusive(async () => {
      for (const m of this.mappingsIn(chunk, chunks)) await this.unmap(m, epoch);
    });
  }

  private sendMap(body: Parameters<typeof encodeShmemMap>[0], fd: number, m: Mapping, epoch: number): Promise<Outcome | 'failed'> {
    return this.send(BackendReq.SHMEM_MAP, body, [fd], (outcome, abandoned) => {
      // Recorded when the front end did it (or may have), also after the guest was answered
      // EIO, so that the table shows what the front end holds.
      if (outcome === 'refused') return;
      this.record(m);
      // The guest was told it failed and will not use or remove the range: it goes again.
      if (abandoned && outcome === 'done') void this.exclusive(() => this.unmap(m, this.epoch)).catch(() => undefined);
    }, epoch);
  }

  private checkUsable(): void {
    if (this.channel < 0) throw new DaxError(EOPNOTSUPP, 'no backend channel (the front end did not negotiate BACKEND_REQ)');
    if (!this.shmem) throw new DaxError(EOPNOTSUPP, 'the front end did not negotiate SHMEM');
    if (!this.replyAck) throw new DaxError(EOPNOTSUPP, 'REPLY_ACK was not negotiated: the front end could not say whether it mapped');
  }

  private chunksOf(moffset: number, len: number): [number, number] {
    if (len <= 0 || moffset % DAX_CHUNK !== 0 || len % DAX_CHUNK !== 0) {
      throw new DaxError(EINVAL, `range of ${len} bytes at ${moffset} is not made of 2 MiB chunks`);
    }
    if (moffset + len > this.size) throw new DaxError(EINVAL, `range of ${len} bytes at ${moffset} runs past the ${this.size}-byte window`);
    return [moffset / DAX_CHUNK, len / DAX_CHUNK];
  }

  private mappingsIn(chunk: number, chunks: number): Mapping[] {
    const found = new Set<Mapping>();
    for (let i = chunk; i < chunk + chunks; i++) {
      const m = this.byChunk[i];
      if (m) found.add(m);
    }
    return [...found];
  }

  private record(m: Mapping): void {
    for (const old of this.mappingsIn(m.chunk, m.chunks)) this.drop(old);
    for (let i = m.chunk; i < m.chunk + m.chunks; i++) this.byChunk[i] = m;
    this.mapped++;
  }

  private drop(m: Mapping): void {
    if (this.byChunk[m.chunk] !== m) return;
    for (let i = m.chunk; i < m.chunk + m.chunks; i++) this.byChunk[i] = undefined;
    this.mapped--;
  }

  private async unmap(m: Mapping, epoch: number): Promise<void> {
    if (this.byChunk[m.chunk] !== m) return;
    // A refusal means the front end has no such mapping (it unmaps exact mappings only): the
    // entry goes then too. It stays while the outcome is unknown.
    const result = await this.send(BackendReq.SHMEM_UNMAP, { shmid: 0, fdOffset: 0, shmOffset: m.chunk * DAX_CHUNK, len: m.chunks * DAX_CHUNK, flags: 0 }, [], (outcome) => {
      if (outcome !== 'unknown') this.drop(m);
    }, epoch);
    if (result === 'failed' && this.byChunk[m.chunk] === m) throw new DaxError(EIO, `the front end did not answer the unmap of ${m.chunks * DAX_CHUNK} bytes at ${m.chunk * DAX_CHUNK}`);
  }

  /** Runs op after every operation before it (each reads the table, then changes it). */
  private exclusive(op: () => Promise<void>): Promise<void> {
    const next = this.ops.then(op, op);
    this.ops = next.catch(() => undefined);
    return next;
  }

  /**
   * Sends one request; resolves with what the front end answered, or failed when it did not
   * answer in time or the wait was given up. onAnswer runs once the outcome is known,
   * whenever that is. Nothing is sent for an operation queued before the last abandonWaits().
   */
  private send(request: BackendReq, body: Parameters<typeof encodeShmemMap>[0], fds: number[], onAnswer: Awaited['onAnswer'], epoch: number): Promise<Outcome | 'failed'> {
    if (epoch !== this.epoch) return Promise.reject(new DaxError(EIO, 'a queue stopped while the request waited its turn'));
    if (this.broken) return Promise.reject(new DaxError(EIO, `the backend channel is out of use: ${this.broken}`));
    if (this.awaited.length >= MAX_AWAITED) return Promise.reject(new DaxError(EIO, `${MAX_AWAITED} requests to the front end are unanswered`));
    this.checkUsable();
    const payload = encodeShmemMap(body);
    const msg = encodeHeader({ request, flags: Flags.VERSION | Flags.NEED_REPLY, size: payload.length }, 0);
    return new Promise<Outcome | 'failed'>((resolve, reject) => {
      const a: Awaited = { request, settle: resolve, onAnswer, timer: null };
      try {
        native.vhostSend(this.channel, Buffer.concat([msg, payload]), fds);
      } catch (e) {
        reject(new DaxError(EIO, `backend channel: ${(e as Error).message}`));
        return;
      }
      a.timer = setTimeout(() => {
        this.log.warn(`DAX: the front end did not answer ${BackendReq[request]} within ${REPLY_TIMEOUT_MS} ms; the guest gets EIO (a late answer still counts)`);
        this.giveUp(a);
      }, REPLY_TIMEOUT_MS);
      this.awaited.push(a);
    });
  }

  private giveUp(a: Awaited): void {
    if (a.timer) clearTimeout(a.timer);
    a.timer = null;
    const settle = a.settle;
    a.settle = null;
    settle?.('failed');
  }

  private onReadable(): void {
    for (;;) {
      let r: ReturnType<MessageReader['next']> | undefined;
      try {
        r = this.reader?.next();
      } catch (e) {
        // A socket error (the front end went away with our request unread): as a close.
        this.log.warn({ err: e }, 'DAX: the backend channel failed');
        r = 'closed';
      }
      if (r === undefined || r === 'incomplete') return;
      if (r === 'closed') {
        this.log.warn('DAX: the front end closed the backend channel');
        this.giveUpChannel('the front end closed it');
        return;
      }
      for (const fd of r.fds) native.close(fd);
      const a = this.awaited[0];
      const good = a !== undefined && r.request === a.request && r.flags === (Flags.VERSION | Flags.REPLY) && r.payload !== null && r.payload.length === 8;
      if (!good) {
        // Not the answer the oldest request waits for: the stream cannot be followed.
        this.log.error({ request: r.request, flags: r.flags, size: r.size }, 'DAX: unexpected message on the backend channel; no more mappings on it');
        this.giveUpChannel('an unexpected message came on it');
        return;
      }
      this.awaited.shift();
      const done = r.payload!.readBigUInt64LE(0) === 0n;
      if (a.timer) clearTimeout(a.timer);
      a.onAnswer(done ? 'done' : 'refused', a.settle === null);
      a.settle?.(done ? 'done' : 'refused');
    }
  }

  /** The channel cannot be used any more: waits end, and what the front end holds is unknown. */
  private giveUpChannel(why: string): void {
    this.broken = why;
    this.watcher?.stop();
    this.forgetAwaited();
  }

  /**
   * Requests that will never be answered: their callers get EIO. A map whose outcome is
   * unknown counts as done (a later map there unmaps it first); an unmap's entry stays.
   */
  private forgetAwaited(): void {
    for (const a of this.awaited.splice(0)) {
      a.onAnswer('unknown', a.settle === null);
      this.giveUp(a);
    }
  }
}

/** Bytes of a --dax-window-size value: a number with an optional K, M, G or T suffix (binary). */
export function parseDaxWindowSize(s: string): number {
  const m = /^(\d+)([KMGT]?)i?B?$/i.exec(s.trim());
  if (!m) throw new Error(`--dax-window-size: ${s} is not a size (e.g. 1G, 512M)`);
  const scale = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  const n = Number(m[1]) * scale;
  if (n === 0) throw new Error('--dax-window-size: 0 is no window (leave the option out)');
  if (n % DAX_CHUNK !== 0) throw new Error(`--dax-window-size: ${s} is not a multiple of 2 MiB`);
  if (n > MAX_DAX_WINDOW) throw new Error(`--dax-window-size: ${s} is larger than 1 TiB`);
  return n;
}
