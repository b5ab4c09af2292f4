/**
 * Entry point of a queue worker thread (see WorkerQueueHost): hosts one LocalQueueHost and
 * answers the main thread's start/stop/setCallFd/stats/close calls in order.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createLogger, type LogLevel } from '../log';
import { LocalQueueHost, type HandlerSpec } from './queue-host';
import type { QueueConfig } from './queue-runner';

interface Call {
  id: number;
  type: 'start' | 'stop' | 'setCallFd' | 'stats' | 'close';
  arg?: unknown;
}

const { spec, logLevel, index } = workerData as { spec: HandlerSpec; logLevel: LogLevel; index: number };
const log = createLogger(logLevel, { queue: index });
const host = new LocalQueueHost(spec, log, index);
const port = parentPort!;

async function serve(c: Call): Promise<unknown> {
  switch (c.type) {
    case 'start':
      return host.start(c.arg as QueueConfig);
    case 'stop':
      return host.stop();
    case 'setCallFd':
      return host.setCallFd(c.arg as number);
    case 'stats':
      return host.stats();
    case 'close':
      await host.close();
      port.close();
      return undefined;
  }
}

let chain: Promise<void> = Promise.resolve();
port.on('message', (c: Call) => {
  chain = chain.then(async () => {
    try {
      const result = await serve(c);
      port.postMessage({ id: c.id, ok: true, result });
    } catch (e) {
      port.postMessage({ id: c.id, ok: false, error: e instanceof Error ? e.message : String(e) });
    }
  });
});
