/**
 * @guest A real QEMU boots a real Linux guest that mounts the share served by virtiofsd-ts
 * and reads a file the host wrote. Needs QEMU and the guest image (scripts/install-host-deps.sh,
 * scripts/build-guest.sh; .ci/run does both); fails, never skips, when they are missing.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { REPO, startOurDaemon } from '../support/daemon';

const QEMU_72 = '/usr/bin/qemu-system-x86_64';

function runGuest(socket: string, cmd: string, kernel = '6.1'): { status: number | null; out: string } {
  const r = spawnSync('bash', [path.join(REPO, 'scripts', 'run-guest.sh'), '--socket', socket, '--kernel', kernel, '--cmd', cmd, '--timeout', '60'], {
    encoding: 'utf8',
    timeout: 180_000,
  });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('@guest QEMU 7.2 + Linux 6.1 guest on virtiofsd-ts', function () {
  this.timeout(240_000);

  before(function () {
    assert.ok(existsSync(QEMU_72), `QEMU is missing (${QEMU_72}): run scripts/install-host-deps.sh`);
  });

  it('mounts the share and reads a file the host wrote', async () => {
    const share = mkdtempSync(path.join(tmpdir(), 'vfsd-share-'));
    const text = `written on the host at ${new Date().toISOString()}`;
    writeFileSync(path.join(share, 'hello.txt'), text);
    const d = await startOurDaemon(share, ['--cache=never']);
    const g = runGuest(d.socketPath, 'cat /mnt/hello.txt');
    const code = await d.exited;
    assert.equal(g.status, 0, `guest command failed:\n${g.out}\ndaemon:\n${d.log()}`);
    assert.ok(g.out.includes(text), `guest did not print the host's file:\n${g.out}`);
    assert.equal(code, 0, 'the daemon exits cleanly when QEMU disconnects');
    const closed = d.lines().find((l) => l.msg === 'connection closed');
    assert.ok(closed, 'daemon reports the end of the connection');
    assert.ok(readFileSync(path.join(share, 'hello.txt'), 'utf8') === text);
  });
});
