/**
 * npm run bench:migration: what a live migration's device state costs the guest, virtiofsd-ts
 * against the Rust virtiofsd (the C virtiofsd cannot migrate), as QEMU drives it. A guest
 * holding many inodes and open files is paused while the source writes its state and the
 * destination reads it back: both are downtime.
 *
 * Per daemon and round: a share of DIRS directories of FILES files each; the source looks up
 * every one (one LOOKUP each: DIRS * (FILES + 1) inodes) and opens HANDLES of them, then
 * QEMU's precopy starts: dirty logging on (SET_LOG_BASE, LOG_ALL), PRECOPY seconds of it
 * (where a daemon may prepare), the queues stop, and the state goes out through
 * SET_DEVICE_STATE_FD and CHECK_DEVICE_STATE (timed: "save"). A second daemon of the same
 * kind on the same share, negotiated and stopped as QEMU's destination is, reads it back
 * (timed: "load"), starts its queues, and must answer a GETATTR on the last looked-up inode
 * and a READ through the last handle, as the guest would after the move.
 *
 * Options: --rounds=N (default 3), --dirs=N (default 100), --files=N per directory (default
 * 100), --handles=N (default 1000), --precopy=S (default 2). Writes
 * bench/results/migration.md.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../src/native';
import { bit, ProtocolFeature } from '../src/vhost/messages';
import { daemonMissing, REPO_ROOT, startDaemon, type Daemon, type DaemonKind } from '../test/frontend/daemons';
import { defaultProtocolMask, type VhostUserFrontend } from '../test/frontend/frontend';
import { FuseClient, ok } from '../test/frontend/fuse-client';
import { readState, writeState } from '../test/support/device-state';
import { median, medianRoundRatio, turnOrder } from './rounds';

const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const ROUNDS = Number(arg('rounds') ?? 3);
const DIRS = Number(arg('dirs') ?? 100);
const FILES = Number(arg('files') ?? 100);
const HANDLES = Number(arg('handles') ?? 1000);
const PRECOPY_S = Number(arg('precopy') ?? 2);
const MEMORY = 64 << 20;
const PAGE = 4096;
const VHOST_F_LOG_ALL = 26n;
const NEGOTIATE = { memory: { size: MEMORY }, protocolMask: defaultProtocolMask() | bit(ProtocolFeature.DEVICE_STATE) };

interface Config {
  label: string;
  kind: DaemonKind;
  args: string[];
}

const CONFIGS: Config[] = [
  { label: 'virtiofsd-ts', kind: 'ts', args: ['--cache=never'] },
  { label: 'Rust', kind: 'rust', args: ['--sandbox=none', '--cache=never'] },
];

interface Sample {
  round: number;
  inodes: number;
  handles: number;
  bytes: number;
  saveMs: number;
  loadMs: number;
}

/** The source's half, from the stopped queues to a good CHECK: the state. */
async function save(fe: VhostUserFrontend): Promise<Buffer> {
  const { state, check } = await readState(fe);
  if (check !== 0n) throw new Error(`CHECK_DEVICE_STATE after the save: ${check}`);
  return state;
}

/** The destination's half: the state written and our end closed, then a good CHECK. */
async function load(fe: VhostUserFrontend, state: Buffer): Promise<void> {
  const check = await writeState(fe, state);
  if (check !== 0n) throw new Error(`CHECK_DEVICE_STATE after the load: ${check}`);
}

/** The share: DIRS directories of FILES files, each file 4 KiB naming itself. */
function makeShare(dir: string): string {
  const share = path.join(dir, 'share');
  for (let d = 0; d < DIRS; d++) {
    const sub = path.join(share, `dir-${d}`);
    fs.mkdirSync(sub, { recursive: true });
    for (let f = 0; f < FILES; f++) fs.writeFileSync(path.join(sub, `file-${f}`), `dir-${d}/file-${f}\n`.padEnd(PAGE, '.'));
  }
  return share;
}

