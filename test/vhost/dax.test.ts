/**
 * The DAX window (--dax-window-size, src/dax/window.ts) against the test front end's side of
 * vhost-user shared memory (test/frontend/shmem-window.ts, which maps what the daemon sends
 * with mmap as QEMU's SHMEM series does). No released QEMU offers a window yet
 * (../shared/docs/PROTOCOL.md), so this is where it is tested: the guest's SETUPMAPPING and
 * REMOVEMAPPING as Linux sends them (2 MiB ranges, fh -1, a read mapping upgraded for
 * writing), what the front end ends up with (the file's bytes, shared both ways), and what a
 * hostile guest gets for ranges outside the window or out of line.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as abi from '../../src/fuse/abi';
import { bit, decodeShmemConfig, FrontendReq, ProtocolFeature } from '../../src/vhost/messages';
import { defaultProtocolMask } from '../frontend/frontend';
import { LINUX_6_1_INIT, ok } from '../frontend/fuse-client';
import { ShmemWindow } from '../frontend/shmem-window';
import { connectEachTest, disconnectDaemon, type ConnectedDaemon } from '../support/connected';
import { readState } from '../support/device-state';

const MiB = 1 << 20;
const WINDOW = 64 * MiB;
const { EINVAL, EIO, ENOSYS, EROFS } = os.constants.errno;
const READ = abi.SetupmappingFlags.READ;
const WRITE = abi.SetupmappingFlags.WRITE;
/** What Linux offers when mounted with -o dax: its 6.1 flags and MAP_ALIGNMENT. */
const DAX_INIT = { flags: LINUX_6_1_INIT.flags | Number(abi.InitFlags.MAP_ALIGNMENT) };

/** 8 MiB whose every 4-byte word is its own offset. */
function patterned(): Buffer {
  const b = Buffer.alloc(8 * MiB);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(i, i);
  return b;
}

