/**
 * --syslog: the daemon's log goes to the system logger at /dev/log instead of stderr, before
 * and after the sandbox restart, the queues' FUSE sessions too, from inside the sandbox,
 * whose root has no /dev/log. The daemon runs in a mount namespace of its own whose /dev/log is a datagram
 * socket this test reads, as a system logger would.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { native } from '../../src/native';
import { syslogMessage } from '../../src/log';
import { startDaemon } from '../frontend/daemons';
import { ok } from '../frontend/fuse-client';
import { connectDaemon, disconnectDaemon, type ConnectedDaemon } from '../support/connected';

/**
 * A wrapper that runs the daemon with a /dev of its own: the host's null, zero, random and
 * urandom, and `logSocket` (if given) as /dev/log.
 */
function privateDev(logSocket: string | null): string[] {
  const script = [
    'set -e',
    'old=$(mktemp -d)',
    'mount --rbind /dev "$old"',
    'mount -t tmpfs -o mode=755 tmpfs /dev',
    'for n in null zero random urandom; do touch /dev/$n; mount --bind "$old/$n" /dev/$n; done',
    ...(logSocket ? [`touch /dev/log; mount --bind '${logSocket}' /dev/log`] : []),
    'umount -l "$old"',
    'exec "$@"',
  ].join('\n');
  return ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh'];
}

/** The datagrams that came to the receiver so far. */
function drain(fd: number): string[] {
  const out: string[] = [];
  const buf = Buffer.alloc(65536);
  for (;;) {
    try {
      out.push(buf.toString('utf8', 0, fs.readSync(fd, buf)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return out;
      throw e;
    }
  }
}

describe('virtiofsd-ts --syslog', function () {
  this.timeout(60000);
  let env: ConnectedDaemon | null = null;
  let recvFd = -1;
  let dir = '';
  // A system logger reads as messages come (a unix datagram socket queues only a few).
  let received: string[] = [];
  let reader: NodeJS.Timeout | null = null;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-syslog-'));
    recvFd = native.unixDatagram(path.join(dir, 'log'), true);
    received = [];
    reader = setInterval(() => received.push(...drain(recvFd)), 2);
  });
  afterEach(async () => {
    if (env) await disconnectDaemon(env).catch(() => undefined);
    env = null;
    clearInterval(reader!);
    fs.closeSync(recvFd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('turns a pino line into an RFC 3164 message: facility user, the level as severity, the text, then the other fields', () => {
    const at = new Date(2026, 11, 4, 9, 5, 7);
    const line = (level: number, extra = {}): string => JSON.stringify({ level, time: 1, pid: 42, ...extra, msg: 'hello' });
    assert.equal(syslogMessage(line(30), at), '<14>Dec  4 09:05:07 virtiofsd-ts[42]: hello');
    assert.equal(syslogMessage(line(50, { queue: 1, errno: 5 }), at), '<11>Dec  4 09:05:07 virtiofsd-ts[42]: hello {"queue":1,"errno":5}');
    assert.deepEqual([60, 40, 20, 10].map((l) => syslogMessage(line(l), at).slice(0, 4)), ['<10>', '<12>', '<15>', '<15>']);
  });

  it('in the default sandbox, before and after its restart and from the FUSE session of a queue: every line to /dev/log, none to stderr', async () => {
    env = await connectDaemon('vfs-syslog-', ['--cache=never', '--syslog', '--log-level=debug'], {}, undefined, {}, privateDev(path.join(dir, 'log')));
    ok(await env.c.lookup(1n, '.'), 'LOOKUP');
    const pid = env.daemon.proc.pid!;
    const got = [...received, ...drain(recvFd)];
    const tag = `virtiofsd-ts[${pid}]: `;
    assert.ok(got.length > 0 && got.every((m) => /^<\d+>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d /.test(m) && m.includes(tag)), got.join('\n'));
    const find = (text: string): string | undefined => got.find((m) => m.includes(`${tag}${text}`));
    assert.match(find('running in the sandbox') ?? '', /^<14>/, 'info, from the process started again in the sandbox');
    assert.match(find('FUSE session started') ?? '', /"queue":1/, 'from the queue\'s FUSE session');
    assert.match(find('entering the sandbox') ?? '', /^<15>/, 'debug, from before the restart');
    assert.doesNotMatch(env.daemon.output(), /"msg"/, 'nothing logged to stderr');
  });

  it('without a system logger: the start fails, saying so', async () => {
    const d = startDaemon('ts', {
      sharedDir: dir, socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: ['--syslog'], wrapper: privateDev(null),
    });
    const exit = await d.waitExit(10000);
    assert.equal(exit.code, 1, d.describeExit());
    assert.match(d.output(), /--syslog: cannot connect to the system logger at \/dev\/log \(.*ENOENT/);
  });
});
