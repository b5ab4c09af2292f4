/**
 * The loop that serves one virtqueue: wait for a kick, pop chains, hand each to the device's
 * ChainHandler, put completions on the used ring and notify the driver. It knows nothing of
 * FUSE. It runs on the main thread (see queue-host.ts), with every other queue's. With a
 * native server and an eventfd to wait on, the queue's kick thread owns the ring: it serves
 * what the server takes and queues the rest for this thread, which only takes those chains
 * (takeHandedOff) and completes them. Otherwise this thread's loop pops the ring itself.
 * Handlers may complete out of order (a Promise) so that a slow request does not hold back
 * the others.
 */
import { native, REPLIED_BY_POOL, type NativeChainServer, type PoolReplied } from '../native';
import type { Logger } from '../log';
import type { DescriptorChain } from './chain';
import { GuestMemory } from './memory';
import { NO_POLLS, QueueError, Virtqueue, type PollCounts, type RingAddresses } from './virtqueue';

export interface ChainHandler {
  /**
   * Serves one request; returns the number of bytes written into the chain's writable part,
   * or REPLIED_BY_POOL when the I/O pool (native/iopool.cc) took the chain and puts it on the
   * used ring itself.
   */
  handle(chain: DescriptorChain): number | Promise<number> | PoolReplied;
  /** The queue stops: requests still waiting on something (a lock) should complete now. */
  cancel?(): void;
  /** The handler's own counts (the FUSE server's requests per opcode), for the exit report. */
  stats?(): Record<string, number>;
  /** Of those, the ones its native server served (per opcode), for the exit report. */
  nativeStats?(): Record<string, number>;
  /**
   * A native server the queue offers each chain to before handle() (native/chainserver.h):
   * what it serves never reaches JS; what it declines comes to handle() as usual.
   */
  readonly nativeServer?: NativeChainServer;
}

/** Everything needed to run a queue, as plain data. */
export interface QueueConfig {
  index: number;
  size: number;
  addrs: RingAddresses;
  base: number;
  eventIdx: boolean;
  kickFd: number;
  callFd: number;
  errFd: number;
  memTableId: number;
  /** Longest spin for the next chain once the ring is empty, in ns (0: sleep at once). */
  pollMaxNs: number;
}

const memories = new Map<number, GuestMemory>();

/**
 * How long process() serves one ring before it lets the thread's event loop run, when
 * chains keep arriving (native/chainserver.h's kServeBudgetNs is the same for the native
 * kick loop): without it a guest that keeps one request queue busy would starve the hiprio
 * queue, the other queues' JS sides and the vhost-user socket, which share the thread.
 */
const SERVE_BUDGET_NS = 500_000n;
function memoryFor(tableId: number): GuestMemory {
  let m = memories.get(tableId);
  if (!m) {
    m = new GuestMemory(tableId);
    memories.set(tableId, m);
  }
  return m;
}

export class QueueRunner {
  private vq: Virtqueue | null = null;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  /** With a native server: the thread that serves the kicks (native/kickthread.cc). */
  private kickThread: InstanceType<typeof native.KickThread> | null = null;
  private inflight = 0;
  /** A takeHandedOff() loop yielded and runs again at the next turn of the event loop. */
  private drainScheduled = false;
  private idle: (() => void) | null = null;
  private stopped = false;
  /** Requests handle() served, and of those how many the I/O pool completed (REPLIED_BY_POOL). */
  private handled = 0;
  private yields = 0;
  private handledOnPool = 0;
  broken = false;

  constructor(
    private cfg: QueueConfig,
    private readonly handler: ChainHandler,
    private readonly log: Logger,
  ) {}

  /** How often the spin for the next chain caught one (native/vring.cc's pollAvail). */
  pollStats(): PollCounts {
    if (!this.vq) return { ...NO_POLLS };
    return { ...this.vq.pollStats(), yields: this.yields + this.vq.chainServerStats().yields };
  }

  /** Requests served (by handle() or the native server), for the per-queue counts at debug level and at exit. */
  get served(): number {
    return this.handled + (this.vq?.chainServerStats().served ?? 0);
  }

