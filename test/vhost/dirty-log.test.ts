/**
 * Dirty-page logging for live migration (VHOST_F_LOG_ALL with LOG_SHMFD), as QEMU drives it:
 * SET_LOG_BASE hands over a shared bitmap (a bit per 4 KiB guest page), SET_FEATURES with
 * LOG_ALL turns logging on. From then on every page the daemon writes, reply and READ data
 * and the used ring, must be marked, whoever serves the request (the native fast path, the
 * I/O pool, the FUSE server in JS); pages it does not write must not be, and nothing is
 * marked once logging is off again.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { native } from '../../src/native';
import { ok } from '../frontend/fuse-client';
import { connectDaemon, disconnectDaemon, type ConnectedDaemon } from '../support/connected';

const PAGE = 4096;
const VHOST_F_LOG_ALL = 26n;
const MEMORY = 64 << 20;

describe('dirty-page logging (migration)', function () {
  this.timeout(60000);
  let env: ConnectedDaemon | null = null;
  let logFd = -1;
  afterEach(async () => {
    if (env) await disconnectDaemon(env);
    env = null;
    if (logFd >= 0) native.close(logFd);
    logFd = -1;
  });

  /** The daemon with a file of 64 KiB, and a dirty log mapped and turned on. */
  async function logging(args: string[]): Promise<{ env: ConnectedDaemon; log: Buffer; nodeid: bigint; fh: bigint }> {
    env = await connectDaemon('vfs-dirty-', args);
    fs.writeFileSync(path.join(env.share, 'f'), Buffer.alloc(64 * 1024, 0x61));
    const e = ok(await env.c.lookup(1n, 'f'), 'LOOKUP');
    const o = ok(await env.c.open(e.nodeid, fs.constants.O_RDONLY), 'OPEN');
    const bytes = MEMORY / PAGE / 8;
    logFd = native.memfdCreate('dirty-log', bytes);
    const log = native.mmapShared(logFd, bytes);
    assert.equal(await env.fe.setLogBase(logFd, bytes), 0n, 'SET_LOG_BASE refused');
    await env.fe.setFeatures(env.fe.ackedFeatures | (1n << VHOST_F_LOG_ALL), true);
    return { env, log, nodeid: e.nodeid, fh: o.fh };
  }

  const marked = (log: Buffer): number[] => {
    const pages: number[] = [];
    for (let i = 0; i < log.length; i++) for (let b = 0; b < 8; b++) if (log[i] & (1 << b)) pages.push(i * 8 + b);
    return pages;
  };

  /** A READ of 4 KiB into a reply buffer of its own pages: the reply's and the request's pages. */
  async function read4k(e: ConnectedDaemon, nodeid: bigint, fh: bigint): Promise<{ replyPages: number[]; requestPage: number }> {
    const mem = e.fe.memory!;
    const req = mem.alloc(PAGE, PAGE);
    const rep = mem.alloc(3 * PAGE, PAGE);
    const len = abi.IN_HEADER_SIZE + abi.READ_IN_SIZE;
    abi.encodeInHeader(req.buf, 0, { len, opcode: abi.Opcode.READ, unique: 77n, nodeid, uid: 0, gid: 0, pid: 1, totalExtlen: 0 });
    abi.encodeReadIn(req.buf, abi.IN_HEADER_SIZE, { fh, offset: 0n, size: PAGE, readFlags: 0, lockOwner: 0n, flags: 0 });
    // The data starts 16 bytes into the second page, so it covers the third one too.
    const used = await e.fe.queue(1).submit(
      [{ gpa: req.gpa, len }],
      [
        { gpa: rep.gpa + PAGE - 16, len: 16 },
        { gpa: rep.gpa + PAGE, len: PAGE },
      ],
    );
    assert.equal(used.len, 16 + PAGE);
    assert.equal(rep.buf[PAGE + 100], 0x61);
    return { replyPages: [(rep.gpa >> 12), (rep.gpa >> 12) + 1], requestPage: req.gpa >> 12 };
  }

  for (const [label, args] of [
    ['served by the native fast path', ['--cache=never']],
    ['with an I/O pool (--thread-pool-size=4)', ['--cache=never', '--thread-pool-size=4']],
  ] as const) {
    it(`marks a READ's reply pages and the used ring, ${label}`, async () => {
      const { env: e, log, nodeid, fh } = await logging([...args]);
      log.fill(0);
      const { replyPages, requestPage } = await read4k(e, nodeid, fh);
      const pages = marked(log);
      for (const p of replyPages) assert.ok(pages.includes(p), `reply page ${p} not marked (marked: ${pages})`);
      const usedPage = Math.floor(e.fe.queue(1).vq.usedGpa / PAGE);
      assert.ok(pages.includes(usedPage), `used ring page ${usedPage} not marked (marked: ${pages})`);
      assert.ok(!pages.includes(requestPage), 'the request page, which the daemon only reads, is marked');
      assert.ok(pages.length <= 4, `marked ${pages.length} pages for one READ: ${pages}`);
    });
  }

  it('marks the reply of a request the JS server answers, and nothing once logging is off', async () => {
    const { env: e, log, nodeid, fh } = await logging(['--cache=never']);
    log.fill(0);
    // IOCTL is answered by the FUSE server in JS.
    ok(await e.c.ioctl(1n), 'IOCTL');
    const usedPage = Math.floor(e.fe.queue(1).vq.usedGpa / PAGE);
    const pages = marked(log);
    assert.ok(pages.includes(usedPage), `used ring page not marked (marked: ${pages})`);
    assert.ok(pages.length >= 2, `only ${pages.length} pages marked: the reply's is missing`);

    await e.fe.setFeatures(e.fe.ackedFeatures & ~(1n << VHOST_F_LOG_ALL), true);
    log.fill(0);
    await read4k(e, nodeid, fh);
    assert.deepEqual(marked(log), []);
  });

  it('refuses LOG_ALL without a log, and a log it cannot map, and goes on serving', async () => {
    env = await connectDaemon('vfs-dirty-', ['--cache=never']);
    await assert.rejects(env.fe.setFeatures(env.fe.ackedFeatures | (1n << VHOST_F_LOG_ALL), true), /REPLY_ACK 1/);
    logFd = native.memfdCreate('dirty-log', PAGE);
    // A log larger than its memfd.
    assert.equal(await env.fe.setLogBase(logFd, 16 * PAGE), 1n);
    await assert.rejects(env.fe.setFeatures(env.fe.ackedFeatures | (1n << VHOST_F_LOG_ALL), true), /REPLY_ACK 1/);
    ok(await env.c.getattr(1n), 'GETATTR after the refusals');
  });

  it('maps at most 1024 logs on one connection (each stays mapped until it ends), then refuses, and goes on serving', async () => {
    env = await connectDaemon('vfs-dirty-', ['--cache=never']);
    logFd = native.memfdCreate('dirty-log', PAGE);
    for (let i = 0; i < 1024; i++) assert.equal(await env.fe.setLogBase(logFd, PAGE), 0n, `log ${i} mapped`);
    assert.equal(await env.fe.setLogBase(logFd, PAGE), 1n, 'the 1025th refused');
    for (let waited = 0; !/dirty logs mapped on this connection/.test(env.daemon.output()); waited += 20) {
      assert.ok(waited < 3000, 'the refusal was logged');
      await new Promise((r) => setTimeout(r, 20));
    }
    ok(await env.c.getattr(1n), 'GETATTR after the refusal');
  });
});
