/**
 * A deliberately broken vhost-user-fs daemon for the guest test runner's own test: the real
 * vhost-user backend and device, but a request handler that never answers anything, FUSE_INIT
 * included. A guest mounts (mount returns before INIT is answered) and then hangs on its
 * first access; the runner must report failures within the cases' time limits, not hang.
 * Usage: node dist/test/support/broken-daemon.js --socket-path=PATH --shared-dir=DIR
 */
import { existsSync, unlinkSync } from 'node:fs';
import { createLogger } from '../../src/log';
import { native } from '../../src/native';
import { VhostUserBackend, RECV_TIMEOUT_MS } from '../../src/vhost/backend';
import { MainThreadQueueHost } from '../../src/vhost/queue-host';
import type { ChainHandler } from '../../src/vhost/queue-runner';

/** The handler every queue gets: requests are taken and never completed. */
export function createHandler(): ChainHandler {
  return { handle: () => new Promise<number>(() => undefined), cancel: () => process.exit(0) };
}

async function main(): Promise<void> {
  const sock = process.argv.find((a) => a.startsWith('--socket-path='))?.slice('--socket-path='.length);
  if (!sock) throw new Error('--socket-path=PATH is required');
  if (existsSync(sock)) unlinkSync(sock);
  const log = createLogger('info');
  const lfd = native.unixListen(sock, 1);
  const conn = await new Promise<number>((resolve) => {
    const w = new native.FdWatcher(lfd, false, () => {
      w.close();
      resolve(native.unixAccept(lfd, RECV_TIMEOUT_MS));
    });
    w.start();
  });
  native.close(lfd);
  const backend = new VhostUserBackend(conn, { maxQueues: 2, deviceFeatures: 0n, shmemSizes: [], createQueueHost: (i) => new MainThreadQueueHost(createHandler, log, i) }, log);
  backend.start();
  await backend.finished;
  process.exit(0);
}

if (require.main === module) void main();
