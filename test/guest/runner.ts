/**
 * The guest test runner, host side. It starts a virtio-fs daemon (ours, or the Rust
 * virtiofsd as the reference) on a fresh share, boots the test guest under QEMU
 * (scripts/run-guest.sh) and runs guest-tests/cases/*.sh inside it through
 * guest-tests/run.sh, then splits the console into one result per case.
 *
 * A case passes with status 0, is skipped with 77 (its "SKIP: reason" line says why), and
 * fails otherwise, including when it never finished: a hang the guest could not kill, a
 * guest panic, or QEMU dying all leave cases without their END line, and those fail with
 * what the console and the daemon said. Nothing here can hang: every boot has a time limit.
 *
 * Case headers (comment lines in the case file):
 *   # timeout: SECS        the case's own limit inside the guest (default 60)
 *   # daemon: ARGS...      daemon options the case needs (cases with the same ones share a boot)
 *   # compare: rust        the case's transcript must match the Rust virtiofsd's line for line
 *                          (lines starting "better:" excepted, see guest-tests/lib.sh)
 *   # host-writer: yes     a second virtiofsd-ts (--cache=never) serves the same share to the
 *                          guest as tag "hostside": what the case writes through it is a
 *                          change made on the host, as the main mount sees it
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT, startDaemon, type Daemon, type DaemonKind } from '../frontend/daemons';
import { cpuSeconds } from '../frontend/proc-stats';

export const CASES_DIR = path.join(REPO_ROOT, 'guest-tests', 'cases');
/** The fio jobs of npm run bench:guest, run the same way. */
export const BENCH_DIR = path.join(REPO_ROOT, 'guest-tests', 'bench');
/** The cache-mode jobs of npm run bench:guest. */
export const BENCH_CACHE_DIR = path.join(REPO_ROOT, 'guest-tests', 'bench-cache');

/** A QEMU + guest kernel combination that works on these machines (GUEST-VM.md). */
export interface Combo {
  qemu: string;
  binary: string;
  kernel: string;
  prepare: string;
}

export const COMBINATIONS: Combo[] = [
  { qemu: '7.2', binary: '/usr/bin/qemu-system-x86_64', kernel: '6.1', prepare: 'scripts/install-host-deps.sh' },
  {
    qemu: '10.0',
    binary: path.join(REPO_ROOT, '.cache', 'qemu', '10.0', 'qemu-system-x86_64'),
    kernel: '6.12',
    prepare: 'scripts/fetch-qemu.sh --version 10.0',
  },
];

/** Why a combination cannot run here (missing QEMU or guest image), or null. */
export function comboMissing(c: Combo): string | null {
  if (!fs.existsSync(c.binary)) return `QEMU ${c.qemu} is missing (${c.binary}): run ${c.prepare}`;
  if (!fs.existsSync(path.join(REPO_ROOT, '.cache', 'guest', c.kernel, 'initrd.gz'))) {
    return `the ${c.kernel} guest image is missing: run scripts/build-guest.sh --kernel ${c.kernel}`;
  }
  return null;
}

export interface CaseInfo {
  name: string;
  timeout: number;
  daemonArgs: string[];
  /** Extra guest kernel parameters the case needs (header `# kernel:`; one boot per set). */
  kernelArgs: string[];
  compare: string[];
  hostWriter: boolean;
}

/** The cases in guest-tests/cases, with their headers. */
export function listCases(dir = CASES_DIR): CaseInfo[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.sh'))
    .sort()
    .map((f) => {
      const text = fs.readFileSync(path.join(dir, f), 'utf8');
      const header = (key: string): string | undefined => new RegExp(`^# ${key}: *(.*)$`, 'm').exec(text)?.[1].trim();
      return {
        name: f.slice(0, -3),
        timeout: Number(header('timeout') ?? 60),
        daemonArgs: (header('daemon') ?? '').split(/\s+/).filter(Boolean),
        kernelArgs: (header('kernel') ?? '').split(/\s+/).filter(Boolean),
        compare: (header('compare') ?? '').split(/\s+/).filter(Boolean),
        hostWriter: header('host-writer') === 'yes',
      };
    });
}

