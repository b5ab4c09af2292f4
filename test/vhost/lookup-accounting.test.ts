/**
 * What a daemon that runs for weeks must not do: keep inodes or handles the guest gave back.
 * Random namespace operations from several lanes on one or two request queues (made, looked
 * up, linked, renamed over, listed with READDIRPLUS, opened, removed, forgotten in part),
 * all well-formed, seeded (ACCOUNTING_SEED=n replays a run). The test counts what Linux
 * would count: one lookup for each entry a successful LOOKUP, CREATE, MKNOD, MKDIR, SYMLINK
 * or LINK returns, and for each READDIRPLUS entry with a node id other than "." and "..";
 * each open handle. Then it forgets every node id by the count it holds and releases every
 * handle, as a guest does when it drops its caches and closes its files, and the daemon must
 * hold as many descriptors as before the run (each inode the guest holds keeps one, each
 * handle one, except inodes kept as file handles), still serve, and report at exit that it
 * holds the root inode and no handle.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as abi from '../../src/fuse/abi';
import { FuseClient, ok } from '../frontend/fuse-client';
import { connectEachTest } from '../support/connected';
import { rng } from '../support/random';
import { leStruct as le } from '../support/structs';

const OPERATIONS = 3000;
const LANES = 4;

/** Descriptors the process holds now. */
function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

