/**
 * A vhost-user front end in TypeScript: it plays QEMU's part against a vhost-user-fs
 * backend (ours, or the Rust / C reference virtiofsd), for tests and benchmarks.
 *
 * Follows docs/interop/vhost-user.rst and the message order QEMU 7.2 uses for
 * vhost-user-fs-pci (see /work/shared/docs/PROTOCOL.md):
 *   device realize (negotiate): GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
 *     GET_QUEUE_NUM, [GET_MAX_MEM_SLOTS], [SET_BACKEND_REQ_FD], SET_OWNER, GET_FEATURES,
 *     then per queue SET_VRING_CALL (QEMU's "masked" notifier) and SET_VRING_ERR;
 *   guest DRIVER_OK (startQueues): SET_FEATURES, SET_MEM_TABLE (or ADD_MEM_REG per new
 *     region when CONFIGURE_MEM_SLOTS is negotiated, as QEMU does), per queue SET_VRING_NUM,
 *     SET_VRING_BASE, SET_VRING_ADDR (front-end virtual addresses), SET_VRING_KICK; then
 *     SET_VRING_ENABLE 1 per queue (by default waiting for each to be applied, as QEMU
 *     >= 8.2 does; see NegotiateOptions.syncEnable); [SET_STATUS]; then SET_VRING_CALL per
 *     queue (the real call eventfd, QEMU unmasking the guest notifier);
 *   guest reset / VM stop (stopQueues): [SET_STATUS 0], SET_VRING_ENABLE 0 per queue,
 *     GET_VRING_BASE per queue, SET_VRING_CALL (masked notifier) per queue.
 * Quitting is EOF on the socket (close()).
 *
 * Replies must carry flags exactly VERSION|REPLY (0x5) and the request's code, as QEMU
 * insists. Every wait has a timeout and fails naming what it waited for. Completions are
 * awaited with FdWatcher on the call eventfd (the event loop keeps running), or, in 'poll'
 * mode for benchmarks, by spinning on used.idx for a bounded time between event-loop turns.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native, type FdWatcher } from '../../src/native';
import { MessageReader } from '../../src/vhost/message-reader';
import {
  FrontendReq,
  Flags,
  VirtioFeature,
  ProtocolFeature,
  MAX_FDS,
  MAX_MEM_REGIONS,
  VRING_NOFD_MASK,
  HEADER_SIZE,
  bit,
  hasBit,
  encodeHeader,
  encodeVringState,
  decodeVringState,
  encodeVringAddr,
  encodeLog,
  encodeMemoryTable,
  encodeMemRegMsg,
  type MemoryRegion,
  type ReceivedMessage,
} from '../../src/vhost/messages';
import { GuestMemory, type GuestMemoryOptions } from './guest-memory';
import { Virtqueue, type Segment, type UsedElem } from './vring';

export class VhostUserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VhostUserError';
  }
}

export type NotifyMode = 'eventfd' | 'poll';

/**
 * What the front end kicks through: an eventfd, as QEMU on Linux, or a FIFO, as QEMU's
 * event notifiers where eventfd is missing (the daemon reads 8 bytes a kick either way).
 */
export type KickKind = 'eventfd' | 'fifo';

