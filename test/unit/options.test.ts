/** Command-line and config-file parsing: the Rust virtiofsd's options, libvirt's -o form, TOML. */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { LONG_OPTIONS, optionsWithoutEffect, parseNamespaceIdMaps, parseOptions, sandboxMode, USAGE, UsageError } from '../../src/options';
import { unshareIdMapArgs } from '../../src/sandbox';
import { keptCapabilities } from '../../src/capabilities';
import { parseDaxWindowSize } from '../../src/dax/window';
import { ANCHOR_BIN_DIR } from '../frontend/daemons';
import { BIN } from '../support/daemon';

describe('options', () => {
  it('takes the Rust virtiofsd form with defaults like it', () => {
    const o = parseOptions(['--socket-path=/tmp/s', '--shared-dir', '/srv']);
    assert.equal(o.socketPath, '/tmp/s');
    assert.equal(o.sharedDir, '/srv');
    assert.equal(o.cache, 'auto');
    assert.equal(o.threadPoolSize, 0);
    assert.equal(o.pollMaxUs, 100);
    assert.equal(o.logLevel, 'info');
    assert.equal(o.readonly, false);
  });

  it('accepts what libvirt 9.0 sends to the C virtiofsd, including flock and posix_lock', () => {
    const o = parseOptions(['--fd=3', '-o', 'source=/srv,cache=none,sandbox=chroot,xattr,flock,posix_lock', '--thread-pool-size=16', '-o', 'debug']);
    assert.equal(o.fd, 3);
    assert.equal(o.sharedDir, '/srv');
    assert.equal(o.cache, 'never');
    assert.equal(o.sandbox, 'chroot');
    assert.equal(o.xattr, true);
    assert.equal(o.flock, true);
    assert.equal(o.posixLock, true);
    assert.equal(o.threadPoolSize, 16);
    assert.equal(o.logLevel, 'debug');
  });

  it('accepts the separate-options form of newer libvirt', () => {
    const o = parseOptions(['--fd=4', '--shared-dir', '/srv', '--cache', 'always', '--sandbox', 'namespace', '--xattr', '--rlimit-nofile=1000', '--log-level', 'debug']);
    assert.equal(o.cache, 'always');
    assert.equal(o.rlimitNofile, 1000);
  });

  it('names the options it accepts without acting on them, so that the daemon can warn of each', () => {
    const names = (argv: string[]): string[] => optionsWithoutEffect(parseOptions(argv)).map((w) => w.option);
    assert.deepEqual(names(['--socket-path=/tmp/s', '--shared-dir=/srv', '--xattr', '--cache=never', '--thread-pool-size=4', '--sandbox=none']), []);
    // What libvirt sends: a sandbox, which is made (test/vhost/sandbox.test.ts).
    assert.deepEqual(names(['--fd=3', '-o', 'source=/srv,cache=none,sandbox=chroot,xattr,flock,posix_lock']), []);
    assert.deepEqual(names(['--fd=4', '--shared-dir', '/srv', '--sandbox', 'namespace', '--rlimit-nofile=1000']), []);
    assert.equal(parseOptions(['--fd=4', '--shared-dir', '/srv']).sandbox, undefined, 'unset: the daemon picks namespace as root');
    const all = names([
      '--socket-path=/tmp/s', '--shared-dir=/srv', '--xattrmap=:map::user.virtiofs.:', '--security-label', '--seccomp=kill',
      '--sandbox=none', '--modcaps=-mknod', '--inode-file-handles=prefer', '--killpriv-v2', '--syslog', '--preserve-noatime', '--translate-uid=map:0:1000:1', '--uid-map=:0:1000:1:',
      '--migration-mode=find-paths', '--migration-on-error=guest-error', '--migration-confirm-paths',
    ]);
    assert.deepEqual(all, ['--seccomp', '--modcaps']);
    // Every --migration-* option has its effect (test/vhost/migration-state.test.ts).
    assert.deepEqual(names(['--socket-path=/tmp/s', '--shared-dir=/srv', '--migration-mode=file-handles', '--migration-verify-handles']), []);
    // Inodes past the descriptor budget become file handles by default, as in the Rust virtiofsd.
    assert.equal(parseOptions(['--socket-path=/tmp/s', '--shared-dir=/srv']).inodeFileHandles, 'prefer');
    // --killpriv-v2 has its effect (FUSE_HANDLE_KILLPRIV_V2 offered), in either spelling.
    assert.deepEqual(names(['--socket-path=/tmp/s', '--shared-dir=/srv', '--killpriv-v2']), []);
    assert.equal(parseOptions(['--socket-path=/tmp/s', '--shared-dir=/srv', '-o', 'killpriv_v2']).killprivV2, true);
    // --posix-acl has its effect too (and implies --xattr in the daemon, as in the Rust virtiofsd).
    assert.deepEqual(names(['--socket-path=/tmp/s', '--shared-dir=/srv', '--posix-acl']), []);
    assert.equal(parseOptions(['--socket-path=/tmp/s', '--shared-dir=/srv', '-o', 'posix_acl']).posixAcl, true);
  });

  it('--modcaps: the capabilities the sandboxed daemon keeps, as the Rust virtiofsd', () => {
    assert.deepEqual(keptCapabilities(undefined, 'prefer'), ['chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'mknod', 'setfcap', 'setgid', 'setuid']);
    assert.deepEqual(keptCapabilities(undefined, 'never'), ['chown', 'dac_override', 'fowner', 'fsetid', 'mknod', 'setfcap', 'setgid', 'setuid']);
    assert.deepEqual(keptCapabilities('+sys_admin:-mknod,+CAP_LINUX_IMMUTABLE', 'never'), [
      'chown', 'dac_override', 'fowner', 'fsetid', 'linux_immutable', 'setfcap', 'setgid', 'setuid', 'sys_admin',
    ]);
    const refused = (modcaps: string, why: RegExp): void => {
      assert.throws(() => parseOptions(['--socket-path=/s', '--shared-dir=/d', `--modcaps=${modcaps}`]), (e: Error) => e instanceof UsageError && why.test(e.message));
    };
    refused('sys_admin', /'sys_admin' is not \+capability or -capability/);
    refused('+frobnicate', /unknown capability 'frobnicate'/);
    refused('-dac_read_search', /dac_read_search cannot go with --inode-file-handles=prefer/);
    assert.equal(parseOptions(['--socket-path=/s', '--shared-dir=/d', '--modcaps=-dac_read_search', '--inode-file-handles=never']).modcaps, '-dac_read_search');
    // Without a sandbox, --modcaps has nothing to act on: named in the warnings.
    assert.deepEqual(optionsWithoutEffect(parseOptions(['--socket-path=/s', '--shared-dir=/d', '--sandbox=none', '--modcaps=-mknod'])).map((w) => w.option), ['--modcaps']);
    assert.deepEqual(optionsWithoutEffect(parseOptions(['--socket-path=/s', '--shared-dir=/d', '--sandbox=chroot', '--modcaps=-mknod'])).map((w) => w.option), []);
  });

  it('--uid-map/--gid-map take the Rust virtiofsd form :namespace_id:host_id:count:', () => {
    const o = parseOptions(['--socket-path=/s', '--shared-dir=/d', '--uid-map=:0:1000:1:', '--uid-map', ':1:100000:65536:', '--gid-map=:0:100000:65536:']);
    assert.deepEqual(parseNamespaceIdMaps(o.uidMap), [{ inside: 0, outside: 1000, count: 1 }, { inside: 1, outside: 100000, count: 65536 }], 'every range given');
    assert.deepEqual(parseNamespaceIdMaps(o.gidMap), [{ inside: 0, outside: 100000, count: 65536 }]);
    assert.equal(sandboxMode(o), 'namespace', 'a user namespace goes with the namespace sandbox');
    assert.deepEqual(parseOptions(['--socket-path=/s', '--shared-dir=/d']).uidMap, []);
    for (const bad of ['0:1000:1', ':0:1000:0:', ':a:1:1:']) {
      assert.throws(() => parseOptions(['--socket-path=/s', '--shared-dir=/d', `--uid-map=${bad}`]), (e: Error) => e instanceof UsageError && /is not :namespace_id:host_id:count:/.test(e.message));
    }
    const overlapping = (a: string, b: string, what: RegExp): void => {
      assert.throws(() => parseOptions(['--socket-path=/s', '--shared-dir=/d', `--gid-map=${a}`, `--gid-map=${b}`]), (e: Error) => e instanceof UsageError && what.test(e.message));
    };
    overlapping(':0:1000:1:', ':0:100000:65536:', /map the same namespace IDs/);
    overlapping(':0:100000:10:', ':10:100005:10:', /map the same host IDs/);
    // How unshare is told: the own ID directly, the subordinate range through newuidmap.
    const ranges = parseNamespaceIdMaps([':0:1000:1:', ':1:100000:65536:']);
    assert.deepEqual(unshareIdMapArgs(ranges, 1000, 'user'), ['--map-user=0', '--map-users=100000,1,65536']);
    assert.deepEqual(unshareIdMapArgs([], 1000, 'group'), ['--map-group=0']);
    assert.deepEqual(unshareIdMapArgs(parseNamespaceIdMaps([':0:100000:65536:']), 1000, 'user'), ['--map-users=100000,0,65536']);
    assert.throws(() => unshareIdMapArgs(parseNamespaceIdMaps([':0:100000:10:', ':10:200000:10:']), 1000, 'user'), /at most two ranges/);
    assert.throws(() => unshareIdMapArgs(parseNamespaceIdMaps([':65536:1000:1:', ':0:100000:65536:']), 1000, 'user'), /would drop the last ID/);
  });

  it("takes the Rust virtiofsd's other spellings: --no-killpriv-v2, --socket, --inode-file-handles=fallback, -d, -f", () => {
    const base = ['--shared-dir=/d'];
    assert.equal(parseOptions([...base, '--socket-path=/s', '--no-killpriv-v2']).killprivV2, false);
    assert.throws(() => parseOptions([...base, '--socket-path=/s', '--killpriv-v2', '--no-killpriv-v2']), /contradict/);
    assert.equal(parseOptions([...base, '--socket=/old.sock']).socketPath, '/old.sock');
    assert.throws(() => parseOptions([...base, '--socket=/a', '--socket-path=/b']), /older name of --socket-path/);
    assert.equal(parseOptions([...base, '--socket-path=/s', '--inode-file-handles=fallback']).inodeFileHandles, 'prefer');
    // An -o that says otherwise than a long option is refused; among -o options the last wins.
    assert.throws(() => parseOptions([...base, '--socket-path=/s', '--no-killpriv-v2', '-o', 'killpriv_v2']), /-o killpriv_v2 contradicts --no-killpriv-v2/);
    assert.throws(() => parseOptions([...base, '--socket-path=/s', '--cache=never', '-o', 'cache=always']), /contradicts --cache/);
    assert.throws(() => parseOptions(['--shared-dir=/d', '--socket-path=/s', '-o', 'source=/other']), /contradicts --shared-dir/);
    assert.equal(parseOptions([...base, '--socket-path=/s', '--killpriv-v2', '-o', 'killpriv_v2']).killprivV2, true, 'agreeing is fine');
    assert.equal(parseOptions([...base, '--socket-path=/s', '-o', 'killpriv_v2,no_killpriv_v2']).killprivV2, false);
    assert.equal(parseOptions(['--socket-path=/s', '-o', 'source=/d', '--xattr', '-o', 'no_flock']).flock, false, 'libvirt mixes the two syntaxes');
    assert.equal(parseOptions([...base, '--socket-path=/s', '--cache=none', '-o', 'cache=never']).cache, 'never', 'none is never');
    assert.equal(parseOptions(['--shared-dir=/d', '--socket-path=/s', '-o', 'source=/d/']).sharedDir, '/d', 'the same directory');
    assert.throws(() => parseOptions([...base, '--socket-path=/s', '-d', '-o', 'log_level=info']), /contradicts -d/);
    const o = parseOptions([...base, '--socket-path=/s', '-d', '-f']);
    assert.equal(o.logLevel, 'debug');
  });

  it('--help names every option the daemon takes', () => {
    const hidden = new Set(['foreground', 'debug', 'socket', 'no-killpriv-v2', 'no-announce-submounts', 'translate-gid', 'gid-map']);
    for (const name of LONG_OPTIONS) if (!hidden.has(name)) assert.ok(USAGE.includes(`--${name}`), `--${name} is missing from --help`);
    for (const alias of ['--no-killpriv-v2', '--no-announce-submounts', '--translate-gid', '--gid-map']) assert.ok(USAGE.includes(alias), alias);
  });

  it('refuses --posix-acl with ID translation, whose ACL entries would keep host IDs', () => {
    for (const t of ['--translate-uid=map:1000:2000:1', '--translate-gid=squash-host:0:0:65536']) {
      assert.throws(
        () => parseOptions(['--socket-path=/tmp/s', '--shared-dir=/srv', '--posix-acl', t]),
        (e: Error) => e instanceof UsageError && /--posix-acl cannot be used with --translate-uid/.test(e.message),
      );
    }
  });

  it('rejects unknown options, bad values and unknown -o options with a usage error', () => {
    assert.throws(() => parseOptions(['--bogus']), UsageError);
    assert.throws(() => parseOptions(['--cache=sometimes']), /cache/);
    assert.throws(() => parseOptions(['--thread-pool-size=many']), UsageError);
    assert.throws(() => parseOptions(['--poll-max-us=-1']), UsageError);
    assert.throws(() => parseOptions(['--poll-max-us=20000']), /pollMaxUs/);
    assert.throws(() => parseOptions(['-o', 'frobnicate']), /unknown -o option/);
    assert.throws(() => parseOptions(['--log-level=loud']), UsageError);
  });

  it('takes --poll-max-us, 0 turning polling off', () => {
    assert.equal(parseOptions(['--poll-max-us=0']).pollMaxUs, 0);
    assert.equal(parseOptions(['--poll-max-us', '200']).pollMaxUs, 200);
  });

  it('takes --dax-window-size in bytes or with a binary suffix, a multiple of 2 MiB up to 1 TiB, from a config file too', () => {
    assert.equal(parseDaxWindowSize('1G'), 2 ** 30);
    assert.equal(parseDaxWindowSize('64M'), 64 * 2 ** 20);
    assert.equal(parseDaxWindowSize(String(4 * 2 ** 20)), 4 * 2 ** 20);
    assert.equal(parseDaxWindowSize('1T'), 2 ** 40);
    assert.equal(parseOptions(['--dax-window-size=512M']).daxWindowSize, '512M');
    assert.throws(() => parseOptions(['--dax-window-size=3M']), /multiple of 2 MiB/);
    assert.throws(() => parseOptions(['--dax-window-size=0']), /no window/);
    assert.throws(() => parseOptions(['--dax-window-size=2T']), /larger than 1 TiB/);
    assert.throws(() => parseOptions(['--dax-window-size=lots']), /not a size/);
    const dir = mkdtempSync(path.join(tmpdir(), 'vfsd-conf-'));
    const f = path.join(dir, 'c.toml');
    writeFileSync(f, 'dax_window_size = "2G"\n');
    assert.equal(parseOptions([`--config=${f}`]).daxWindowSize, '2G');
  });

  it('reads a TOML config file; the command line wins', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vfsd-conf-'));
    const f = path.join(dir, 'c.toml');
    writeFileSync(f, 'shared-dir = "/from/file"\ncache = "never"\nreadonly = true\nthread_pool_size = 4\n');
    const o = parseOptions([`--config=${f}`, '--cache=always']);
    assert.equal(o.sharedDir, '/from/file');
    assert.equal(o.cache, 'always');
    assert.equal(o.readonly, true);
    assert.equal(o.threadPoolSize, 4);
    // Repeatable options as one string or a list; the command line's other spellings as keys.
    writeFileSync(f, 'socket = "/old.sock"\nshared-dir = "/d"\nuid-map = ":0:1000:1:"\ngid-map = [":0:1000:1:", ":1:100000:65536:"]\nno-killpriv-v2 = true\nno_announce_submounts = true\n');
    const p = parseOptions([`--config=${f}`]);
    assert.deepEqual([p.socketPath, p.uidMap, p.gidMap, p.killprivV2, p.announceSubmounts], ['/old.sock', [':0:1000:1:'], [':0:1000:1:', ':1:100000:65536:'], false, false]);
  });

  it('reports which key of a config file is wrong', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vfsd-conf-'));
    const f = path.join(dir, 'c.toml');
    writeFileSync(f, 'thread-pool-size = "lots"\n');
    assert.throws(() => parseOptions([`--config=${f}`]), /threadPoolSize/);
    writeFileSync(f, 'no-such-option = 1\n');
    assert.throws(() => parseOptions([`--config=${f}`]), /noSuchOption/);
  });
});

describe('--print-capabilities', () => {
  it("prints what the Rust virtiofsd prints, migrate-precopy included (libvirt migrates a guest's virtiofs only then)", () => {
    const ours = JSON.parse(execFileSync(process.execPath, [BIN, '--print-capabilities'], { encoding: 'utf8' })) as unknown;
    const rust = JSON.parse(execFileSync(path.join(ANCHOR_BIN_DIR, 'virtiofsd-rust'), ['--print-capabilities'], { encoding: 'utf8' })) as unknown;
    assert.deepEqual(ours, rust);
    assert.deepEqual(ours, { type: 'fs', features: ['migrate-precopy', 'separate-options'] });
  });
});
