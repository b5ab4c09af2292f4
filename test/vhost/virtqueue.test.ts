/**
 * The device side of the split virtqueue (src/vhost/virtqueue.ts) against the driver side of
 * the test front end (test/frontend/vring.ts), both over one memfd: the driver's view is our
 * own mapping, the device's comes from the native memory table, as in the daemon. No socket,
 * no daemon: this is where index wrap-around, EVENT_IDX notification decisions and the byte
 * streams of chains are checked exhaustively.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import { native } from '../../src/native';
import { GuestMemory as DeviceMemory } from '../../src/vhost/memory';
import { Virtqueue as DeviceQueue } from '../../src/vhost/virtqueue';
import { GuestMemory as DriverMemory } from '../frontend/guest-memory';
import { Virtqueue as DriverQueue } from '../frontend/vring';

interface Pair {
  mem: DriverMemory;
  driver: DriverQueue;
  device: DeviceQueue;
  tableId: number;
}

function pair(size: number, eventIdx: boolean, regions: 1 | 2 = 1): Pair {
  const mem = new DriverMemory({ size: 4 << 20, regions, gpaBase: 0x10_0000, interleave: regions === 2 });
  const tableId = native.memTableCreate();
  native.memTableSet(
    tableId,
    mem.regions.map((r) => ({ gpa: r.guestPhysAddr, size: r.memorySize, uaddr: r.userspaceAddr, mmapOffset: r.mmapOffset, fd: r.fd })),
  );
  const driver = new DriverQueue(mem, { size, eventIdx });
  const device = new DeviceQueue(new DeviceMemory(tableId), size, driver.ringUaddrs(), 0, eventIdx);
  return { mem, driver, device, tableId };
}

function close(p: Pair): void {
  native.memTableDestroy(p.tableId);
  p.mem.close();
}

describe('split virtqueue: device side against the driver side', () => {
  it('moves chains both ways across the 16-bit index wrap, in batches', () => {
    const p = pair(16, true);
    try {
      const data = p.mem.alloc(64);
      const reply = p.mem.alloc(64);
      let served = 0;
      for (let round = 0; round < 70_000 / 5; round++) {
        for (let i = 0; i < 5; i++) {
          data.buf.writeUInt32LE(served + i, 0);
          p.driver.addChain([{ gpa: data.gpa, len: 4 }], [{ gpa: reply.gpa, len: 8 }]);
        }
        p.driver.publish();
        for (let i = 0; i < 5; i++) {
          const c = p.device.pop();
          assert.ok(c, `chain ${served + i} missing`);
          const b = Buffer.alloc(4);
          assert.equal(c.read(b, 0, 4), 4);
          p.device.push(c.head, 8);
        }
        assert.equal(p.device.pop(), null);
        p.device.flush();
        for (let i = 0; i < 5; i++) assert.ok(p.driver.popUsed());
        served += 5;
      }
      assert.ok(served > 65536);
      assert.equal(p.device.lastAvail, served & 0xffff);
      assert.equal(p.driver.inFlight, 0);
    } finally {
      close(p);
    }
  });

  it('with EVENT_IDX, asks for a notification exactly when used.idx passes used_event', () => {
    const p = pair(8, true);
    try {
      const d = p.mem.alloc(16);
      const heads = [0, 1, 2].map(() => p.driver.addChain([{ gpa: d.gpa, len: 16 }], []));
      p.driver.publish();
      // The driver wants to hear only once the 3rd completion is in (used_event = 2).
      p.driver.setUsedEvent(2);
      const chains = heads.map(() => p.device.pop()!);
      p.device.push(chains[0].head, 0);
      assert.equal(p.device.flush(), false, 'used.idx 1 has not passed used_event 2');
      p.device.push(chains[1].head, 0);
      assert.equal(p.device.flush(), false, 'used.idx 2 has not passed used_event 2');
      p.device.push(chains[2].head, 0);
      assert.equal(p.device.flush(), true, 'used.idx 3 passed used_event 2');
      assert.equal(p.device.flush(), false, 'nothing new: no notification');
    } finally {
      close(p);
    }
  });

  it('with EVENT_IDX, publishes avail_event so the driver kicks for the next chain only', () => {
    const p = pair(8, true);
    try {
      const d = p.mem.alloc(16);
      p.driver.addChain([{ gpa: d.gpa, len: 16 }], []);
      const { oldIdx, newIdx } = p.driver.publish();
      assert.equal(p.device.enableNotification(), false, 'a chain is pending');
      p.device.push(p.device.pop()!.head, 0);
      assert.equal(p.device.enableNotification(), true, 'ring empty: safe to sleep');
      assert.equal(p.driver.readAvailEvent(), 1, 'avail_event = next avail index the device reads');
      assert.equal(p.driver.needsKick(oldIdx, newIdx), false, 'the first chain was already seen');
      p.driver.addChain([{ gpa: d.gpa, len: 16 }], []);
      const n = p.driver.publish();
      assert.equal(p.driver.needsKick(n.oldIdx, n.newIdx), true, 'the device sleeps: kick');
    } finally {
      close(p);
    }
  });

  /** Polling helpers over a pair: a chain served `gapMs` after the ring went empty, a timed spin. */
  function poller(p: Pair): { serveOne: (gapMs: number) => void; spinMs: () => number } {
    const busyWait = (ms: number): void => {
      const until = process.hrtime.bigint() + BigInt(ms * 1e6);
      while (process.hrtime.bigint() < until);
    };
    const d = p.mem.alloc(16);
    let idleAt = 0n;
    return {
      serveOne: (gapMs: number): void => {
        busyWait(gapMs);
        p.driver.addChain([{ gpa: d.gpa, len: 16 }], []);
        p.driver.publish();
        p.device.push(p.device.pop()!.head, 0);
        p.device.flush();
        p.driver.popUsed();
        idleAt = process.hrtime.bigint();
        assert.equal(p.device.pop(), null, 'ring empty again: idle starts');
      },
      // From the moment the ring went empty, where the window starts (not from the call: on a
      // busy machine the test's own steps in between took 0.6 ms once).
      spinMs: (): number => {
        assert.equal(p.device.pollAvail(), false, 'nothing arrives in one thread');
        return Number(process.hrtime.bigint() - idleAt) / 1e6;
      },
    };
  }

  it('spins for the next chain within a window that grows while chains come quickly and shrinks with each long gap', () => {
    const p = pair(8, true);
    const { serveOne, spinMs } = poller(p);
    const d = p.mem.alloc(16);
    try {
      assert.equal(p.device.pollAvail(), false, 'polling off by default');
      p.device.setPolling(50_000_000);
      assert.equal(p.device.pop(), null);
      assert.equal(p.device.pollWindowNs, 0, 'no window before any chain came quickly');
      // Chains that come 3 ms after the ring went empty, within the 50 ms maximum, grow the
      // window from 4 µs, doubling, until it would have caught them: 4 µs << 10 = 4.1 ms, or a
      // step or two more when this machine is busy and a gap came out longer than 4.1 ms.
      for (let i = 0; i < 12; i++) serveOne(3);
      const grown = p.device.pollWindowNs;
      const doublings = Math.log2(grown / 4000);
      assert.ok(Number.isInteger(doublings) && doublings >= 10 && doublings <= 13, `window ${grown} ns`);
      const ms = spinMs();
      // Alone on its CPU the spin lasts the whole window. On a machine whose cores are all
      // busy it may give the CPU away instead (the next test provokes that), halving the window.
      const { gaveWay } = p.device.pollStats();
      if (gaveWay === 0) assert.ok(ms >= grown / 1e6, `spun the window out: ${ms} ms since the ring went empty, window ${grown / 1e6} ms`);
      else assert.equal(p.device.pollWindowNs, grown / 2, `gave way after ${ms} ms`);
      // A chain already there is caught at once and counted.
      p.driver.addChain([{ gpa: d.gpa, len: 16 }], []);
      p.driver.publish();
      assert.equal(p.device.pollAvail(), true);
      p.device.push(p.device.pop()!.head, 0);
      assert.equal(p.device.pop(), null);
      // A gap longer than the maximum halves the window; as many more as it doubled close it.
      const w = p.device.pollWindowNs;
      serveOne(55);
      assert.equal(p.device.pollWindowNs, w / 2);
      for (let i = 0; i < Math.log2(w / 4000); i++) serveOne(55);
      assert.equal(p.device.pollWindowNs, 0);
      assert.equal(p.device.pollAvail(), false);
      assert.deepEqual(p.device.pollStats(), { hits: 1, misses: 1, gaveWay });
    } finally {
      close(p);
    }
  });

  it('gives the CPU away when another thread needs it: the spin ends early and the window halves', async () => {
    const p = pair(8, true);
    const { serveOne, spinMs } = poller(p);
    const mask = execFileSync('taskset', ['-p', String(process.pid)], { encoding: 'utf8' }).trim().split(/\s+/).pop()!;
    let busy: ReturnType<typeof spawn> | null = null;
    try {
      p.device.setPolling(500_000_000);
      assert.equal(p.device.pop(), null);
      for (let i = 0; i < 12; i++) serveOne(3);
      const grown = p.device.pollWindowNs;
      assert.ok(grown >= 4000 << 10 && grown <= 4000 << 13, `window ${grown} ns`);
      // Now this thread and a busy loop share CPU 0.
      execFileSync('taskset', ['-p', '-c', '0', String(process.pid)], { stdio: 'ignore' });
      busy = spawn('taskset', ['-c', '0', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 100)); // the busy loop is running by now
      serveOne(0); // 100 ms after the ring went empty: the window doubles, and idle starts now
      const w = p.device.pollWindowNs;
      assert.equal(w, grown * 2);
      const ms = spinMs();
      const stats = p.device.pollStats();
      assert.ok(stats.gaveWay >= 1, `the spin gave way: ${JSON.stringify(stats)}`);
      assert.ok(p.device.pollWindowNs <= w / 2, `window ${p.device.pollWindowNs} ns after giving way (was ${w}; spun ${ms} ms)`);
    } finally {
      busy?.kill('SIGKILL');
      execFileSync('taskset', ['-p', mask, String(process.pid)], { stdio: 'ignore' });
      close(p);
    }
  });

  it('without EVENT_IDX, honours NO_INTERRUPT and clears NO_NOTIFY when it sleeps', () => {
    const p = pair(8, false);
    try {
      const d = p.mem.alloc(16);
      p.driver.addChain([{ gpa: d.gpa, len: 16 }], []);
      p.driver.publish();
      p.device.push(p.device.pop()!.head, 0);
      p.driver.disableInterrupts();
      assert.equal(p.device.flush(), false, 'NO_INTERRUPT set: no call');
      p.driver.addChain([{ gpa: d.gpa, len: 16 }], []);
      p.driver.publish();
      p.device.push(p.device.pop()!.head, 0);
      p.driver.enableInterrupts();
      assert.equal(p.device.flush(), true);
      assert.equal(p.device.enableNotification(), true);
      assert.equal(p.driver.readUsedFlags() & 1, 0, 'NO_NOTIFY clear while the device sleeps');
    } finally {
      close(p);
    }
  });

  it('sees a chain split over descriptors, regions and an indirect table as two byte streams', () => {
    const p = pair(8, true, 2);
    try {
      const a = p.mem.alloc(3, 1, 0);
      const b = p.mem.alloc(5, 1, 1);
      a.buf.write('abc');
      b.buf.write('defgh');
      const w1 = p.mem.alloc(4, 1, 1);
      const w2 = p.mem.alloc(6, 1, 0);
      for (const indirect of [false, true]) {
        const head = p.driver.addChain(
          [{ gpa: a.gpa, len: 3 }, { gpa: b.gpa, len: 5 }],
          [{ gpa: w1.gpa, len: 4 }, { gpa: w2.gpa, len: 6 }],
          { indirect },
        );
        p.driver.publish();
        const c = p.device.pop()!;
        assert.equal(c.head, head);
        assert.equal(c.readableLen, 8);
        assert.equal(c.writableLen, 10);
        const got = Buffer.alloc(8);
        assert.equal(c.read(got, 0, 8), 8);
        assert.equal(got.toString(), 'abcdefgh');
        assert.equal(c.writeAt(2, Buffer.from('XYZWV'), 0, 5), 5);
        assert.equal(w1.buf.toString('latin1', 2, 4), 'XY');
        assert.equal(w2.buf.toString('latin1', 0, 3), 'ZWV');
        p.device.push(c.head, 7);
        p.device.flush();
        assert.deepEqual(p.driver.popUsed(), { id: head, len: 7, known: true });
      }
    } finally {
      close(p);
    }
  });

  it('accepts an indirect chain longer than the queue, as Linux builds for big FUSE reads', () => {
    const p = pair(8, true);
    try {
      const page = p.mem.alloc(40);
      const out = p.mem.alloc(4096 * 20, 4096);
      const writable = Array.from({ length: 20 }, (_, i) => ({ gpa: out.gpa + 4096 * i, len: 4096 }));
      p.driver.addChain([{ gpa: page.gpa, len: 40 }], writable, { indirect: true });
      p.driver.publish();
      const c = p.device.pop()!;
      assert.equal(c.writableLen, 20 * 4096);
    } finally {
      close(p);
    }
  });
});
