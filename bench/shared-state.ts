/**
 * bench/shared-state.ts: measures the two choices behind multi-queue serving.
 *
 *  A. Shared state. Every queue worker must see one inode table. "One use" = acquire (pin,
 *     get the fd) + release (unpin) of a random inode among NODES, done by
 *       - the native table (native/state.cc: sharded C++ maps, each behind a mutex, reached
 *         by a numeric id), two N-API calls,
 *       - a SharedArrayBuffer open-addressing table behind a futex-style spin lock,
 *       - message passing to an owner thread (the main thread holds a JS Map), with the
 *         worker blocking on a SharedArrayBuffer reply slot (sync) or awaiting a reply
 *         message (async); a use is two round trips,
 *       - a thread-local JS Map, not shared at all: the lower bound for a table lookup;
 *     and what a whole GETATTR costs (pin, statx, unpin): one fused native call
 *     (native.nodeStatx) against a SharedArrayBuffer pin around native.statx.
 *  B. Data path. Reads from a page-cached host file into guest memory (a memfd, as the front
 *     end's memory is; native calls name it by (guest address, length) pairs through a
 *     native memory table, fs calls by a view from native.mmapShared):
 *       - native.preadv straight into guest memory (through guestIo, as the daemon does),
 *       - fs.readSync into a JS Buffer, then buf.copy into the view (the copy we avoid),
 *       - fs.readSync straight into a subarray of the view (one contiguous segment),
 *     and a scatter read of 1 MiB into 256 scattered 4 KiB guest pages: native.preadv with
 *     256 segments vs fs.readvSync with 256 subarrays, the list built per request (as the
 *     daemon does) or prebuilt.
 *  C. Call overhead: native.fence() (an N-API call plus an mfence), a JS function call,
 *     and what handing over a prebuilt segment list costs before any byte moves (segments
 *     of 0 bytes: the call, the list walk, the bounds checks): native.preadv vs fs.readvSync.
 *
 * Every case runs with 1 worker thread, then with 2 worker threads at once. Each worker
 * warms up, waits at a start barrier, then times WINDOWS windows; the figure per thread
 * is its median window. "2 thr" columns give the per-thread cost and the total throughput
 * of both. The whole list runs ROUNDS times, interleaved, and each figure is the median
 * over rounds (the machine this was written on is a noisy 2-vCPU VM).
 * MB/s are 10^6 bytes per second.
 *
 * Run:  cd /work/main && npx tsc -p . && node dist/bench/shared-state.js [options]
 *   --rounds=N     rounds over the whole list (default 3; about 80 s per round)
 *   --only=TEXT    only the cases whose label contains TEXT
 *   --quick        1 round of short windows, to check that the benchmark works
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { once } from 'node:events';
import { MessageChannel, MessagePort, Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { guestIo, native, STATX_FIELDS } from '../src/native';

const argValue = (name: string): string | undefined =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const QUICK = process.argv.includes('--quick');
const ROUNDS = Number(argValue('rounds') ?? (QUICK ? 1 : 3));
const ONLY = argValue('only');
const WARMUP_NS = (QUICK ? 50 : 200) * 1e6;
const WINDOWS = 5;
const WINDOW_NS = (QUICK ? 40 : 300) * 1e6;
/** Time between clock reads in the measuring loop (the batch size is calibrated to it). */
const BATCH_NS = 1e6;

const NODES = 5000; // fds held by the native table; the hard fd limit is 20000
const KiB = 1024;
const MiB = 1024 * KiB;
const FILE_SIZE = 64 * MiB;
const REGION = 32 * MiB; // guest memory per worker thread
const MEM_SIZE = 2 * REGION; // the memfd: room for two workers
const PAGE = 4 * KiB;
const SCATTER_PAGES = 256;

const AT_FDCWD = -100;
const AT_EMPTY_PATH = 0x1000;
const AT_SYMLINK_NOFOLLOW = 0x100;
const O_PATH = 0o10000000;
const EBADF = 9;

// ---------------------------------------------------------------------------------------
// Case descriptions (plain data: they travel to the workers in workerData)

type Kind =
  | 'native'
  | 'sab'
  | 'nativeStat'
  | 'sabStat'
  | 'msgSync'
  | 'msgAsync'
  | 'localMap'
  | 'read'
  | 'scatter'
  | 'listParse'
  | 'nativeCall'
  | 'jsCall';
