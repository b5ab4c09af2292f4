/**
 * --security-label: the daemon offers FUSE_SECURITY_CTX, and a file the guest makes is stored
 * on the host with the label the guest's LSM sent along (checked with getfattr), under the
 * name --xattrmap gives it; one that cannot be stored with it is not made at all. Requests
 * are built as Linux 6.x builds them: the fuse_secctx_header extension after the arguments,
 * counted in fuse_in_header.total_extlen.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { ok, type FuseClient } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest } from '../support/connected';

const { EINVAL, EPERM } = require('node:os').constants.errno as Record<string, number>;

const LABEL = 'system_u:object_r:container_file_t:s0\0';

/** The extension area Linux appends: a fuse_secctx_header with `contexts` entries, padded to 8. */
function secctxExtension(contexts: Array<[name: string, value: string]>): Buffer {
  const records = contexts.map(([name, value]) => {
    const body = Buffer.concat([Buffer.from(`${name}\0`), Buffer.from(value)]);
    const rec = Buffer.alloc(abi.SECCTX_SIZE + Math.ceil(body.length / 8) * 8);
    abi.encodeSecctx(rec, 0, { size: Buffer.byteLength(value) });
    body.copy(rec, abi.SECCTX_SIZE);
    return rec;
  });
  const size = abi.SECCTX_HEADER_SIZE + records.reduce((n, r) => n + r.length, 0);
  const head = Buffer.alloc(abi.SECCTX_HEADER_SIZE);
  abi.encodeSecctxHeader(head, 0, { size, nrSecctx: contexts.length });
  return Buffer.concat([head, ...records]);
}

type Maker = 'CREATE' | 'MKDIR' | 'MKNOD' | 'SYMLINK';