/** Daemon.logLine, waited for: the output reaches us a moment after the daemon's reply. Null if none came. */
async function logLine(d: Daemon, msg: string): Promise<Record<string, unknown> | null> {
  for (const end = Date.now() + 2000; ; ) {
    try {
      return d.logLine<Record<string, unknown>>(msg);
    } catch {
      if (Date.now() > end) return null;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Our daemon's own account of its save: its log line's figures. */
async function saveLine(d: Daemon): Promise<string> {
  const l = await logLine(d, 'device state saved for migration');
  if (!l) return 'no "device state saved for migration" line in its log';
  return `native save ${String(l.ms)} ms; paths from the precopy ${String(l.pathsFromPrecopy)}, of which ${String(l.pathsInUnchangedDirs)} in unchanged directories (${String(l.unchangedDirs)})`;
}

/** Our daemon's own account of its load. */
async function loadLine(d: Daemon): Promise<string> {
  const l = await logLine(d, 'device state loaded from migration');
  return l ? `native load ${String(l.ms)} ms` : 'no "device state loaded from migration" line in its log';
}

async function connect(kind: DaemonKind, args: string[], share: string, work: string, name: string): Promise<{ daemon: Daemon; fe: VhostUserFrontend; c: FuseClient }> {
  const daemon = startDaemon(kind, { sharedDir: share, socketPath: path.join(work, `${name}.sock`), replaceDefaultArgs: args });
  const fe = await daemon.connect();
  await fe.negotiate(NEGOTIATE);
  if (!fe.hasProtocolFeature(ProtocolFeature.DEVICE_STATE)) throw new Error(`${kind}: no DEVICE_STATE protocol feature`);
  return { daemon, fe, c: new FuseClient(fe, { timeoutMs: 60000 }) };
}

/** Runs f over items, `width` at a time. */
async function inParallel<T, R>(items: T[], width: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await f(items[i]);
      }
    }),
  );
  return out;
}

async function oneRun(cfg: Config, share: string, work: string, round: number): Promise<Sample> {
  const src = await connect(cfg.kind, cfg.args, share, work, `src-${round}`);
  let dst: Awaited<ReturnType<typeof connect>> | null = null;
  let logFd = -1;
  try {
    ok(await src.c.init(), 'INIT');
    // The guest's working set: every directory and file looked up, HANDLES files open.
    const dirs = await inParallel(Array.from({ length: DIRS }, (_, d) => d), 16, async (d) => ok(await src.c.lookup(1n, `dir-${d}`), 'LOOKUP').nodeid);
    const files = (
      await inParallel(dirs, 4, (nodeid) => inParallel(Array.from({ length: FILES }, (_, f) => f), 4, async (f) => ok(await src.c.lookup(nodeid, `file-${f}`), 'LOOKUP').nodeid))
    ).flat();
    const opened = await inParallel(files.slice(0, HANDLES), 16, async (n) => ({ nodeid: n, fh: ok(await src.c.open(n, fs.constants.O_RDONLY), 'OPEN').fh }));
    // QEMU's precopy: dirty logging on, then a while before the switch-over.
    const logBytes = MEMORY / PAGE / 8;
    logFd = native.memfdCreate('dirty-log', logBytes);
    await src.fe.setLogBase(logFd, logBytes);
    await src.fe.setFeatures(src.fe.ackedFeatures | (1n << VHOST_F_LOG_ALL), true);
    await new Promise((r) => setTimeout(r, PRECOPY_S * 1000));
    await src.fe.stopQueues();
    const t0 = process.hrtime.bigint();
    const state = await save(src.fe);
    const saveMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (cfg.kind === 'ts') process.stderr.write(`  virtiofsd-ts: ${await saveLine(src.daemon)}\n`);

    dst = await connect(cfg.kind, cfg.args, share, work, `dst-${round}`);
    await dst.fe.stopQueues();
    const t1 = process.hrtime.bigint();
    await load(dst.fe, state);
    const loadMs = Number(process.hrtime.bigint() - t1) / 1e6;
    if (cfg.kind === 'ts') process.stderr.write(`  virtiofsd-ts: ${await loadLine(dst.daemon)}\n`);
    // The guest goes on at the destination with what it had.
    await dst.fe.startQueues(dst.fe.queues.map(() => 0));
    const last = opened[opened.length - 1];
    ok(await dst.c.getattr(files[files.length - 1]), 'GETATTR on the destination');
    const data = ok(await dst.c.read(last.fh, 0, 64, { nodeid: last.nodeid }), 'READ on the destination');
    if (!data.toString().startsWith('dir-')) throw new Error(`READ on the destination: ${JSON.stringify(data.toString())}`);
    return { round, inodes: dirs.length + files.length, handles: opened.length, bytes: state.length, saveMs, loadMs };
  } finally {
    for (const s of [src, dst]) {
      if (!s) continue;
      s.fe.close();
      await s.daemon.stop();
    }
    if (logFd >= 0) native.close(logFd);
  }
}

