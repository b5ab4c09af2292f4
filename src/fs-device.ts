/**
 * The virtio-fs device: ties the vhost-user backend to the FUSE server. It says how many
 * queues there are and builds each queue's ChainHandler: a FuseServer over a PassthroughFs
 * whose state (inodes, handles, locks) is the one native FsState all queues share, and in
 * front of it the native FUSE fast path (native/fastpath.cc), which the queue's own kick
 * thread runs. That serves plain READs, WRITEs, GETATTRs, SETATTRs, LOOKUPs, FORGETs, OPENs,
 * FLUSHes, RELEASEs, CREATEs, MKNODs, MKDIRs, SYMLINKs, LINKs, UNLINKs, RMDIRs, RENAMEs,
 * READLINKs, GETXATTRs (with --xattr), ACCESSes, lock requests that need not wait, the
 * requests that list a directory, and those that may block in the kernel (FSYNC, FALLOCATE,
 * COPY_FILE_RANGE, ...); the rest comes to the JS server, on the main thread every queue's
 * JS side shares.
 */
import { hasBit, ProtocolFeature } from './vhost/messages';
import type { Logger } from './log';
import { native } from './native';
import { cachePolicy } from './cache/policy';
import { opcodeName } from './fuse/abi';
import { FuseServer } from './fuse/server';
import { PassthroughFs, type PassthroughOptions } from './fuse/passthrough';
import { loadState, prepareState, resumeState, saveState, unprepareState, type MigrationOptions } from './fuse/passthrough/migration';
import type { DeviceSpec } from './vhost/backend';
import { MainThreadQueueHost, type QueueHost } from './vhost/queue-host';
import type { ChainHandler } from './vhost/queue-runner';

/** Request queues we accept; the guest's num-request-queues must not exceed it. */
export const MAX_REQUEST_QUEUES = 64;
/** virtio-fs has no device-specific feature bits we offer (NOTIFICATION is not in Linux). */
const FS_DEVICE_FEATURES = 0n;

export interface FsDeviceOptions {
  passthrough: PassthroughOptions;
  /** --poll-max-us in ns: how long a queue thread may spin for the next request. */
  pollMaxNs: number;
  /** --tag: the tag the device's config space gives (for front ends that ask the backend). */
  tag?: string;
  /** --migration-*: how a live migration describes inodes, and what it does with those it cannot. */
  migration: MigrationOptions;
}

/**
 * Builds a queue's handler: a FUSE server in JS and the native fast path its kick thread
 * serves. Each queue has its own (the fast path keeps scratch buffers for the thread that
 * serves it); all of them reach one file-system state through its native id.
 */
function createHandler(o: FsDeviceOptions, log: Logger): ChainHandler {
  const p = o.passthrough;
  const fs = new PassthroughFs(p, log);
  const server = new FuseServer(fs, log);
  // On every queue (the hiprio queue gets the FORGETs), but not at trace level, where every
  // request is logged on its way through JS.
  const policy = cachePolicy(p.cache);
  const fast = log.isLevelEnabled('trace')
    ? undefined
    : new native.FuseFastPath({
        stateId: p.stateId,
        readOnly: p.readonly,
        pool: p.threadPool,
        posixLock: p.posixLock,
        flock: p.flock,
        // Mapped names (--xattrmap) are JS's to translate.
        xattr: p.xattr && !p.xattrMap,
        killprivV2: p.killprivV2,
        entryTimeout: policy.entryTimeout,
        attrTimeout: policy.attrTimeout,
        negativeTimeout: policy.negativeTimeout,
        fileOpenFlags: policy.fileOpenFlags,
        dirOpenFlags: policy.dirOpenFlags,
        keepCacheIfUnchanged: policy.keepCacheIfUnchanged,
        allowDirectIo: p.cache.allowDirectIo,
      });
  return {
    handle: (chain) => server.handle(chain),
    cancel: () => {
      server.cancelWaits();
      // A stop waits for the queue's requests, and the front end reads no map answer meanwhile.
      o.passthrough.dax?.abandonWaits();
    },
    stats: () => {
      const counts = new Map(server.counts);
      for (const [op, n] of Object.entries(fast?.counts() ?? {})) counts.set(Number(op), (counts.get(Number(op)) ?? 0) + n);
      return Object.fromEntries([...counts].map(([op, n]) => [opcodeName(op), n]));
    },
    nativeStats: () => Object.fromEntries(Object.entries(fast?.counts() ?? {}).map(([op, n]) => [opcodeName(Number(op)), n])),
    nativeServer: fast,
  };
}

/**
 * virtio-fs config space (struct virtio_fs_config): the tag, NUL-padded to 36 bytes, the
 * number of request queues, and notify_buf_size (0: no notification queue). The queues are
 * those the front end set up besides hiprio, since a front end that asks the backend for
 * its config (QEMU's vhost-user-device-pci) sets up its queues first and the guest driver
 * expects exactly as many; at least 1.
 */
export function fsConfigSpace(tag: string, queues: number): Buffer {
  const b = Buffer.alloc(FS_CONFIG_SIZE);
  b.write(tag, 0, FS_TAG_SIZE, 'utf8');
  b.writeUInt32LE(Math.max(1, Math.min(queues - 1, MAX_REQUEST_QUEUES)), FS_TAG_SIZE);
  return b;
}
const FS_TAG_SIZE = 36;
const FS_CONFIG_SIZE = FS_TAG_SIZE + 4 + 4;

export function fsDevice(options: FsDeviceOptions, log: Logger): DeviceSpec {
  return {
    maxQueues: 1 + MAX_REQUEST_QUEUES,
    deviceFeatures: FS_DEVICE_FEATURES,
    // Region 0 is the DAX window (Linux's VIRTIO_FS_SHMCAP_ID_CACHE).
    shmemSizes: options.passthrough.dax ? [options.passthrough.dax.size] : [],
    onBackendChannel: (fd: number, acked: bigint) =>
      options.passthrough.dax?.setChannel(fd, hasBit(acked, ProtocolFeature.REPLY_ACK), hasBit(acked, ProtocolFeature.SHMEM)),
    onReset: () => options.passthrough.dax?.reset(),
    ...(options.tag === undefined ? {} : { configSpace: (queues: number) => fsConfigSpace(options.tag!, queues) }),
    // Request queues only: the hiprio queue carries FORGETs and interrupts, and nothing
    // there is worth spinning for.
    pollMaxNs: (index: number) => (index === 0 ? 0 : options.pollMaxNs),
    createQueueHost(index: number): QueueHost {
      const queueLog = log.child({ queue: index });
      return new MainThreadQueueHost(() => createHandler(options, queueLog), queueLog, index);
    },
    // The shared native state is the whole device state: the queue threads keep none.
    migration: {
      prepare: () => prepareState(options.passthrough.stateId, options.migration),
      unprepare: () => unprepareState(options.passthrough.stateId, log),
      save: () => {
        // The guest's mappings of the window live in the source's front end; the destination's
        // window starts empty, and the guest would read zeros where it mapped files.
        const dax = options.passthrough.dax;
        if (dax && dax.mappings > 0) throw new Error(`${dax.mappings} DAX mapping(s) are live, and a migration does not carry them`);
        return saveState(options.passthrough.stateId, options.migration, log);
      },
      load: (state: Buffer) => loadState(options.passthrough.stateId, state, options.migration, log),
      resume: () => resumeState(options.passthrough.stateId, log),
    },
  };
}