  /** Of those, how many the I/O pool completed. */
  get pooled(): number {
    return this.handledOnPool + (this.vq?.chainServerStats().pooled ?? 0);
  }

  /** Of those, how many the handler's native server served (they never reached JS). */
  get servedNatively(): number {
    return this.vq?.chainServerStats().served ?? 0;
  }

  /** Kicks served to the end natively: none of their chains reached JS. */
  get kicksServedNatively(): number {
    return this.vq?.chainServerStats().kicks ?? 0;
  }

  get index(): number {
    return this.cfg.index;
  }

  /** Starts serving. Throws QueueError when the rings are not inside guest memory. */
  start(): void {
    const mem = memoryFor(this.cfg.memTableId);
    mem.refresh();
    this.vq = new Virtqueue(mem, this.cfg.size, this.cfg.addrs, this.cfg.base, this.cfg.eventIdx, this.cfg.callFd);
    this.vq.setPolling(this.cfg.pollMaxNs);
    // With a native server, a kick is served in native code (pop, poll, sleep), and only what
    // the server declines reaches JS: queued for takeHandedOff() by a thread of its own that
    // waits for the kicks, or else (a kick fd that is not an eventfd) left on the ring for
    // process(), served on this thread's loop.
    const server = this.handler.nativeServer;
    if (server) this.vq.setChainServer(server);
    if (server && native.isEventfd(this.cfg.kickFd)) {
      // The kick thread looks at the ring as it starts (the driver may have kicked already).
      this.kickThread = new native.KickThread(this.cfg.kickFd, this.vq.native, () => this.takeHandedOff(true));
      this.kickThread.start();
      return;
    }
    this.watcher = new native.FdWatcher(this.cfg.kickFd, true, () => this.process(), server ? this.vq.native : undefined);
    this.watcher.start();
    // The driver may have kicked before the ring was enabled: look at the ring now.
    this.process();
  }

  setCallFd(fd: number): void {
    this.cfg = { ...this.cfg, callFd: fd };
    this.vq?.setCallFd(fd);
  }

  /** The error eventfd a broken ring is reported on from now on. */
  setErrFd(fd: number): void {
    this.cfg = { ...this.cfg, errFd: fd };
  }

  /** Stops taking new chains, waits for those in flight, and returns the next avail index. */
  async stop(): Promise<number> {
    this.stopped = true;
    // close(), not stop(): the backend closes the kick fd once the queue has stopped. The
    // kick thread ends the kick it is serving first.
    this.watcher?.close();
    this.watcher = null;
    // Without blocking this thread: the kick thread may be in the middle of an fsync, and
    // the other queues and the socket are served here meanwhile.
    if (this.kickThread) {
      await this.kickThread.closeAsync();
      // Chains it popped and queued for JS count in the avail index the stop reports: they
      // are served (a lock wait among them cancelled below) before it is.
      this.takeHandedOff(false);
    }
    if (this.inflight > 0) {
      const idle = new Promise<void>((resolve) => (this.idle = resolve));
      this.handler.cancel?.();
      await idle;
    }
    // Chains out on the I/O pool complete without this thread; wait for them to land.
    while (this.vq && this.vq.pendingOnPool > 0) await new Promise((resolve) => setTimeout(resolve, 1));
    return this.vq ? this.vq.lastAvail : this.cfg.base;
  }

  /**
   * With a kick thread: serves the chains it queued for JS. A guest whose requests keep
   * coming here gets the serve budget (withBudget), then the event loop's turn; a stop
   * serves whatever is left at once.
   */
  private takeHandedOff(withBudget: boolean): void {
    const vq = this.vq;
    if (!vq || this.broken) return;
    // One loop at a time: the wake-ups that come while a yield is pending find its turn.
    if (withBudget && this.drainScheduled) return;
    try {
      vq.mem.refresh();
      const start = process.hrtime.bigint();
      let chain: DescriptorChain | null;
      while ((chain = vq.takeHandedOff()) !== null) {
        this.dispatch(chain);
        if (withBudget && process.hrtime.bigint() - start >= SERVE_BUDGET_NS) {
          this.yields++;
          this.drainScheduled = true;
          setImmediate(() => {
            this.drainScheduled = false;
            this.takeHandedOff(true);
          });
          return;
        }
      }
    } catch (e) {
      this.fail(e);
    }
  }