type ReadMethod = 'preadv' | 'bounce' | 'direct';
type ScatterMethod = 'preadv' | 'readv';

interface CaseSpec {
  section: 'state' | 'data' | 'call';
  label: string;
  kind: Kind;
  /** Bytes moved per op (data path). */
  size?: number;
  read?: ReadMethod;
  scatter?: ScatterMethod;
  prebuilt?: boolean;
  /** listParse: number of empty segments. */
  segments?: number;
}

const CASES: CaseSpec[] = [
  { section: 'state', kind: 'native', label: 'native table (sharded C++, 2 calls)' },
  { section: 'state', kind: 'sab', label: 'SharedArrayBuffer table, spin lock' },
  { section: 'state', kind: 'nativeStat', label: 'GETATTR: native.nodeStatx (fused)' },
  { section: 'state', kind: 'sabStat', label: 'GETATTR: SAB pin + native.statx' },
  { section: 'state', kind: 'msgSync', label: 'owner thread, postMessage + Atomics.wait' },
  { section: 'state', kind: 'msgAsync', label: 'owner thread, postMessage + await reply' },
  { section: 'state', kind: 'localMap', label: 'thread-local JS Map (not shared; floor)' },
  { section: 'data', kind: 'read', size: 4 * KiB, read: 'preadv', label: '4 KiB native.preadv into view' },
  { section: 'data', kind: 'read', size: 4 * KiB, read: 'bounce', label: '4 KiB readSync + Buffer.copy' },
  { section: 'data', kind: 'read', size: 4 * KiB, read: 'direct', label: '4 KiB readSync into view' },
  { section: 'data', kind: 'read', size: MiB, read: 'preadv', label: '1 MiB native.preadv into view' },
  { section: 'data', kind: 'read', size: MiB, read: 'bounce', label: '1 MiB readSync + Buffer.copy' },
  { section: 'data', kind: 'read', size: MiB, read: 'direct', label: '1 MiB readSync into view' },
  { section: 'data', kind: 'scatter', size: MiB, scatter: 'preadv', prebuilt: false, label: '1 MiB/256 segs native.preadv, list per op' },
  { section: 'data', kind: 'scatter', size: MiB, scatter: 'readv', prebuilt: false, label: '1 MiB/256 segs readvSync, subarrays per op' },
  { section: 'data', kind: 'scatter', size: MiB, scatter: 'preadv', prebuilt: true, label: '1 MiB/256 segs native.preadv, list prebuilt' },
  { section: 'data', kind: 'scatter', size: MiB, scatter: 'readv', prebuilt: true, label: '1 MiB/256 segs readvSync, prebuilt' },
  { section: 'call', kind: 'nativeCall', label: 'native.fence() (N-API call + mfence)' },
  { section: 'call', kind: 'listParse', scatter: 'preadv', segments: 1, label: 'native.preadv, 1 range of 0 bytes' },
  { section: 'call', kind: 'listParse', scatter: 'preadv', segments: 256, label: 'native.preadv, 256 ranges of 0 bytes' },
  { section: 'call', kind: 'listParse', scatter: 'readv', segments: 256, label: 'fs.readvSync, 256 buffers of 0 bytes' },
  { section: 'call', kind: 'jsCall', label: 'JS function call (JIT may inline)' },
];

/** What main sets up once and every worker reaches by number or shared memory. */
interface Shared {
  stateId: number;
  /** The NODES nodeids the native table handed out (not consecutive: they encode a shard). */
  nodeIds: number[];
  sabTable: SharedArrayBuffer;
  fileFd: number;
  memfd: number;
  /** Native memory table holding the memfd at guest address 0. */
  memTable: number;
}

interface WorkerInit {
  spec: CaseSpec;
  index: number;
  shared: Shared;
  go: SharedArrayBuffer;
  /** Request port to the owner thread (msgSync, msgAsync). */
  port?: MessagePort;
  /** Reply slot for msgSync: [ready flag, value]. */
  reply?: SharedArrayBuffer;
}

type WorkerReport = { type: 'ready' } | { type: 'done'; windows: number[]; sink: number };

// ---------------------------------------------------------------------------------------
// The SharedArrayBuffer inode table: open addressing with linear probing, tombstones for
// deleted entries, one futex-style lock (0 free, 1 held, 2 held with possible waiters).

