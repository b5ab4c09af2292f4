/**
 * A queue whose stop fails, in the vhost-user backend alone (in process, with a queue host
 * whose stop() throws after stopping): a SET_VRING_KICK that had to stop the queue first is
 * refused without keeping the descriptor it brought, and the queue counts as stopped, so the
 * next SET_VRING_KICK starts it again instead of failing on a second stop. A real queue's
 * stop fails only on a native error, which a test cannot provoke; the layer is tested here.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLogger } from '../../src/log';
import { native } from '../../src/native';
import { VhostUserBackend, RECV_TIMEOUT_MS } from '../../src/vhost/backend';
import { MainThreadQueueHost, type QueueHost, type QueueStats } from '../../src/vhost/queue-host';
import type { QueueConfig } from '../../src/vhost/queue-runner';
import { VhostUserFrontend } from '../frontend/frontend';

/** A queue host that stops its queue, then reports the stop as failed. */
class FailingStopHost implements QueueHost {
  starts = 0;
  private readonly inner: MainThreadQueueHost;
  constructor(index: number) {
    const log = createLogger('off');
    this.inner = new MainThreadQueueHost(() => ({ handle: () => new Promise<number>(() => undefined) }), log, index);
  }
  async start(cfg: QueueConfig): Promise<void> {
    await this.inner.start(cfg);
    this.starts++;
  }
  async stop(): Promise<number> {
    await this.inner.stop();
    throw new Error('simulated failure of a queue stop');
  }
  setCallFd(fd: number): Promise<void> {
    return this.inner.setCallFd(fd);
  }
  setErrFd(fd: number): Promise<void> {
    return this.inner.setErrFd(fd);
  }
  stats(): Promise<QueueStats> {
    return this.inner.stats();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** How many eventfds this process holds. */
function eventfds(): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      if (fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]') n++;
    } catch {
      // The directory's own descriptor, closed by now.
    }
  }
  return n;
}

describe('a queue whose stop fails (backend in process)', function () {
  this.timeout(30000);

  it('refuses the SET_VRING_KICK that needed the stop, closes its descriptor, and starts the queue on the next one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-stopfail-'));
    const sock = path.join(dir, 'vfs.sock');
    const lfd = native.unixListen(sock, 1);
    const accepted = new Promise<number>((resolve) => {
      const w = new native.FdWatcher(lfd, false, () => {
        w.close();
        resolve(native.unixAccept(lfd, RECV_TIMEOUT_MS));
      });
      w.start();
    });
    const hosts: FailingStopHost[] = [];
    const fe = await VhostUserFrontend.connect(sock);
    const conn = await accepted;
    native.close(lfd);
    const backend = new VhostUserBackend(
      conn,
      {
        maxQueues: 2,
        deviceFeatures: 0n,
        shmemSizes: [],
        createQueueHost: (i) => {
          const h = new FailingStopHost(i);
          hosts[i] = h;
          return h;
        },
      },
      createLogger('off'),
    );
    backend.start();
    try {
      await fe.negotiate({ memory: { size: 1 << 20 }, requestQueues: 1 });
      assert.equal(hosts[1]?.starts, 1, 'queue 1 started by negotiation');
      const before = eventfds();
      const kick = native.eventfdCreate();
      await fe.setVringKick(1, kick).catch(() => undefined);
      await fe.getFeatures(); // every request before it has been served
      assert.equal(eventfds() - before, 1, 'only the front end\'s own new eventfd is open: the backend closed the copy it was sent');
      assert.equal(hosts[1].starts, 1, 'the refused SET_VRING_KICK did not start the queue');
      const kick2 = native.eventfdCreate();
      await fe.setVringKick(1, kick2);
      await fe.getFeatures();
      assert.equal(hosts[1].starts, 2, 'the next SET_VRING_KICK started the queue again');
      native.close(kick);
      native.close(kick2);
    } finally {
      fe.close();
      await backend.finished;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
