/**
 * @guest Runs every case of guest-tests/cases inside real guests (test/guest/runner.ts):
 *  - on both QEMU/kernel combinations against virtiofsd-ts, one `it` per case;
 *  - the cases marked "# compare: rust" also against the Rust virtiofsd (QEMU 7.2 + Linux
 *    6.1), and the two transcripts must match line for line, except the lines a case marks
 *    "better:" where virtiofsd-ts deliberately does more (host-held locks);
 *  - after stress-ng, the share as the host sees it must match what the guest listed.
 * A missing QEMU or guest image fails these tests; it never skips them.
 */
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { COMBINATIONS, comboMissing, explain, listCases, runCases, type CaseInfo, type Combo, type GuestRun } from './runner';

const CASES = listCases();

/** Cases grouped by the daemon options they need: one boot per group. */
function groups(cases: CaseInfo[]): CaseInfo[][] {
  const by = new Map<string, CaseInfo[]>();
  for (const c of cases) {
    const key = c.daemonArgs.join(' ');
    by.set(key, [...(by.get(key) ?? []), c]);
  }
  return [...by.values()];
}

/** Holds an exclusive flock(2) on share/host-locked from the host while the guest runs. */
function holdHostLock(share: string): ChildProcess {
  const f = path.join(share, 'host-locked');
  fs.writeFileSync(f, '');
  return spawn('flock', ['-x', f, 'sleep', '3600'], { stdio: 'ignore' });
}

interface ComboRuns {
  runs: GuestRun[];
  shares: string[];
}

async function runAll(daemon: 'ts' | 'rust', combo: Combo, cases: CaseInfo[], queues = 1, smp = 2): Promise<ComboRuns> {
  const out: ComboRuns = { runs: [], shares: [] };
  for (const group of groups(cases)) {
    const share = fs.mkdtempSync(path.join(os.tmpdir(), `vfs-cases-${daemon}-`));
    const lock = holdHostLock(share);
    try {
      out.runs.push(await runCases({ daemon, combo, cases: group, share, queues, smp }));
    } finally {
      lock.kill();
    }
    out.shares.push(share);
  }
  return out;
}

function resultOf(r: ComboRuns, name: string): { run: GuestRun; share: string } {
  const i = r.runs.findIndex((x) => x.results.has(name));
  assert.ok(i >= 0, `case ${name} was not run`);
  return { run: r.runs[i], share: r.shares[i] };
}

const ours = new Map<string, ComboRuns>();

for (const combo of COMBINATIONS) {
  describe(`@guest guest-tests on QEMU ${combo.qemu} + Linux ${combo.kernel}, virtiofsd-ts`, function () {
    this.timeout(900_000);

    before(async function () {
      const missing = comboMissing(combo);
      assert.equal(missing, null, missing ?? '');
      ours.set(combo.qemu, await runAll('ts', combo, CASES));
    });

    after(() => {
      for (const s of ours.get(combo.qemu)?.shares ?? []) fs.rmSync(s, { recursive: true, force: true });
    });

    for (const c of CASES) {
      it(c.name, function () {
        const { run } = resultOf(ours.get(combo.qemu)!, c.name);
        const r = run.results.get(c.name)!;
        if (r.status === 'skip') this.skip();
        assert.equal(r.status, 'pass', explain(run, c.name));
      });
    }

    it('the daemon exits cleanly with QEMU after every boot', () => {
      for (const run of ours.get(combo.qemu)!.runs) assert.equal(run.daemonExit, 'exit 0', run.daemonOutput.slice(-3000));
    });

    it('holds host locks: a lock the host takes keeps the guest out', () => {
      const { run } = resultOf(ours.get(combo.qemu)!, 'locks');
      assert.ok(run.results.get('locks')!.output.includes('better: a lock the host holds: keeps the guest out'), explain(run, 'locks'));
    });

    it('after stress-ng, the host sees the share as the guest listed it', () => {
      const { run, share } = resultOf(ours.get(combo.qemu)!, 'stress-ng');
      const guest = run.results.get('stress-ng')!.output.filter((l) => l.startsWith('LIST ')).sort();
      const dir = path.join(share, '.vfs-tests', 'stress-ng');
      const host: string[] = [];
      const walk = (rel: string): void => {
        for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
          const p = path.join(rel, name);
          const st = fs.lstatSync(path.join(dir, p));
          const type = st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symbolic link' : st.isFile() ? (st.size ? 'regular file' : 'regular empty file') : 'other';
          host.push(`LIST ${type} ${st.size} ./${p}`);
          if (st.isDirectory()) walk(p);
        }
      };
      walk('');
      assert.deepEqual(host.sort(), guest, explain(run, 'stress-ng'));
    });
  });
}

