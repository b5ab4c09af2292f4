/**
 * npm run bench:guest: fio inside a real guest (QEMU 10.0 + Linux 6.12, 2 vCPUs, TCG or KVM)
 * against virtiofsd-ts (1 and 2 request queues), the Rust virtiofsd and the C virtiofsd, all
 * with cache=never. Each daemon boots one guest per round that runs every job of
 * guest-tests/bench (fio: 4 KiB random read/write psync, 1 MiB sequential read/write, 4 KiB
 * random read libaio at depth 16, two jobs on two vCPUs; and a metadata job), ROUNDS rounds,
 * each round starting with another daemon. Each figure is the median over rounds; ours /
 * Rust is the median of the rounds' own ratios. Beside IOPS and MB/s, the daemon's CPU time
 * over each job (sampled as the guest console announces the job's begin and end): under TCG
 * the daemon shares the host's cores with the guest's vCPUs, so what it spends the guest
 * loses. The table goes to stdout and bench/results/guest.md, a chart to
 * bench/results/guest.svg.
 *
 * Then the cost of each cache mode (guest-tests/bench-cache): a 16 MiB file the host wrote is
 * re-read 20 times in the guest, each time through a new open, under virtiofsd-ts and the
 * Rust virtiofsd in modes never, auto and always; the table has the first and the later
 * reads' MB/s and, for virtiofsd-ts, the READ requests the daemon served.
 *
 * Options: --rounds=N (default 3), --only=TEXT (jobs whose name contains TEXT; "reread" for
 * the cache-mode job), --daemons=LABEL,... (only these configurations), --ts-args="ARG ..."
 * (appended to virtiofsd-ts's arguments). The configurations "virtiofsd-ts poll0" and "virtiofsd-ts 2q poll0"
 * (--poll-max-us=0) run only when --daemons names them, to weigh polling in the same rounds.
 * Figures from another run are not comparable: compare the daemons of one run only.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT, type DaemonKind } from '../test/frontend/daemons';
import {
  BENCH_CACHE_DIR, BENCH_DIR, COMBINATIONS, comboMissing, exitReport, explain, listCases, requestsOf, runCases, type ExitReport,
} from '../test/guest/runner';
import { ratioChart } from './chart';
import { medianOf, rangeOf, roundRatios, turnOrder, median } from './rounds';

const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const ROUNDS = Number(arg('rounds') ?? 3);
const ONLY = arg('only');
const DAEMONS = arg('daemons')?.split(',');
const TS_ARGS = arg('ts-args')?.split(' ').filter((a) => a !== '') ?? [];

interface Config {
  label: string;
  kind: DaemonKind;
  args: string[];
  queues: number;
  /** Run only when --daemons names it (a variant to compare, not part of the default table). */
  onRequest?: boolean;
}

const ALL_CONFIGS: Config[] = [
  { label: 'virtiofsd-ts', kind: 'ts', args: ['--cache=never'], queues: 1 },
  { label: 'virtiofsd-ts 2q', kind: 'ts', args: ['--cache=never'], queues: 2 },
  { label: 'rust', kind: 'rust', args: ['--cache=never'], queues: 1 },
  { label: 'C', kind: 'c', args: ['-o', 'cache=none'], queues: 1 },
  { label: 'virtiofsd-ts poll0', kind: 'ts', args: ['--cache=never', '--poll-max-us=0'], queues: 1, onRequest: true },
  { label: 'virtiofsd-ts 2q poll0', kind: 'ts', args: ['--cache=never', '--poll-max-us=0'], queues: 2, onRequest: true },
];
const CONFIGS = ALL_CONFIGS.filter((c) => !c.onRequest || DAEMONS?.includes(c.label));

const CACHE_CONFIGS: Config[] = (['never', 'auto', 'always'] as const).flatMap((mode) => [
  { label: `virtiofsd-ts ${mode}`, kind: 'ts' as const, args: [`--cache=${mode}`], queues: 1 },
  { label: `rust ${mode}`, kind: 'rust' as const, args: [`--cache=${mode}`], queues: 1 },
]);

/** The exit report's requests by opcode, summed over the queues, most first. */
function opcodeTotals(report: ExitReport): Record<string, number> {
  const totals = new Map<string, number>();
  for (const q of Object.values(report.opcodesPerQueue)) for (const [op, n] of Object.entries(q)) totals.set(op, (totals.get(op) ?? 0) + n);
  return Object.fromEntries([...totals].sort((a, b) => b[1] - a[1]));
}