export type CaseStatus = 'pass' | 'skip' | 'fail' | 'timeout' | 'not-run';

export interface CaseResult {
  name: string;
  status: CaseStatus;
  /** The case's exit status, null when it never finished. */
  code: number | null;
  /** What the case printed (kernel log lines removed). */
  output: string[];
  /** Why it was skipped, or why it failed. */
  reason: string;
}

export interface GuestRun {
  results: Map<string, CaseResult>;
  /** run-guest.sh's exit status (the guest command's, 124 timeout, 125 no result). */
  guestStatus: number | null;
  console: string;
  daemonOutput: string;
  /** How the daemon ended (it should exit 0 when QEMU goes). */
  daemonExit: string;
  seconds: number;
  /** The daemon's CPU time (its process tree's) from each case's begin to its end, in seconds. */
  daemonCpuPerCase: Map<string, number>;
  /** Why the first boot's results were thrown away and the guest booted again (emulationFault), with its console's and daemon's last lines. */
  rebooted?: string;
}

export interface RunOptions {
  daemon: DaemonKind;
  combo: Combo;
  cases: CaseInfo[];
  /** Options for the daemon beyond socket and share (defaults: the cases' own). */
  daemonArgs?: string[];
  /** Options added to those (e.g. --thread-pool-size=4). */
  extraArgs?: string[];
  /** Replace the daemon's default options (a broken daemon for the runner's own test...). */
  daemonCommand?: { file: string; args: string[] };
  queues?: number;
  smp?: number;
  /** Host directory to serve (default: a fresh temp directory, removed afterwards). */
  share?: string;
  /** Called with the share before the guest boots (to put host files in place). */
  prepare?: (share: string) => void;
  /** Which scripts: guest-tests/cases (default), guest-tests/bench or guest-tests/bench-cache. */
  set?: 'cases' | 'bench' | 'bench-cache';
}

const KERNEL_LINE = /^\[\s*\d+\.\d+\]/;

/** The console lines guest-tests/run.sh writes around each case: its name, then its status. */
const CASE_BEGIN = /^VFS-CASE-BEGIN (\S+)$/;
const CASE_END = /^VFS-CASE-END (\S+) (\d+)$/;

/** Splits a console transcript into per-case results. */
export function parseConsole(text: string, cases: string[]): Map<string, CaseResult> {
  const results = new Map<string, CaseResult>();
  let current: CaseResult | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    const begin = CASE_BEGIN.exec(line);
    const end = CASE_END.exec(line);
    if (begin) {
      current = { name: begin[1], status: 'not-run', code: null, output: [], reason: '' };
      results.set(current.name, current);
    } else if (end && current && end[1] === current.name) {
      const code = Number(end[2]);
      current.code = code;
      current.status = code === 0 ? 'pass' : code === 77 ? 'skip' : code === 124 ? 'timeout' : 'fail';
      const last = [...current.output].reverse().find((l) => /^(SKIP|FAIL): /.test(l));
      current.reason = last ? last.replace(/^(SKIP|FAIL): /, '') : code === 124 ? 'timed out' : code === 0 ? '' : `exit status ${code}`;
      current = null;
    } else if (current && !KERNEL_LINE.test(line)) {
      current.output.push(line);
    }
  }
  for (const name of cases) {
    const r = results.get(name);
    if (!r) results.set(name, { name, status: 'not-run', code: null, output: [], reason: 'the guest never started this case' });
    else if (r.code === null) r.reason = 'the guest never finished this case (hang, panic or QEMU exit)';
  }
  return results;
}