/** requestsPerQueue from the daemon's "connection closed" line. */
function requestsPerQueue(run: GuestRun): Record<string, number> {
  const line = run.daemonOutput
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; requestsPerQueue?: Record<string, number> })
    .find((l) => l.msg === 'connection closed');
  assert.ok(line?.requestsPerQueue, `no exit report from the daemon:\n${run.daemonOutput.slice(-2000)}`);
  return line.requestsPerQueue;
}

// Several request queues: Linux 6.12 maps them to vCPUs (6.1 uses one), so QEMU 10.0 only.
for (const { queues, smp } of [{ queues: 2, smp: 2 }, { queues: 4, smp: 4 }]) {
  const combo = COMBINATIONS[1];
  describe(`@guest guest-tests with ${queues} request queues and ${smp} vCPUs (QEMU ${combo.qemu} + Linux ${combo.kernel}), virtiofsd-ts`, function () {
    this.timeout(1_200_000);
    let runs: ComboRuns;

    before(async function () {
      const missing = comboMissing(combo);
      assert.equal(missing, null, missing ?? '');
      runs = await runAll('ts', combo, CASES, queues, smp);
    });

    after(() => {
      for (const s of runs?.shares ?? []) fs.rmSync(s, { recursive: true, force: true });
    });

    for (const c of CASES) {
      it(c.name, function () {
        const { run } = resultOf(runs, c.name);
        const r = run.results.get(c.name)!;
        if (r.status === 'skip') this.skip();
        assert.equal(r.status, 'pass', explain(run, c.name));
      });
    }

    it('served requests on every request queue', () => {
      const { run } = resultOf(runs, 'stress-ng');
      const per = requestsPerQueue(run);
      for (let q = 1; q <= queues; q++) assert.ok((per[q] ?? 0) > 0, `queue ${q} served nothing: ${JSON.stringify(per)}`);
    });
  });
}

describe('@guest POSIX suite: virtiofsd-ts and the Rust virtiofsd give the same transcript', function () {
  this.timeout(900_000);
  const combo = COMBINATIONS[0];
  const compared = CASES.filter((c) => c.compare.includes('rust'));
  let rust: ComboRuns;

  before(async function () {
    const missing = comboMissing(combo);
    assert.equal(missing, null, missing ?? '');
    rust = await runAll('rust', combo, compared);
  });

  after(() => {
    for (const s of rust?.shares ?? []) fs.rmSync(s, { recursive: true, force: true });
  });

  const transcript = (r: ComboRuns, name: string): string[] =>
    resultOf(r, name).run.results.get(name)!.output.filter((l) => !l.startsWith('better:'));

  for (const c of compared) {
    it(`${c.name}: line for line (QEMU ${combo.qemu} + Linux ${combo.kernel})`, () => {
      const mine = ours.get(combo.qemu);
      assert.ok(mine, 'the virtiofsd-ts run of this combination is missing');
      const { run: rrun } = resultOf(rust, c.name);
      assert.notEqual(rrun.results.get(c.name)!.status, 'not-run', explain(rrun, c.name));
      assert.deepEqual(transcript(mine, c.name), transcript(rust, c.name));
    });
  }
});
