/**
 * npm run bench: virtiofsd-ts against the Rust virtiofsd (thread pool 0 and 16) and the C
 * virtiofsd, each driven through our own vhost-user front end (test/frontend/) over its
 * socket: the same requests, the same guest memory, in one run. Each row is run daemon after
 * daemon, ROUNDS times, each round starting with another daemon; each figure is the median
 * over rounds, and the ratio ours / Rust (at the same thread count: Rust with
 * --thread-pool-size 0, its default, and 16) is the median of the rounds' own ratios.
 * Requests are kept in flight up to the row's queue depth, spread over the request queues.
 *
 * Per row and daemon: ops/s, MB/s, mean latency (µs per request), daemon CPU time per op,
 * the front end's own CPU time per op, the kicks it wrote and the call-eventfd wake-ups it
 * took per request (how well the daemon's notification suppression works) and, per daemon,
 * peak RSS (VmHWM) with what it is made of; daemon figures cover its process and children.
 * The table goes to stdout and to bench/results/frontend.md, a chart to
 * bench/results/frontend.svg.
 *
 * The rows of one request repeated (GETATTR, LOOKUP, READ, WRITE) are driven by native
 * threads, one per request queue (bench/ring-driver.ts), as a guest kernel would drive them;
 * the rows of several requests in turn (create, open+read, touch, save, list) by the JS
 * front end, whose CPU cost per request is then the same for every daemon.
 *
 * Options: --rounds=N (default 5), --seconds=S per row and daemon (default 2), --only=TEXT (rows
 * whose label contains TEXT), --daemons=LABEL,... (only these configurations, in this order,
 * e.g. for a profile), --ts-args="ARG ..." (appended to virtiofsd-ts's arguments, e.g.
 * --poll-max-us=0 to compare), --driver=js (every row through the JS front end, as before
 * the native driver), --queue-memory=N,... (the request queue counts of the table of our
 * peak RSS by number of queues; default 1,2,4,8,16; empty: no table).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../src/fuse/abi';
import { REPO_ROOT, startDaemon, type Daemon, type DaemonKind } from '../test/frontend/daemons';
import type { VhostUserFrontend } from '../test/frontend/frontend';
import { FuseClient, ok } from '../test/frontend/fuse-client';
import { cpuSeconds, statusMiB } from '../test/frontend/proc-stats';
import { ratioChart } from './chart';
import { driveRepeated, type RepeatedRequest } from './ring-driver';
import { medianOf, medianRoundRatio, turnOrder } from './rounds';

const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const ROUNDS = Number(arg('rounds') ?? 5);
const SECONDS = Number(arg('seconds') ?? 2);
const ONLY = arg('only');
const DAEMONS = arg('daemons')?.split(',');
const TS_ARGS = arg('ts-args')?.split(' ').filter((a) => a !== '') ?? [];
const JS_DRIVER = arg('driver') === 'js';
const QUEUE_MEMORY = (arg('queue-memory') ?? '1,2,4,8,16').split(',').filter((q) => q !== '').map(Number);
const KiB = 1024;
const MiB = 1024 * KiB;
const FILE_SIZE = 64 * MiB;
/** Files in the directory the list row lists. */
const LIST_ENTRIES = 100;

interface Config {
  label: string;
  kind: DaemonKind;
  args: string[];
  queues: number;
  /** The Rust configuration this one is compared with. */
  versus: string | null;
}

const CONFIGS: Config[] = [
  { label: 'virtiofsd-ts', kind: 'ts', args: ['--cache=never'], queues: 1, versus: 'rust tp0' },
  { label: 'virtiofsd-ts 2q', kind: 'ts', args: ['--cache=never'], queues: 2, versus: 'rust tp0' },
  { label: 'virtiofsd-ts tp16', kind: 'ts', args: ['--cache=never', '--thread-pool-size=16'], queues: 1, versus: 'rust tp16' },
  { label: 'rust tp0', kind: 'rust', args: ['--sandbox=none', '--cache=never', '--thread-pool-size=0'], queues: 1, versus: null },
  { label: 'rust tp16', kind: 'rust', args: ['--sandbox=none', '--cache=never', '--thread-pool-size=16'], queues: 1, versus: null },
  { label: 'C', kind: 'c', args: ['-o', 'cache=none'], queues: 1, versus: null },
];

type Op = 'getattr' | 'setattr' | 'lookup' | 'read' | 'write' | 'smallfile' | 'openread' | 'save' | 'list';