const SLOT_WORDS = 8; // state, keyLo, keyHi, fd, pins, lookups, (pad, pad)
const S_EMPTY = 0;
const S_USED = 1;
const S_DEAD = 2;
const LOCK_BYTES = 64; // the lock word gets its own cache line

class SabInodeTable {
  private readonly lock: Int32Array;
  private readonly slots: Int32Array;
  private readonly shift: number;
  private readonly mask: number;

  static create(capacityLog2: number): SabInodeTable {
    return new SabInodeTable(new SharedArrayBuffer(LOCK_BYTES + (1 << capacityLog2) * SLOT_WORDS * 4));
  }

  constructor(readonly sab: SharedArrayBuffer) {
    this.lock = new Int32Array(sab, 0, 1);
    this.slots = new Int32Array(sab, LOCK_BYTES);
    const capacity = this.slots.length / SLOT_WORDS;
    this.mask = capacity - 1;
    this.shift = 32 - Math.log2(capacity);
  }

  /** Inserts nodeid with one lookup (caller guarantees it is new). */
  insert(nodeid: number, fd: number): void {
    const lo = nodeid | 0;
    const hi = Math.floor(nodeid / 2 ** 32) | 0;
    this.lockAcquire();
    try {
      for (let i = this.hash(lo, hi), n = 0; n <= this.mask; i = (i + 1) & this.mask, n++) {
        const b = i * SLOT_WORDS;
        if (this.slots[b] !== S_USED) {
          this.slots.set([S_USED, lo, hi, fd, 0, 1], b);
          return;
        }
      }
      throw new Error('SAB table full');
    } finally {
      this.lockRelease();
    }
  }

  /** Pins nodeid and returns its fd, or -EBADF. */
  acquire(nodeid: number): number {
    this.lockAcquire();
    const b = this.find(nodeid);
    let fd = -EBADF;
    if (b >= 0) {
      this.slots[b + 4]++;
      fd = this.slots[b + 3];
    }
    this.lockRelease();
    return fd;
  }

  /** Drops a pin; the entry goes when neither pins nor lookups remain. */
  release(nodeid: number): void {
    this.lockAcquire();
    const b = this.find(nodeid);
    if (b >= 0 && this.slots[b + 4] > 0) {
      this.slots[b + 4]--;
      if (this.slots[b + 4] === 0 && this.slots[b + 5] === 0) this.slots[b] = S_DEAD; // (close fd here)
    }
    this.lockRelease();
  }

  totalPins(): number {
    let pins = 0;
    for (let b = 0; b < this.slots.length; b += SLOT_WORDS) if (this.slots[b] === S_USED) pins += this.slots[b + 4];
    return pins;
  }

  private hash(lo: number, hi: number): number {
    return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> this.shift;
  }

  /** Word index of nodeid's slot, or -1. Called with the lock held. */
  private find(nodeid: number): number {
    const lo = nodeid | 0;
    const hi = Math.floor(nodeid / 2 ** 32) | 0;
    const s = this.slots;
    for (let i = this.hash(lo, hi), n = 0; n <= this.mask; i = (i + 1) & this.mask, n++) {
      const b = i * SLOT_WORDS;
      const st = s[b];
      if (st === S_EMPTY) return -1;
      if (st === S_USED && s[b + 1] === lo && s[b + 2] === hi) return b;
    }
    return -1;
  }

  private lockAcquire(): void {
    const l = this.lock;
    if (Atomics.compareExchange(l, 0, 0, 1) === 0) return;
    for (let spin = 0; spin < 100; spin++) {
      if (Atomics.load(l, 0) === 0 && Atomics.compareExchange(l, 0, 0, 1) === 0) return;
    }
    // Contended: mark "waiters possible" and sleep until the holder hands over.
    while (Atomics.exchange(l, 0, 2) !== 0) Atomics.wait(l, 0, 2);
  }

  private lockRelease(): void {
    if (Atomics.exchange(this.lock, 0, 0) === 2) Atomics.notify(this.lock, 0, 1);
  }
}

// ---------------------------------------------------------------------------------------
// The owner-thread table (main thread) for the message-passing cases.
// A request is one number: nodeid * 2 + (0 acquire | 1 release); the answer is fd, 0 or -EBADF.

interface OwnedInode {
  fd: number;
  pins: number;
  lookups: number;
}

