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
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  COMBINATIONS, comboMissing, exitReport, explain, listCases, nativeRequestsOf, requestsOf, runCases, type CaseInfo, type Combo, type ExitReport, type GuestRun,
} from './runner';

const CASES = listCases();

/** Cases grouped by the daemon options and guest kernel parameters they need: one boot per group. */
function groups(cases: CaseInfo[]): CaseInfo[][] {
  const by = new Map<string, CaseInfo[]>();
  for (const c of cases) {
    const key = `${c.daemonArgs.join(' ')}${c.hostWriter ? ' +writer' : ''} | ${c.kernelArgs.join(' ')}`;
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

async function runAll(daemon: 'ts' | 'rust', combo: Combo, cases: CaseInfo[], queues = 1, smp = 2, extraArgs: string[] = []): Promise<ComboRuns> {
  const out: ComboRuns = { runs: [], shares: [] };
  for (const group of groups(cases)) {
    const share = fs.mkdtempSync(path.join(os.tmpdir(), `vfs-cases-${daemon}-`));
    const lock = holdHostLock(share);
    try {
      out.runs.push(await runCases({ daemon, combo, cases: group, share, queues, smp, extraArgs }));
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

    it('the guest unmounts the share and the daemon exits cleanly with QEMU after every boot', () => {
      for (const run of ours.get(combo.qemu)!.runs) {
        assert.ok(!run.console.includes('VFS-UMOUNT-FAILED'), `the guest could not unmount /mnt:\n${run.console.slice(-2000)}`);
        assert.equal(run.daemonExit, 'exit 0', run.daemonOutput.slice(-3000));
      }
    });

    it('re-reading an unchanged file: auto and always serve it from the guest page cache, never asks the host each time', () => {
      const runs = ours.get(combo.qemu)!;
      // Each cache-* case boots alone (its own daemon options), so a boot's READs are its case's.
      const reads = (name: string): number => requestsOf(reportOf(resultOf(runs, name).run), 'READ');
      const never = reads('cache-never');
      const auto = reads('cache-auto');
      const always = reads('cache-always');
      // 10 reads of a 4 MiB file: never needs at least 10 x 4 MiB / 1 MiB (the largest READ);
      // auto and always read it once. The rest of each case (fio --verify with blocks up to
      // 64 KiB, small files) adds the same hundred or so READs in every mode.
      assert.ok(never >= 40, `never: only ${never} READs for 10 reads of 4 MiB`);
      assert.ok(auto * 3 <= never, `auto: ${auto} READs, never: ${never}`);
      assert.ok(always * 3 <= never, `always: ${always} READs, never: ${never}`);
    });

    it('with --xattr, the GETXATTRs the guest sends (one before each write through its cache) never reach JS', () => {
      const report = reportOf(resultOf(ours.get(combo.qemu)!, 'posix-xattr').run);
      const all = requestsOf(report, 'GETXATTR');
      assert.ok(all >= 10, `only ${all} GETXATTRs in the --xattr boot`);
      assert.equal(nativeRequestsOf(report, 'GETXATTR'), all, JSON.stringify(report.nativeOpcodesPerQueue));
      // And the plain requests of a POSIX workload with them.
      for (const op of ['LOOKUP', 'GETATTR', 'READ', 'WRITE', 'CREATE', 'UNLINK']) assert.equal(nativeRequestsOf(report, op), requestsOf(report, op), op);
    });

    it('with --killpriv-v2 and --xattr, the guest no longer asks for security.capability before each write it caches', () => {
      const report = reportOf(resultOf(ours.get(combo.qemu)!, 'killpriv').run);
      const writes = requestsOf(report, 'WRITE');
      const asked = requestsOf(report, 'GETXATTR');
      // The case appends 200 times as root, and a few times as user 1000.
      assert.ok(writes >= 200, `only ${writes} WRITEs in the --killpriv-v2 boot`);
      assert.ok(asked * 10 < writes, `${asked} GETXATTRs for ${writes} WRITEs`);
    });

    it('with --translate-uid/--translate-gid, what guest user 1000 made or was given is host user 2000\'s', () => {
      const { run, share } = resultOf(ours.get(combo.qemu)!, 'idmap');
      assert.equal(run.results.get('idmap')!.status, 'pass', explain(run, 'idmap'));
      const dir = path.join(share, '.vfs-tests', 'idmap');
      const ownerOf = (name: string): string => {
        const st = fs.statSync(path.join(dir, name));
        return `${st.uid}:${st.gid}`;
      };
      assert.deepEqual({ mine: ownerOf('mine'), given: ownerOf('given'), rootfile: ownerOf('rootfile') }, { mine: '2000:2000', given: '2000:2000', rootfile: '0:0' });
    });

    it("with --xattrmap, the guest's trusted. attributes are stored on the host under user.virtiofs.trusted.", () => {
      const { run, share } = resultOf(ours.get(combo.qemu)!, 'xattrmap');
      assert.equal(run.results.get('xattrmap')!.status, 'pass', explain(run, 'xattrmap'));
      const d = path.join(share, '.vfs-tests', 'xattrmap', 'd');
      const out = execFileSync('getfattr', ['--absolute-names', '-m', '-', '-d', d], { encoding: 'utf8' });
      const names = out.split('\n').filter((l) => l.includes('=')).map((l) => l.slice(0, l.indexOf('=')));
      assert.deepEqual(names, ['user.virtiofs.trusted.overlay.origin'], out);
    });

    it('with --security-label, new files are stored with the label the guest\'s SELinux gave them', () => {
      const { run, share } = resultOf(ours.get(combo.qemu)!, 'security-label');
      assert.equal(run.results.get('security-label')!.status, 'pass', explain(run, 'security-label'));
      const dir = path.join(share, '.vfs-tests', 'security-label');
      for (const n of ['f', 'd']) {
        const v = execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'user.virtiofs.security.selinux', path.join(dir, n)], { encoding: 'latin1' });
        assert.equal(v, 'unlabeled\0', n);
      }
      assert.deepEqual(fs.readdirSync(dir).sort(), ['d', 'f'], 'no symlink or fifo left behind');
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

/** Our daemon's exit report from a run; fails the test when it is missing. */
function reportOf(run: GuestRun): ExitReport {
  const r = exitReport(run);
  assert.ok(r, `no exit report from the daemon:\n${run.daemonOutput.slice(-2000)}`);
  return r;
}

// Several request queues: Linux 6.12 maps them to vCPUs (6.1 uses one), so QEMU 10.0 only.
// The 4-queue run also has an I/O pool, whose threads complete requests of all four queues,
// and runs under --seccomp=kill: a system call missing from the filter's list would kill the
// daemon in the middle of the POSIX suite or stress-ng.
for (const { queues, smp, extra } of [
  { queues: 2, smp: 2, extra: [] },
  { queues: 4, smp: 4, extra: ['--thread-pool-size=4', '--seccomp=kill'] },
]) {
  const combo = COMBINATIONS[1];
  const with_ = extra.length ? ` and ${extra.join(' ')}` : '';
  describe(`@guest guest-tests with ${queues} request queues and ${smp} vCPUs${with_} (QEMU ${combo.qemu} + Linux ${combo.kernel}), virtiofsd-ts`, function () {
    this.timeout(1_200_000);
    let runs: ComboRuns;

    before(async function () {
      const missing = comboMissing(combo);
      assert.equal(missing, null, missing ?? '');
      // The cache-mode cases run on one queue above; here what matters is the queues.
      runs = await runAll('ts', combo, CASES.filter((c) => !c.hostWriter), queues, smp, extra);
    });

    after(() => {
      for (const s of runs?.shares ?? []) fs.rmSync(s, { recursive: true, force: true });
    });

    for (const c of CASES.filter((x) => !x.hostWriter)) {
      it(c.name, function () {
        const { run } = resultOf(runs, c.name);
        const r = run.results.get(c.name)!;
        if (r.status === 'skip') this.skip();
        assert.equal(r.status, 'pass', explain(run, c.name));
      });
    }

    it('served requests on every request queue', () => {
      const { run } = resultOf(runs, 'stress-ng');
      const per = reportOf(run).requestsPerQueue;
      for (let q = 1; q <= queues; q++) assert.ok((per[q] ?? 0) > 0, `queue ${q} served nothing: ${JSON.stringify(per)}`);
    });

    if (extra.some((a) => a.startsWith('--thread-pool-size'))) {
      it('the I/O pool completed requests of every request queue', () => {
        const { run } = resultOf(runs, 'stress-ng');
        const pooled = reportOf(run).pooledPerQueue;
        for (let q = 1; q <= queues; q++) assert.ok((pooled[q] ?? 0) > 0, `queue ${q}: nothing completed by the pool: ${JSON.stringify(pooled)}`);
      });
    }
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