interface Row {
  label: string;
  op: Op;
  size: number;
  depth: number;
}

const ROWS: Row[] = [
  { label: 'GETATTR, depth 1', op: 'getattr', size: 0, depth: 1 },
  { label: 'LOOKUP, depth 1', op: 'lookup', size: 0, depth: 1 },
  { label: '4 KiB READ, depth 1', op: 'read', size: 4 * KiB, depth: 1 },
  { label: '4 KiB READ, depth 16', op: 'read', size: 4 * KiB, depth: 16 },
  { label: '4 KiB WRITE, depth 1', op: 'write', size: 4 * KiB, depth: 1 },
  { label: '4 KiB WRITE, depth 16', op: 'write', size: 4 * KiB, depth: 16 },
  { label: '1 MiB READ, depth 4', op: 'read', size: MiB, depth: 4 },
  { label: '1 MiB WRITE, depth 4', op: 'write', size: MiB, depth: 4 },
  { label: 'small file CREATE+WRITE+RELEASE+UNLINK', op: 'smallfile', size: 4 * KiB, depth: 1 },
  { label: 'small file OPEN+READ+FLUSH+RELEASE', op: 'openread', size: 4 * KiB, depth: 1 },
  { label: 'SETATTR of times (touch), depth 1', op: 'setattr', size: 0, depth: 1 },
  { label: 'save by rename: CREATE+WRITE+RELEASE+RENAME', op: 'save', size: 4 * KiB, depth: 1 },
  { label: `list a directory of ${LIST_ENTRIES}: OPENDIR+READDIRPLUS+RELEASEDIR`, op: 'list', size: 0, depth: 1 },
];

/** One daemon under test, connected, with its files open. */
interface Subject {
  config: Config;
  daemon: Daemon;
  fe: VhostUserFrontend;
  clients: FuseClient[];
  big: { nodeid: bigint; fh: bigint };
  out: { nodeid: bigint; fh: bigint };
  dirNodeid: bigint;
  /** A 4 KiB file the openread row opens, reads and closes, and the setattr row touches. */
  smallNodeid: bigint;
  /** The directory of LIST_ENTRIES files the list row lists. */
  listNodeid: bigint;
  /** The file the save row last renamed over 'saved': forgotten when the next one replaces it. */
  savedNodeid: bigint;
  pid: number;
  work: string;
}

/**
 * The two 64 MiB files the READ and WRITE rows use ('big' is read, 'out' written), made once
 * and hard-linked into every daemon's share: every daemon reads and writes the same inode and
 * so the same page-cache pages. With a file of its own each, a daemon's rows measured its
 * file as much as the daemon. Two files made one after the other the same way are not alike
 * to the kernel: with plain pwrite of 1 MiB into each in turns (no daemon), the one made
 * first took 10-12% fewer writes per second, in every round, whichever name it had (the page
 * cache had given it smaller folios: twice the page-cache lookups per write under perf). The
 * first daemon set up, ours, had always got those files.
 */
function makeRowFiles(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-bench-files-'));
  const fd = fs.openSync(path.join(dir, 'big'), 'w');
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
  for (let off = 0; off < FILE_SIZE; off += MiB) fs.writeSync(fd, chunk, 0, MiB, off);
  fs.closeSync(fd);
  fs.writeFileSync(path.join(dir, 'out'), Buffer.alloc(FILE_SIZE));
  return dir;
}

