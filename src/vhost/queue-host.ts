/**
 * Where a queue runs. The connection (main thread) starts, stops and re-targets queues
 * through this one interface; a LocalQueueHost runs the QueueRunner on the calling thread,
 * a WorkerQueueHost on a worker thread of its own. Both build the device's ChainHandler
 * from a HandlerSpec (a module path and plain options), because a handler object cannot
 * cross to a worker: it is rebuilt there, and it reaches the shared file-system state
 * through native ids carried in the options.
 */
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger, LogLevel } from '../log';
import { QueueRunner, type ChainHandler, type QueueConfig } from './queue-runner';
import { NO_POLLS, type PollCounts } from './virtqueue';

export interface HandlerSpec {
  /** Absolute path of a module exporting createHandler(options, log, queueIndex). */
  module: string;
  options: unknown;
}

export type HandlerFactory = (options: unknown, log: Logger, queueIndex: number) => ChainHandler;

export function loadHandler(spec: HandlerSpec, log: Logger, queueIndex: number): ChainHandler {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const mod = require(spec.module) as { createHandler: HandlerFactory };
  return mod.createHandler(spec.options, log, queueIndex);
}

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
  /** Requests served so far on this queue, and the handler's own counts (per opcode). */
  stats(): Promise<QueueStats>;
  close(): Promise<void>;
}

function addPolls(a: PollCounts, b: PollCounts): PollCounts {
  return { hits: a.hits + b.hits, misses: a.misses + b.misses, gaveWay: a.gaveWay + b.gaveWay, yields: a.yields + b.yields };
}

export class LocalQueueHost implements QueueHost {
  private runner: QueueRunner | null = null;
  private handler: ChainHandler | null = null;
  private total = 0;
  private pooled = 0;
  private native = 0;
  private nativeKicks = 0;
  private polls: PollCounts = { ...NO_POLLS };

  constructor(
    private readonly spec: HandlerSpec,
    private readonly log: Logger,
    private readonly index: number,
  ) {}

  async start(cfg: QueueConfig): Promise<void> {
    this.handler ??= loadHandler(this.spec, this.log, this.index);
    const r = new QueueRunner(cfg, this.handler, this.log);
    r.start();
    this.runner = r;
  }

  async stop(): Promise<number> {
    const r = this.runner;
    if (!r) throw new Error(`queue ${this.index} is not running`);
    this.runner = null;
    const base = await r.stop();
    this.total += r.served;
    this.pooled += r.pooled;
    this.native += r.servedNatively;
    this.nativeKicks += r.kicksServedNatively;
    this.polls = addPolls(this.polls, r.pollStats());
    return base;
  }

  async setCallFd(fd: number): Promise<void> {
    this.runner?.setCallFd(fd);
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
    if (this.runner) await this.stop();
  }
}

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

export class WorkerQueueHost implements QueueHost {
  private readonly worker: Worker;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private exited = false;

  constructor(spec: HandlerSpec, logLevel: LogLevel, private readonly log: Logger, index: number) {
    this.worker = new Worker(path.join(__dirname, 'queue-worker.js'), {
      workerData: { spec, logLevel, index },
    });
    this.worker.on('message', (m: Reply) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m.result);
      else w.reject(new Error(m.error));
    });
    this.worker.on('error', (e) => {
      this.log.error({ err: e, queue: index }, 'queue worker crashed');
    });
    this.worker.on('exit', () => {
      this.exited = true;
      for (const w of this.waiting.values()) w.reject(new Error(`queue ${index} worker exited`));
      this.waiting.clear();
    });
  }

  private call(type: string, arg?: unknown): Promise<unknown> {
    if (this.exited) return Promise.reject(new Error('queue worker has exited'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker.postMessage({ id, type, arg });
    });
  }

  async start(cfg: QueueConfig): Promise<void> {
    await this.call('start', cfg);
  }

  async stop(): Promise<number> {
    return (await this.call('stop')) as number;
  }

  async setCallFd(fd: number): Promise<void> {
    await this.call('setCallFd', fd);
  }

  async stats(): Promise<QueueStats> {
    return (await this.call('stats')) as QueueStats;
  }

  async close(): Promise<void> {
    if (this.exited) return;
    try {
      await this.call('close');
    } finally {
      await this.worker.terminate();
    }
  }
}
