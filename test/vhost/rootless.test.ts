/**
 * --uid-map/--gid-map: the daemon started by an unprivileged user (here nobody, 65534, with
 * setpriv), as unprivileged libvirt starts it. It becomes root of a user namespace that maps
 * 0 to the user, makes its sandbox there and serves the share with the user's rights only.
 * What a user checks: the files the guest's root makes belong to that user on the host, the
 * guest sees the user's files as root's and anything else as the overflow ID, an unmapped
 * guest user is refused, and a host file the user may not write stays unwritten.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT, startDaemon, type Daemon } from '../frontend/daemons';
import { FuseClient, ok } from '../frontend/fuse-client';
import type { VhostUserFrontend } from '../frontend/frontend';
import { createAs } from '../support/create-as';

const NOBODY = 65534;
/** The first of the subordinate IDs the tests give the user. */
const SUB = 200000;

/**
 * A copy of the package where any user can read it: the clone the tests run from may sit
 * under a directory only root may enter (a mktemp -d), which the user's daemon could not.
 */
function publicCopyOfThePackage(into: string): string {
  const app = path.join(into, 'app');
  for (const p of ['package.json', 'bin', 'dist/src', 'build/Release/virtiofsd_native.node', 'node_modules']) {
    fs.cpSync(path.join(REPO_ROOT, p), path.join(app, p), { recursive: true });
  }
  return app;
}
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--'];
const { EINVAL, EACCES } = os.constants.errno;