function serveOwner(port: MessagePort, table: Map<number, OwnedInode>, reply: Int32Array | null): void {
  port.on('message', (m: number) => {
    const nodeid = Math.floor(m / 2);
    const e = table.get(nodeid);
    let r = -EBADF;
    if (e && m % 2 === 0) {
      e.pins++;
      r = e.fd;
    } else if (e) {
      if (e.pins > 0) e.pins--;
      if (e.pins === 0 && e.lookups === 0) table.delete(nodeid);
      r = 0;
    }
    if (reply) {
      reply[1] = r;
      Atomics.store(reply, 0, 1);
      Atomics.notify(reply, 0);
    } else {
      port.postMessage(r);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Worker side: each case becomes a body(n) that performs n operations.

type Body = (n: number) => void | Promise<void>;

let sink = 0; // results are folded in here so the JIT cannot drop the work

const RAND_MASK = (1 << 16) - 1;

function randomInts(base: number, count: number): Int32Array {
  const a = new Int32Array(RAND_MASK + 1);
  for (let i = 0; i < a.length; i++) a[i] = base + Math.floor(Math.random() * count);
  return a;
}

function jsAdd(a: number, b: number): number {
  return (a + b) | 0;
}

function checkRead(r: number, want: number): void {
  if (r !== want) throw new Error(`read returned ${r}, wanted ${want}`);
}

function makeBody(init: WorkerInit): Body {
  const { spec, shared } = init;
  const ids = randomInts(0, NODES);
  let k = 0;
  const nextId = (): number => shared.nodeIds[ids[(k = (k + 1) & RAND_MASK)]];

  switch (spec.kind) {
    case 'native': {
      const sid = shared.stateId;
      return (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const id = nextId();
          const fd = native.inodeAcquire(sid, id);
          if (fd < 0) throw new Error(`inodeAcquire(${id}) = ${fd}`);
          s ^= fd;
          native.inodeRelease(sid, id);
        }
        sink ^= s;
      };
    }
    case 'nativeStat': {
      const sid = shared.stateId;
      const out = new Float64Array(STATX_FIELDS);
      return (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const r = native.nodeStatx(sid, nextId(), out);
          if (r < 0) throw new Error(`nodeStatx = ${r}`);
          s ^= out[3];
        }
        sink ^= s;
      };
    }
    case 'sabStat': {
      const table = new SabInodeTable(shared.sabTable);
      const out = new Float64Array(STATX_FIELDS);
      return (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const id = nextId();
          const fd = table.acquire(id);
          if (fd < 0) throw new Error(`acquire(${id}) = ${fd}`);
          const r = native.statx(fd, '', AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, out);
          table.release(id);
          if (r < 0) throw new Error(`statx = ${r}`);
          s ^= out[3];
        }
        sink ^= s;
      };
    }
    case 'sab': {
      const table = new SabInodeTable(shared.sabTable);
      return (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const id = nextId();
          const fd = table.acquire(id);
          if (fd < 0) throw new Error(`acquire(${id}) = ${fd}`);
          s ^= fd;
          table.release(id);
        }
        sink ^= s;
      };
    }
    case 'msgSync': {
      const port = init.port!;
      const reply = new Int32Array(init.reply!);
      const call = (m: number): number => {
        Atomics.store(reply, 0, 0);
        port.postMessage(m);
        Atomics.wait(reply, 0, 0);
        return reply[1];
      };
      return (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const id = nextId();
          const fd = call(id * 2);
          if (fd < 0) throw new Error(`acquire(${id}) = ${fd}`);
          s ^= fd;
          call(id * 2 + 1);
        }
        sink ^= s;
      };
    }
    case 'msgAsync': {
      const port = init.port!;
      let resolve: (v: number) => void = () => undefined;
      port.on('message', (v: number) => resolve(v));
      const call = (m: number): Promise<number> =>
        new Promise((r) => {
          resolve = r;
          port.postMessage(m);
        });
      return async (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const id = nextId();
          const fd = await call(id * 2);
          if (fd < 0) throw new Error(`acquire(${id}) = ${fd}`);
          s ^= fd;
          await call(id * 2 + 1);
        }
        sink ^= s;
      };
    }
    case 'localMap': {
      const table = new Map<number, OwnedInode>();
      for (let i = 0; i < NODES; i++) table.set(shared.nodeIds[i], { fd: 1000 + i, pins: 0, lookups: 1 });
      return (n) => {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const id = nextId();
          const e = table.get(id)!;
          e.pins++;
          s ^= e.fd;
          const f = table.get(id)!;
          if (f.pins > 0) f.pins--;
          if (f.pins === 0 && f.lookups === 0) table.delete(id);
        }
        sink ^= s;
      };
    }
    case 'read':
      return makeReadBody(init);
    case 'scatter':
      return makeScatterBody(init);
    case 'listParse':
      return makeListParseBody(init);
    case 'nativeCall':
      return (n) => {
        for (let i = 0; i < n; i++) native.fence();
      };
    case 'jsCall':
      return (n) => {
        let s = sink;
        for (let i = 0; i < n; i++) s = jsAdd(s, i);
        sink = s;
      };
  }
}

