/**
 * --seccomp kill|log|trap: the daemon runs under a filter of the system calls it may make
 * (native/seccomp.cc, list in native/seccomp-allow.h). What a user checks: the kernel shows
 * the process filtered, the daemon still serves everything, and the list leaves out what a
 * file server has no use for (mounting, tracing, loading modules or BPF, rebooting). The
 * second test runs a broad part of the socket suite again with every daemon under
 * --seccomp=kill: a call missing from the list kills its daemon and fails those tests.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { native } from '../../src/native';
import { REPO_ROOT } from '../frontend/daemons';
import { ok } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest } from '../support/connected';

/** x86_64 numbers of calls the filter must not allow. */
const DENIED: Record<string, number> = {
  ptrace: 101, pivot_root: 155, chroot: 161, mount: 165, umount2: 166, swapon: 167, reboot: 169, init_module: 175,
  kexec_load: 246, keyctl: 250, perf_event_open: 298, setns: 308, process_vm_readv: 310, process_vm_writev: 311,
  finit_module: 313, bpf: 321,
};

describe('virtiofsd-ts --seccomp', function () {
  this.timeout(600000);
  const connect = connectEachTest();

  it('kill: the daemon runs filtered, and the list leaves out mounting, tracing, modules, BPF, rebooting', async () => {
    const env = await connect('vfs-seccomp-', ['--seccomp=kill']);
    const pid = env.daemon.proc.pid!;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Seccomp:\s+2$/m, 'filter mode');
    assert.match(status, /^Seccomp_filters:\s+1$/m, 'one filter');
    ok(await env.c.lookup(1n, '.'), 'LOOKUP');
    await disconnectDaemon(env);
    assert.equal(env.daemon.exited?.code, 0, env.daemon.describeExit());
    const allowed = new Set(native.seccompAllowed());
    assert.ok(allowed.size > 100, `${allowed.size} calls allowed`);
    for (const [name, nr] of Object.entries(DENIED)) assert.ok(!allowed.has(nr), `${name} is allowed`);
  });

  it('kill: the file, metadata, xattr, ACL, lock, I/O pool, file handle and multi-queue socket tests pass with every daemon under it', () => {
    // Socket tests only (their titles start with the describe's "virtiofsd-ts"; guest tests' with "@guest").
    const grep = `^virtiofsd-ts:? (${[
      'FUSE fast path', 'with --posix-acl', 'with --xattrmap', 'clears setuid', 'keeps inodes as file handles', '--thread-pool-size: replies',
      'with two request queues', 'a request that blocks', 'translates user and group IDs', 'against a hostile front end',
    ].join('|')})`;
    const r = spawnSync('npx', ['mocha', '--grep', grep], {
      cwd: REPO_ROOT,
      env: { ...process.env, VIRTIOFSD_TEST_EXTRA_ARGS: '--seccomp=kill' },
      encoding: 'utf8',
      timeout: 540000,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    const passing = Number(/(\d+) passing/.exec(out)?.[1] ?? 0);
    assert.equal(r.status, 0, out.slice(-4000));
    assert.ok(passing >= 60, `only ${passing} tests ran:\n${out.slice(-2000)}`);
  });
});
