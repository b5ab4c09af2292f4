/**
 * The benchmark's native ring driver, seen from JS (the C++ is bench/native/ring-driver.cc).
 *
 * For the rows made of one request repeated (GETATTR, LOOKUP, READ, WRITE), `npm run bench`
 * lets C++ threads keep the queue depth, one per request queue, instead of our JS front end:
 * the JS front end costs 15-16 µs of CPU per request, more than either daemon, and at
 * depth 16 or with two queues on a two-core machine it, not the daemon, set the pace.
 *
 * This module builds the chains as Linux's virtio_fs.c does (fuse_in_header, the op's
 * input, any data, then fuse_out_header and room for the reply, each a descriptor, in an
 * indirect table when negotiated), lends each queue's ring to a driver thread for the
 * given time, and takes it back with the figures.
 */
import * as path from 'node:path';
import * as abi from '../src/fuse/abi';
import { VirtioFeature } from '../src/vhost/messages';
import type { VhostUserFrontend } from '../test/frontend/frontend';
import type { GuestBuffer } from '../test/frontend/guest-memory';
import { VirtqDescFlags, type RawDescriptor } from '../test/frontend/vring';

interface DriveOptions {
  avail: Buffer;
  used: Buffer;
  size: number;
  eventIdx: boolean;
  availIdx: number;
  lastUsed: number;
  kickFd: number;
  callFd: number;
  heads: number[];
  requests: Buffer;
  requestStride: number;
  replies: Buffer;
  replyStride: number;
  expectLen: number;
  offsetAt: number;
  blockSize: number;
  blocks: number;
  firstSerial: number;
  uniqueBase: number;
  seconds: number;
}

interface DriveResult {
  ops: number;
  latencyNs: number;
  kicks: number;
  wakeups: number;
  availIdx: number;
  lastUsed: number;
  error: string | null;
}

// eslint-disable-next-line @typescript-eslint/no-var-requires
const addon: { driveQueue(o: DriveOptions): Promise<DriveResult> } = require(path.join(__dirname, '..', '..', 'build', 'Release', 'virtiofsd_bench.node'));

/** One request, repeated: READ and WRITE get the offset ((n * 7919) % blocks) * blockSize. */
export interface RepeatedRequest {
  opcode: number;
  nodeid: bigint;
  /** The op's input (after fuse_in_header). */
  args: Buffer;
  /** Data after the input (WRITE). */
  data?: Buffer;
  /** Bytes of reply after fuse_out_header every reply must carry. */
  replyBody: number;
  /** Where in args the u64 file offset sits, with the block size and count; none: fixed. */
  offset?: { at: number; blockSize: number; blocks: number };
}

export interface DriveFigures {
  ops: number;
  /** Sum over requests of submission-to-completion time, µs. */
  latencyUs: number;
}

const align = (n: number, a: number): number => Math.ceil(n / a) * a;
let serial = 0;

/**
 * Keeps `depth` copies of the request in flight for `seconds`, spread over the request
 * queues 1..queues as the JS lanes are (request k on queue 1 + k % queues), each queue
 * driven by its own native thread. Throws when a reply is wrong or the daemon stalls.
 */