/** This worker's part of guest memory: a fresh mapping of the shared memfd. */
function guestView(init: WorkerInit): { view: Buffer; base: number } {
  return { view: native.mmapShared(init.shared.memfd, MEM_SIZE), base: init.index * REGION };
}

function makeReadBody(init: WorkerInit): Body {
  const size = init.spec.size!;
  const fd = init.shared.fileFd;
  const { view, base } = guestView(init);
  const bounce = Buffer.allocUnsafeSlow(size);
  const filePos = randomInts(0, FILE_SIZE / size);
  const slots = REGION / size;
  let k = 0;
  let d = 0;
  const next = (): [number, number] => {
    k = (k + 1) & RAND_MASK;
    d = d + 1 === slots ? 0 : d + 1;
    return [filePos[k] * size, base + d * size];
  };
  switch (init.spec.read!) {
    case 'preadv': {
      const table = init.shared.memTable;
      return (n) => {
        for (let i = 0; i < n; i++) {
          const [pos, dst] = next();
          checkRead(guestIo.preadv(fd, pos, { table, pairs: [dst, size] }), size);
        }
      };
    }
    case 'bounce':
      return (n) => {
        for (let i = 0; i < n; i++) {
          const [pos, dst] = next();
          const r = fs.readSync(fd, bounce, 0, size, pos);
          checkRead(r, size);
          bounce.copy(view, dst, 0, r);
        }
      };
    case 'direct':
      return (n) => {
        for (let i = 0; i < n; i++) {
          const [pos, dst] = next();
          checkRead(fs.readSync(fd, view, dst, size, pos), size);
        }
      };
  }
}

function makeScatterBody(init: WorkerInit): Body {
  const fd = init.shared.fileFd;
  const { view, base } = guestView(init);
  // The region's pages in random order; request g uses pages [g*256, (g+1)*256) of it.
  const pages = Array.from({ length: REGION / PAGE }, (_, i) => base + i * PAGE);
  for (let i = pages.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [pages[i], pages[j]] = [pages[j], pages[i]];
  }
  const groups = pages.length / SCATTER_PAGES;
  // (guest address, length) pairs: the memfd sits at guest address 0 of the memory table.
  const segList = (g: number): number[] => {
    const pairs: number[] = [];
    for (let j = 0; j < SCATTER_PAGES; j++) pairs.push(pages[g * SCATTER_PAGES + j], PAGE);
    return pairs;
  };
  const bufList = (g: number): Buffer[] => {
    const bufs: Buffer[] = new Array(SCATTER_PAGES);
    for (let j = 0; j < SCATTER_PAGES; j++) {
      const off = pages[g * SCATTER_PAGES + j];
      bufs[j] = view.subarray(off, off + PAGE);
    }
    return bufs;
  };
  const filePos = randomInts(0, FILE_SIZE / MiB);
  let k = 0;
  let g = 0;
  const next = (): number => {
    k = (k + 1) & RAND_MASK;
    g = g + 1 === groups ? 0 : g + 1;
    return filePos[k] * MiB;
  };
  const want = SCATTER_PAGES * PAGE;
  if (init.spec.scatter === 'preadv') {
    const pre = init.spec.prebuilt ? Array.from({ length: groups }, (_, i) => segList(i)) : null;
    return (n) => {
      for (let i = 0; i < n; i++) {
        const pos = next();
        checkRead(guestIo.preadv(fd, pos, { table: init.shared.memTable, pairs: pre ? pre[g] : segList(g) }), want);
      }
    };
  }
  const pre = init.spec.prebuilt ? Array.from({ length: groups }, (_, i) => bufList(i)) : null;
  return (n) => {
    for (let i = 0; i < n; i++) {
      const pos = next();
      checkRead(fs.readvSync(fd, pre ? pre[g] : bufList(g), pos), want);
    }
  };
}