  /** Without a kick thread: serves the ring on this thread's loop, from a kick or a yield. */
  private process(): void {
    const vq = this.vq;
    if (!vq || this.stopped || this.broken) return;
    try {
      vq.syncMemory();
      const start = process.hrtime.bigint();
      const yieldNow = (): void => {
        this.yields++;
        setImmediate(() => this.process());
      };
      for (;;) {
        let chain: DescriptorChain | null;
        while (!this.stopped && (chain = vq.pop()) !== null) {
          this.dispatch(chain);
          // A guest that refills the ring as fast as it is served would keep this loop going
          // for as long as it likes: the budget holds here too, not only between batches.
          if (process.hrtime.bigint() - start >= SERVE_BUDGET_NS) return yieldNow();
        }
        if (this.stopped) break;
        // Spin briefly for the next chain rather than sleep, unless requests of ours are
        // waiting on other threads (their completions need this thread's event loop).
        const spinCaughtOne = this.inflight === 0 && vq.pollAvail();
        if (!spinCaughtOne && vq.enableNotification()) break;
        // More chains came, while spinning or as notifications were enabled. Once the loop
        // has run its time, the event loop gets a turn first (the other queues and the
        // vhost-user socket share this thread), and they are served after it.
        if (process.hrtime.bigint() - start >= SERVE_BUDGET_NS) return yieldNow();
      }
    } catch (e) {
      this.fail(e);
    }
  }

  private dispatch(chain: DescriptorChain): void {
    this.handled++;
    let r: number | Promise<number> | PoolReplied;
    try {
      r = this.handler.handle(chain);
    } catch (e) {
      this.log.error({ err: e, queue: this.cfg.index }, 'request handler failed');
      r = 0;
    }
    chain.dropPrefetch();
    if (r === REPLIED_BY_POOL) {
      this.handledOnPool++;
      return;
    }
    if (typeof r === 'number') {
      this.complete(chain.head, r);
      return;
    }
    // The native watcher on this thread must leave kicks to this loop meanwhile (a kick
    // thread does not care: it keeps the ring).
    if (this.inflight++ === 0 && !this.kickThread) this.vq!.setJsBusy(true);
    r.then(
      (len) => this.completeAsync(chain.head, len),
      (e: unknown) => {
        this.log.error({ err: e, queue: this.cfg.index }, 'request handler failed');
        this.completeAsync(chain.head, 0);
      },
    );
  }

  /**
   * Every completion is published (and notified, if the driver asks) at once, so the driver
   * can refill while the next chain is served; batching 64 cost a third of the throughput of
   * 1 MiB reads at depth 4.
   */
  private complete(head: number, len: number): void {
    const notified = this.vq!.complete(head, len);
    if (this.log.isLevelEnabled('trace')) this.log.trace({ queue: this.cfg.index, head, len, notified }, 'request completed');
  }

  private completeAsync(head: number, len: number): void {
    if (--this.inflight === 0 && !this.kickThread) this.vq?.setJsBusy(false);
    if (!this.broken) this.complete(head, len);
    if (this.inflight === 0 && this.idle) {
      const done = this.idle;
      this.idle = null;
      done();
    }
  }

  private fail(e: unknown): void {
    if (!(e instanceof QueueError)) throw e;
    this.broken = true;
    this.vq?.close();
    this.watcher?.stop();
    this.kickThread?.close();
    this.log.error({ queue: this.cfg.index, reason: e.message }, 'virtqueue broken: the driver supplied a malformed ring; queue stopped');
    if (this.cfg.errFd >= 0) native.eventfdWrite(this.cfg.errFd);
  }
}
