/**
 * @guest The guest test runner itself: a daemon that never answers FUSE_INIT must make the
 * cases fail within their time limits, never pass and never hang the run.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { COMBINATIONS, comboMissing, explain, listCases, parseConsole, emulationFault, runCases, type GuestRun } from './runner';

describe('@guest guest test runner', function () {
  this.timeout(400_000);

  it('fails every case, within the time limits, when the daemon never answers FUSE_INIT', async () => {
    const combo = COMBINATIONS[0];
    assert.equal(comboMissing(combo), null, comboMissing(combo) ?? '');
    const cases = listCases()
      .filter((c) => c.name === '00-mount' || c.name === 'posix-files')
      .map((c) => ({ ...c, timeout: 15 }));
    const t0 = Date.now();
    const run = await runCases({
      daemon: 'ts',
      combo,
      cases,
      daemonCommand: { file: process.execPath, args: [path.join(__dirname, '..', 'support', 'broken-daemon.js')] },
    });
    const seconds = (Date.now() - t0) / 1000;
    for (const c of cases) assert.notEqual(run.results.get(c.name)!.status, 'pass', `${c.name} passed on a broken daemon`);
    // The guest's own limit is the cases' limits plus a margin; boot and shutdown come on top.
    const limit = cases.reduce((s, c) => s + c.timeout + 5, 10) + 60;
    assert.ok(seconds < limit, `the run took ${seconds} s, more than ${limit} s`);
    assert.notEqual(run.guestStatus, 0);
  });

  it("boots once more when the first boot's console lost init's output, and takes the second boot's results", async () => {
    const combo = COMBINATIONS[0];
    assert.equal(comboMissing(combo), null, comboMissing(combo) ?? '');
    // A QEMU whose first guest runs as usual but whose console drops every VFS- line, as the
    // serial console did in a CI run: the case ran, the daemon served it, the host saw nothing.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-lossy-qemu-'));
    try {
      const wrapper = path.join(dir, 'qemu');
      fs.writeFileSync(wrapper, [
        '#!/bin/bash',
        `real=${combo.binary}`,
        'if [ "$1" = --version ] || [ -e "$0.booted" ]; then exec "$real" "$@"; fi',
        'touch "$0.booted"',
        '"$real" "$@" | grep --line-buffered -av "^VFS-"',
        'exit "${PIPESTATUS[0]}"',
        '',
      ].join('\n'), { mode: 0o755 });
      const cases = listCases().filter((c) => c.name === '00-mount');
      const run = await runCases({ daemon: 'ts', combo: { ...combo, binary: wrapper }, cases });
      assert.ok(fs.existsSync(`${wrapper}.booted`), 'the lossy first boot never ran');
      assert.match(run.rebooted ?? '', /console lost init's output/, run.console);
      assert.equal(run.results.get('00-mount')!.status, 'pass', explain(run, '00-mount'));
      assert.equal(run.daemonExit, 'exit 0');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads each case's headers: the daemon's options, the guest kernel's parameters, what to compare with", () => {
    const byName = new Map(listCases().map((c) => [c.name, c]));
    const label = byName.get('security-label')!;
    assert.deepEqual(label.kernelArgs, ['security=selinux']);
    assert.deepEqual(label.daemonArgs, ['--security-label', '--xattrmap=:map:security.selinux:user.virtiofs.:']);
    assert.deepEqual(label.compare, ['rust']);
    assert.deepEqual(byName.get('00-mount')!.kernelArgs, []);
  });

  it('reads case results from a console transcript, kernel lines and unfinished cases included', () => {
    const text = [
      'VFS-CASE-BEGIN a', 'one', '[   12.345678] some kernel line', 'VFS-CASE-END a 0',
      'VFS-CASE-BEGIN b', 'SKIP: no tool', 'VFS-CASE-END b 77',
      'VFS-CASE-BEGIN c', 'FAIL: broken', 'VFS-CASE-END c 1',
      'VFS-CASE-BEGIN d', 'half way',
    ].join('\r\n');
    const r = parseConsole(text, ['a', 'b', 'c', 'd', 'e']);
    assert.deepEqual(r.get('a'), { name: 'a', status: 'pass', code: 0, output: ['one'], reason: '' });
    assert.equal(r.get('b')!.status, 'skip');
    assert.equal(r.get('b')!.reason, 'no tool');
    assert.equal(r.get('c')!.status, 'fail');
    assert.equal(r.get('c')!.reason, 'broken');
    assert.equal(r.get('d')!.status, 'not-run');
    assert.match(r.get('d')!.reason, /never finished/);
    assert.equal(r.get('e')!.status, 'not-run');
  });

  it('tells a run spoiled by the emulated machine (QEMU aborted, a CPU whose timer stalled, a console that lost init) from a daemon fault', () => {
    const run = (text: string, cases = ['a']): GuestRun => ({
      results: parseConsole(text, cases), guestStatus: 125, console: text, daemonOutput: '{"level":30,"msg":"front end connected"}', daemonExit: 'exit 0', seconds: 4, daemonCpuPerCase: new Map(),
    });
    const assertion = "qemu-system-x86_64: hw/pci/msix.c:228: msix_table_mmio_write: Assertion `addr + size <= dev->msix_entries_nr * PCI_MSIX_ENTRY_SIZE' failed.";
    assert.match(emulationFault(run(['run-guest: booting', assertion, 'run-guest: error: no VFS-EXIT line'].join('\n'))) ?? '', /msix_table_mmio_write/);
    assert.equal(emulationFault(run(['VFS-INIT kernel=6.12', 'VFS-CASE-BEGIN a', assertion].join('\n'))), null, 'QEMU aborted in a case: its result stands');
    assert.equal(emulationFault(run('run-guest: error: no VFS-EXIT line: the guest kernel panicked')), null);
    const stall = [
      '[   22.457450] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:',
      "[   22.481970] rcu: rcu_preempt kthread timer wakeup didn't happen for 5256 jiffies! g-1127 f0x0 RCU_GP_WAIT_FQS(5) ->state=0x402",
    ];
    assert.match(emulationFault(run(['run-guest: booting', ...stall, '[   65.229878] reboot: Power down'].join('\n'))) ?? '', /timer wakeup didn't happen/);
    // The CI run where it happened: the case began, CPU 2's timer stalled, the case timed out.
    const timedOut = ['VFS-INIT kernel=6.12', 'VFS-MOUNTED', 'VFS-CASE-BEGIN a', ...stall, 'Killed', 'timed out after 60s', 'VFS-CASE-END a 124'];
    assert.match(emulationFault(run(timedOut.join('\n'))) ?? '', /stalled in case a: .*timer wakeup/);
    assert.match(emulationFault(run(['VFS-CASE-BEGIN a', "[   22.4] rcu: rcu_preempt kthread starved for 5252 jiffies! g-1135 f0x0"].join('\n'))) ?? '', /starved/);
    assert.equal(emulationFault({ ...run(timedOut.join('\n')), daemonExit: 'signal SIGSEGV' }), null, 'the daemon crashed: its failure stands');
    assert.equal(emulationFault({ ...run(timedOut.join('\n')), daemonExit: 'did not exit within 10 s of QEMU; killed' }), null, 'the daemon hung');
    assert.equal(emulationFault({ ...run(timedOut.join('\n')), daemonOutput: '{"level":50,"msg":"request failed unexpectedly; refused"}' }), null, 'the daemon logged an error');
    assert.equal(emulationFault(run(['VFS-CASE-BEGIN a', stall[0], 'VFS-CASE-END a 124'].join('\n'))), null, 'another kind of stall');
    // A stall elsewhere excuses no failure: a case that failed on its own, or a timeout in
    // another case than the stall's; and a run where every case passed is not booted again.
    const two = (endA: number, endB: number): string[] => ['VFS-CASE-BEGIN a', ...stall, `VFS-CASE-END a ${endA}`, 'VFS-CASE-BEGIN b', 'FAIL: wrong data', `VFS-CASE-END b ${endB}`];
    assert.equal(emulationFault(run(two(0, 1).join('\n'), ['a', 'b'])), null, 'b failed on its own');
    assert.equal(emulationFault(run(two(0, 124).join('\n'), ['a', 'b'])), null, 'the stall was in a, which passed; b timed out');
    assert.equal(emulationFault(run(two(0, 0).join('\n'), ['a', 'b'])), null, 'everything passed');
    assert.match(emulationFault(run(two(124, 0).join('\n'), ['a', 'b'])) ?? '', /in case a/);
    // The other CI run: the console kept only the kernel's last line; the daemon served the case.
    const lost = ['run-guest: booting 6.12 guest', '[    5.243825] reboot: Power down', 'run-guest: error: no VFS-EXIT line: the guest init never started (QEMU exited with status 0) (7.0s)'];
    assert.match(emulationFault(run(lost.join('\n'))) ?? '', /console lost/);
    assert.equal(emulationFault(run(['VFS-INIT kernel=6.12', 'VFS-MOUNTED', ...lost.slice(1)].join('\n'))), null, 'init printed: the console worked');
    assert.equal(emulationFault(run(lost.filter((l) => !l.includes('Power down')).join('\n'))), null, 'the guest never powered off itself');
  });
});