/** Empty segments: what handing over a segment list costs before any byte moves. */
function makeListParseBody(init: WorkerInit): Body {
  const fd = init.shared.fileFd;
  const { view, base } = guestView(init);
  const count = init.spec.segments!;
  const check = (r: number): void => {
    if (r !== 0) throw new Error(`empty read returned ${r}`);
  };
  // Both lists are built once: the rows measure the call and the list walk only.
  if (init.spec.scatter === 'readv') {
    const bufs = Array.from({ length: count }, (_, j) => view.subarray(base + j * PAGE, base + j * PAGE));
    return (n) => {
      for (let i = 0; i < n; i++) check(fs.readvSync(fd, bufs, 0));
    };
  }
  const pairs: number[] = [];
  for (let j = 0; j < count; j++) pairs.push(base + j * PAGE, 0);
  const table = init.shared.memTable;
  return (n) => {
    for (let i = 0; i < n; i++) check(guestIo.preadv(fd, 0, { table, pairs }));
  };
}

const nowNs = (): number => Number(process.hrtime.bigint());

async function workerMain(init: WorkerInit): Promise<void> {
  const port = parentPort!;
  const body = makeBody(init);
  const run = async (n: number): Promise<void> => {
    const r = body(n);
    if (r) await r;
  };
  // Warm up, and grow the batch until one takes about BATCH_NS.
  let batch = 1;
  for (let t = nowNs(), end = t + WARMUP_NS; t < end; ) {
    await run(batch);
    const t2 = nowNs();
    if (t2 - t < BATCH_NS / 2) batch *= 2;
    t = t2;
  }
  port.postMessage({ type: 'ready' } satisfies WorkerReport);
  Atomics.wait(new Int32Array(init.go), 0, 0);
  const windows: number[] = [];
  for (let w = 0; w < WINDOWS; w++) {
    const t0 = nowNs();
    let t = t0;
    let ops = 0;
    while (t - t0 < WINDOW_NS) {
      await run(batch);
      ops += batch;
      t = nowNs();
    }
    windows.push((t - t0) / ops);
  }
  port.postMessage({ type: 'done', windows, sink } satisfies WorkerReport);
  init.port?.close();
}

// ---------------------------------------------------------------------------------------
// Main side

interface Result {
  /** Per-thread ns per op (mean over threads of each thread's median window). */
  nsPerOp: number;
  /** Ops per second, all threads together. */
  opsPerSec: number;
}

interface Env {
  shared: Shared;
  owner: Map<number, OwnedInode>;
  sabTable: SabInodeTable;
  dir: string;
}

/** A figure over rounds: the medians, and the half-range of nsPerOp relative to its median. */
interface Summary extends Result {
  spread: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

function summarize(rs: Result[]): Summary {
  const ns = rs.map((r) => r.nsPerOp);
  const nsPerOp = median(ns);
  return {
    nsPerOp,
    opsPerSec: median(rs.map((r) => r.opsPerSec)),
    spread: (Math.max(...ns) - Math.min(...ns)) / 2 / nsPerOp,
  };
}

/** CPU time stolen by the hypervisor and total CPU time so far (Linux /proc/stat), in ticks. */
function cpuTicks(): { steal: number; total: number } | null {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
    return { steal: f[7] ?? 0, total: f.reduce((a, b) => a + b, 0) };
  } catch {
    return null;
  }
}

