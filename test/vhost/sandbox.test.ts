/**
 * --sandbox namespace|chroot: the daemon's process sees only what it needs of the host. What
 * a user (or libvirt) checks: the daemon keeps its PID, serves the share as before, lives in
 * mount (and, for namespace, network) namespaces of its own, and its root holds no /etc, no
 * /home, nothing of the host but the share and read-only system and program files. A daemon
 * that cannot build the sandbox (no CAP_SYS_ADMIN) stops with a message instead of serving
 * unsandboxed.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { CAPABILITIES } from '../../src/capabilities';
import { APP_DIR } from '../../src/sandbox';
import { startDaemon } from '../frontend/daemons';
import { ok } from '../frontend/fuse-client';
import { connectEachTest, disconnectDaemon, type ConnectedDaemon } from '../support/connected';

const nsOf = (pid: number, ns: string): string => fs.readlinkSync(`/proc/${pid}/ns/${ns}`);
/** The effective capabilities of a process, by name. */
function capsOf(pid: number): string[] {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
  const mask = BigInt(`0x${hex}`);
  return Object.entries(CAPABILITIES).filter(([, n]) => (mask >> BigInt(n)) & 1n).map(([name]) => name).sort();
}

describe('virtiofsd-ts --sandbox', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  for (const mode of ['namespace', 'chroot'] as const) {
    it(`${mode}: same PID, own mount namespace${mode === 'namespace' ? ' and network namespace' : ''}, a root with the share and nothing else of the host; the share served as usual`, async () => {
      // An option from a config file, which the sandboxed process cannot read itself.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-sandbox-cfg-'));
      const config = path.join(dir, 'virtiofsd.toml');
      fs.writeFileSync(config, 'cache = "never"\n');
      let env: ConnectedDaemon;
      try {
        env = await connect('vfs-sandbox-', [`--sandbox=${mode}`, `--config=${config}`]);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
      const { c, share, daemon } = env;
      const pid = daemon.proc.pid!;
      fs.writeFileSync(path.join(share, 'hello'), 'from the host');

      // Served as usual: a read of a host file, a file made by the guest.
      const n = ok(await c.lookup(1n, 'hello'), 'LOOKUP hello').nodeid;
      const o = ok(await c.open(n, fs.constants.O_RDONLY), 'OPEN hello');
      assert.ok(o.openFlags & abi.FopenFlags.DIRECT_IO, 'cache never from the config file: DIRECT_IO');
      assert.equal(ok(await c.read(o.fh, 0, 100), 'READ').toString(), 'from the host');
      const ca = Buffer.alloc(abi.CREATE_IN_SIZE);
      abi.encodeCreateIn(ca, 0, { flags: fs.constants.O_WRONLY | fs.constants.O_CREAT, mode: 0o100644, umask: 0, openFlags: 0 });
      assert.equal((await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([ca, Buffer.from('made\0')]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE)).error, 0);
      assert.ok(fs.existsSync(path.join(share, 'made')), 'the guest made a file on the host share');

      // The socket file went once the connection came, as without a sandbox, though its
      // path is out of the daemon's view by then.
      assert.ok(!fs.existsSync(daemon.socketPath), 'the socket file is removed');

      // The process: the one spawned, in namespaces of its own.
      assert.equal(daemon.logLine<{ pid: number }>('waiting for a vhost-user connection').pid, pid, 'the daemon started again in place, same PID');
      daemon.logLine('running in the sandbox: the host outside the shared directory is out of view');
      assert.notEqual(nsOf(pid, 'mnt'), nsOf(process.pid, 'mnt'), 'own mount namespace');
      if (mode === 'namespace') assert.notEqual(nsOf(pid, 'net'), nsOf(process.pid, 'net'), 'own network namespace');
      else assert.equal(nsOf(pid, 'net'), nsOf(process.pid, 'net'), 'chroot leaves the network namespace');
      // Its root: the share at its path, system and program files read-only, nothing else.
      const root = `/proc/${pid}/root`;
      assert.ok(fs.existsSync(path.join(root, share, 'made')), 'the share is there');
      for (const hidden of ['etc', 'home', 'root', 'var', 'run']) assert.ok(!fs.existsSync(path.join(root, hidden)), `no /${hidden}`);
      assert.deepEqual(fs.readdirSync(path.join(root, 'dev')).sort(), ['null', 'random', 'urandom', 'zero']);
      // Of the temp directory only the share's (and the daemon's own package, when it lies there).
      const tmp = fs.realpathSync(os.tmpdir());
      const expected = new Set([path.basename(path.dirname(share))]);
      if (APP_DIR.startsWith(`${tmp}/`)) expected.add(APP_DIR.slice(tmp.length + 1).split('/')[0]);
      assert.deepEqual(fs.readdirSync(path.join(root, tmp)).sort(), [...expected].sort(), 'of the temp directory, only the share and the package');
      const mounts = fs.readFileSync(`/proc/${pid}/mounts`, 'utf8').split('\n');
      const usr = mounts.find((l) => l.split(' ')[1] === '/usr');
      assert.ok(usr && /\bro\b/.test(usr.split(' ')[3]), `/usr read-only: ${usr}`);
      const shareMount = mounts.find((l) => l.split(' ')[1] === fs.realpathSync(share));
      assert.ok(shareMount && /\brw\b/.test(shareMount.split(' ')[3]), `the share read-write: ${shareMount}`);

      // Only a file server's capabilities, as the Rust virtiofsd keeps.
      assert.deepEqual(capsOf(pid), ['chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'mknod', 'setfcap', 'setgid', 'setuid']);

      await disconnectDaemon(env);
      assert.equal(env.daemon.exited?.code, 0, env.daemon.describeExit());
      env.daemon.exitReport();
    });
  }

  it('started as root with supplementary groups, it drops them: a guest user\'s file operations do not carry them', async () => {
    // A setgid directory of one of the daemon's groups, writable by that group only: a guest
    // user outside the group must not be able to make a file there (CVE-2022-0358).
    const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-groups-'));
    fs.chmodSync(share, 0o755);
    fs.mkdirSync(path.join(share, 'team'));
    fs.chownSync(path.join(share, 'team'), 0, 4321);
    fs.chmodSync(path.join(share, 'team'), 0o2770);
    const env = await connect('vfs-groups-', ['--sandbox=none'], { uid: 1000, gid: 1000 }, share, {}, ['setpriv', '--groups=4321,4322']);
    const groups = /^Groups:[ \t]*(.*)$/m.exec(fs.readFileSync(`/proc/${env.daemon.proc.pid}/status`, 'utf8'));
    assert.equal(groups?.[1].trim(), '', `the daemon's supplementary groups: ${groups?.[1]}`);
    const team = ok(await env.c.lookup(1n, 'team'), 'LOOKUP team').nodeid;
    const args = Buffer.alloc(abi.MKDIR_IN_SIZE);
    abi.encodeMkdirIn(args, 0, { mode: 0o755, umask: 0 });
    const r = await env.c.request(abi.Opcode.MKDIR, team, Buffer.concat([args, Buffer.from('mine\0')]), abi.ENTRY_OUT_SIZE);
    assert.equal(r.error, -os.constants.errno.EACCES, 'MKDIR as a user outside the group');
    assert.equal(fs.existsSync(path.join(share, 'team', 'mine')), false);
    fs.rmSync(share, { recursive: true, force: true });
  });

  it('by default, as root: the namespace sandbox, as in the Rust virtiofsd', async () => {
    const env = await connect('vfs-sandbox-', []);
    const pid = env.daemon.proc.pid!;
    ok(await env.c.lookup(1n, '.'), 'LOOKUP');
    assert.notEqual(nsOf(pid, 'mnt'), nsOf(process.pid, 'mnt'));
    assert.notEqual(nsOf(pid, 'net'), nsOf(process.pid, 'net'));
    assert.ok(!fs.existsSync(`/proc/${pid}/root/etc`));
  });

  it('--modcaps adds and removes capabilities, and a guest MKNOD of a device then gets EPERM', async () => {
    const env = await connect('vfs-sandbox-', ['--modcaps=+sys_admin:-mknod:-dac_read_search', '--inode-file-handles=never']);
    const pid = env.daemon.proc.pid!;
    assert.deepEqual(capsOf(pid), ['chown', 'dac_override', 'fowner', 'fsetid', 'setfcap', 'setgid', 'setuid', 'sys_admin']);
    const a = Buffer.alloc(abi.MKNOD_IN_SIZE);
    abi.encodeMknodIn(a, 0, { mode: fs.constants.S_IFCHR | 0o600, rdev: (1 << 8) | 3, umask: 0 });
    const r = await env.c.request(abi.Opcode.MKNOD, 1n, Buffer.concat([a, Buffer.from('null\0')]), abi.ENTRY_OUT_SIZE);
    assert.equal(r.error, -os.constants.errno.EPERM, 'no CAP_MKNOD: no device node');
  });

  it('by default, without CAP_SYS_ADMIN (a container): serves without a sandbox and says so', async () => {
    const env = await connect('vfs-sandbox-', [], {}, undefined, {}, ['setpriv', '--bounding-set=-sys_admin', '--inh-caps=-sys_admin', '--']);
    const pid = env.daemon.proc.pid!;
    ok(await env.c.lookup(1n, '.'), 'LOOKUP');
    assert.equal(nsOf(pid, 'mnt'), nsOf(process.pid, 'mnt'), 'no namespace');
    const w = env.daemon.logLine<{ level: number; reason: string }>('running without a sandbox (the default sandbox could not be made; --sandbox none says so explicitly)');
    assert.equal(w.level, 40);
    assert.match(w.reason, /unshare: Operation not permitted/);
    // The descriptor of the socket's directory, opened for a restart that did not happen, is closed again.
    const socketDir = path.dirname(fs.realpathSync(path.dirname(env.daemon.socketPath)) + '/x');
    const held = fs.readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === socketDir;
      } catch {
        return false;
      }
    });
    assert.deepEqual(held, [], `descriptors of ${socketDir}`);
  });

  it('explicitly asked, without CAP_SYS_ADMIN: the start fails with a message, rather than serving unsandboxed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-sandbox-'));
    try {
      const d = startDaemon('ts', {
        sharedDir: dir,
        socketPath: path.join(dir, 'vfs.sock'),
        replaceDefaultArgs: ['--sandbox=namespace'],
        wrapper: ['setpriv', '--bounding-set=-sys_admin', '--inh-caps=-sys_admin', '--'],
      });
      const exit = await d.waitExit(10000);
      assert.equal(exit.code, 1, d.describeExit());
      const line = d.logLine<{ level: number; err: { message: string } }>(
        'cannot set up the namespace sandbox (unshare: Operation not permitted); it needs CAP_SYS_ADMIN, or run with --sandbox none',
      );
      assert.equal(line.level, 60);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
