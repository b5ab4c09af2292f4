/**
 * Where a queue runs. The connection starts, stops and re-targets queues through the
 * QueueHost interface; a MainThreadQueueHost runs the queue's QueueRunner on the main thread's
 * event loop, which every queue's JS side shares. Each queue still has a thread of its own:
 * its kick thread (native/kickthread.cc) serves what the device's native server serves, and
 * only what that declines comes to JS here (docs/ARCHITECTURE.md, "Threads").
 */
import type { Logger } from '../log';
import { QueueRunner, type ChainHandler, type QueueConfig } from './queue-runner';
import { NO_POLLS, type PollCounts } from './virtqueue';

/** Builds a queue's handler when the queue first starts. */
export type HandlerFactory = (queueIndex: number) => ChainHandler;

export interface QueueStats {
  served: number;
  detail: Record<string, number>;
  /** How often a spin for the next chain caught one, and how often it gave up and slept. */
  polls: PollCounts;
  /** Requests the I/O pool completed (--thread-pool-size > 0). */
  pooled: number;
  /** Requests the handler's native server served without JS (ChainHandler.nativeServer). */
  native: number;
  /** The same per opcode (ChainHandler.nativeStats). */
  nativeDetail: Record<string, number>;
  /** Kicks served without JS (the native server took every chain they announced). */
  nativeKicks: number;
}

export interface QueueHost {
  start(cfg: QueueConfig): Promise<void>;
  /** Stops the queue after its in-flight requests; resolves to the next avail index. */
  stop(): Promise<number>;
  setCallFd(fd: number): Promise<void>;
  setErrFd(fd: number): Promise<void>;
  /** Requests served so far on this queue, and the handler's own counts (per opcode). */
  stats(): Promise<QueueStats>;
  close(): Promise<void>;
}

function addPolls(a: PollCounts, b: PollCounts): PollCounts {
  return { hits: a.hits + b.hits, misses: a.misses + b.misses, gaveWay: a.gaveWay + b.gaveWay, yields: a.yields + b.yields };
}

export class MainThreadQueueHost implements QueueHost {
  private runner: QueueRunner | null = null;
  private handler: ChainHandler | null = null;
  private total = 0;
  private pooled = 0;
  private native = 0;
  private nativeKicks = 0;
  private polls: PollCounts = { ...NO_POLLS };
  private stopping: Promise<number> | null = null;

  constructor(
    private readonly createHandler: HandlerFactory,
    private readonly log: Logger,
    private readonly index: number,
  ) {}

  async start(cfg: QueueConfig): Promise<void> {
    this.handler ??= this.createHandler(this.index);
    const r = new QueueRunner(cfg, this.handler, this.log);
    r.start();
    this.runner = r;
  }

  async stop(): Promise<number> {
    // A stop already under way (the connection closing while a GET_VRING_BASE waits for a
    // long request): wait for the same end, so nothing is torn down under the queue's thread.
    if (this.stopping) return this.stopping;
    const r = this.runner;
    if (!r) throw new Error(`queue ${this.index} is not running`);
    this.runner = null;
    this.stopping = r.stop().then((base) => {
      this.total += r.served;
      this.pooled += r.pooled;
      this.native += r.servedNatively;
      this.nativeKicks += r.kicksServedNatively;
      this.polls = addPolls(this.polls, r.pollStats());
      return base;
    });
    try {
      return await this.stopping;
    } finally {
      this.stopping = null;
    }
  }

  async setCallFd(fd: number): Promise<void> {
    this.runner?.setCallFd(fd);
  }

  async setErrFd(fd: number): Promise<void> {
    this.runner?.setErrFd(fd);
  }

  async stats(): Promise<QueueStats> {
    return {
      served: this.total + (this.runner?.served ?? 0),
      detail: this.handler?.stats?.() ?? {},
      polls: this.runner ? addPolls(this.polls, this.runner.pollStats()) : this.polls,
      pooled: this.pooled + (this.runner?.pooled ?? 0),
      native: this.native + (this.runner?.servedNatively ?? 0),
      nativeDetail: this.handler?.nativeStats?.() ?? {},
      nativeKicks: this.nativeKicks + (this.runner?.kicksServedNatively ?? 0),
    };
  }

  async close(): Promise<void> {
    if (this.runner || this.stopping) await this.stop();
  }
}
