/**
 * @guest Real QEMU boots a real Linux guest that mounts the share served by virtiofsd-ts and
 * reads a file the host wrote, on both combinations that work on these machines
 * (../shared/docs/GUEST-VM.md): Debian 12's QEMU 7.2 with Linux 6.1, and QEMU 10.0 from
 * bookworm-backports with Linux 6.12 (QEMU 10 also sends RESET_DEVICE and GET/SET_STATUS).
 * Needs QEMU and the guest images (.ci/run prepares them: install-host-deps.sh,
 * fetch-qemu.sh, build-guest.sh); fails, never skips, when they are missing.
 */
import { strict as assert } from 'node:assert';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { REPO, startOurDaemon } from '../support/daemon';
import { COMBINATIONS, comboMissing } from './runner';


function runGuest(socket: string, qemu: string, kernel: string, cmd: string): { status: number | null; out: string } {
  const r = spawnSync(
    'bash',
    [path.join(REPO, 'scripts', 'run-guest.sh'), '--socket', socket, '--qemu', qemu, '--kernel', kernel, '--cmd', cmd, '--timeout', '60'],
    { encoding: 'utf8', timeout: 180_000 },
  );
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

for (const combo of COMBINATIONS) {
  describe(`@guest QEMU ${combo.qemu} + Linux ${combo.kernel} guest on virtiofsd-ts`, function () {
    this.timeout(240_000);

    before(function () {
      const missing = comboMissing(combo);
      assert.equal(missing, null, missing ?? '');
    });

    it('mounts the share and reads a file the host wrote; the daemon exits cleanly with QEMU', async () => {
      const share = mkdtempSync(path.join(tmpdir(), 'vfsd-share-'));
      const text = `written on the host at ${new Date().toISOString()}`;
      writeFileSync(path.join(share, 'hello.txt'), text);
      const d = await startOurDaemon(share, ['--cache=never']);
      const g = runGuest(d.socketPath, combo.binary, combo.kernel, 'cat /mnt/hello.txt');
      const code = await d.exited;
      assert.equal(g.status, 0, `guest command failed:\n${g.out}\ndaemon:\n${d.log()}`);
      assert.ok(g.out.includes(text), `guest did not print the host's file:\n${g.out}`);
      assert.equal(code, 0, 'the daemon exits cleanly when QEMU disconnects');
      assert.ok(d.lines().find((l) => l.msg === 'connection closed'), 'daemon reports the end of the connection');
      const complaints = d.lines().filter((l) => (l.level as number) >= 40);
      assert.deepEqual(complaints, [], 'a clean boot, mount and read logs no warning or error');
      assert.equal(readFileSync(path.join(share, 'hello.txt'), 'utf8'), text);
    });

    it('lists and reads 1500 files while holding them, under an open file limit of 300 (inodes past the budget kept as file handles)', async () => {
      const share = mkdtempSync(path.join(tmpdir(), 'vfsd-share-'));
      mkdirSync(path.join(share, 'many'));
      for (let i = 0; i < 1500; i++) writeFileSync(path.join(share, 'many', `f${i}`), `${i}\n`);
      const d = await startOurDaemon(share, [], ['prlimit', '--nofile=300:300']);
      // ls -l takes a lookup of every file; the guest keeps them while it has the memory.
      const g = runGuest(d.socketPath, combo.binary, combo.kernel, 'ls -l /mnt/many | grep -c "^-" && cat /mnt/many/* | wc -l && ls -l /mnt/many | grep -c "^-"');
      await d.exited;
      assert.equal(g.status, 0, `guest command failed:\n${g.out}\ndaemon:\n${d.log().slice(-3000)}`);
      assert.match(g.out, /^1500\s*\n1500\s*\n1500\s*$/m, g.out);
      const table = d.lines().find((l) => l.msg === 'inode table at exit');
      assert.ok(table && (table.inodesEverAsFileHandles as number) > 1000, `inodes kept as file handles: ${JSON.stringify(table)}`);
    });

    it('announces a host mount inside the share as a submount: its files get their own st_dev in the guest', async () => {
      // A tmpfs in the share: its inode numbers (small ones) would otherwise meet the share's
      // under one st_dev, and tools that key files on (st_dev, st_ino) would take two for one.
      const share = mkdtempSync(path.join(tmpdir(), 'vfsd-share-'));
      mkdirSync(path.join(share, 'sub'));
      mkdirSync(path.join(share, 'plain'));
      execFileSync('mount', ['-t', 'tmpfs', 'vfs-test-sub', path.join(share, 'sub')]);
      try {
        writeFileSync(path.join(share, 'sub', 'f'), 'in the tmpfs');
        writeFileSync(path.join(share, 'plain', 'g'), 'in the share');
        const d = await startOurDaemon(share, []);
        const g = runGuest(d.socketPath, combo.binary, combo.kernel, 'cd /mnt && echo "$(cat sub/f)" && stat -c "DEV %n %d" . plain/g sub/f && grep -c " /mnt/sub virtiofs " /proc/mounts');
        await d.exited;
        assert.equal(g.status, 0, `guest command failed:\n${g.out}\ndaemon:\n${d.log()}`);
        const dev = new Map([...g.out.matchAll(/^DEV (\S+) (\d+)$/gm)].map((m) => [m[1], m[2]]));
        assert.equal(dev.size, 3, g.out);
        assert.equal(dev.get('plain/g'), dev.get('.'), 'a file of the share is on the mount');
        assert.notEqual(dev.get('sub/f'), dev.get('.'), `the tmpfs's file has a st_dev of its own:\n${g.out}`);
        assert.ok(g.out.includes('in the tmpfs'));
      } finally {
        execFileSync('umount', [path.join(share, 'sub')]);
      }
    });
  });
}

describe('@guest the README\'s main job: npm run vm', function () {
  this.timeout(300_000);

  for (const combo of COMBINATIONS) {
    it(`--qemu ${combo.qemu}: runs a command in the guest, the file appears on the host, nothing is left running`, () => {
      const share = mkdtempSync(path.join(tmpdir(), 'vfsd-vm-'));
      const r = spawnSync('npm', ['run', '--silent', 'vm', '--', '--qemu', combo.qemu, '--share', share, '--run', 'echo hi > /mnt/x && cat /mnt/x'], {
        cwd: REPO,
        encoding: 'utf8',
        timeout: 240_000,
      });
      const out = `${r.stdout}\n${r.stderr}`;
      assert.equal(r.status, 0, out);
      assert.match(r.stdout, /^hi$/m, out);
      assert.equal(readFileSync(path.join(share, 'x'), 'utf8'), 'hi\n');
      assert.ok(existsSync(path.join(share, 'hello.txt')), 'the share gets a hello.txt');
      const stray = execFileSync('sh', ['-c', `ps -eo args | grep -F -e ${share} | grep -v grep || true`], { encoding: 'utf8' });
      assert.equal(stray.trim(), '', `processes left running:\n${stray}`);
    });
  }

  it('refuses to start a shell without a terminal, and says how to run a command', () => {
    const r = spawnSync('bash', [path.join(REPO, 'scripts', 'vm.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--run/);
  });
});