const daemonArgs = (cfg: Config): string[] => (cfg.kind === 'ts' ? [...cfg.args, ...TS_ARGS] : cfg.args);

interface Figures {
  iops: number;
  kibPerSec: number;
  /** The daemon's CPU time over the job (its file's layout, ramp and timed part), seconds. */
  daemonCpu: number;
  round: number;
}

async function main(): Promise<void> {
  const combo = COMBINATIONS[1];
  const missing = comboMissing(combo);
  if (missing) throw new Error(missing);
  const jobs = listCases(BENCH_DIR).filter((c) => !ONLY || c.name.includes(ONLY));
  const cacheJobs = listCases(BENCH_CACHE_DIR).filter((c) => !ONLY || c.name.includes(ONLY));
  const results = new Map<string, Figures[]>();
  const rereads = new Map<string, Array<{ first: number; rest: number; reads: number }>>();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const cfg of CACHE_CONFIGS.filter((c) => cacheJobs.length > 0 && (!DAEMONS || DAEMONS.includes(c.label)))) {
      const run = await runCases({
        daemon: cfg.kind, combo, cases: cacheJobs, daemonArgs: daemonArgs(cfg), queues: 1, smp: 2, set: 'bench-cache',
        prepare: (share) => fs.writeFileSync(path.join(share, 'reread-16m'), randomBytes(16 << 20)),
      });
      const job = cacheJobs[0].name;
      const line = run.results.get(job)?.output.find((l) => l.startsWith('REREAD '));
      if (run.results.get(job)?.status !== 'pass' || !line) {
        process.stderr.write(`round ${round} ${cfg.label} ${job}: no result\n${explain(run, job)}\n`);
        continue;
      }
      const [, first, rest] = line.split(' ').map(Number);
      const report = exitReport(run);
      const reads = report ? requestsOf(report, 'READ') : NaN;
      rereads.set(cfg.label, [...(rereads.get(cfg.label) ?? []), { first, rest, reads }]);
      process.stderr.write(`round ${round}/${ROUNDS}  ${cfg.label}  re-read: first ${first} MB/s, then ${rest} MB/s${report ? `, ${reads} READs` : ''}\n`);
    }
    const chosen = CONFIGS.filter((c) => jobs.length > 0 && (!DAEMONS || DAEMONS.includes(c.label)));
    // Each round starts with another daemon, so none always boots first or last.
    for (const cfg of turnOrder(chosen, round)) {
      const boot = () => runCases({ daemon: cfg.kind, combo, cases: jobs, daemonArgs: daemonArgs(cfg), queues: cfg.queues, smp: 2, set: 'bench' });
      let run = await boot();
      // A guest that died before any job started (a boot failure under TCG) says nothing
      // about the daemon: boot once more.
      if ([...run.results.values()].every((r) => r.status === 'not-run')) {
        process.stderr.write(`round ${round} ${cfg.label}: the guest ran no job (status ${run.guestStatus}); booting again\n`);
        run = await boot();
      }
      // Where our daemon's requests went: per queue, the requests and the kicks (the exit report).
      const report = cfg.kind === 'ts' ? exitReport(run) : null;
      if (report) {
        process.stderr.write(`round ${round}/${ROUNDS}  ${cfg.label}  requests per queue: ${JSON.stringify(report.requestsPerQueue)}\n`);
        process.stderr.write(`round ${round}/${ROUNDS}  ${cfg.label}  requests by opcode over the boot: ${JSON.stringify(opcodeTotals(report))}\n`);
      }
      for (const job of jobs) {
        const r = run.results.get(job.name)!;
        const line = r.output.find((l) => l.startsWith(`FIO ${job.name} `));
        if (r.status !== 'pass' || !line) {
          process.stderr.write(`round ${round} ${cfg.label} ${job.name}: no result\n${explain(run, job.name)}\n`);
          continue;
        }
        const [, , ri, rb, wi, wb] = line.split(' ').map(Number);
        const k = `${job.name}|${cfg.label}`;
        results.set(k, [...(results.get(k) ?? []), { iops: ri + wi, kibPerSec: rb + wb, daemonCpu: run.daemonCpuPerCase.get(job.name) ?? NaN, round }]);
        process.stderr.write(`round ${round}/${ROUNDS}  ${cfg.label}  ${job.name}: ${ri + wi} IOPS\n`);
      }
    }
  }
  const med = (job: string, label: string, f: (x: Figures) => number): number => medianOf(results.get(`${job}|${label}`), f);
  const fmt = (x: number): string => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '-');
  const fmt2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : '-');
  const cpu = os.cpus();
  const lines = [
    '# npm run bench:guest: fio in a guest, virtiofsd-ts against the Rust and the C virtiofsd',
    '',
    `${new Date().toISOString().slice(0, 10)}; host: ${cpu.length} vCPUs (${cpu[0]?.model ?? '?'}), Linux ${os.release()}; ` +
      `guest: QEMU ${combo.qemu} + Linux ${combo.kernel}, 2 vCPUs, 512 MiB, cache=never; fio jobs of 8 s on 64 MiB files ` +
      `(guest-tests/bench); median of ${ROUNDS} rounds, daemons taking turns (ours / Rust: the median of the rounds' ratios). The metadata row counts create + stat + remove per second. ` +
      "The rounds' columns give the lowest and the highest single round: where ours / Rust spans 1.0, the rounds do not tell the two daemons apart.",
    '',
    "| job | daemon | IOPS (or ops/s) | rounds' IOPS | MB/s | daemon CPU s over the job | ours / Rust | rounds' ours / Rust |",
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const span = ([lo, hi]: [number, number], f: (x: number) => string): string => (Number.isFinite(lo) ? `${f(lo)}-${f(hi)}` : '');
  for (const job of jobs) {
    for (const cfg of CONFIGS) {
      const figures = results.get(`${job.name}|${cfg.label}`);
      const iops = med(job.name, cfg.label, (x) => x.iops);
      const ratios = cfg.kind === 'ts' ? roundRatios(figures, results.get(`${job.name}|rust`), (x) => x.iops) : [];
      const ratio = ratios.length ? median(ratios) : NaN;
      lines.push(
        `| ${job.name} | ${cfg.label} | ${fmt(iops)} | ${span(rangeOf(figures, (x) => x.iops), fmt)} | ${fmt((med(job.name, cfg.label, (x) => x.kibPerSec) * 1024) / 1e6)} | ` +
          `${fmt2(med(job.name, cfg.label, (x) => x.daemonCpu))} | ` +
          `${Number.isFinite(ratio) ? `${ratio.toFixed(2)}x` : ''} | ${span(rangeOf(ratios, (r) => r), (r) => `${r.toFixed(2)}x`)} |`,
      );
    }
  }
  if (cacheJobs.length > 0) {
    const m = (label: string, f: (x: { first: number; rest: number; reads: number }) => number): number => medianOf(rereads.get(label), f);
    lines.push(
      '',
      '## Re-reading a file, by cache mode',
      '',
      'A 16 MiB file the host wrote, read 20 times in the guest (`cat`, a new open each time); median of ' +
        `${ROUNDS} rounds. READ requests: what virtiofsd-ts served over the boot (the Rust virtiofsd does not report it).`,
      '',
      '| cache mode | daemon | first read MB/s | later reads MB/s | READ requests |',
      '| --- | --- | ---: | ---: | ---: |',
    );
    for (const cfg of CACHE_CONFIGS) {
      const mode = cfg.args[0].split('=')[1];
      lines.push(`| ${mode} | ${cfg.kind === 'ts' ? 'virtiofsd-ts' : 'rust'} | ${fmt(m(cfg.label, (x) => x.first))} | ${fmt(m(cfg.label, (x) => x.rest))} | ${cfg.kind === 'ts' ? fmt(m(cfg.label, (x) => x.reads)) : ''} |`);
    }
  }
  const text = lines.join('\n') + '\n';
  process.stdout.write(text);
  const dir = path.join(REPO_ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'guest.md'), text);
  fs.writeFileSync(
    path.join(dir, 'guest.svg'),
    ratioChart('fio in the guest: IOPS relative to the Rust virtiofsd = 1.0', jobs.map((j) => j.name), CONFIGS.map((c) => c.label), (j, l) => med(j, l, (x) => x.iops), 'rust'),
  );
  process.stderr.write('written: bench/results/guest.md, bench/results/guest.svg\n');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
