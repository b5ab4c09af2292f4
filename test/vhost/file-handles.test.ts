/**
 * --inode-file-handles: every inode the guest holds a lookup of used to keep an O_PATH
 * descriptor open here, so a guest holding more inodes than the open file limit allows got
 * EMFILE. With prefer (the default, as in the Rust virtiofsd), past three quarters of the
 * limit new inodes are kept as file handles and opened only while a request uses them; with
 * mandatory every inode is. The daemon runs under `prlimit --nofile=200` here and the front
 * end holds 600 inodes at once, as a guest does after `ls -lR` of a large tree.
 */
import { strict as assert } from 'node:assert';
import * as abi from '../../src/fuse/abi';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ok, type FuseClient } from '../frontend/fuse-client';
import { disconnectDaemon, connectEachTest, type ConnectedDaemon } from '../support/connected';

const FILES = 600;
const LIMIT = ['prlimit', '--nofile=200:200'];

interface InodeTable {
  inodesAsFileHandles?: number;
  inodeFdsOpen?: number;
  inodesEverAsFileHandles?: number;
}

function fill(share: string): void {
  fs.mkdirSync(path.join(share, 'd'));
  for (let i = 0; i < FILES; i++) fs.writeFileSync(path.join(share, 'd', `f${i}`), `file ${i}`);
}

/** LOOKUPs every file (never forgotten), then GETATTR, OPEN, READ and RELEASE of each; returns the LOOKUP errors. */
async function holdAndUse(c: FuseClient): Promise<number[]> {
  const d = ok(await c.lookup(1n, 'd'), 'LOOKUP d').nodeid;
  const nodes: bigint[] = [];
  const errors: number[] = [];
  for (let i = 0; i < FILES; i++) {
    const r = await c.lookup(d, `f${i}`);
    if (r.error) errors.push(r.error);
    else nodes.push(r.value!.nodeid);
  }
  if (errors.length) return errors;
  for (let i = 0; i < FILES; i++) {
    assert.equal(ok(await c.getattr(nodes[i]), `GETATTR f${i}`).attr.size, BigInt(`file ${i}`.length));
    const fh = ok(await c.open(nodes[i], fs.constants.O_RDONLY), `OPEN f${i}`).fh;
    assert.equal(ok(await c.read(fh, 0, 64), `READ f${i}`).toString(), `file ${i}`);
    ok(await c.release(fh), `RELEASE f${i}`);
  }
  return errors;
}

const inodeTable = (env: ConnectedDaemon): InodeTable => env.daemon.logLine<InodeTable>('inode table at exit');

describe('virtiofsd-ts keeps inodes as file handles past its descriptor budget (--inode-file-handles)', function () {
  this.timeout(120000);
  const connect = connectEachTest();

  it('with never, a front end holding 600 inodes under a limit of 200 descriptors gets EMFILE', async () => {
    const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fh-share-'));
    fill(share);
    const env = await connect('vfs-fh-', ['--inode-file-handles=never'], {}, share, {}, LIMIT);
    const errors = await holdAndUse(env.c);
    assert.ok(errors.length > 0 && errors.every((e) => e === -os.constants.errno.EMFILE), `LOOKUP errors: ${JSON.stringify(errors.slice(0, 5))}`);
    await disconnectDaemon(env);
    fs.rmSync(share, { recursive: true, force: true });
  });

  it('a parked inode whose file was removed and whose inode number went to a new file: the new file gets a node id of its own', async () => {
    // ext4 gives a freed inode number to the next file made in the same group at once; the
    // key (device, inode number) is the same, the file handle is not.
    const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fh-share-'));
    fs.writeFileSync(path.join(share, 'old'), 'old');
    const env = await connect('vfs-fh-', ['--inode-file-handles=mandatory'], {}, share);
    const { c } = env;
    const old = ok(await c.lookup(1n, 'old'), 'LOOKUP old');
    // The guest removes it but keeps its lookup (an open file's inode, or one not forgotten yet).
    assert.equal((await c.request(abi.Opcode.UNLINK, 1n, Buffer.from('old\0'), 0)).error, 0, 'UNLINK old');
    const args = Buffer.alloc(abi.CREATE_IN_SIZE);
    abi.encodeCreateIn(args, 0, { flags: fs.constants.O_RDWR | fs.constants.O_CREAT, mode: 0o100644, umask: 0, openFlags: 0 });
    const r = await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([args, Buffer.from('new\0')]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
    assert.equal(r.error, 0, 'CREATE new');
    const created = abi.decodeEntryOut(r.body, 0);
    assert.equal(created.attr.ino, old.attr.ino, 'the file system gave the new file the removed one\'s inode number (what this test needs)');
    assert.notEqual(created.nodeid, old.nodeid, 'a node id of its own');
    assert.equal(ok(await c.getattr(created.nodeid), 'GETATTR new').attr.size, 0n);
    assert.equal(ok(await c.lookup(1n, 'new'), 'LOOKUP new').nodeid, created.nodeid);
    assert.notEqual((await c.getattr(old.nodeid)).error, 0, 'the removed file\'s node id is stale');
    await disconnectDaemon(env);
    fs.rmSync(share, { recursive: true, force: true });
  });

  for (const [mode, extra] of [['prefer (the default)', []], ['mandatory', ['--inode-file-handles=mandatory']], ['mandatory, through JS', ['--inode-file-handles=mandatory', '--log-level=trace']]] as const) {
    it(`with ${mode}, the 600 inodes stay usable: GETATTR, OPEN, READ, RELEASE of each`, async () => {
      const share = fs.mkdtempSync(path.join(os.tmpdir(), 'vfs-fh-share-'));
      fill(share);
      const env = await connect('vfs-fh-', [...extra], {}, share, {}, LIMIT);
      assert.deepEqual(await holdAndUse(env.c), [], 'no LOOKUP failed');
      // A directory kept as a file handle still resolves names.
      const d = ok(await env.c.lookup(1n, 'd'), 'LOOKUP d again').nodeid;
      assert.equal(ok(await env.c.lookup(d, 'f7'), 'LOOKUP d/f7').attr.size, 6n);
      // A file removed on the host behind a parked inode: an error, not a crash.
      const gone = ok(await env.c.lookup(d, 'f599'), 'LOOKUP f599').nodeid;
      fs.rmSync(path.join(share, 'd', 'f599'));
      const r = await env.c.getattr(gone);
      await disconnectDaemon(env);
      const t = inodeTable(env);
      if (mode.startsWith('mandatory')) {
        assert.equal(r.error, -os.constants.errno.ESTALE, 'GETATTR of a parked inode whose file is gone');
        assert.ok(t.inodesEverAsFileHandles! >= FILES + 1, JSON.stringify(t));
      } else {
        assert.ok(r.error === 0 || r.error === -os.constants.errno.ESTALE, `GETATTR: ${r.error}`);
        assert.ok(t.inodesEverAsFileHandles! >= FILES - 150, `most inodes past the budget of 150: ${JSON.stringify(t)}`);
      }
      assert.ok(t.inodeFdsOpen! <= 150, `descriptors held within the budget: ${JSON.stringify(t)}`);
      fs.rmSync(share, { recursive: true, force: true });
    });
  }
});