function setup(): Env {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-bench-'));
  const file = path.join(dir, 'data');
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  const wfd = fs.openSync(file, 'w');
  for (let off = 0; off < FILE_SIZE; off += MiB) fs.writeSync(wfd, chunk, 0, MiB, off);
  fs.closeSync(wfd);
  const fileFd = fs.openSync(file, 'r');
  for (let off = 0; off < FILE_SIZE; off += MiB) fs.readSync(fileFd, chunk, 0, MiB, off); // into the page cache

  // NODES inodes, each its own O_PATH fd of the one file under a distinct fake key.
  const stateId = native.stateCreate();
  const owner = new Map<number, OwnedInode>();
  const sabTable = SabInodeTable.create(14); // 16384 slots for 5000 entries
  const nodeIds: number[] = [];
  for (let i = 0; i < NODES; i++) {
    const fd = native.openat(AT_FDCWD, file, O_PATH);
    if (fd < 0) throw new Error(`openat: ${-fd} (fd limit?)`);
    const nodeid = native.inodeRef(stateId, fd, 0, 0, 1_000_000 + i, 0);
    if (nodeid < 0 || nodeIds.includes(nodeid)) throw new Error(`inodeRef gave ${nodeid}`);
    nodeIds.push(nodeid);
    owner.set(nodeid, { fd, pins: 0, lookups: 1 });
    sabTable.insert(nodeid, fd);
  }
  const memfd = native.memfdCreate('bench-guest', MEM_SIZE);
  const memTable = native.memTableCreate();
  native.memTableSet(memTable, [{ gpa: 0, size: MEM_SIZE, uaddr: 0, mmapOffset: 0, fd: memfd }]);
  return { shared: { stateId, nodeIds, sabTable: sabTable.sab, fileFd, memfd, memTable }, owner, sabTable, dir };
}

/** Checks that every acquire was matched by a release, then frees everything. */
function verifyAndTeardown(env: Env): void {
  const { shared } = env;
  const ownerPins = [...env.owner.values()].reduce((s, e) => s + e.pins, 0);
  if (ownerPins !== 0) throw new Error(`owner table: ${ownerPins} pins left`);
  if (env.sabTable.totalPins() !== 0) throw new Error(`SAB table: ${env.sabTable.totalPins()} pins left`);
  // Forgetting every lookup empties the native table only if no pin is left.
  for (const id of shared.nodeIds) native.inodeForget(shared.stateId, id, 1);
  const [inodes] = native.stateCounts(shared.stateId);
  if (inodes !== 0) throw new Error(`native table: ${inodes} inodes still pinned`);
  native.stateDestroy(shared.stateId);
  fs.closeSync(shared.fileFd);
  native.close(shared.memfd);
  native.memTableDestroy(shared.memTable);
  fs.rmSync(env.dir, { recursive: true, force: true });
}

async function runCase(env: Env, spec: CaseSpec, threads: number): Promise<Result> {
  const go = new SharedArrayBuffer(4);
  const ownerPorts: MessagePort[] = [];
  const exits: Array<Promise<unknown>> = [];
  const reports: Array<Promise<WorkerReport>> = [];
  const finals: Array<Promise<WorkerReport>> = [];
  for (let index = 0; index < threads; index++) {
    const init: WorkerInit = { spec, index, shared: env.shared, go };
    const transfer: MessagePort[] = [];
    if (spec.kind === 'msgSync' || spec.kind === 'msgAsync') {
      const ch = new MessageChannel();
      const reply = spec.kind === 'msgSync' ? new SharedArrayBuffer(8) : undefined;
      serveOwner(ch.port2, env.owner, reply ? new Int32Array(reply) : null);
      ownerPorts.push(ch.port2);
      init.port = ch.port1;
      init.reply = reply;
      transfer.push(ch.port1);
    }
    const w = new Worker(__filename, { workerData: init, transferList: transfer, argv: process.argv.slice(2) });
    exits.push(once(w, 'exit'));
    const messages: WorkerReport[] = [];
    const waiters: Array<(m: WorkerReport) => void> = [];
    const failed = new Promise<never>((_, reject) => w.once('error', reject));
    w.on('message', (m: WorkerReport) => (waiters.length ? waiters.shift()!(m) : messages.push(m)));
    const nextMessage = (): Promise<WorkerReport> =>
      Promise.race([
        failed,
        new Promise<WorkerReport>((r) => (messages.length ? r(messages.shift()!) : waiters.push(r))),
      ]);
    reports.push(nextMessage());
    finals.push(reports[index].then(nextMessage));
  }
  await Promise.all(reports); // all warmed up
  Atomics.store(new Int32Array(go), 0, 1);
  Atomics.notify(new Int32Array(go), 0);
  const done = await Promise.all(finals);
  await Promise.all(exits);
  for (const p of ownerPorts) p.close();
  const perThread = done.map((m) => (m.type === 'done' ? median(m.windows) : NaN));
  return {
    nsPerOp: perThread.reduce((a, b) => a + b, 0) / threads,
    opsPerSec: perThread.reduce((a, ns) => a + 1e9 / ns, 0),
  };
}