/** Makes `name` in the root with one of the creating requests, extensions appended. */
async function make(c: FuseClient, kind: Maker, name: string, ext: Buffer | null): Promise<number> {
  let args: Buffer;
  let opcode: abi.Opcode;
  let reply = abi.ENTRY_OUT_SIZE;
  const n = Buffer.from(`${name}\0`);
  if (kind === 'CREATE') {
    const a = Buffer.alloc(abi.CREATE_IN_SIZE);
    abi.encodeCreateIn(a, 0, { flags: fs.constants.O_RDWR, mode: 0o100644, umask: 0, openFlags: 0 });
    [opcode, args, reply] = [abi.Opcode.CREATE, Buffer.concat([a, n]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE];
  } else if (kind === 'MKDIR') {
    const a = Buffer.alloc(abi.MKDIR_IN_SIZE);
    abi.encodeMkdirIn(a, 0, { mode: 0o755, umask: 0 });
    [opcode, args] = [abi.Opcode.MKDIR, Buffer.concat([a, n])];
  } else if (kind === 'MKNOD') {
    const a = Buffer.alloc(abi.MKNOD_IN_SIZE);
    abi.encodeMknodIn(a, 0, { mode: fs.constants.S_IFIFO | 0o644, rdev: 0, umask: 0 });
    [opcode, args] = [abi.Opcode.MKNOD, Buffer.concat([a, n])];
  } else {
    [opcode, args] = [abi.Opcode.SYMLINK, Buffer.concat([n, Buffer.from('target\0')])];
  }
  // Linux pads the arguments before the extensions to 8 bytes.
  const pad = ext ? Buffer.alloc((8 - (args.length % 8)) % 8) : Buffer.alloc(0);
  const body = ext ? Buffer.concat([args, pad, ext]) : args;
  const r = await c.request(opcode, 1n, body, reply, undefined, { totalExtlen: ext ? ext.length / 8 : 0 });
  return r.error;
}

/** A host xattr of a file (not following a symlink), or null. */
function hostXattr(file: string, name: string): string | null {
  try {
    return execFileSync('getfattr', ['-h', '--absolute-names', '--only-values', '-n', name, file], { encoding: 'latin1', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return null;
  }
}

const KINDS: Maker[] = ['CREATE', 'MKDIR', 'MKNOD', 'SYMLINK'];

describe('virtiofsd-ts --security-label', function () {
  this.timeout(60000);
  const connect = connectEachTest();

  it('offers FUSE_SECURITY_CTX and stores each new file, directory, fifo, symlink and O_TMPFILE file with the label the guest sent', async () => {
    const env = await connect('vfs-seclabel-', ['--sandbox=none', '--cache=never', '--security-label', '--xattr']);
    const { c, share } = env;
    assert.ok(BigInt(c.initOut!.flags2 >>> 0) & 1n, 'SECURITY_CTX in the INIT reply (flags2 bit 0)');
    for (const kind of KINDS) {
      assert.equal(await make(c, kind, `l-${kind}`, secctxExtension([['security.selinux', LABEL]])), 0, kind);
      assert.equal(hostXattr(path.join(share, `l-${kind}`), 'security.selinux'), LABEL, `${kind}: the host has the label`);
    }
    // O_TMPFILE: a file without a name, labelled all the same (read back through the daemon).
    const ext = secctxExtension([['security.selinux', LABEL]]);
    const t = Buffer.alloc(abi.CREATE_IN_SIZE);
    abi.encodeCreateIn(t, 0, { flags: fs.constants.O_RDWR, mode: 0o100600, umask: 0, openFlags: 0 });
    const tmp = await c.request(abi.Opcode.TMPFILE, 1n, Buffer.concat([t, ext]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE, undefined, { totalExtlen: ext.length / 8 });
    assert.equal(tmp.error, 0, 'TMPFILE');
    const g = Buffer.alloc(abi.GETXATTR_IN_SIZE);
    g.writeUInt32LE(256, 0);
    const got = await c.request(abi.Opcode.GETXATTR, abi.decodeEntryOut(tmp.body, 0).nodeid, Buffer.concat([g, Buffer.from('security.selinux\0')]), 256);
    assert.equal(got.body.toString('latin1'), LABEL, 'the O_TMPFILE file has the label');
    // A header with no context (the guest's LSM had no label to give): made, no label.
    assert.equal(await make(c, 'CREATE', 'none', secctxExtension([])), 0);
    assert.ok(fs.existsSync(path.join(share, 'none')));
    assert.equal(hostXattr(path.join(share, 'none'), 'security.selinux'), null);
  });

  it('with --xattrmap, the label is stored under the mapped name, and a file that cannot hold it is not made', async () => {
    const env = await connect('vfs-seclabel-', ['--sandbox=none', '--cache=never', '--security-label', '--xattrmap=:map:security.selinux:user.virtiofs.:']);
    const { c, share } = env;
    const ext = secctxExtension([['security.selinux', LABEL]]);
    assert.equal(await make(c, 'CREATE', 'f', ext), 0);
    assert.equal(await make(c, 'MKDIR', 'd', ext), 0);
    for (const n of ['f', 'd']) {
      assert.equal(hostXattr(path.join(share, n), 'user.virtiofs.security.selinux'), LABEL, n);
      assert.equal(hostXattr(path.join(share, n), 'security.selinux'), null, n);
    }
    // The guest reads it back under its own name.
    const f = ok(await c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    const g = Buffer.alloc(abi.GETXATTR_IN_SIZE);
    g.writeUInt32LE(256, 0);
    const got = await c.request(abi.Opcode.GETXATTR, f, Buffer.concat([g, Buffer.from('security.selinux\0')]), 256);
    assert.equal(got.error, 0);
    assert.equal(got.body.toString('latin1'), LABEL);
    // user.* names are for regular files and directories only: a symlink or a fifo cannot
    // hold the label there, so the request fails and leaves nothing behind.
    for (const kind of ['SYMLINK', 'MKNOD'] as const) {
      assert.equal(await make(c, kind, `x-${kind}`, ext), -EPERM, kind);
      assert.ok(!fs.existsSync(path.join(share, `x-${kind}`)) && !isLink(path.join(share, `x-${kind}`)), `${kind}: nothing left`);
    }
    assert.equal(env.daemon.logLine<{ level: number }>('a new file could not be stored with its security label, so it was not made').level, 40);
    // The name is free again.
    assert.equal(await make(c, 'SYMLINK', 'x-SYMLINK', null), 0);
  });

  it('without the option (or for a guest that does not offer it): not offered, and a label sent anyway is not stored', async () => {
    const env = await connect('vfs-seclabel-', ['--sandbox=none', '--cache=never']);
    assert.equal(BigInt(env.c.initOut!.flags2 >>> 0) & 1n, 0n);
    assert.equal(await make(env.c, 'CREATE', 'f', secctxExtension([['security.selinux', LABEL]])), 0);
    assert.equal(hostXattr(path.join(env.share, 'f'), 'security.selinux'), null);
    await disconnectDaemon(env);
    const old = await connect('vfs-seclabel-', ['--sandbox=none', '--cache=never', '--security-label'], {}, undefined, {}, undefined, { flags2: 0xa });
    assert.equal(BigInt(old.c.initOut!.flags2 >>> 0) & 1n, 0n);
    assert.equal(old.daemon.logLine<{ level: number }>('security labels not enabled: the guest kernel does not offer FUSE_SECURITY_CTX').level, 50);
  });

  it('malformed extensions get EINVAL and make nothing; the daemon serves on', async () => {
    const env = await connect('vfs-seclabel-', ['--sandbox=none', '--cache=never', '--security-label']);
    const { c, share } = env;
    const a = Buffer.alloc(abi.MKDIR_IN_SIZE);
    abi.encodeMkdirIn(a, 0, { mode: 0o755, umask: 0 });
    const args = Buffer.concat([a, Buffer.from('bad\0'), Buffer.alloc(4)]);
    const two = secctxExtension([['security.selinux', LABEL], ['security.smack', 'x']]);
    const short = secctxExtension([['security.selinux', LABEL]]);
    short.writeUInt32LE(4096, abi.SECCTX_HEADER_SIZE); // a value longer than its record
    const cases: Array<[string, Buffer, number]> = [
      ['total_extlen past the arguments', args, 64],
      ['two contexts', Buffer.concat([args, two]), two.length / 8],
      ['a value past its record', Buffer.concat([args, short]), short.length / 8],
    ];
    for (const [what, body, extlen] of cases) {
      const r = await c.request(abi.Opcode.MKDIR, 1n, body, abi.ENTRY_OUT_SIZE, undefined, { totalExtlen: extlen });
      assert.equal(r.error, -EINVAL, what);
      assert.ok(!fs.existsSync(path.join(share, 'bad')), `${what}: nothing made`);
    }
    ok(await c.lookup(1n, '.'), 'still serving');
    // A context named as no LSM names one: a way to store attributes with --xattr off, or to
    // give a host file capabilities. Refused, and the file taken back.
    // (A well-formed vfs_cap_data, revision 2, CAP_NET_RAW permitted and effective, which the
    // host would take.)
    const capability = '\x01\x00\x00\x02' + '\x00\x20\x00\x00' + '\x00'.repeat(12);
    for (const name of ['trusted.overlay.opaque', 'user.x', 'security.capability']) {
      assert.equal(await make(c, 'CREATE', 'named', secctxExtension([[name, capability]])), -EINVAL, name);
      assert.ok(!fs.existsSync(path.join(share, 'named')), `${name}: nothing left`);
    }
  });
});

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