/** A FIFO's two ends, the read end non-blocking; the FIFO's name is gone once both are open. */
function openFifo(): { readFd: number; writeFd: number } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-kick-'));
  const name = path.join(dir, 'kick');
  try {
    execFileSync('mkfifo', [name]);
    const readFd = fs.openSync(name, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    return { readFd, writeFd: fs.openSync(name, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Largest reply payload we accept on the vhost-user socket. */
const MAX_REPLY = 8192;
const DEFAULT_REPLY_TIMEOUT_MS = 5000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10000;

/** Virtio device status bits (virtio 1.2, 2.1). */
export const DeviceStatus = Object.freeze({
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  NEEDS_RESET: 64,
  FAILED: 128,
} as const);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function reqName(request: number): string {
  return FrontendReq[request] ?? `request ${request}`;
}

function errCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}

// ---- one virtqueue with its notifiers ----------------------------------------------------

export interface SubmitOptions {
  /** For error messages, e.g. "FUSE LOOKUP unique 4". */
  label?: string;
  timeoutMs?: number;
  indirect?: boolean;
}

interface Pending {
  head: number;
  label: string;
  deadline: number;
  timeoutMs: number;
  resolve: (u: UsedElem) => void;
  reject: (e: Error) => void;
}

interface Waiter {
  readable: Segment[];
  writable: Segment[];
  indirect: boolean;
  label: string;
  deadline: number;
  timeoutMs: number;
  resolve: (u: UsedElem) => void;
  reject: (e: Error) => void;
}

/**
 * An eventfd with its FdWatcher, recycled through a pool instead of being closed.
 *
 * Why: an FdWatcher's native destructor runs at some later garbage collection and stops its
 * uv_poll handle, and libuv then removes the fd *number* from epoll (EPOLL_CTL_DEL). Had we
 * closed the fd and had the number been reused by another watched descriptor, that other
 * watcher would silently stop firing. Watched eventfds are therefore never closed; a stale
 * signal from a previous backend is harmless (a spurious call).
 */
class WatchedEventfd {
  readonly fd: number;
  handler: (() => void) | null = null;
  private readonly watcher: FdWatcher;
  private active = false;

  constructor() {
    this.fd = native.eventfdCreate();
    this.watcher = new native.FdWatcher(this.fd, true, () => this.handler?.());
  }

  start(): void {
    if (!this.active) {
      this.active = true;
      this.watcher.start();
    }
  }

  stop(): void {
    if (this.active) {
      this.active = false;
      this.watcher.stop();
    }
  }
}

const eventfdPool: WatchedEventfd[] = [];

function acquireWatchedEventfd(handler: () => void): WatchedEventfd {
  const w = eventfdPool.pop() ?? new WatchedEventfd();
  native.eventfdRead(w.fd); // drop stale signals
  w.handler = handler;
  return w;
}

function releaseWatchedEventfd(w: WatchedEventfd): void {
  w.stop();
  w.handler = null;
  native.eventfdRead(w.fd);
  eventfdPool.push(w);
}

/**
 * A virtqueue plus its kick / call / masked-call / err eventfds and the completion
 * dispatch: submit() a chain, get a promise of its used element. When the ring is full,
 * submissions wait (FIFO) for descriptors to come back.
 */
export class FrontendQueue {
  readonly index: number;
  readonly vq: Virtqueue;
  /** What the daemon waits on for kicks, and what kicks are written to (the same eventfd, or a FIFO's ends). */
  readonly kickFd: number;
  private readonly kickWriteFd: number;
  readonly callFd: number;
  /** What QEMU hands out while the guest notifier is masked (before start, after stop). */
  readonly maskedCallFd: number;
  readonly errFd: number;
  /** Number of kicks written, and of call-eventfd wake-ups seen. */
  kicks = 0;
  calls = 0;
  /**
   * Wake-ups from the masked call eventfd. QEMU forwards a signal that arrived while the
   * guest notifier was masked when it unmasks it; and since SET_VRING_CALL gets no reply, a
   * backend may signal the old (masked) eventfd for a request submitted right after a
   * start. We therefore watch both and count these separately.
   */
  maskedCalls = 0;
  /** Microseconds to spin on used.idx per event-loop turn in 'poll' mode. */
  spinMicros = 50;
  defaultTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS;
  /** Used elements whose head nobody waited for (raw chains, timed-out requests). */
  readonly strays: UsedElem[] = [];
  private mode: NotifyMode;
  private readonly pending = new Map<number, Pending>();
  private waiting: Waiter[] = [];
  private readonly call: WatchedEventfd;
  private readonly maskedCall: WatchedEventfd;
  private watching = false;
  private pollScheduled = false;
  private kickScheduled = false;
  private disarmScheduled = false;
  private addedSinceKick = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerDeadline = Infinity;
  private closed = false;
  private fatal: Error | null = null;

  constructor(index: number, vq: Virtqueue, mode: NotifyMode, kick: KickKind = 'eventfd') {
    this.index = index;
    this.vq = vq;
    this.mode = mode;
    if (kick === 'fifo') ({ readFd: this.kickFd, writeFd: this.kickWriteFd } = openFifo());
    else this.kickFd = this.kickWriteFd = native.eventfdCreate();
    this.errFd = native.eventfdCreate();
    this.call = acquireWatchedEventfd(() => {
      this.calls++;
      this.drain();
    });
    this.maskedCall = acquireWatchedEventfd(() => {
      this.maskedCalls++;
      this.drain();
    });
    this.callFd = this.call.fd;
    this.maskedCallFd = this.maskedCall.fd;
    if (mode === 'poll') vq.disableInterrupts();
  }

  get notifyMode(): NotifyMode {
    return this.mode;
  }

  setNotifyMode(mode: NotifyMode): void {
    this.mode = mode;
    if (mode === 'poll') {
      this.vq.disableInterrupts();
      this.stopWatching();
    }
    this.arm();
  }

  /** Requests submitted and not yet completed (or timed out). */
  get outstanding(): number {
    return this.pending.size + this.waiting.length;
  }

  /** Adds a chain (readable then writable segments); resolves with its used element. */
  submit(readable: Segment[], writable: Segment[], opts: SubmitOptions = {}): Promise<UsedElem> {
    if (this.closed) return Promise.reject(new VhostUserError(`queue ${this.index} is closed`));
    if (this.fatal) return Promise.reject(this.fatal);
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    return new Promise<UsedElem>((resolve, reject) => {
      const w: Waiter = {
        readable,
        writable,
        indirect: opts.indirect ?? false,
        label: opts.label ?? 'chain',
        deadline: Date.now() + timeoutMs,
        timeoutMs,
        resolve,
        reject,
      };
      if (this.waiting.length > 0 || !this.tryAdd(w)) this.waiting.push(w);
      this.armTimer(w.deadline);
      this.arm();
    });
  }

  /**
   * For hand-built chains (vq.writeDescriptor & co): puts `head` in the next avail slot,
   * publishes and kicks, and waits for the device to return that id.
   */
  submitRaw(head: number, opts: { label?: string; timeoutMs?: number } = {}): Promise<UsedElem> {
    if (this.closed) return Promise.reject(new VhostUserError(`queue ${this.index} is closed`));
    if (this.fatal) return Promise.reject(this.fatal);
    const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
    return new Promise<UsedElem>((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      this.pending.set(head, { head, label: opts.label ?? `raw head ${head}`, deadline, timeoutMs, resolve, reject });
      this.vq.pushAvailRaw(head);
      this.addedSinceKick++;
      this.vq.publish();
      this.scheduleKick();
      this.armTimer(deadline);
      this.arm();
    });
  }

  /** Writes the kick eventfd now, whatever the device's notification suppression says. */
  kickNow(): void {
    native.eventfdWrite(this.kickWriteFd, 1);
    this.kicks++;
  }

  /**
   * Hands the ring to another driver (the benchmark's native one) while no request of ours
   * is in flight: stops watching the call eventfd, so that the other driver gets every
   * wake-up, and gives what it needs. Call resume() with its final indices afterwards.
   */
  lend(): { avail: Buffer; used: Buffer; size: number; eventIdx: boolean; availIdx: number; lastUsed: number; kickFd: number; callFd: number } {
    if (this.closed) throw new VhostUserError(`queue ${this.index} is closed`);
    if (this.outstanding > 0) throw new VhostUserError(`queue ${this.index}: ${this.outstanding} requests outstanding, the ring cannot be lent`);
    this.disarm();
    const { avail, used } = this.vq.ringBuffers();
    return { avail, used, size: this.vq.size, eventIdx: this.vq.eventIdx, availIdx: this.vq.availIdx, lastUsed: this.vq.lastUsedIdx, kickFd: this.kickWriteFd, callFd: this.callFd };
  }

  /** Takes the ring back at the other driver's indices, counting its kicks and wake-ups. */
  resume(r: { availIdx: number; lastUsed: number; kicks: number; wakeups: number }): void {
    this.vq.resumeAt(r.availIdx, r.lastUsed);
    this.kicks += r.kicks;
    this.calls += r.wakeups;
  }

  /** Number of times the backend signalled the err eventfd since the last read. */
  readErr(): number {
    return native.eventfdRead(this.errFd);
  }

  /**
   * Fails every outstanding request; with permanent, later submissions fail at once with
   * the same error (the daemon died).
   */
  failAll(err: Error, permanent = false): void {
    if (permanent) this.fatal = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    for (const w of this.waiting) w.reject(err);
    this.waiting = [];
    this.disarm();
  }

  close(): void {
    if (this.closed) return;
    this.failAll(new VhostUserError(`queue ${this.index} closed with requests outstanding`));
    this.closed = true;
    this.stopWatching();
    releaseWatchedEventfd(this.call);
    releaseWatchedEventfd(this.maskedCall);
    native.close(this.kickFd);
    if (this.kickWriteFd !== this.kickFd) native.close(this.kickWriteFd);
    native.close(this.errFd);
  }

  // ---- internals ----

  private tryAdd(w: Waiter): boolean {
    const n = w.readable.length + w.writable.length;
    if (!this.vq.canAdd(n, w.indirect)) {
      if (!w.indirect && n > this.vq.size) {
        w.reject(new VhostUserError(`queue ${this.index}: ${w.label} needs ${n} descriptors, queue size is ${this.vq.size}`));
        return true;
      }
      return false;
    }
    let head: number;
    try {
      head = this.vq.addChain(w.readable, w.writable, { indirect: w.indirect });
    } catch (e) {
      // e.g. no guest memory left for an indirect table: this request fails, not the queue
      w.reject(e instanceof Error ? e : new Error(String(e)));
      return true;
    }
    this.pending.set(head, {
      head,
      label: w.label,
      deadline: w.deadline,
      timeoutMs: w.timeoutMs,
      resolve: w.resolve,
      reject: w.reject,
    });
    // Linux publishes avail.idx at every add and kicks once per batch (num_added).
    this.vq.publish();
    this.addedSinceKick++;
    this.scheduleKick();
    return true;
  }

  private scheduleKick(): void {
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    queueMicrotask(() => {
      this.kickScheduled = false;
      if (this.closed || this.addedSinceKick === 0) return;
      const newIdx = this.vq.availIdx;
      const oldIdx = (newIdx - this.addedSinceKick) & 0xffff;
      this.addedSinceKick = 0;
      if (this.vq.needsKick(oldIdx, newIdx)) this.kickNow();
    });
  }

  private retryWaiting(): void {
    while (this.waiting.length > 0 && this.tryAdd(this.waiting[0])) this.waiting.shift();
  }

  private complete(u: UsedElem): void {
    const p = this.pending.get(u.id);
    if (!p) {
      this.strays.push(u);
      return;
    }
    this.pending.delete(u.id);
    p.resolve(u);
  }

  /** Consumes the used ring; in eventfd mode re-enables interrupts without losing a race. */
  private drain(): void {
    if (this.closed) return;
    try {
      for (;;) {
        let u: UsedElem | null;
        while ((u = this.vq.popUsed()) !== null) this.complete(u);
        this.retryWaiting();
        if (this.mode === 'poll' || this.vq.enableInterrupts()) break;
      }
    } catch (e) {
      this.fatal = e instanceof Error ? e : new Error(String(e));
      this.failAll(this.fatal);
      return;
    }
    if (this.outstanding === 0) this.disarmSoon();
    else if (this.mode === 'poll') this.schedulePoll();
  }

  /**
   * Disarms once this event-loop turn is over, unless new requests came meanwhile. The
   * requests a completion resolves are often followed by new ones from the same callers (a
   * benchmark's lanes), which would otherwise stop and restart the eventfd watchers (four
   * epoll_ctl calls) and the timeout timer for every batch.
   */
  private disarmSoon(): void {
    if (this.disarmScheduled) return;
    this.disarmScheduled = true;
    setImmediate(() => {
      this.disarmScheduled = false;
      if (this.outstanding === 0) this.disarm();
    });
  }

  private arm(): void {
    if (this.closed || this.outstanding === 0) return;
    if (this.mode === 'eventfd') {
      if (!this.watching) {
        this.watching = true;
        this.call.start();
        this.maskedCall.start();
        // Completions may have landed while nobody watched: look once.
        setImmediate(() => this.drain());
      }
    } else {
      this.schedulePoll();
    }
  }

  private disarm(): void {
    this.stopWatching();
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this.timerDeadline = Infinity;
    }
  }

  private stopWatching(): void {
    if (this.watching) {
      this.watching = false;
      this.call.stop();
      this.maskedCall.stop();
    }
  }

  private schedulePoll(): void {
    if (this.pollScheduled) return;
    this.pollScheduled = true;
    setImmediate(() => {
      this.pollScheduled = false;
      if (this.closed || this.mode !== 'poll') return;
      // Bounded spin: at most spinMicros before giving the event loop a turn.
      const end = process.hrtime.bigint() + BigInt(Math.round(this.spinMicros * 1000));
      while (!this.vq.hasUsed() && process.hrtime.bigint() < end) {
        /* spin */
      }
      this.drain();
    });
  }

  private armTimer(deadline: number): void {
    if (deadline >= this.timerDeadline) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDeadline = deadline;
    this.timer = setTimeout(() => this.sweep(), Math.max(0, deadline - Date.now()));
  }

  private sweep(): void {
    this.timer = null;
    this.timerDeadline = Infinity;
    const now = Date.now();
    let next = Infinity;
    for (const [head, p] of this.pending) {
      if (p.deadline <= now) {
        this.pending.delete(head);
        p.reject(this.timeoutError(p.label, p.timeoutMs, head));
      } else next = Math.min(next, p.deadline);
    }
    this.waiting = this.waiting.filter((w) => {
      if (w.deadline > now) {
        next = Math.min(next, w.deadline);
        return true;
      }
      w.reject(this.timeoutError(w.label, w.timeoutMs, null));
      return false;
    });
    if (next !== Infinity) this.armTimer(next);
    else if (this.outstanding === 0) this.disarm();
  }

  private timeoutError(label: string, ms: number, head: number | null): VhostUserError {
    const where = head === null ? 'still waiting for free descriptors' : `head ${head}`;
    let hint = '';
    if (head !== null && this.vq.hasUsed()) {
      hint = this.mode === 'eventfd' ? '; the device published used entries but did not signal the call eventfd' : '';
    }
    return new VhostUserError(
      `queue ${this.index}: no completion for ${label} (${where}) within ${ms} ms; ${this.vq.describeState()}; ` +
        `kicks ${this.kicks}, calls ${this.calls}, masked calls ${this.maskedCalls}${hint}`,
    );
  }
}

// ---- backend channel (SET_BACKEND_REQ_FD) ----------------------------------------------

/** Handles a backend request; returns the u64 reply (0 = success) sent if NEED_REPLY, or null to send none. */
export type BackendHandler = (m: ReceivedMessage) => bigint | number | null;

/**
 * Our end of the backend request channel (SET_BACKEND_REQ_FD). Polled every millisecond
 * rather than watched with FdWatcher (see WatchedEventfd on closing watched fds); a message
 * the backend writes in pieces is assembled by a MessageReader. The timer is unref'd.
 */
class BackendChannel {
  readonly fd: number;
  readonly messages: ReceivedMessage[] = [];
  closedByPeer = false;
  private readonly timer: NodeJS.Timeout;
  private readonly reader: MessageReader;
  private closed = false;

  constructor(fd: number, private readonly handler: BackendHandler) {
    this.fd = fd;
    this.reader = new MessageReader(fd, MAX_REPLY);
    this.timer = setInterval(() => this.poll(), 1);
    this.timer.unref();
  }

  private poll(): void {
    while (!this.closed && native.pollReadable(this.fd, 0)) {
      let m: ReturnType<MessageReader['next']>;
      try {
        m = this.reader.next();
      } catch {
        m = 'closed';
      }
      if (m === 'incomplete') return;
      if (m === 'closed' || m.payload === null) {
        this.closedByPeer = true;
        this.close();
        return;
      }
      this.messages.push(m);
      const result = this.handler(m);
      if (result !== null && m.flags & Flags.NEED_REPLY) {
        const b = encodeHeader({ request: m.request, flags: Flags.VERSION | Flags.REPLY, size: 8 });
        b.writeBigUInt64LE(BigInt(result), HEADER_SIZE);
        native.vhostSend(this.fd, b);
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.reader.dispose();
    native.close(this.fd);
  }
}

const defaultBackendHandler: BackendHandler = (m) => {
  for (const fd of m.fds) native.close(fd);
  return 0;
};

// ---- the front end ---------------------------------------------------------------------

export interface ConnectOptions {
  /** How long to retry while the socket does not exist / refuses (default 10 s). */
  timeoutMs?: number;
  /** Timeout for each reply on the socket (default 5 s). */
  replyTimeoutMs?: number;
  /** Polled while retrying: a string aborts the wait with that reason (daemon died...). */
  abortIf?: () => string | null;
}

export interface NegotiateOptions {
  /** Guest memory to use, or options to create one (owned and closed by the front end). */
  memory?: GuestMemory | GuestMemoryOptions;
  /** Request queues (queue 0 is hiprio, 1..N request queues); default 1. */
  requestQueues?: number;
  /** Ring size of every queue (power of two <= 1024); default 128, QEMU's default. */
  queueSize?: number;
  /** Ack VIRTIO_RING_F_EVENT_IDX when offered (default true). */
  eventIdx?: boolean;
  /** Ack VIRTIO_RING_F_INDIRECT_DESC when offered (default true). */
  indirect?: boolean;
  /**
   * Memory description: undefined = as QEMU (ADD_MEM_REG per region iff CONFIGURE_MEM_SLOTS
   * is negotiated, else SET_MEM_TABLE); true = ADD_MEM_REG (fails if not negotiated);
   * false = SET_MEM_TABLE always.
   */
  useAddMemReg?: boolean;
  /** Ack BACKEND_REQ (+ BACKEND_SEND_FD) and open the backend channel (default false). */
  backendReq?: boolean;
  backendHandler?: BackendHandler;
  /** Ack REPLY_ACK when offered (default true). */
  replyAck?: boolean;
  /** Send SET_STATUS when STATUS is negotiated (default false: not all QEMU 7.2 builds do). */
  status?: boolean;
  /**
   * Wait for each SET_VRING_ENABLE to be applied, as QEMU >= 8.2 does (default true; the
   * message order is unchanged, only NEED_REPLY is added). QEMU 7.2 does not (false): a
   * request kicked right after start may then reach a backend that has not enabled the ring
   * yet, and a backend that drains and drops such a kick (the Rust vhost-user-backend's
   * read_kick returns "disabled") stalls. A real guest rarely kicks that fast; we do.
   */
  syncEnable?: boolean;
  /** Send SET_VRING_ERR at init, as QEMU 7.2 does (default true). */
  vringErr?: boolean;
  /** Protocol features we are willing to ack (default: see defaultProtocolMask). */
  protocolMask?: bigint;
  /** Extra virtio feature bits to ack if offered. */
  extraFeatures?: bigint;
  notify?: NotifyMode;
  /** What every queue kicks through (default 'eventfd'). */
  kick?: KickKind;
  /** Region index for the rings (default: first fit). */
  ringRegion?: number;
  /** Per-request completion timeout (default 10 s). */
  requestTimeoutMs?: number;
}

export interface Negotiated {
  /** Virtio features the backend offered. */
  features: bigint;
  ackedFeatures: bigint;
  /** Protocol features the backend offered (0 without VHOST_USER_F_PROTOCOL_FEATURES). */
  protocolFeatures: bigint;
  ackedProtocolFeatures: bigint;
  /** GET_QUEUE_NUM reply, when MQ was negotiated. */
  queueNum: number | null;
  /** GET_MAX_MEM_SLOTS reply, when CONFIGURE_MEM_SLOTS was negotiated. */
  maxMemSlots: number | null;
}

/** Protocol features our front end implements: QEMU 7.2's set minus what it never uses here. */
export function defaultProtocolMask(opts: { backendReq?: boolean; replyAck?: boolean } = {}): bigint {
  let m =
    bit(ProtocolFeature.MQ) |
    bit(ProtocolFeature.LOG_SHMFD) |
    bit(ProtocolFeature.RESET_DEVICE) |
    bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
    bit(ProtocolFeature.STATUS);
  if (opts.replyAck ?? true) m |= bit(ProtocolFeature.REPLY_ACK);
  if (opts.backendReq) m |= bit(ProtocolFeature.BACKEND_REQ) | bit(ProtocolFeature.BACKEND_SEND_FD);
  return m;
}

export function describeFeatures(mask: bigint, names: Record<string, number>): string {
  const out: string[] = [];
  for (const [k, v] of Object.entries(names)) if (hasBit(mask, v)) out.push(k);
  let rest = mask;
  for (const v of Object.values(names)) rest &= ~bit(v);
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out.join('|') || '0';
}

interface StartState {
  status: boolean;
  memMode: 'table' | 'add';
  syncEnable: boolean;
}

export class VhostUserFrontend {
  readonly fd: number;
  readonly socketPath: string;
  replyTimeoutMs: number;
  memory: GuestMemory | null = null;
  queues: FrontendQueue[] = [];
  features = 0n;
  ackedFeatures = 0n;
  protocolFeatures = 0n;
  ackedProtocolFeatures = 0n;
  /** Names of the requests sent, in order (for tests of the sequence). */
  readonly trace: string[] = [];
  private receiver: { fail: (e: Error) => void } | null = null;
  /** Keeps what has arrived of a message the backend writes in pieces (libvhost-user does). */
  private readonly reader: MessageReader;
  private lock: Promise<unknown> = Promise.resolve();
  private broken: string | null = null;
  private closed = false;
  private ownsMemory = false;
  private backend: BackendChannel | null = null;
  private sentRegions: MemoryRegion[] = [];
  private start: StartState = { status: false, memMode: 'table', syncEnable: true };
  private started = false;

  private constructor(fd: number, socketPath: string, replyTimeoutMs: number) {
    this.fd = fd;
    this.reader = new MessageReader(fd, MAX_REPLY);
    this.socketPath = socketPath;
    this.replyTimeoutMs = replyTimeoutMs;
  }

  /** Connects, retrying while the socket is missing or refuses, up to timeoutMs. */
  static async connect(socketPath: string, opts: ConnectOptions = {}): Promise<VhostUserFrontend> {
    const timeoutMs = opts.timeoutMs ?? 10000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const fd = native.unixConnect(socketPath);
        return new VhostUserFrontend(fd, socketPath, opts.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS);
      } catch (e) {
        const code = errCode(e);
        if (code !== 'ENOENT' && code !== 'ECONNREFUSED') throw e;
        const reason = opts.abortIf?.();
        if (reason) throw new VhostUserError(`gave up connecting to ${socketPath}: ${reason}`);
        if (Date.now() >= deadline) {
          throw new VhostUserError(`could not connect to ${socketPath} within ${timeoutMs} ms (last error ${code})`);
        }
        await sleep(20);
      }
    }
  }

  get backendMessages(): ReceivedMessage[] {
    return this.backend?.messages ?? [];
  }

  queue(i: number): FrontendQueue {
    const q = this.queues[i];
    if (!q) throw new VhostUserError(`no queue ${i} (have ${this.queues.length})`);
    return q;
  }

  // ---- raw transport ----------------------------------------------------------------

  /**
   * Sends one message as given: any request code, flags and payload; `size` overrides the
   * header's size field (to lie about it). No reply is awaited.
   */
  sendRaw(request: number, flags: number, payload: Buffer = Buffer.alloc(0), fds: number[] = [], size?: number): void {
    this.checkOpen();
    if (fds.length > MAX_FDS) throw new VhostUserError(`${fds.length} fds in one message (max ${MAX_FDS})`);
    const b = encodeHeader({ request, flags, size: size ?? payload.length }, payload.length);
    payload.copy(b, HEADER_SIZE);
    this.trace.push(reqName(request));
    native.vhostSend(this.fd, b, fds);
  }

  /** Writes bytes on the backend channel, as our end of it (late answers, garbage). */
  backendSend(data: Buffer, fds: number[] = []): void {
    if (!this.backend) throw new VhostUserError('no backend channel');
    native.vhostSend(this.backend.fd, data, fds);
  }

  /** Sends arbitrary bytes (truncated headers and the like). */
  sendBytes(data: Buffer, fds: number[] = []): void {
    this.checkOpen();
    native.vhostSend(this.fd, data, fds);
  }

  /**
   * Receives one message; null when the backend closed the connection. Polls for at most
   * 1 ms at a time and gives the event loop a turn in between, until the timeout; a message
   * that has partly arrived is kept until the rest comes.
   */
  recv(timeoutMs = this.replyTimeoutMs, what = 'a message'): Promise<ReceivedMessage | null> {
    this.checkOpen();
    if (this.receiver) return Promise.reject(new VhostUserError('recv() while another recv() is pending'));
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      const me = {
        fail: (e: Error): void => {
          this.receiver = null;
          reject(e);
        },
      };
      this.receiver = me;
      const step = (): void => {
        if (this.receiver !== me) return; // failed by close()
        try {
          const m = native.pollReadable(this.fd, 1) ? this.reader.next() : 'incomplete';
          if (m !== 'incomplete') {
            this.receiver = null;
            resolve(m === 'closed' ? null : m);
            return;
          }
        } catch (e) {
          this.receiver = null;
          this.broken = `receive failed: ${String(e)}`;
          reject(e);
          return;
        }
        if (Date.now() >= deadline) {
          this.receiver = null;
          this.broken = `timed out after ${timeoutMs} ms waiting for ${what}`;
          reject(new VhostUserError(`${this.socketPath}: ${this.broken}`));
          return;
        }
        setImmediate(step);
      };
      step();
    });
  }

  /** Resolves when the backend closes the socket (EOF); fails on any other message. */
  async waitForEof(timeoutMs = this.replyTimeoutMs): Promise<void> {
    const m = await this.recv(timeoutMs, 'the backend to close the connection');
    if (m !== null) {
      for (const fd of m.fds) native.close(fd);
      throw new VhostUserError(`expected EOF, got ${reqName(m.request)} flags 0x${m.flags.toString(16)}`);
    }
  }

  /**
   * One request/reply exchange, serialized with the others. Returns the reply payload for
   * requests that always have one; for others null, after checking the REPLY_ACK u64 when
   * needReply was asked and REPLY_ACK is negotiated.
   */
  request(
    request: FrontendReq,
    payload: Buffer = Buffer.alloc(0),
    opts: { fds?: number[]; needReply?: boolean; hasReply?: boolean } = {},
  ): Promise<Buffer | null> {
    const run = async (): Promise<Buffer | null> => {
      this.checkOpen();
      if (this.broken) throw new VhostUserError(`connection unusable: ${this.broken}`);
      const ack = (opts.needReply ?? false) && hasBit(this.ackedProtocolFeatures, ProtocolFeature.REPLY_ACK);
      const hasReply = opts.hasReply ?? false;
      this.sendRaw(request, Flags.VERSION | (ack ? Flags.NEED_REPLY : 0), payload, opts.fds ?? []);
      if (!hasReply && !ack) return null;
      const name = reqName(request);
      const m = await this.recv(this.replyTimeoutMs, `the reply to ${name}`);
      if (m === null) {
        this.broken = `backend closed the connection instead of replying to ${name}`;
        throw new VhostUserError(this.broken);
      }
      for (const fd of m.fds) native.close(fd);
      if (m.flags !== (Flags.VERSION | Flags.REPLY) || m.request !== request || m.payload === null) {
        this.broken = `bad reply to ${name}: request ${m.request} flags 0x${m.flags.toString(16)} size ${m.size}`;
        throw new VhostUserError(this.broken);
      }
      if (!hasReply) {
        if (m.payload.length !== 8) throw new VhostUserError(`REPLY_ACK for ${name} has ${m.payload.length} bytes`);
        const v = m.payload.readBigUInt64LE(0);
        if (v !== 0n) throw new VhostUserError(`backend failed ${name}: REPLY_ACK ${v}`);
        return null;
      }
      return m.payload;
    };
    const p = this.lock.then(run, run);
    this.lock = p.catch(() => undefined);
    return p;
  }

  /** A request that always has a reply (GET_*): its payload. */
  async requestReply(request: FrontendReq, payload: Buffer = Buffer.alloc(0)): Promise<Buffer> {
    const r = await this.request(request, payload, { hasReply: true });
    if (r === null) throw new VhostUserError(`no reply payload for ${reqName(request)}`);
    return r;
  }

  private async getU64(request: FrontendReq): Promise<bigint> {
    const r = await this.requestReply(request);
    if (r.length !== 8) throw new VhostUserError(`${reqName(request)} reply has ${r.length} bytes, expected 8`);
    return r.readBigUInt64LE(0);
  }

  private async setU64(request: FrontendReq, v: bigint, needReply = false): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    await this.request(request, b, { needReply });
  }

  // ---- typed messages ---------------------------------------------------------------

  getFeatures(): Promise<bigint> {
    return this.getU64(FrontendReq.GET_FEATURES);
  }
  /** SET_FEATURES; with needReply, as QEMU when it turns dirty-page logging on or off. */
  setFeatures(f: bigint, needReply = false): Promise<void> {
    return this.setU64(FrontendReq.SET_FEATURES, f, needReply);
  }
  getProtocolFeatures(): Promise<bigint> {
    return this.getU64(FrontendReq.GET_PROTOCOL_FEATURES);
  }
  setProtocolFeatures(f: bigint): Promise<void> {
    return this.setU64(FrontendReq.SET_PROTOCOL_FEATURES, f);
  }
  async getQueueNum(): Promise<number> {
    return Number(await this.getU64(FrontendReq.GET_QUEUE_NUM));
  }
  async getMaxMemSlots(): Promise<number> {
    return Number(await this.getU64(FrontendReq.GET_MAX_MEM_SLOTS));
  }
  async setOwner(): Promise<void> {
    await this.request(FrontendReq.SET_OWNER);
  }
  async resetOwner(): Promise<void> {
    await this.request(FrontendReq.RESET_OWNER);
  }
  async resetDevice(): Promise<void> {
    await this.request(FrontendReq.RESET_DEVICE);
  }
  async setStatus(status: number): Promise<void> {
    await this.setU64(FrontendReq.SET_STATUS, BigInt(status), true);
  }
  async getStatus(): Promise<number> {
    return Number(await this.getU64(FrontendReq.GET_STATUS));
  }
  async setMemTable(regions: MemoryRegion[], fds: number[]): Promise<void> {
    if (regions.length === 0 || regions.length > MAX_MEM_REGIONS) throw new VhostUserError(`${regions.length} regions`);
    await this.request(FrontendReq.SET_MEM_TABLE, encodeMemoryTable(regions), { fds, needReply: true });
  }
  async addMemReg(region: MemoryRegion, fd: number): Promise<void> {
    await this.request(FrontendReq.ADD_MEM_REG, encodeMemRegMsg(region), { fds: [fd], needReply: true });
  }
  async remMemReg(region: MemoryRegion): Promise<void> {
    await this.request(FrontendReq.REM_MEM_REG, encodeMemRegMsg(region), { needReply: true });
  }
  async setVringNum(index: number, num: number): Promise<void> {
    await this.request(FrontendReq.SET_VRING_NUM, encodeVringState({ index, num }));
  }
  async setVringBase(index: number, num: number): Promise<void> {
    await this.request(FrontendReq.SET_VRING_BASE, encodeVringState({ index, num }));
  }
  async getVringBase(index: number): Promise<number> {
    const r = await this.requestReply(FrontendReq.GET_VRING_BASE, encodeVringState({ index, num: 0 }));
    if (r.length !== 8) throw new VhostUserError(`GET_VRING_BASE reply has ${r.length} bytes, expected 8`);
    const s = decodeVringState(r);
    if (s.index !== index) throw new VhostUserError(`GET_VRING_BASE for queue ${index} answered for queue ${s.index}`);
    return s.num;
  }
  async setVringAddr(index: number, addr: { desc: number; used: number; avail: number }, flags = 0): Promise<void> {
    await this.request(FrontendReq.SET_VRING_ADDR, encodeVringAddr({ index, flags, ...addr, log: 0 }));
  }
  private async setVringFd(request: FrontendReq, index: number, fd: number | null): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(index) | (fd === null ? BigInt(VRING_NOFD_MASK) : 0n));
    await this.request(request, b, { fds: fd === null ? [] : [fd] });
  }
  setVringKick(index: number, fd: number | null): Promise<void> {
    return this.setVringFd(FrontendReq.SET_VRING_KICK, index, fd);
  }
  setVringCall(index: number, fd: number | null): Promise<void> {
    return this.setVringFd(FrontendReq.SET_VRING_CALL, index, fd);
  }
  setVringErr(index: number, fd: number | null): Promise<void> {
    return this.setVringFd(FrontendReq.SET_VRING_ERR, index, fd);
  }
  /**
   * SET_VRING_ENABLE. With sync, wait until the backend has applied it, as QEMU >= 8.2 does
   * (NEED_REPLY under REPLY_ACK, else a GET_FEATURES round trip as a barrier).
   */
  async setVringEnable(index: number, enable: boolean, sync = false): Promise<void> {
    await this.request(FrontendReq.SET_VRING_ENABLE, encodeVringState({ index, num: enable ? 1 : 0 }), {
      needReply: sync,
    });
    if (sync && !hasBit(this.ackedProtocolFeatures, ProtocolFeature.REPLY_ACK)) await this.getFeatures();
  }
  /**
   * SET_LOG_BASE with LOG_SHMFD: the dirty log is size bytes of fd from offset; the backend's
   * u64 status. The Rust virtiofsd echoes the 16-byte log description instead, which QEMU
   * takes (it only waits for the reply): 0 then.
   */
  async setLogBase(fd: number, size: number, offset = 0): Promise<bigint> {
    const r = await this.request(FrontendReq.SET_LOG_BASE, encodeLog({ size: BigInt(size), offset: BigInt(offset) }), { fds: [fd], hasReply: true });
    if (r !== null && r.length === 16) return 0n;
    if (r === null || r.length !== 8) throw new VhostUserError(`SET_LOG_BASE reply of ${r?.length ?? 0} bytes`);
    return r.readBigUInt64LE(0);
  }
  async setBackendReqFd(fd: number): Promise<void> {
    await this.request(FrontendReq.SET_BACKEND_REQ_FD, Buffer.alloc(0), { fds: [fd], needReply: true });
  }

  // ---- the QEMU sequences -----------------------------------------------------------

  /** Device realize + guest driver start, as QEMU 7.2 does it (see the module header). */
  async negotiate(opts: NegotiateOptions = {}): Promise<Negotiated> {
    const requestQueues = opts.requestQueues ?? 1;
    const queueSize = opts.queueSize ?? 128;
    if (!Number.isInteger(requestQueues) || requestQueues < 1 || requestQueues > 255) {
      throw new VhostUserError(`bad number of request queues ${requestQueues}`);
    }
    if (this.queues.length > 0) throw new VhostUserError('negotiate() called twice');
    if (opts.memory instanceof GuestMemory) {
      this.memory = opts.memory;
    } else {
      this.memory = new GuestMemory(opts.memory);
      this.ownsMemory = true;
    }
    const mem = this.memory;

    this.features = await this.getFeatures();
    if (!hasBit(this.features, VirtioFeature.VERSION_1)) {
      throw new VhostUserError(`backend does not offer VIRTIO_F_VERSION_1 (features 0x${this.features.toString(16)})`);
    }
    const hasProtocol = hasBit(this.features, VirtioFeature.VHOST_USER_PROTOCOL_FEATURES);
    if (hasProtocol) {
      this.protocolFeatures = await this.getProtocolFeatures();
      const mask = opts.protocolMask ?? defaultProtocolMask(opts);
      this.ackedProtocolFeatures = this.protocolFeatures & mask;
      await this.setProtocolFeatures(this.ackedProtocolFeatures);
    }
    const pf = this.ackedProtocolFeatures;
    const nqueues = 1 + requestQueues;
    let queueNum: number | null = null;
    if (hasBit(pf, ProtocolFeature.MQ)) {
      queueNum = await this.getQueueNum();
      if (queueNum < nqueues) {
        throw new VhostUserError(`backend supports ${queueNum} queues, ${nqueues} wanted (hiprio + ${requestQueues})`);
      }
    }
    let maxMemSlots: number | null = null;
    if (hasBit(pf, ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      maxMemSlots = await this.getMaxMemSlots();
      if (maxMemSlots < mem.regions.length) {
        throw new VhostUserError(`backend has ${maxMemSlots} memory slots, ${mem.regions.length} regions wanted`);
      }
    }
    if (opts.useAddMemReg === true && !hasBit(pf, ProtocolFeature.CONFIGURE_MEM_SLOTS)) {
      throw new VhostUserError('useAddMemReg asked but CONFIGURE_MEM_SLOTS was not negotiated');
    }
    if (hasBit(pf, ProtocolFeature.BACKEND_REQ)) {
      const [ours, theirs] = native.socketPair();
      try {
        await this.setBackendReqFd(theirs);
      } finally {
        native.close(theirs);
      }
      this.backend = new BackendChannel(ours, opts.backendHandler ?? defaultBackendHandler);
    }
    await this.setOwner();
    this.features = await this.getFeatures();

    let want = bit(VirtioFeature.VERSION_1) | (opts.extraFeatures ?? 0n);
    if (opts.indirect ?? true) want |= bit(VirtioFeature.RING_INDIRECT_DESC);
    if (opts.eventIdx ?? true) want |= bit(VirtioFeature.RING_EVENT_IDX);
    if (hasProtocol) want |= bit(VirtioFeature.VHOST_USER_PROTOCOL_FEATURES);
    this.ackedFeatures = this.features & want;

    const eventIdx = hasBit(this.ackedFeatures, VirtioFeature.RING_EVENT_IDX);
    for (let i = 0; i < nqueues; i++) {
      const vq = new Virtqueue(mem, { size: queueSize, eventIdx, region: opts.ringRegion });
      const q = new FrontendQueue(i, vq, opts.notify ?? 'eventfd', opts.kick);
      if (opts.requestTimeoutMs !== undefined) q.defaultTimeoutMs = opts.requestTimeoutMs;
      this.queues.push(q);
    }
    for (const q of this.queues) {
      await this.setVringCall(q.index, q.maskedCallFd);
      if (opts.vringErr ?? true) await this.setVringErr(q.index, q.errFd);
    }

    const addMode =
      opts.useAddMemReg === true || (opts.useAddMemReg === undefined && hasBit(pf, ProtocolFeature.CONFIGURE_MEM_SLOTS));
    this.start = {
      status: (opts.status ?? false) && hasBit(pf, ProtocolFeature.STATUS),
      memMode: addMode ? 'add' : 'table',
      syncEnable: opts.syncEnable ?? true,
    };
    await this.startQueues(this.queues.map(() => 0));
    return {
      features: this.features,
      ackedFeatures: this.ackedFeatures,
      protocolFeatures: this.protocolFeatures,
      ackedProtocolFeatures: this.ackedProtocolFeatures,
      queueNum,
      maxMemSlots,
    };
  }

  /** Whether the negotiated features include the given virtio feature bit. */
  hasFeature(bitNumber: number): boolean {
    return hasBit(this.ackedFeatures, bitNumber);
  }

  hasProtocolFeature(bitNumber: number): boolean {
    return hasBit(this.ackedProtocolFeatures, bitNumber);
  }

  /** Sends the memory layout: SET_MEM_TABLE, or ADD_MEM_REG for regions not yet sent. */
  private async sendMemory(): Promise<void> {
    const mem = this.requireMemory();
    const regions = mem.describe();
    const fds = mem.regionFds();
    if (this.start.memMode === 'table') {
      await this.setMemTable(regions, fds);
    } else {
      const same = (a: MemoryRegion, b: MemoryRegion): boolean =>
        a.guestPhysAddr === b.guestPhysAddr &&
        a.memorySize === b.memorySize &&
        a.userspaceAddr === b.userspaceAddr &&
        a.mmapOffset === b.mmapOffset;
      // As QEMU's vhost_user_add_remove_regions: remove what went away, add what is new.
      for (const old of this.sentRegions) if (!regions.some((r) => same(r, old))) await this.remMemReg(old);
      for (let i = 0; i < regions.length; i++) {
        if (!this.sentRegions.some((r) => same(r, regions[i]))) await this.addMemReg(regions[i], fds[i]);
      }
    }
    this.sentRegions = regions;
  }

  /**
   * Starts (or restarts) every queue on this connection, as QEMU's vhost_dev_start:
   * SET_FEATURES, memory, per queue NUM/BASE/ADDR/KICK, ENABLE 1 each, [SET_STATUS], CALL
   * each. bases[i] is the avail index queue i resumes at. With resetRings the driver side
   * re-initialises the rings first (a guest reset; pass zero bases then).
   */
  async startQueues(bases: number[], opts: { resetRings?: boolean } = {}): Promise<void> {
    if (bases.length !== this.queues.length) {
      throw new VhostUserError(`startQueues with ${bases.length} bases for ${this.queues.length} queues`);
    }
    if (this.started) throw new VhostUserError('startQueues() while the queues are running (call stopQueues() first)');
    if (opts.resetRings) for (const q of this.queues) q.vq.reset();
    await this.setFeatures(this.ackedFeatures);
    await this.sendMemory();
    for (const q of this.queues) {
      await this.setVringNum(q.index, q.vq.size);
      await this.setVringBase(q.index, bases[q.index]);
      await this.setVringAddr(q.index, q.vq.ringUaddrs());
      await this.setVringKick(q.index, q.kickFd);
    }
    if (hasBit(this.ackedFeatures, VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) {
      for (const q of this.queues) await this.setVringEnable(q.index, true, this.start.syncEnable);
    }
    if (this.start.status) {
      await this.setStatus(
        DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK | DeviceStatus.DRIVER_OK,
      );
    }
    for (const q of this.queues) await this.setVringCall(q.index, q.callFd);
    this.started = true;
  }

  /**
   * What QEMU does at guest reset or VM stop: [SET_STATUS 0], SET_VRING_ENABLE 0 per queue,
   * GET_VRING_BASE per queue, SET_VRING_CALL with the masked notifier per queue. Returns the
   * bases (next avail index the backend would process, per queue).
   */
  async stopQueues(): Promise<number[]> {
    if (!this.started) throw new VhostUserError('stopQueues() while the queues are stopped');
    this.started = false;
    if (this.start.status) await this.setStatus(0);
    if (hasBit(this.ackedFeatures, VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) {
      for (const q of this.queues) await this.setVringEnable(q.index, false);
    }
    const bases: number[] = [];
    for (const q of this.queues) bases.push(await this.getVringBase(q.index));
    for (const q of this.queues) await this.setVringCall(q.index, q.maskedCallFd);
    return bases;
  }

  get running(): boolean {
    return this.started;
  }

  /**
   * Fails everything waiting on this connection (outstanding requests, a pending reply)
   * with err, e.g. when the daemon died; the connection is unusable afterwards. close()
   * is still needed to release resources.
   */
  abort(err: Error): void {
    if (this.closed) return;
    this.broken = err.message;
    this.receiver?.fail(err);
    for (const q of this.queues) q.failAll(err, true);
  }

  /**
   * Drops the connection (the backend sees EOF), fails outstanding requests and releases
   * eventfds, the backend channel and guest memory we created.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.receiver?.fail(new VhostUserError(`front end for ${this.socketPath} closed while waiting for a message`));
    for (const q of this.queues) q.close();
    this.backend?.close();
    this.reader.dispose();
    native.shutdownSocket(this.fd);
    native.close(this.fd);
    if (this.ownsMemory) this.memory?.close();
  }

  private requireMemory(): GuestMemory {
    if (!this.memory) throw new VhostUserError('no guest memory (negotiate() first)');
    return this.memory;
  }

  private checkOpen(): void {
    if (this.closed) throw new VhostUserError(`front end for ${this.socketPath} is closed`);
  }
}