async function setUp(config: Config, rowFiles: string): Promise<Subject> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-bench-'));
  const share = path.join(work, 'share');
  fs.mkdirSync(path.join(share, 'dir'), { recursive: true });
  // Same file system (both under the temporary directory), so a link and not a copy.
  for (const name of ['big', 'out']) fs.linkSync(path.join(rowFiles, name), path.join(share, name));
  fs.writeFileSync(path.join(share, 'small'), Buffer.alloc(4 * KiB, 'x'));
  fs.mkdirSync(path.join(share, 'list'));
  for (let i = 0; i < LIST_ENTRIES; i++) fs.writeFileSync(path.join(share, 'list', `entry-${i}.txt`), 'x');
  const daemon = startDaemon(config.kind, { sharedDir: share, socketPath: path.join(work, 'vfs.sock'), replaceDefaultArgs: config.kind === 'ts' ? [...config.args, ...TS_ARGS] : config.args });
  const fe = await daemon.connect();
  await fe.negotiate({ requestQueues: config.queues, queueSize: 256, memory: { size: 128 * MiB, recycle: true } });
  const clients = Array.from({ length: config.queues }, (_, i) => new FuseClient(fe, { queue: i + 1, timeoutMs: 30000, zeroReplies: false }));
  ok(await clients[0].init(), 'INIT');
  const open = async (name: string, flags: number): Promise<{ nodeid: bigint; fh: bigint }> => {
    const e = ok(await clients[0].lookup(1n, name), `LOOKUP ${name}`);
    const o = ok(await clients[0].open(e.nodeid, flags), `OPEN ${name}`);
    return { nodeid: e.nodeid, fh: o.fh };
  };
  const big = await open('big', fs.constants.O_RDONLY);
  const out = await open('out', fs.constants.O_WRONLY);
  const dirNodeid = ok(await clients[0].lookup(1n, 'dir'), 'LOOKUP dir').nodeid;
  const smallNodeid = ok(await clients[0].lookup(1n, 'small'), 'LOOKUP small').nodeid;
  const listNodeid = ok(await clients[0].lookup(1n, 'list'), 'LOOKUP list').nodeid;
  return { config, daemon, fe, clients, big, out, dirNodeid, smallNodeid, listNodeid, savedNodeid: 0n, pid: daemon.proc.pid!, work };
}

async function tearDown(s: Subject): Promise<void> {
  s.fe.close();
  await s.daemon.stop(5000);
  fs.rmSync(s.work, { recursive: true, force: true });
}

/**
 * Peak RSS (VmHWM), and what the resident set is made of at the end of the run: private
 * memory (RssAnon), pages of the program's files (RssFile: for virtiofsd-ts mostly the node
 * executable, shared with every Node process on the host), and guest memory the daemon
 * touched (RssShmem, the memfd regions it maps).
 */
function memoryMiB(pid: number): { peak: number; anon: number; file: number; shmem: number } {
  const [peak, anon, file, shmem] = statusMiB(pid, ['VmHWM', 'RssAnon', 'RssFile', 'RssShmem']);
  return { peak, anon, file, shmem };
}

const payload = Buffer.alloc(MiB, 0x5a);
const setattrArgs = Buffer.alloc(abi.SETATTR_IN_SIZE);
const cstr = (s: string): Buffer => Buffer.concat([Buffer.from(s), Buffer.alloc(1)]);
let fileSerial = 0;
/** FORGETs sent and not yet returned by the daemon. */
const forgets: Array<Promise<unknown>> = [];