/**
 * A guest run spoiled by the emulated machine, not by the daemon: the reason, or null. Seen in
 * CI runs with 4 vCPUs under TCG on 2 host cores, about one boot in fifty:
 *  - QEMU's own assertion killing it before any case ran ("hw/pci/msix.c:228:
 *    msix_table_mmio_write: Assertion ... failed", while Linux set up the device's MSI-X
 *    vectors);
 *  - an emulated CPU whose timer did not fire for seconds ("rcu_preempt kthread timer wakeup
 *    didn't happen", "kthread starved"): that CPU sat idle while a task on it waited, and the
 *    case it was in ran into its time limit;
 *  - the guest's serial console losing all of init's output (no VFS-INIT line, although the
 *    kernel's own "reboot: Power down" came through, which only init's poweroff prints): the
 *    cases ran and the daemon served them, but their results never reached the host.
 * Only a run that nothing else explains is excused: the daemon exited cleanly and logged no
 * error, no case failed on its own (each case that did not pass timed out or never
 * finished), and a stall happened before the first case or inside one that did not pass. A
 * daemon that leaves a request unanswered makes a case time out, but with its CPUs' timers
 * running and none of the lines above.
 */
export function emulationFault(run: GuestRun): string | null {
  if (run.daemonExit !== 'exit 0' || daemonLoggedError(run.daemonOutput)) return null;
  const unfinished = [...run.results.values()].filter((r) => r.status !== 'pass' && r.status !== 'skip');
  if (unfinished.length === 0 || unfinished.some((r) => r.status === 'fail')) return null;
  const lines = run.console.split('\n').map((l) => l.replace(/\r$/, ''));
  let current: string | null = null;
  let caseBegan = false;
  for (const line of lines) {
    const begin = CASE_BEGIN.exec(line);
    const end = CASE_END.exec(line);
    if (begin) {
      current = begin[1];
      caseBegan = true;
    } else if (end) {
      current = null;
    }
    const assertion = /^qemu-system-\S+: (.*Assertion .* failed\.)$/.exec(line);
    if (assertion && !caseBegan) return `QEMU aborted: ${assertion[1]}`;
    const starved = /(rcu: rcu_\w+ kthread (?:timer wakeup didn't happen|starved) for \d+ jiffies)/.exec(line);
    const inCase = current === null ? null : run.results.get(current);
    if (starved && (!caseBegan || (inCase && inCase.status !== 'pass' && inCase.status !== 'skip'))) {
      return `an emulated CPU stalled${current ? ` in case ${current}` : ''}: ${starved[1]}`;
    }
  }
  if (!lines.some((l) => l.startsWith('VFS-INIT')) && lines.some((l) => /\] reboot: Power down$/.test(l))) {
    return "the guest's console lost init's output (it powered off, but printed no VFS-INIT)";
  }
  return null;
}

/** Whether the daemon logged an error (a JSON line at pino's level 50 or above). */
function daemonLoggedError(output: string): boolean {
  return output.split('\n').some((l) => /^\{"level":(5\d|6\d),/.test(l));
}

/**
 * Boots one guest and runs the cases in it; never throws for what happens in the guest. A
 * run spoiled by the emulated machine (emulationFault) is booted once more, with a fresh
 * daemon, and that is said on stderr and in the run (`rebooted`); the second boot's results
 * are the run's, whatever they are.
 */
export async function runCases(o: RunOptions): Promise<GuestRun> {
  const first = await runCasesOnce(o);
  const fault = emulationFault(first);
  if (fault === null || (o.share !== undefined && o.prepare !== undefined)) return first;
  const tail = first.console.trim().split('\n').slice(-12).join('\n        ');
  process.stderr.write(`      (${fault}; the daemon exited cleanly; booting the guest again. The first console ended:\n        ${tail})\n`);
  const second = await runCasesOnce(o);
  const tailOf = (text: string): string => text.trim().split('\n').slice(-10).join('\n');
  return {
    ...second,
    seconds: first.seconds + second.seconds,
    rebooted: `${fault}\n--- the first boot's console ended:\n${tailOf(first.console)}\n--- its daemon (${first.daemonExit}) ended:\n${tailOf(first.daemonOutput)}`,
  };
}

async function runCasesOnce(o: RunOptions): Promise<GuestRun> {
  const missing = comboMissing(o.combo);
  if (missing) throw new Error(missing);
  const t0 = Date.now();
  const own = o.share === undefined;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-guest-'));
  const share = o.share ?? path.join(work, 'share');
  fs.mkdirSync(share, { recursive: true });
  o.prepare?.(share);
  const socketPath = path.join(work, 'vfs.sock');
  const args = [...(o.daemonArgs ?? new Set(o.cases.flatMap((c) => c.daemonArgs))), ...(o.extraArgs ?? [])];
  let daemon: Daemon | null = null;
  let custom: ReturnType<typeof spawn> | null = null;
  let customOut = '';
  if (o.daemonCommand) {
    custom = spawn(o.daemonCommand.file, [...o.daemonCommand.args, `--socket-path=${socketPath}`, `--shared-dir=${share}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    custom.stdout?.on('data', (d: Buffer) => (customOut += d.toString()));
    custom.stderr?.on('data', (d: Buffer) => (customOut += d.toString()));
  } else {
    const replace = o.daemon === 'rust' ? ['--sandbox=none', ...args] : args;
    daemon = startDaemon(o.daemon, { sharedDir: share, socketPath, replaceDefaultArgs: replace });
  }
  // The host-side writer: our daemon with nothing cached, on the same share.
  const socket2 = path.join(work, 'hostside.sock');
  const writer = o.cases.some((c) => c.hostWriter)
    ? startDaemon('ts', { sharedDir: share, socketPath: socket2, replaceDefaultArgs: ['--cache=never'] })
    : null;
  const deadline = Date.now() + 10_000;
  const sockets = writer ? [socketPath, socket2] : [socketPath];
  while (!sockets.every((s) => fs.existsSync(s)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const guestTimeout = o.cases.reduce((s, c) => s + c.timeout + 5, 10);
  const kernelArgs = [...new Set(o.cases.flatMap((c) => c.kernelArgs ?? []))];
  const cmd = `sh /guest-tests/run.sh -d ${o.set ?? 'cases'} ${o.cases.map((c) => c.name).join(' ')}`;
  const runArgs = [
    path.join(REPO_ROOT, 'scripts', 'run-guest.sh'),
    '--socket', socketPath, '--qemu', o.combo.binary, '--kernel', o.combo.kernel, '--cmd', cmd,
    '--timeout', String(guestTimeout), '--queues', String(o.queues ?? 1), '--smp', String(o.smp ?? 2),
    ...(writer ? ['--socket2', socket2] : []),
    ...(kernelArgs.length > 0 ? ['--append', kernelArgs.join(' ')] : []),
  ];
  const daemonPid = daemon?.proc.pid ?? custom?.pid;
  const daemonCpuPerCase = new Map<string, number>();
  let caseStart: { name: string; cpu: number } | null = null;
  let partial = '';
  // Samples the daemon's CPU time as the console announces each case's begin and end.
  const watchConsole = (text: string): void => {
    if (daemonPid === undefined) return;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      const begin = CASE_BEGIN.exec(line);
      const end = CASE_END.exec(line);
      if (begin) caseStart = { name: begin[1], cpu: cpuSeconds(daemonPid) };
      else if (end && caseStart?.name === end[1]) {
        daemonCpuPerCase.set(end[1], cpuSeconds(daemonPid) - caseStart.cpu);
        caseStart = null;
      }
    }
  };
  const { status, output } = await new Promise<{ status: number | null; output: string }>((resolve) => {
    const p = spawn('bash', runArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      watchConsole(d.toString());
    });
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // run-guest.sh bounds the VM itself; this is the last resort.
    const t = setTimeout(() => p.kill('SIGKILL'), (guestTimeout + 180) * 1000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ status: code, output: out });
    });
  });
  let daemonExit: string;
  let daemonOutput: string;
  if (daemon) {
    try {
      const e = await daemon.waitExit(10_000);
      daemonExit = e.signal ? `signal ${e.signal}` : `exit ${e.code}`;
    } catch {
      await daemon.stop();
      daemonExit = 'did not exit within 10 s of QEMU; killed';
    }
    daemonOutput = daemon.output();
  } else {
    const c = custom!;
    const code = await new Promise<string>((resolve) => {
      if (c.exitCode !== null) return resolve(`exit ${c.exitCode}`);
      const t = setTimeout(() => {
        c.kill('SIGKILL');
        resolve('killed');
      }, 5000);
      c.on('exit', (code, sig) => {
        clearTimeout(t);
        resolve(sig ? `signal ${sig}` : `exit ${code}`);
      });
    });
    daemonExit = code;
    daemonOutput = customOut;
  }
  if (writer) {
    try {
      const e = await writer.waitExit(10_000);
      if (e.code !== 0) daemonExit += `; host-side writer: ${e.signal ? `signal ${e.signal}` : `exit ${e.code}`}`;
    } catch {
      await writer.stop();
      daemonExit += '; host-side writer did not exit within 10 s of QEMU; killed';
    }
  }
  if (own) fs.rmSync(work, { recursive: true, force: true });
  else fs.rmSync(socketPath, { force: true });
  return {
    results: parseConsole(output, o.cases.map((c) => c.name)),
    guestStatus: status,
    console: output,
    daemonOutput,
    daemonExit,
    seconds: (Date.now() - t0) / 1000,
    daemonCpuPerCase,
  };
}

/** What virtiofsd-ts reports when the connection closes (its "connection closed" line). */
export interface ExitReport {
  requestsPerQueue: Record<string, number>;
  opcodesPerQueue: Record<string, Record<string, number>>;
  /** Requests the I/O pool completed, per queue (only queues with some). */
  pooledPerQueue: Record<string, number>;
  /** Requests the native fast path served (never in JS), per queue and opcode. */
  nativeOpcodesPerQueue: Record<string, Record<string, number>>;
}

/** Our daemon's exit report from a run, or null (another daemon, or it never got there). */
export function exitReport(run: GuestRun): ExitReport | null {
  for (const l of run.daemonOutput.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      const j = JSON.parse(l) as Partial<ExitReport> & { msg?: string };
      if (j.msg === 'connection closed' && j.requestsPerQueue) {
        return {
          requestsPerQueue: j.requestsPerQueue,
          opcodesPerQueue: j.opcodesPerQueue ?? {},
          pooledPerQueue: j.pooledPerQueue ?? {},
          nativeOpcodesPerQueue: j.nativeOpcodesPerQueue ?? {},
        };
      }
    } catch {
      // not a log line
    }
  }
  return null;
}

/** Requests of one opcode (e.g. READ) our daemon served in a run, all queues together. */
export function requestsOf(report: ExitReport, opcode: string): number {
  return Object.values(report.opcodesPerQueue).reduce((n, q) => n + (q[opcode] ?? 0), 0);
}

/** Of those, the ones its native fast path served. */
export function nativeRequestsOf(report: ExitReport, opcode: string): number {
  return Object.values(report.nativeOpcodesPerQueue).reduce((n, q) => n + (q[opcode] ?? 0), 0);
}

/** A readable account of a case that did not pass, for assertion messages. */
export function explain(run: GuestRun, name: string): string {
  const r = run.results.get(name);
  const tail = (s: string, n: number): string => s.trim().split('\n').slice(-n).join('\n');
  return [
    `case ${name}: ${r?.status} (${r?.reason})`,
    ...(run.rebooted ? [`(this was the second boot: the first was spoiled by the emulation: ${run.rebooted})`] : []),
    '--- case output:',
    ...(r?.output.slice(-40) ?? []),
    `--- guest console (status ${run.guestStatus}), last lines:`,
    tail(run.console, 25),
    `--- daemon (${run.daemonExit}), last lines:`,
    tail(run.daemonOutput, 15),
  ].join('\n');
}