export async function driveRepeated(fe: VhostUserFrontend, queues: number, depth: number, req: RepeatedRequest, seconds: number): Promise<DriveFigures> {
  const mem = fe.memory;
  if (!mem) throw new Error('the front end has no guest memory yet');
  const indirect = fe.hasFeature(VirtioFeature.RING_INDIRECT_DESC);
  const data = req.data ?? Buffer.alloc(0);
  const inLen = abi.IN_HEADER_SIZE + req.args.length + data.length;
  const outLen = abi.OUT_HEADER_SIZE + req.replyBody;
  const requestStride = align(inLen, 64);
  const replyStride = align(outLen, 64);
  const runs: Array<Promise<DriveResult>> = [];
  const cleanups: Array<() => void> = [];
  try {
    for (let qi = 0; qi < queues; qi++) {
      const slots = Math.floor(depth / queues) + (qi < depth % queues ? 1 : 0);
      if (slots === 0) continue;
      const q = fe.queue(qi + 1);
      const requests = mem.alloc(slots * requestStride, 64);
      const replies = mem.alloc(slots * replyStride, 64);
      const tables: GuestBuffer[] = [];
      const taken: number[] = [];
      cleanups.push(() => {
        q.vq.releaseDescriptors(taken);
        for (const t of tables) mem.free(t);
        mem.free(requests);
        mem.free(replies);
      });
      const heads: number[] = [];
      for (let k = 0; k < slots; k++) {
        const rq = requests.buf.subarray(k * requestStride);
        abi.encodeInHeader(rq, 0, { len: inLen, opcode: req.opcode, unique: 0n, nodeid: req.nodeid, uid: 0, gid: 0, pid: process.pid, totalExtlen: 0 });
        req.args.copy(rq, abi.IN_HEADER_SIZE);
        data.copy(rq, abi.IN_HEADER_SIZE + req.args.length);
        const rqGpa = requests.gpa + k * requestStride;
        const rpGpa = replies.gpa + k * replyStride;
        const segs: Array<{ gpa: number; len: number; write: boolean }> = [
          { gpa: rqGpa, len: abi.IN_HEADER_SIZE, write: false },
          { gpa: rqGpa + abi.IN_HEADER_SIZE, len: req.args.length, write: false },
          { gpa: rqGpa + abi.IN_HEADER_SIZE + req.args.length, len: data.length, write: false },
          { gpa: rpGpa, len: abi.OUT_HEADER_SIZE, write: true },
          { gpa: rpGpa + abi.OUT_HEADER_SIZE, len: req.replyBody, write: true },
        ].filter((s) => s.len > 0);
        const chain = (next: (i: number) => number): RawDescriptor[] =>
          segs.map((s, i) => ({ addr: s.gpa, len: s.len, flags: (s.write ? VirtqDescFlags.WRITE : 0) | (i + 1 < segs.length ? VirtqDescFlags.NEXT : 0), next: i + 1 < segs.length ? next(i + 1) : 0 }));
        if (indirect && segs.length > 1) {
          const table = q.vq.writeIndirectTable(chain((i) => i));
          tables.push(table);
          const [head] = q.vq.takeDescriptors(1);
          taken.push(head);
          q.vq.writeDescriptor(head, { addr: table.gpa, len: table.len, flags: VirtqDescFlags.INDIRECT, next: 0 });
          heads.push(head);
        } else {
          const ids = q.vq.takeDescriptors(segs.length);
          taken.push(...ids);
          chain((i) => ids[i]).forEach((d, i) => q.vq.writeDescriptor(ids[i], d));
          heads.push(ids[0]);
        }
      }
      const ring = q.lend();
      const firstSerial = serial;
      serial += 1e9;
      runs.push(
        addon
          .driveQueue({
            ...ring,
            heads,
            requests: requests.buf,
            requestStride,
            replies: replies.buf,
            replyStride,
            expectLen: outLen,
            offsetAt: req.offset ? abi.IN_HEADER_SIZE + req.offset.at : -1,
            blockSize: req.offset?.blockSize ?? 0,
            blocks: req.offset?.blocks ?? 0,
            firstSerial,
            uniqueBase: 2 ** 50,
            seconds,
          })
          .then((r) => {
            q.resume(r);
            if (r.error) throw new Error(`queue ${qi + 1}: ${r.error}`);
            return r;
          }),
      );
    }
    const results = await Promise.all(runs);
    return { ops: results.reduce((a, r) => a + r.ops, 0), latencyUs: results.reduce((a, r) => a + r.latencyNs, 0) / 1e3 };
  } finally {
    // Only once no driver runs: a failed one has returned, the others finish their time.
    await Promise.allSettled(runs);
    for (const c of cleanups) c();
  }
}