function printTable(title: string, head: string[], rows: string[][]): void {
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]): string =>
    cells.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  ');
  console.log(`\n${title}`);
  console.log(line(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

function fmt(x: number, digits: number): string {
  return x.toFixed(x >= 1000 ? 0 : digits);
}

async function main(): Promise<void> {
  const cases = CASES.filter((c) => ONLY === undefined || c.label.includes(ONLY));
  const env = setup();
  const ticks0 = cpuTicks();
  const rounds: Array<Array<[Result, Result]>> = cases.map(() => []);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const [i, spec] of cases.entries()) {
      const one = await runCase(env, spec, 1);
      const two = await runCase(env, spec, 2);
      rounds[i].push([one, two]);
      process.stderr.write(
        `round ${round}/${ROUNDS}  ${spec.label}: ${one.nsPerOp.toFixed(1)} / ${two.nsPerOp.toFixed(1)} ns\n`,
      );
    }
  }
  const ticks1 = cpuTicks();
  verifyAndTeardown(env);
  const results: Array<[CaseSpec, Summary, Summary]> = cases.map((c, i) => [
    c,
    summarize(rounds[i].map((r) => r[0])),
    summarize(rounds[i].map((r) => r[1])),
  ]);
  /** A per-thread time with its round-to-round spread. */
  const time = (r: Summary, scale: number, digits: number): string =>
    fmt(r.nsPerOp / scale, digits) + (ROUNDS > 1 ? ` ±${Math.round(r.spread * 100)}%` : '');

  const cpu = os.cpus();
  console.log(
    `virtiofsd-ts shared-state benchmark: Node ${process.version}, ${cpu.length} CPUs (${cpu[0]?.model ?? '?'}), ` +
      `${os.platform()} ${os.release()}`,
  );
  console.log(
    `per thread: median of ${WINDOWS} x ${WINDOW_NS / 1e6} ms windows after ${WARMUP_NS / 1e6} ms warm-up; ` +
      `median of ${ROUNDS} round(s) (± = half the range over rounds); "2 thr" = two workers at once` +
      (QUICK ? ' (--quick: noisy)' : ''),
  );
  if (ticks0 && ticks1 && ticks1.total > ticks0.total) {
    const steal = (100 * (ticks1.steal - ticks0.steal)) / (ticks1.total - ticks0.total);
    console.log(`CPU time stolen by the hypervisor during the run: ${steal.toFixed(1)}%`);
  }
  const of = (s: CaseSpec['section']): Array<[CaseSpec, Summary, Summary]> => results.filter(([c]) => c.section === s);
  const print = (title: string, head: string[], rows: string[][]): void => {
    if (rows.length > 0) printTable(title, head, rows);
  };

  print(
    `A. Shared state: ns per use (acquire + release of a random inode among ${NODES})`,
    ['table', '1 thr ns/use', '1 thr Muse/s', '2 thr ns/use/thr', '2 thr Muse/s total'],
    of('state').map(([c, a, b]) => [
      c.label,
      time(a, 1, 1),
      fmt(a.opsPerSec / 1e6, 2),
      time(b, 1, 1),
      fmt(b.opsPerSec / 1e6, 2),
    ]),
  );
  print(
    `B. Data path: page-cached host file -> guest memory view (memfd, mmapShared); MB = 10^6 bytes`,
    ['read', '1 thr us/op', '1 thr MB/s', '2 thr us/op/thr', '2 thr MB/s total'],
    of('data').map(([c, a, b]) => [
      c.label,
      time(a, 1e3, 2),
      fmt((a.opsPerSec * c.size!) / 1e6, 0),
      time(b, 1e3, 2),
      fmt((b.opsPerSec * c.size!) / 1e6, 0),
    ]),
  );
  print(
    'C. Call overhead',
    ['call', '1 thr ns/call', '2 thr ns/call/thr'],
    of('call').map(([c, a, b]) => [c.label, time(a, 1, 2), time(b, 1, 2)]),
  );
}

if (isMainThread) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
} else {
  // A failure rejects into an uncaught error, which reaches the main thread as 'error'.
  void workerMain(workerData as WorkerInit);
}