describe('lookup counts and handles after random namespace operations', function () {
  this.timeout(180000);
  const connect = connectEachTest();

  for (const [label, args, seed, queues] of [
    ['one queue', ['--cache=never'], 21, 1],
    ['two request queues, an I/O pool', ['--cache=never', '--thread-pool-size=2'], 22, 2],
    ['cache always, writeback, xattrs', ['--cache=always', '--writeback', '--xattr'], 23, 1],
    ['inodes kept as file handles', ['--cache=never', '--inode-file-handles=mandatory'], 24, 1],
  ] as const) {
    it(`the daemon holds no descriptor more once the guest forgot and released all it was given (${label})`, async () => {
      const s = Number(process.env.ACCOUNTING_SEED ?? seed);
      const rand = rng(s);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
      const env = await connect('vfs-acct-', [...args], {}, undefined, { requestQueues: queues });
      const { share, fe, c, daemon } = env;
      fs.mkdirSync(path.join(share, 'd'));
      fs.writeFileSync(path.join(share, 'd', 'a'), 'a\n');
      fs.writeFileSync(path.join(share, 'b'), 'b\n');
      const clients = Array.from({ length: queues }, (_, i) => new FuseClient(fe, { queue: i + 1, timeoutMs: 30000 }));

      // Whatever the daemon opens once and keeps (the kick threads' eventfds, the pool's),
      // opened before the count is taken: one of each kind of operation, all given back.
      for (const cl of clients) {
        const e = ok(await cl.lookup(1n, 'b'), 'LOOKUP b');
        const fh = ok(await cl.open(e.nodeid, 2), 'OPEN b').fh;
        ok(await cl.write(fh, 0, Buffer.from('b\n'), { nodeid: e.nodeid }), 'WRITE b');
        ok(await cl.release(fh, { nodeid: e.nodeid }), 'RELEASE b');
        const dfh = ok(await cl.open(1n, 0, abi.Opcode.OPENDIR), 'OPENDIR /').fh;
        const listing = await cl.request(abi.Opcode.READDIRPLUS, 1n, le(40, [[0, dfh, 8], [16, 4096, 4]]), 4096);
        assert.equal(listing.error, 0, 'READDIRPLUS /');
        const given = direntplusEntries(listing.body).map(([nodeid]) => nodeid);
        ok(await cl.release(dfh, { nodeid: 1n, opcode: abi.Opcode.RELEASEDIR }), 'RELEASEDIR /');
        await c.batchForget([{ nodeid: e.nodeid, nlookup: 1 }, ...given.map((nodeid) => ({ nodeid, nlookup: 1 }))]);
      }
      await settled(daemon.proc.pid!);
      const before = fdCount(daemon.proc.pid!);

      // The guest's books: lookups per node id, and the handles it holds.
      const lookups = new Map<bigint, number>();
      const dirs = new Set<bigint>([1n]);
      const handles = new Map<bigint, boolean>(); // fh -> a directory's
      const gained = (nodeid: bigint, mode: number): void => {
        if (nodeid === 0n) return;
        lookups.set(nodeid, (lookups.get(nodeid) ?? 0) + 1);
        if ((mode & 0o170000) === 0o040000) dirs.add(nodeid);
      };
      const NAMES = ['a', 'b', 'c', 'd', 'e'];
      const name = (): Buffer => Buffer.from(`${pick(NAMES)}\0`);
      const held = (): bigint[] => [...lookups.keys()];
      const dirIds = (): bigint[] => [...dirs].filter((d) => d === 1n || lookups.has(d));
      let done = 0;
      const counts = { entries: 0, errors: 0 };
      const lane = async (k: number): Promise<void> => {
        const cl = clients[k % queues];
        while (done < OPERATIONS) {
          done++;
          const parent = pick(dirIds());
          const op = pick(['lookup', 'lookup', 'create', 'mkdir', 'mknod', 'symlink', 'link', 'unlink', 'rmdir', 'rename', 'open', 'list', 'release', 'forget', 'getattr'] as const);
          let r: Awaited<ReturnType<FuseClient['request']>> | null = null;
          switch (op) {
            case 'lookup':
              r = await cl.request(abi.Opcode.LOOKUP, parent, name(), abi.ENTRY_OUT_SIZE);
              break;
            case 'create':
              r = await cl.request(abi.Opcode.CREATE, parent, Buffer.concat([le(16, [[0, pick([0o2, 0o102, 0o1102]), 4], [4, 0o644, 4], [8, 0o022, 4]]), name()]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
              if (r.error === 0) handles.set(r.body.readBigUInt64LE(abi.ENTRY_OUT_SIZE), false);
              break;
            case 'mkdir':
              r = await cl.request(abi.Opcode.MKDIR, parent, Buffer.concat([le(8, [[0, 0o755, 4], [4, 0o022, 4]]), name()]), abi.ENTRY_OUT_SIZE);
              break;
            case 'mknod':
              r = await cl.request(abi.Opcode.MKNOD, parent, Buffer.concat([le(16, [[0, 0o100644, 4]]), name()]), abi.ENTRY_OUT_SIZE);
              break;
            case 'symlink':
              r = await cl.request(abi.Opcode.SYMLINK, parent, Buffer.concat([name(), Buffer.from('target\0')]), abi.ENTRY_OUT_SIZE);
              break;
            case 'link': {
              const target = pick(held().length ? held() : [1n]);
              r = await cl.request(abi.Opcode.LINK, parent, Buffer.concat([le(8, [[0, target, 8]]), name()]), abi.ENTRY_OUT_SIZE);
              break;
            }
            case 'unlink':
            case 'rmdir':
              await cl.request(op === 'unlink' ? abi.Opcode.UNLINK : abi.Opcode.RMDIR, parent, name(), 0);
              break;
            case 'rename':
              await cl.request(abi.Opcode.RENAME, parent, Buffer.concat([le(8, [[0, pick(dirIds()), 8]]), name(), name()]), 0);
              break;
            case 'open': {
              const n = pick(held().length ? held() : [1n]);
              const dir = dirs.has(n);
              const o = await cl.request(dir ? abi.Opcode.OPENDIR : abi.Opcode.OPEN, n, le(8, [[0, dir ? 0 : pick([0, 2]), 4]]), abi.OPEN_OUT_SIZE);
              if (o.error === 0) handles.set(o.body.readBigUInt64LE(0), dir);
              break;
            }
            case 'list': {
              const dirHandles = [...handles].filter(([, d]) => d).map(([fh]) => fh);
              if (!dirHandles.length) break;
              const l = await cl.request(abi.Opcode.READDIRPLUS, 1n, le(40, [[0, pick(dirHandles), 8], [16, pick([512, 4096]), 4]]), 4096);
              if (l.error === 0) {
                for (const [nodeid, mode] of direntplusEntries(l.body)) gained(nodeid, mode);
              }
              break;
            }
            case 'release': {
              if (!handles.size) break;
              const [fh, dir] = pick([...handles]);
              handles.delete(fh);
              ok(await cl.release(fh, { opcode: dir ? abi.Opcode.RELEASEDIR : abi.Opcode.RELEASE }), 'RELEASE');
              break;
            }
            case 'forget': {
              if (!lookups.size) break;
              const n = pick(held());
              const have = lookups.get(n)!;
              const by = 1 + Math.floor(rand() * have);
              if (by === have) lookups.delete(n);
              else lookups.set(n, have - by);
              await c.forget(n, by);
              break;
            }
            case 'getattr':
              await cl.getattr(pick(held().length ? held() : [1n]));
              break;
          }
          if (r && r.error === 0) {
            const e = abi.decodeEntryOut(r.body, 0);
            gained(e.nodeid, e.attr.mode);
            counts.entries++;
          } else if (r) {
            counts.errors++;
          }
        }
      };
      await Promise.all(Array.from({ length: LANES }, (_, k) => lane(k)));
      // The run made and met things, and failed at others (names taken, directories not empty).
      assert.ok(counts.entries > 300 && counts.errors > 100, `seed ${s}: ${JSON.stringify(counts)}`);
      // The guest holds node ids and handles, and the daemon descriptors for them: one per
      // handle, and one per inode unless inodes are kept as file handles (where only the exit
      // report below can show a leak; how many handles a run ends with is up to the lanes).
      const fdsHeld = fdCount(daemon.proc.pid!) - before;
      const byHandle = (args as readonly string[]).includes('--inode-file-handles=mandatory');
      assert.ok(lookups.size > 20 && fdsHeld >= handles.size && (byHandle || fdsHeld > 20), `seed ${s}: ${lookups.size} node ids and ${handles.size} handles held, ${fdsHeld} descriptors more`);

      // The guest drops its caches and closes its files.
      for (const [fh, dir] of handles) ok(await c.release(fh, { opcode: dir ? abi.Opcode.RELEASEDIR : abi.Opcode.RELEASE }), 'RELEASE at the end');
      const all = [...lookups].map(([nodeid, nlookup]) => ({ nodeid, nlookup }));
      for (let i = 0; i < all.length; i += 64) await c.batchForget(all.slice(i, i + 64));
      // It serves on: the names the run left behind are all there to look up (and forgotten).
      const again: Array<{ nodeid: bigint; nlookup: number }> = [];
      for (const n of fs.readdirSync(share)) again.push({ nodeid: ok(await c.lookup(1n, n), `LOOKUP ${n} after the run`).nodeid, nlookup: 1 });
      await c.batchForget(again);
      await settled(daemon.proc.pid!);
      assert.equal(fdCount(daemon.proc.pid!), before, `seed ${s}: descriptors left after ${all.length} node ids were forgotten and ${handles.size} handles released`);

      // And its own books agree: at exit it holds the root inode and no handle.
      fe.close();
      await daemon.stop();
      const exit = daemon.logLine<{ inodes: number; handles: number }>('inode table at exit');
      assert.deepEqual([exit.inodes, exit.handles], [1, 0], `seed ${s}: inodes and handles held at exit`);
    });
  }
});

/** The node ids and modes of a READDIRPLUS reply's entries that Linux counts as looked up. */
function direntplusEntries(body: Buffer): Array<[bigint, number]> {
  const out: Array<[bigint, number]> = [];
  for (let at = 0; at + abi.direntplusSize(0) <= body.length; ) {
    const d = abi.decodeDirentplus(body, at);
    const nm = d.dirent.name.toString('latin1');
    if (d.entryOut.nodeid !== 0n && nm !== '.' && nm !== '..') out.push([d.entryOut.nodeid, d.entryOut.attr.mode]);
    at += abi.direntplusSize(d.dirent.name.length);
  }
  return out;
}

/** Waits until the daemon's descriptor count stops moving (FORGETs have no reply). */
async function settled(pid: number): Promise<void> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const n = fdCount(pid);
    if (n === last) return;
    last = n;
    await new Promise((r) => setTimeout(r, 100));
  }
}