async function main(): Promise<void> {
  for (const c of CONFIGS) {
    const missing = daemonMissing(c.kind);
    if (missing) throw new Error(missing);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-bench-mig-'));
  const samples = new Map<string, Sample[]>();
  try {
    process.stderr.write(`share: ${DIRS} directories of ${FILES} files\n`);
    const share = makeShare(work);
    for (let round = 1; round <= ROUNDS; round++) {
      for (const cfg of turnOrder(CONFIGS, round)) {
        const s = await oneRun(cfg, share, work, round);
        samples.set(cfg.label, [...(samples.get(cfg.label) ?? []), s]);
        process.stderr.write(`round ${round}/${ROUNDS} ${cfg.label}: ${s.inodes} inodes, ${s.handles} handles, ${s.bytes} bytes, save ${s.saveMs.toFixed(0)} ms, load ${s.loadMs.toFixed(0)} ms\n`);
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const med = (label: string, f: (s: Sample) => number): number => median((samples.get(label) ?? []).map(f));
  const ratio = (f: (s: Sample) => number): string => `${medianRoundRatio(samples.get('virtiofsd-ts'), samples.get('Rust'), f).toFixed(2)}x`;
  const cpu = os.cpus();
  const lines = [
    '# npm run bench:migration: the device state of a live migration, virtiofsd-ts against the Rust virtiofsd',
    '',
    `${new Date().toISOString().slice(0, 10)}, ${cpu.length} vCPUs (${cpu[0]?.model ?? '?'}), Linux ${os.release()}, Node ${process.version}; ` +
      `${DIRS} directories of ${FILES} files, each looked up once, ${HANDLES} of them open, ${PRECOPY_S} s of dirty logging before the switch-over; ` +
      `both daemons in their default migration mode (find-paths); median of ${ROUNDS} rounds (ours / Rust: the median of the rounds' ratios). ` +
      'Save: from SET_DEVICE_STATE_FD on the stopped source to its CHECK_DEVICE_STATE; load: the same on the destination. Both are downtime for the guest.',
    '',
    '| daemon | inodes | handles | state (bytes) | save (ms) | load (ms) | save + load (ms) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...CONFIGS.map(
      (c) =>
        `| ${c.label} | ${med(c.label, (s) => s.inodes)} | ${med(c.label, (s) => s.handles)} | ${med(c.label, (s) => s.bytes)} | ${med(c.label, (s) => s.saveMs).toFixed(0)} | ${med(c.label, (s) => s.loadMs).toFixed(0)} | ${med(c.label, (s) => s.saveMs + s.loadMs).toFixed(0)} |`,
    ),
    `| ours / Rust (time) | | | | ${ratio((s) => s.saveMs)} | ${ratio((s) => s.loadMs)} | ${ratio((s) => s.saveMs + s.loadMs)} |`,
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(text);
  const out = path.join(REPO_ROOT, 'bench', 'results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'migration.md'), text);
  process.stderr.write('written: bench/results/migration.md\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:migration failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