describe('virtiofsd-ts DAX window (--dax-window-size) against a front end that maps it', function () {
  this.timeout(30000);
  const connect = connectEachTest();

  async function withWindow(extra: string[] = []): Promise<{ env: ConnectedDaemon; win: ShmemWindow }> {
    const win = new ShmemWindow(WINDOW);
    const env = await connect('vfs-dax-', ['--sandbox=none', '--cache=never', `--dax-window-size=${WINDOW / MiB}M`, ...extra], {}, undefined, {
      protocolMask: defaultProtocolMask({ backendReq: true }) | bit(ProtocolFeature.SHMEM),
      backendHandler: win.handler,
    }, undefined, DAX_INIT);
    return { env, win };
  }

  async function setup(env: ConnectedDaemon, nodeid: bigint, foffset: number, len: number, moffset: number, flags: bigint): Promise<number> {
    const a = Buffer.alloc(abi.SETUPMAPPING_IN_SIZE);
    abi.encodeSetupmappingIn(a, 0, { fh: (1n << 64n) - 1n, foffset: BigInt(foffset), len: BigInt(len), flags, moffset: BigInt(moffset) });
    return (await env.c.request(abi.Opcode.SETUPMAPPING, nodeid, a, 0)).error;
  }

  async function remove(env: ConnectedDaemon, ranges: Array<[number, number]>, count = ranges.length): Promise<number> {
    const a = Buffer.alloc(abi.REMOVEMAPPING_IN_SIZE + ranges.length * abi.REMOVEMAPPING_ONE_SIZE);
    abi.encodeRemovemappingIn(a, 0, { count });
    ranges.forEach(([moffset, len], i) => abi.encodeRemovemappingOne(a, abi.REMOVEMAPPING_IN_SIZE + i * abi.REMOVEMAPPING_ONE_SIZE, { moffset: BigInt(moffset), len: BigInt(len) }));
    return (await env.c.request(abi.Opcode.REMOVEMAPPING, 1n, a, 0)).error;
  }

  it('offers the window (SHMEM, GET_SHMEM_CONFIG, MAP_ALIGNMENT) and maps, upgrades and removes 2 MiB ranges of a file as Linux asks', async () => {
    const { env, win } = await withWindow();
    assert.ok(env.fe.protocolFeatures & bit(ProtocolFeature.SHMEM), 'SHMEM offered');
    const config = await env.fe.request(FrontendReq.GET_SHMEM_CONFIG, Buffer.alloc(0), { hasReply: true });
    assert.deepEqual(decodeShmemConfig(config!), [WINDOW], 'region 0 is the window');
    assert.ok(BigInt(env.c.initOut!.flags >>> 0) & abi.InitFlags.MAP_ALIGNMENT, 'MAP_ALIGNMENT in the INIT reply');
    assert.equal(env.c.initOut!.mapAlignment, 21, '2 MiB ranges');

    const data = patterned();
    fs.writeFileSync(path.join(env.share, 'f'), data);
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    // A read mapping of the file's second 2 MiB at 4 MiB of the window.
    assert.equal(await setup(env, f, 2 * MiB, 2 * MiB, 4 * MiB, READ), 0);
    const m = win.mappings.get(4 * MiB);
    assert.ok(m, 'the front end mapped it');
    assert.equal(m.write, false);
    assert.ok(m.bytes.equals(data.subarray(2 * MiB, 4 * MiB)), 'the window shows the file\'s bytes from 2 MiB');
    // The same range again for writing (Linux upgrades a read mapping so): unmapped, then mapped.
    assert.equal(await setup(env, f, 2 * MiB, 2 * MiB, 4 * MiB, READ | WRITE), 0);
    assert.deepEqual(win.seen.map((s) => `${s.request} ${s.shmOffset / MiB}+${s.len / MiB} ${s.result}`), ['MAP 4+2 0', 'UNMAP 4+2 0', 'MAP 4+2 0']);
    const w = win.mappings.get(4 * MiB)!;
    assert.equal(w.write, true);
    // A store into the window is a store into the host file, and the other way round.
    w.bytes.write('written through the window', 0);
    assert.equal(fs.readFileSync(path.join(env.share, 'f')).subarray(2 * MiB, 2 * MiB + 26).toString(), 'written through the window');
    const fd = fs.openSync(path.join(env.share, 'f'), 'r+');
    fs.writeSync(fd, Buffer.from('from the host'), 0, 13, 2 * MiB + 100);
    fs.closeSync(fd);
    assert.equal(w.bytes.subarray(100, 113).toString(), 'from the host');
    // A second range elsewhere, then a REMOVEMAPPING of both (Linux batches its reclaim).
    assert.equal(await setup(env, f, 0, 2 * MiB, 10 * MiB, READ), 0);
    assert.equal(win.mappings.size, 2);
    assert.equal(await remove(env, [[4 * MiB, 2 * MiB], [10 * MiB, 2 * MiB]]), 0);
    assert.equal(win.mappings.size, 0, 'both unmapped');
    // Removing what is no longer mapped is no error (the guest and we agree it is gone).
    assert.equal(await remove(env, [[4 * MiB, 2 * MiB]]), 0);
    assert.ok(win.seen.every((s) => s.result === 0), JSON.stringify(win.seen));
  });

  it('refuses ranges outside the window or off the 2 MiB grid, a directory, and a malformed REMOVEMAPPING, and maps on afterwards', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    fs.mkdirSync(path.join(env.share, 'd'));
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    const d = ok(await env.c.lookup(1n, 'd'), 'LOOKUP d').nodeid;
    assert.equal(await setup(env, f, 0, 2 * MiB, WINDOW, READ), -EINVAL, 'at the window\'s end');
    assert.equal(await setup(env, f, 0, 4 * MiB, WINDOW - 2 * MiB, READ), -EINVAL, 'running past the end');
    assert.equal(await setup(env, f, 0, 2 * MiB, 2 ** 52, READ), -EINVAL, 'far past the end');
    assert.equal(await setup(env, f, 0, 2 * MiB, 4096, READ), -EINVAL, 'a window offset off the grid');
    assert.equal(await setup(env, f, 4096, 2 * MiB, 0, READ), -EINVAL, 'a file offset off the grid');
    assert.equal(await setup(env, f, 0, 0, 0, READ), -EINVAL, 'no length');
    assert.equal(await setup(env, f, 0, 4096, 0, READ), -EINVAL, 'a length off the grid');
    assert.equal(await setup(env, d, 0, 2 * MiB, 0, READ), -EINVAL, 'a directory');
    assert.ok((await setup(env, 1n << 40n, 0, 2 * MiB, 0, READ)) < 0, 'an unknown node');
    assert.equal(await remove(env, [[0, 2 * MiB]], 2), -EINVAL, 'a count past the ranges sent');
    assert.equal(await remove(env, [], 0), -EINVAL, 'no range');
    assert.equal(await remove(env, [[WINDOW, 2 * MiB]]), -EINVAL, 'a range past the window');
    assert.equal(win.seen.length, 0, 'nothing reached the front end');
    // A range overlapping two mappings replaces both (whole), as the front end requires.
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), 0);
    assert.equal(await setup(env, f, 2 * MiB, 2 * MiB, 2 * MiB, READ), 0);
    assert.equal(await setup(env, f, 4 * MiB, 4 * MiB, 0, READ), 0);
    assert.deepEqual([...win.mappings.keys()], [0]);
    assert.equal(win.mappings.get(0)!.len, 4 * MiB);
    // A guest with 64 KiB pages removes up to 4096 ranges at once (not 256).
    assert.equal(await remove(env, Array.from({ length: 300 }, (): [number, number] => [0, 2 * MiB])), 0);
    assert.equal(win.mappings.size, 0);
    assert.ok(win.seen.every((s) => s.result === 0), JSON.stringify(win.seen));
  });

  it('a device reset empties the table (the front end dropped its mappings); a read-only share maps for reading only', async () => {
    const { env, win } = await withWindow(['--readonly']);
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ | WRITE), -EROFS);
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), 0);
    // A new FUSE session on the same device (no reset): what the last one mapped goes.
    ok(await env.c.init(DAX_INIT), 'a second INIT');
    const f2 = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f in the second session').nodeid;
    assert.equal(await setup(env, f2, 0, 2 * MiB, 2 * MiB, READ), 0);
    assert.deepEqual(win.seen.map((s) => `${s.request} ${s.shmOffset / MiB}`), ['MAP 0', 'UNMAP 0', 'MAP 2']);
    assert.deepEqual([...win.mappings.keys()], [2 * MiB]);
    // QEMU resets the device at a guest reboot, and drops the window's mappings with it.
    const bases = await env.fe.stopQueues();
    await env.fe.resetDevice();
    win.clear();
    const before = win.seen.length;
    await env.fe.startQueues(bases.map(() => 0), { resetRings: true });
    ok(await env.c.init(DAX_INIT), 'INIT after the reset');
    const again = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f in the new session').nodeid;
    assert.equal(await setup(env, again, 0, 2 * MiB, 2 * MiB, READ), 0, 'mapped again without an unmap the front end would refuse');
    assert.deepEqual(win.seen.slice(before).map((s) => s.request), ['MAP'], 'nothing unmapped after the reset');
    await disconnectDaemon(env);
  });

  it('refuses a migration\'s save while ranges are mapped (the destination\'s window starts empty), and saves once they are removed', async () => {
    const win = new ShmemWindow(WINDOW);
    const env = await connect('vfs-dax-', ['--sandbox=none', `--dax-window-size=${WINDOW / MiB}M`], {}, undefined, {
      protocolMask: defaultProtocolMask({ backendReq: true }) | bit(ProtocolFeature.SHMEM) | bit(ProtocolFeature.DEVICE_STATE),
      backendHandler: win.handler,
    }, undefined, DAX_INIT);
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), 0);
    const bases = await env.fe.stopQueues();
    assert.notEqual((await readState(env.fe)).check, 0n, 'CHECK_DEVICE_STATE reports the save failed');
    // The migration failed: the guest goes on here.
    await env.fe.startQueues(bases);
    assert.equal(await remove(env, [[0, 2 * MiB]]), 0);
    await env.fe.stopQueues();
    assert.equal((await readState(env.fe)).check, 0n, 'saved once nothing is mapped');
  });

  it('a front end that refuses a map gives the guest EIO and nothing is recorded; without a backend channel EOPNOTSUPP', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    win.refuseNext = 1;
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), -EIO);
    assert.equal(win.mappings.size, 0);
    // (The daemon asked whether a mapping it lost track of was in the way: none was.)
    // Nothing was recorded as mapped: the next map of the range sends no unmap first.
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), 0);
    assert.deepEqual(win.seen.map((x) => `${x.request} ${x.result}`), ['MAP 1', 'UNMAP 1', 'MAP 0']);

    const plain = await connect('vfs-dax-', ['--sandbox=none', `--dax-window-size=${WINDOW / MiB}M`], {}, undefined, {
      protocolMask: defaultProtocolMask() | bit(ProtocolFeature.SHMEM),
    }, undefined, DAX_INIT);
    fs.writeFileSync(path.join(plain.share, 'f'), patterned());
    const g = ok(await plain.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    assert.equal(await setup(plain, g, 0, 2 * MiB, 0, READ), -os.constants.errno.EOPNOTSUPP);
    ok(await plain.c.getattr(g), 'GETATTR still served');
  });

  it('a front end that does not answer: EIO after 5 s while everything else is served; its late answer still counts', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    win.silent = true;
    const started = Date.now();
    const waiting = setup(env, f, 0, 2 * MiB, 0, READ);
    // The main thread does not wait with it: vhost-user requests and FUSE requests go on.
    await sleep(500);
    assert.ok((await env.fe.getFeatures()) > 0n);
    ok(await env.c.getattr(f), 'GETATTR while the map waits');
    ok(await env.c.statfs(1n), 'STATFS while the map waits');
    assert.equal(await waiting, -EIO);
    assert.ok(Date.now() - started >= 4500, `answered after ${Date.now() - started} ms`);
    // The front end did map it, and says so late. The guest was told it failed and will not
    // use or remove the range: the daemon unmaps it, and the window is empty again.
    win.silent = false;
    env.fe.backendSend(win.lateAnswers());
    await sleep(200);
    assert.deepEqual(win.seen.map((x) => `${x.request} ${x.result}`), ['MAP 0', 'UNMAP 0']);
    assert.equal(win.mappings.size, 0);
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ | WRITE), 0);
    assert.equal(win.mappings.size, 1);
  });

  it('a queue that stops while a map waits does not wait for the front end; the answer, when it comes, still counts', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    win.silent = true;
    // Three maps in flight: the first is sent and waits, the other two wait their turn.
    const waiting = Promise.all([setup(env, f, 0, 2 * MiB, 4 * MiB, READ), setup(env, f, 0, 2 * MiB, 6 * MiB, READ), setup(env, f, 0, 2 * MiB, 8 * MiB, READ)]);
    await sleep(300);
    // QEMU stops the queues (a VM pause) and reads no backend message until they are stopped.
    const started = Date.now();
    const bases = await env.fe.stopQueues();
    assert.ok(Date.now() - started < 2000, `the stop took ${Date.now() - started} ms`);
    assert.deepEqual(await waiting, [-EIO, -EIO, -EIO]);
    assert.equal(win.seen.length, 1, 'the maps behind the first were not sent');
    // The front end then does what it was sent; the guest was told it failed, so it goes again.
    win.silent = false;
    env.fe.backendSend(win.lateAnswers());
    await env.fe.startQueues(bases);
    await sleep(200);
    assert.equal(win.mappings.size, 0);
    assert.equal(await setup(env, f, 0, 2 * MiB, 4 * MiB, READ), 0);
    assert.deepEqual(win.seen.map((x) => `${x.request} ${x.shmOffset / MiB} ${x.result}`), ['MAP 4 0', 'UNMAP 4 0', 'MAP 4 0']);
  });

  it('a refused upgrade for writing leaves the range mapped for reading, as Linux still reads through it', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    assert.equal(await setup(env, f, 0, 2 * MiB, 2 * MiB, READ), 0);
    win.refuseNext = 1;
    assert.equal(await setup(env, f, 0, 2 * MiB, 2 * MiB, READ | WRITE), -EIO);
    assert.deepEqual(win.seen.map((x) => `${x.request} ${x.flags} ${x.result}`), ['MAP 0 0', 'UNMAP 0 0', 'MAP 1 1', 'MAP 0 0']);
    assert.equal(win.mappings.get(2 * MiB)?.write, false);
    // The daemon knows it is mapped: a later upgrade unmaps it first.
    assert.equal(await setup(env, f, 0, 2 * MiB, 2 * MiB, READ | WRITE), 0);
    assert.equal(win.mappings.get(2 * MiB)?.write, true);
  });

  it('a range the front end holds without the daemon knowing (a lost answer) is unmapped and mapped again', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    win.inject(2 * MiB, 2 * MiB);
    assert.equal(await setup(env, f, 0, 2 * MiB, 2 * MiB, READ), 0);
    assert.deepEqual(win.seen.map((x) => `${x.request} ${x.shmOffset / MiB} ${x.result}`), ['MAP 2 1', 'UNMAP 2 0', 'MAP 2 0']);
    assert.equal(win.mappings.get(2 * MiB)!.bytes.length, 2 * MiB, 'the file is mapped there now');
  });

  it('two maps of one range in flight at once (two upgrades) are done one after the other', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), 0);
    const both = await Promise.all([setup(env, f, 0, 2 * MiB, 0, READ | WRITE), setup(env, f, 0, 2 * MiB, 0, READ | WRITE), remove(env, [[0, 2 * MiB]])]);
    assert.deepEqual(both, [0, 0, 0]);
    assert.deepEqual(win.seen.map((x) => `${x.request} ${x.result}`), ['MAP 0', 'UNMAP 0', 'MAP 0', 'UNMAP 0', 'MAP 0', 'UNMAP 0']);
    assert.equal(win.mappings.size, 0);
  });

  it('a message on the backend channel that answers nothing gives the channel up (logged), and the daemon lives on', async () => {
    const { env, win } = await withWindow();
    fs.writeFileSync(path.join(env.share, 'f'), patterned());
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    env.fe.backendSend(Buffer.from('garbage that is no vhost-user reply'));
    await sleep(200);
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), -EIO);
    assert.equal(win.seen.length, 0, 'nothing sent on a channel that cannot be followed');
    assert.ok(env.daemon.errorLines.some((l) => /unexpected message on the backend channel/.test(l)), env.daemon.output());
    ok(await env.c.getattr(f), 'GETATTR');
    assert.equal(env.daemon.exited, null);
  });

  it('without --dax-window-size: no SHMEM, and SETUPMAPPING gets ENOSYS', async () => {
    const win = new ShmemWindow(WINDOW);
    const env = await connect('vfs-dax-', ['--sandbox=none'], {}, undefined, {
      protocolMask: defaultProtocolMask({ backendReq: true }) | bit(ProtocolFeature.SHMEM),
      backendHandler: win.handler,
    }, undefined, DAX_INIT);
    assert.equal(env.fe.protocolFeatures & bit(ProtocolFeature.SHMEM), 0n);
    assert.equal(env.c.initOut!.mapAlignment, 0);
    fs.writeFileSync(path.join(env.share, 'f'), 'x');
    const f = ok(await env.c.lookup(1n, 'f'), 'LOOKUP f').nodeid;
    assert.equal(await setup(env, f, 0, 2 * MiB, 0, READ), -ENOSYS);
  });
});