describe('virtiofsd-ts started by an unprivileged user with --uid-map/--gid-map', function () {
  this.timeout(60000);
  let dir = '';
  let daemon: Daemon | null = null;
  let fe: VhostUserFrontend | null = null;
  afterEach(async () => {
    fe?.close();
    await daemon?.stop().catch(() => undefined);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    fe = null;
    daemon = null;
    dir = '';
  });
  /** The daemon on share, started as the user (through wrapper) from a public copy of the package in dir. */
  const startAsUser = (share: string, args: string[], wrapper = AS_NOBODY): Daemon =>
    startDaemon('ts', { sharedDir: share, socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: args, wrapper, appDir: publicCopyOfThePackage(dir) });

  it("serves the share in a user namespace: the guest's root is the user, other IDs are not the daemon's to use", async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-rootless-'));
    const share = path.join(dir, 'share');
    fs.mkdirSync(share);
    fs.writeFileSync(path.join(share, 'mine'), 'the user\'s');
    fs.writeFileSync(path.join(share, 'roots'), 'root\'s');
    for (const p of [dir, share, path.join(share, 'mine')]) fs.chownSync(p, NOBODY, NOBODY);
    fs.chmodSync(dir, 0o755);
    daemon = startAsUser(share, [`--uid-map=:0:${NOBODY}:1:`, `--gid-map=:0:${NOBODY}:1:`]);
    fe = await daemon.connect();
    await fe.negotiate({ memory: { size: 64 << 20 } });
    const c = new FuseClient(fe, { timeoutMs: 60000 });
    ok(await c.init(), 'INIT');
    const pid = daemon.proc.pid!;

    // The process: the user on the host, root of its own user namespace, in its sandbox.
    assert.match(fs.readFileSync(`/proc/${pid}/status`, 'utf8'), new RegExp(`^Uid:\\s+${NOBODY}\\s+${NOBODY}\\s`, 'm'));
    assert.deepEqual(fs.readFileSync(`/proc/${pid}/uid_map`, 'utf8').trim().split(/\s+/), ['0', String(NOBODY), '1']);
    assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/user`), fs.readlinkSync('/proc/self/ns/user'));
    assert.ok(!fs.existsSync(`/proc/${pid}/root/etc`), 'in the sandbox');

    assert.ok(!fs.existsSync(path.join(dir, 'vfs.sock')), 'the socket file is removed once connected');

    // Owners as the guest sees them.
    assert.equal(ok(await c.lookup(1n, 'mine'), 'LOOKUP mine').attr.uid, 0, "the user's file is root's in the guest");
    assert.equal(ok(await c.lookup(1n, 'roots'), 'LOOKUP roots').attr.uid, NOBODY, "the host root's file shows the overflow ID");
    // What the guest makes.
    const made = await createAs(c, 'made', 0, 0);
    assert.equal(made.error, 0, 'CREATE as the guest root');
    assert.equal(made.attr!.uid, 0);
    const st = fs.statSync(path.join(share, 'made'));
    assert.deepEqual([st.uid, st.gid], [NOBODY, NOBODY], "on the host, the user's");
    assert.equal((await createAs(c, 'user1000', 1000, 1000)).error, -EINVAL, 'an unmapped guest user: refused');
    assert.ok(!fs.existsSync(path.join(share, 'user1000')));
    // No privilege over the host: root's 0644 file stays unwritable.
    const roots = ok(await c.lookup(1n, 'roots'), 'LOOKUP roots').nodeid;
    assert.equal((await c.open(roots, fs.constants.O_WRONLY)).error, -EACCES);

    fe.close();
    fe = null;
    const exit = await daemon.waitExit(10000);
    assert.equal(exit.code, 0, daemon.describeExit());
    daemon.exitReport();
  });

  it('maps the user\'s own ID and a range of subordinate IDs, each option given twice as for the Rust virtiofsd', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-rootless-'));
    const share = path.join(dir, 'share');
    fs.mkdirSync(share, { mode: 0o777 });
    fs.chmodSync(share, 0o777);
    fs.chownSync(dir, NOBODY, NOBODY);
    fs.chmodSync(dir, 0o755);
    fs.writeFileSync(path.join(share, 'subordinate'), '');
    fs.chownSync(path.join(share, 'subordinate'), SUB + 41, SUB + 41);
    // The user's subordinate IDs, as /etc/subuid and /etc/subgid would give them, seen only
    // by this daemon (and the newuidmap it runs): a copy of /etc with them, bound over the
    // host's /etc in a mount namespace of its own.
    const etc = path.join(dir, 'etc');
    fs.cpSync('/etc', etc, { recursive: true, verbatimSymlinks: true });
    for (const f of ['subuid', 'subgid']) fs.writeFileSync(path.join(etc, f), `${NOBODY}:${SUB}:65536\n`, { mode: 0o644 });
    const withSubids = [
      'unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$0" /etc && exec "$@"', etc, ...AS_NOBODY,
    ];
    daemon = startAsUser(
      share,
      [`--uid-map=:0:${NOBODY}:1:`, `--uid-map=:1:${SUB}:65536:`, `--gid-map=:0:${NOBODY}:1:`, `--gid-map=:1:${SUB}:65536:`],
      withSubids,
    );
    fe = await daemon.connect();
    await fe.negotiate({ memory: { size: 64 << 20 } });
    const c = new FuseClient(fe, { timeoutMs: 60000 });
    ok(await c.init(), 'INIT');
    const pid = daemon.proc.pid!;
    const lines = (f: string): string[][] => fs.readFileSync(`/proc/${pid}/${f}`, 'utf8').trim().split('\n').map((l) => l.trim().split(/\s+/));
    const both = [['0', String(NOBODY), '1'], ['1', String(SUB), '65536']];
    assert.deepEqual(lines('uid_map'), both);
    assert.deepEqual(lines('gid_map'), both);

    // Guest user 1000 is host user SUB + 999; a host file of SUB + 41 is guest user 42's.
    const made = await createAs(c, 'user1000', 1000, 1000);
    assert.equal(made.error, 0, 'CREATE as guest user 1000');
    const st = fs.statSync(path.join(share, 'user1000'));
    assert.deepEqual([st.uid, st.gid], [SUB + 999, SUB + 999]);
    const attr = ok(await c.lookup(1n, 'subordinate'), 'LOOKUP subordinate').attr;
    assert.deepEqual([attr.uid, attr.gid], [42, 42]);
    assert.equal((await createAs(c, 'user70000', 70000, 70000)).error, -EINVAL, 'a guest user past the ranges: refused');

    fe.close();
    fe = null;
    assert.equal((await daemon.waitExit(10000)).code, 0, daemon.describeExit());
  });

  it('refuses a third --uid-map range, saying why (unshare maps the own ID and one range)', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-rootless-'));
    fs.chownSync(dir, NOBODY, NOBODY);
    fs.chmodSync(dir, 0o755);
    daemon = startAsUser(dir, [`--uid-map=:0:${NOBODY}:1:`, `--uid-map=:1:${SUB}:10:`, `--uid-map=:20:${SUB + 100}:10:`]);
    const exit = await daemon.waitExit(10000);
    assert.equal(exit.code, 1, daemon.describeExit());
    daemon.logLine(`--uid-map: at most two ranges, the user's own ID (:ID:${NOBODY}:1:) and one range of subordinate IDs (util-linux unshare maps no more)`);
  });

  it('as root, --uid-map is refused with a message (root translates IDs with --translate-uid)', async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-rootless-'));
    daemon = startDaemon('ts', { sharedDir: dir, socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: ['--uid-map=:0:1000:1:'] });
    const exit = await daemon.waitExit(10000);
    assert.equal(exit.code, 1, daemon.describeExit());
    daemon.logLine('--uid-map/--gid-map are for a daemon started by an unprivileged user (as root, --translate-uid/--translate-gid translate IDs)');
  });
});