/** CREATE of name in the bench directory with flags, WRITE of size bytes, RELEASE: the new file's node id. */
async function writeNewFile(s: Subject, c: FuseClient, name: string, flags: number, size: number): Promise<bigint> {
  const args = Buffer.alloc(abi.CREATE_IN_SIZE);
  abi.encodeCreateIn(args, 0, { flags, mode: 0o100644, umask: 0, openFlags: 0 });
  const r = await c.request(abi.Opcode.CREATE, s.dirNodeid, Buffer.concat([args, cstr(name)]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
  if (r.error) throw new Error(`CREATE: ${r.error}`);
  const e = abi.decodeEntryOut(r.body, 0);
  const o = abi.decodeOpenOut(r.body, abi.ENTRY_OUT_SIZE);
  ok(await c.write(o.fh, 0, payload.subarray(0, size), { nodeid: e.nodeid }), 'WRITE');
  ok(await c.release(o.fh, { nodeid: e.nodeid }), 'RELEASE');
  return e.nodeid;
}

/** One request of the row's kind on client c; resolves when it (all of it) is done. */
async function oneOp(s: Subject, c: FuseClient, row: Row, i: number): Promise<void> {
  const blocks = FILE_SIZE / row.size;
  switch (row.op) {
    case 'getattr':
      ok(await c.getattr(s.big.nodeid), 'GETATTR');
      return;
    case 'setattr': {
      // touch: both times to now.
      const { ATIME, MTIME, ATIME_NOW, MTIME_NOW } = abi.FattrFlags;
      setattrArgs.writeUInt32LE(ATIME | MTIME | ATIME_NOW | MTIME_NOW, 0);
      const r = await c.request(abi.Opcode.SETATTR, s.smallNodeid, setattrArgs, abi.ATTR_OUT_SIZE);
      if (r.error) throw new Error(`SETATTR: ${r.error}`);
      return;
    }
    case 'lookup':
      ok(await c.lookup(1n, 'big'), 'LOOKUP');
      return;
    case 'read': {
      const off = ((i * 7919) % blocks) * row.size;
      const d = ok(await c.read(s.big.fh, off, row.size, { nodeid: s.big.nodeid, borrowBody: true }), 'READ');
      if (d.length !== row.size) throw new Error(`short read ${d.length}`);
      return;
    }
    case 'write': {
      const off = ((i * 7919) % blocks) * row.size;
      const w = ok(await c.write(s.out.fh, off, payload.subarray(0, row.size), { nodeid: s.out.nodeid }), 'WRITE');
      if (w.size !== row.size) throw new Error(`short write ${w.size}`);
      return;
    }
    case 'smallfile': {
      const name = `f${fileSerial++}`;
      const nodeid = await writeNewFile(s, c, name, fs.constants.O_WRONLY, row.size);
      const u = await c.request(abi.Opcode.UNLINK, s.dirNodeid, cstr(name), 0);
      if (u.error) throw new Error(`UNLINK: ${u.error}`);
      // As Linux does (virtio_fs_send_forget), the FORGET goes to the hiprio queue and
      // nobody waits for it; runRow collects them before it stops the clock.
      forgets.push(c.forget(nodeid, 1));
      return;
    }
    case 'save': {
      // An editor's save: a new file written beside the old one, then renamed over it.
      const name = `saving${fileSerial++}`;
      const nodeid = await writeNewFile(s, c, name, fs.constants.O_WRONLY | fs.constants.O_EXCL, row.size);
      const rename = Buffer.alloc(abi.RENAME_IN_SIZE);
      abi.encodeRenameIn(rename, 0, { newdir: s.dirNodeid });
      const m = await c.request(abi.Opcode.RENAME, s.dirNodeid, Buffer.concat([rename, cstr(name), cstr('saved')]), 0);
      if (m.error) throw new Error(`RENAME: ${m.error}`);
      // The file it replaced is gone: the guest forgets it.
      if (s.savedNodeid) forgets.push(c.forget(s.savedNodeid, 1));
      s.savedNodeid = nodeid;
      return;
    }
    case 'list': {
      // ls -l of a directory: open it, READDIRPLUS a page at a time (as Linux asks) to the
      // end, release it.
      const o = ok(await c.opendir(s.listNodeid), 'OPENDIR');
      let offset = 0n;
      let entries = 0;
      for (;;) {
        const d = ok(await c.read(o.fh, offset, 4096, { nodeid: s.listNodeid, opcode: abi.Opcode.READDIRPLUS, borrowBody: true }), 'READDIRPLUS');
        if (d.length === 0) break;
        for (let at = 0; at < d.length; ) {
          const rec = abi.decodeDirentplus(d, at);
          offset = rec.dirent.off;
          entries++;
          at += abi.direntplusSize(rec.dirent.name.length);
        }
      }
      if (entries !== LIST_ENTRIES + 2) throw new Error(`listed ${entries} entries`);
      ok(await c.release(o.fh, { nodeid: s.listNodeid, opcode: abi.Opcode.RELEASEDIR }), 'RELEASEDIR');
      return;
    }
    case 'openread': {
      // What cat does to a file the guest has looked up: open, read, close (FLUSH, RELEASE).
      const nodeid = s.smallNodeid;
      const o = ok(await c.open(nodeid, fs.constants.O_RDONLY), 'OPEN');
      const d = ok(await c.read(o.fh, 0, row.size, { nodeid, borrowBody: true }), 'READ');
      if (d.length !== row.size) throw new Error(`short read ${d.length}`);
      ok(await c.release(o.fh, { nodeid, opcode: abi.Opcode.FLUSH }), 'FLUSH');
      ok(await c.release(o.fh, { nodeid }), 'RELEASE');
      return;
    }
  }
}

interface Sample {
  opsPerSec: number;
  mbPerSec: number;
  latencyUs: number;
  cpuUsPerOp: number;
  /** Kicks the front end wrote, and call-eventfd wake-ups it took, per request. */
  kicksPerOp: number;
  wakeupsPerOp: number;
  /** CPU time of this process (the front end) per request. */
  frontendCpuUsPerOp: number;
}

/** A sample and the round (from 1) it was taken in. */
type RoundSample = Sample & { round: number };

/** Kicks written and wake-ups taken so far on the subject's request queues. */
function notifications(s: Subject): { kicks: number; wakeups: number } {
  let kicks = 0;
  let wakeups = 0;
  for (const q of s.fe.queues.slice(1)) {
    kicks += q.kicks;
    wakeups += q.calls + q.maskedCalls;
  }
  return { kicks, wakeups };
}

/** The row's request for the native driver, when the row is one request repeated. */
function repeatedRequest(s: Subject, row: Row): RepeatedRequest | null {
  if (JS_DRIVER) return null;
  switch (row.op) {
    case 'getattr': {
      const args = Buffer.alloc(abi.GETATTR_IN_SIZE);
      abi.encodeGetattrIn(args, 0, { getattrFlags: 0, fh: 0n });
      return { opcode: abi.Opcode.GETATTR, nodeid: s.big.nodeid, args, replyBody: abi.ATTR_OUT_SIZE };
    }
    case 'lookup':
      return { opcode: abi.Opcode.LOOKUP, nodeid: 1n, args: cstr('big'), replyBody: abi.ENTRY_OUT_SIZE };
    case 'read': {
      const args = Buffer.alloc(abi.READ_IN_SIZE);
      abi.encodeReadIn(args, 0, { fh: s.big.fh, offset: 0n, size: row.size, readFlags: 0, lockOwner: 0n, flags: 0 });
      return { opcode: abi.Opcode.READ, nodeid: s.big.nodeid, args, replyBody: row.size, offset: { at: 8, blockSize: row.size, blocks: FILE_SIZE / row.size } };
    }
    case 'write': {
      const args = Buffer.alloc(abi.WRITE_IN_SIZE);
      abi.encodeWriteIn(args, 0, { fh: s.out.fh, offset: 0n, size: row.size, writeFlags: 0, lockOwner: 0n, flags: 0 });
      return {
        opcode: abi.Opcode.WRITE,
        nodeid: s.out.nodeid,
        args,
        data: payload.subarray(0, row.size),
        replyBody: abi.WRITE_OUT_SIZE,
        offset: { at: 8, blockSize: row.size, blocks: FILE_SIZE / row.size },
      };
    }
    default:
      return null;
  }
}

/** Bytes of the rows' files the host had evicted from its page cache before a row began. */
let evicted = 0;

/** Reads a file through so that all of it is page-cached; returns how much of it was not. */
function cacheWholeFile(file: string): number {
  // fincore (util-linux) counts the file's resident bytes; without it nothing is counted.
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' });
  const before = r.status === 0 ? Number(r.stdout.trim()) : FILE_SIZE;
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(MiB);
    for (let off = 0; off < FILE_SIZE; off += MiB) fs.readSync(fd, buf, 0, MiB, off);
  } finally {
    fs.closeSync(fd);
  }
  return Math.max(0, FILE_SIZE - before);
}

/** Runs one row on one subject for SECONDS, `depth` requests in flight over its queues. */
async function runRow(s: Subject, row: Row): Promise<Sample> {
  // The dirty pages the daemon before left behind are written back now, not while this
  // one runs: otherwise the write rows measure the place in the round more than the daemon.
  spawnSync('sync');
  // The file a READ or WRITE row works on is wholly in the page cache when the row starts,
  // for every daemon alike: a host may evict pages nobody touched for a while (this one runs
  // DAMON's proactive reclaim, which pages out what went unused for 60 s), and between two
  // rounds of a row each daemon's file sits idle for minutes. Before this, the 1 MiB READ
  // row of a full run read partly from disk, at half its rate, for every daemon.
  if (row.op === 'read' || row.op === 'write') evicted += cacheWholeFile(path.join(s.work, 'share', row.op === 'read' ? 'big' : 'out'));
  const repeated = repeatedRequest(s, row);
  if (repeated) {
    await driveRepeated(s.fe, s.clients.length, row.depth, repeated, 0.2);
    return measure(s, row, () => driveRepeated(s.fe, s.clients.length, row.depth, repeated, SECONDS));
  }
  let i = 0;
  const warm = Date.now() + 200;
  while (Date.now() < warm) await oneOp(s, s.clients[0], row, i++);
  await Promise.all(forgets.splice(0));
  return measure(s, row, async () => {
    let ops = 0;
    let latencyUs = 0;
    const end = Date.now() + SECONDS * 1000;
    const lane = async (k: number): Promise<void> => {
      const c = s.clients[k % s.clients.length];
      while (Date.now() < end) {
        const a = process.hrtime.bigint();
        await oneOp(s, c, row, i++);
        latencyUs += Number(process.hrtime.bigint() - a) / 1e3;
        ops++;
      }
    };
    await Promise.all(Array.from({ length: row.depth }, (_, k) => lane(k)));
    await Promise.all(forgets.splice(0));
    return { ops, latencyUs };
  });
}

/** Runs `work` and takes the row's figures around it: time, both sides' CPU, notifications. */
async function measure(s: Subject, row: Row, work: () => Promise<{ ops: number; latencyUs: number }>): Promise<Sample> {
  const cpu0 = cpuSeconds(s.pid);
  const n0 = notifications(s);
  const fe0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const { ops, latencyUs: latency } = await work();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = cpuSeconds(s.pid) - cpu0;
  const n1 = notifications(s);
  const fe1 = process.cpuUsage(fe0);
  return {
    opsPerSec: ops / seconds,
    mbPerSec: (ops * row.size) / seconds / 1e6,
    latencyUs: latency / ops,
    cpuUsPerOp: (cpu * 1e6) / ops,
    kicksPerOp: (n1.kicks - n0.kicks) / ops,
    wakeupsPerOp: (n1.wakeups - n0.wakeups) / ops,
    frontendCpuUsPerOp: (fe1.user + fe1.system) / ops,
  };
}

function fail(message: string): never {
  throw new Error(message);
}


/**
 * Our daemon's peak RSS with `queues` request queues, each of which served requests: 4 KiB
 * READs and GETATTRs (the fast path) and IOCTLs (JS) on every queue at once, 400 each.
 */
async function queueMemory(queues: number, rowFiles: string): Promise<ReturnType<typeof memoryMiB>> {
  const s = await setUp({ label: `virtiofsd-ts ${queues}q`, kind: 'ts', args: ['--cache=never'], queues, versus: null }, rowFiles);
  let m: ReturnType<typeof memoryMiB>;
  try {
    await Promise.all(
      s.clients.map(async (c, i) => {
        for (let k = 0; k < 400; k++) {
          ok(await c.read(s.big.fh, ((i * 400 + k) % 16384) * 4 * KiB, 4 * KiB, { nodeid: s.big.nodeid, borrowBody: true }), 'READ');
          ok(await c.getattr(s.big.nodeid), 'GETATTR');
          ok(await c.ioctl(s.big.nodeid), 'IOCTL');
        }
      }),
    );
    m = memoryMiB(s.pid);
  } finally {
    await tearDown(s);
  }
  const perQueue = s.daemon.exitReport<{ requestsPerQueue?: Record<string, number> }>()?.requestsPerQueue ?? {};
  const busy = Object.entries(perQueue).filter(([q, n]) => q !== '0' && n >= 1200).length;
  if (busy !== queues) throw new Error(`${busy} of ${queues} request queues served the requests: ${JSON.stringify(perQueue)}`);
  return m;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return '-';
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

async function main(): Promise<void> {
  const rows = ROWS.filter((r) => !ONLY || r.label.includes(ONLY));
  const subjects: Subject[] = [];
  // --daemons also sets the order in which the daemons take their turns.
  const configs = DAEMONS ? DAEMONS.map((l) => CONFIGS.find((c) => c.label === l) ?? fail(`no daemon configuration "${l}"`)) : CONFIGS;
  const rowFiles = makeRowFiles();
  for (const c of configs) subjects.push(await setUp(c, rowFiles));
  const samples = new Map<string, RoundSample[]>();
  const key = (r: Row, s: Subject): string => `${r.label}|${s.config.label}`;
  for (let round = 1; round <= ROUNDS; round++) {
    for (const row of rows) {
      // Each round starts the row with another daemon, so none always runs first or last.
      for (const s of turnOrder(subjects, round)) {
        const r = { ...(await runRow(s, row)), round };
        samples.set(key(row, s), [...(samples.get(key(row, s)) ?? []), r]);
        process.stderr.write(`round ${round}/${ROUNDS}  ${row.label}  ${s.config.label}: ${fmt(r.opsPerSec)} ops/s\n`);
      }
    }
  }
  const rss = new Map(subjects.map((s) => [s.config.label, memoryMiB(s.pid)]));
  for (const s of subjects) await tearDown(s);
  const byQueues = new Map<number, ReturnType<typeof memoryMiB>>();
  for (const q of QUEUE_MEMORY) {
    byQueues.set(q, await queueMemory(q, rowFiles));
    process.stderr.write(`peak RSS with ${q} request queues: ${fmt(byQueues.get(q)!.peak)} MiB\n`);
  }
  fs.rmSync(rowFiles, { recursive: true, force: true });

  const med = (r: Row, label: string, f: (x: Sample) => number): number => medianOf(samples.get(`${r.label}|${label}`), f);
  const cpu = os.cpus();
  const lines: string[] = [];
  lines.push(`# npm run bench: virtiofsd-ts against the Rust and the C virtiofsd`);
  lines.push('');
  lines.push(
    `${new Date().toISOString().slice(0, 10)}, ${cpu.length} vCPUs (${cpu[0]?.model ?? '?'}), Linux ${os.release()}, Node ${process.version}; ` +
      `each daemon through our vhost-user front end (eventfd notifications), ${SECONDS} s per row and daemon after 0.2 s of warm-up, ` +
      `median of ${ROUNDS} rounds, daemons taking turns (ours / Rust: the median of the rounds' ratios); one 64 MiB file to read and one to write, the same two for every daemon (hard links), read through on the host before each READ and WRITE row so that they start wholly page-cached (the host had evicted ${(evicted / MiB).toFixed(0)} MiB of these files between rows over the run); --cache=never (C: cache=none).`,
  );
  lines.push('');
  lines.push('| row | daemon | ops/s | MB/s | µs/op (mean latency) | daemon CPU µs/op | front end CPU µs/op | kicks/op | wake-ups/op | ours / Rust (same threads) |');
  lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const row of rows) {
    for (const s of subjects) {
      const label = s.config.label;
      const ops = med(row, label, (x) => x.opsPerSec);
      const ratio = s.config.versus ? medianRoundRatio(samples.get(`${row.label}|${label}`), samples.get(`${row.label}|${s.config.versus}`), (x) => x.opsPerSec) : NaN;
      lines.push(
        `| ${row.label} | ${label} | ${fmt(ops)} | ${row.size ? fmt(med(row, label, (x) => x.mbPerSec)) : '-'} | ${fmt(med(row, label, (x) => x.latencyUs))} | ` +
          `${fmt(med(row, label, (x) => x.cpuUsPerOp))} | ${fmt(med(row, label, (x) => x.frontendCpuUsPerOp))} | ${med(row, label, (x) => x.kicksPerOp).toFixed(3)} | ${med(row, label, (x) => x.wakeupsPerOp).toFixed(3)} | ${Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : ''} |`,
      );
    }
  }
  lines.push('');
  lines.push('| daemon | peak RSS (MiB) | at the end: private (RssAnon) | program files (RssFile) | guest memory (RssShmem) |');
  lines.push('| --- | ---: | ---: | ---: | ---: |');
  for (const [label, m] of rss) lines.push(`| ${label} | ${fmt(m.peak)} | ${fmt(m.anon)} | ${fmt(m.file)} | ${fmt(m.shmem)} |`);
  if (byQueues.size > 0) {
    lines.push('');
    lines.push(`Our daemon's peak RSS by number of request queues (a daemon of its own for each, 400 READs, GETATTRs and IOCTLs (which JS serves) on every queue at once; the Rust and the C virtiofsd serve one request queue):`);
    lines.push('');
    lines.push('| request queues | peak RSS (MiB) | at the end: private (RssAnon) | program files (RssFile) | guest memory (RssShmem) |');
    lines.push('| ---: | ---: | ---: | ---: | ---: |');
    for (const [q, m] of byQueues) lines.push(`| ${q} | ${fmt(m.peak)} | ${fmt(m.anon)} | ${fmt(m.file)} | ${fmt(m.shmem)} |`);
  }
  const text = lines.join('\n') + '\n';
  process.stdout.write(text);
  const dir = path.join(REPO_ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'frontend.md'), text);
  const byLabel = new Map(rows.map((r) => [r.label, r]));
  fs.writeFileSync(
    path.join(dir, 'frontend.svg'),
    ratioChart(
      'ops/s relative to the Rust virtiofsd (thread pool 0) = 1.0',
      rows.map((r) => r.label),
      subjects.map((s) => s.config.label),
      (r, l) => med(byLabel.get(r)!, l, (x) => x.opsPerSec),
      'rust tp0',
    ),
  );
  process.stderr.write(`written: bench/results/frontend.md, bench/results/frontend.svg\n`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
