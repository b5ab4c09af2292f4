/**
 * The backend side of one vhost-user connection: reads front-end requests, validates each
 * (size, descriptor count, negotiated features) before decoding it, keeps the device state
 * (features, memory table, vrings) and starts and stops queues on their QueueHosts.
 * Follows QEMU's docs/interop/vhost-user.rst; device-specific parts come from a DeviceSpec.
 *
 * Error policy: a framing error (bad version bits, oversized payload, truncated descriptors)
 * closes the connection, since the stream can no longer be trusted; a malformed request is
 * logged and refused (a non-zero REPLY_ACK when the front end asked for one), except that a
 * refused GET_* request, which owes a reply no refusal can give, closes the connection; a
 * malformed ring breaks only its queue. Nothing the front end sends can crash the process.
 */
import { constants as fsConstants } from 'node:fs';
import * as net from 'node:net';
import { native, STATX_FIELDS, StatxField } from '../native';
import type { Logger } from '../log';
import {
  bit, checkShape, decodeDeviceStateFd, decodeLog, DEVICE_STATE_NO_FD, PHASE_STOPPED, TransferDirection, decodeMemoryTable, decodeMemRegMsg, decodeVringAddr, decodeVringState,
  decodeConfig, encodeConfig, encodeHeader, encodeShmemConfig, encodeVringState, Flags, FrontendReq, hasBit, HEADER_SIZE,
  MAX_PAYLOAD, MessageError, ProtocolFeature, REQUEST_SHAPES, VirtioFeature, VRING_IDX_MASK,
  VRING_NOFD_MASK, type MemoryRegion, type ReceivedMessage,
} from './messages';
import type { QueueHost } from './queue-host';
import { MAX_QUEUE_SIZE, NO_POLLS, type PollCounts, type RingAddresses } from './virtqueue';
import { MessageReader } from './message-reader';

// fstat of a device-state descriptor: statx of "" with AT_EMPTY_PATH.
const AT_EMPTY_PATH = 0x1000;

/** What the device behind this backend offers and how its queues are hosted. */
export interface DeviceSpec {
  /** Queues the device can serve (GET_QUEUE_NUM). */
  maxQueues: number;
  /** Device-specific virtio feature bits; transport bits are added here. */
  deviceFeatures: bigint;
  /** Sizes of the shared-memory regions (DAX window), empty when none. */
  shmemSizes: number[];
  /**
   * The device's virtio config space, read-only, for a front end that asks the backend for
   * it (GET_CONFIG; PROTOCOL_F_CONFIG is offered only with this method). `queues` is how
   * many queues the front end has set up so far (the highest index it gave a descriptor or
   * size for, plus one; 0 when none).
   */
  configSpace?(queues: number): Buffer;
  /**
   * Longest queue `index`'s thread spins for the next request once its ring is empty, in ns
   * (0, or no such method: it sleeps until the next kick at once). See Virtqueue.pollAvail.
   */
  pollMaxNs?(index: number): number;
  /** Creates the host of queue `index` (called once per queue per connection). */
  createQueueHost(index: number): QueueHost;
  /**
   * Called when the backend channel arrives (SET_BACKEND_REQ_FD) or is about to be closed
   * (-1), with the protocol features negotiated.
   */
  onBackendChannel?(fd: number, ackedProtocol: bigint): void;
  /** Called on RESET_OWNER/RESET_DEVICE after the queues have stopped, and when the connection ends. */
  onReset?(): void;
  /**
   * The device state a live migration carries (DEVICE_STATE), taken and put back while every
   * queue is stopped: save() returns it, load() puts it back; either throws to refuse. A save
   * may let go of what the destination must take (host locks): resume() takes it back when
   * the device starts again after a save instead (the migration failed, the source goes on).
   * prepare() is called when dirty logging goes on (a precopy begins, the guest still runs),
   * for work the save can then skip; unprepare() when it goes off again before any save (the
   * migration was cancelled), to drop that work.
   */
  migration?: { prepare(): void; unprepare(): void; save(): Buffer; load(state: Buffer): void; resume(): void };
}

/** The most device state we take in from a front end (bytes). */
export const MAX_DEVICE_STATE = 1 << 30;

/** Seconds a front end may stall in the middle of one message before we drop it. */
export const RECV_TIMEOUT_MS = 10_000;
/** Memory slots we accept through ADD_MEM_REG (GET_MAX_MEM_SLOTS). */
export const MAX_MEM_SLOTS = 32;

const VHOST_F_LOG_ALL = 26;

interface Vring {
  num: number;
  addrs: RingAddresses | null;
  base: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  running: boolean;
  host: QueueHost | null;
}

class RequestError extends Error {}

export class VhostUserBackend {
  private readonly vrings: Vring[];
  private ackedFeatures = 0n;
  private ackedProtocol = 0n;
  private status = 0;
  private readonly memTableId: number;
  private readonly slots: MemoryRegion[] = [];
  private backendFd = -1;
  /** A dirty log is mapped (SET_LOG_BASE). */
  private logMapped = false;
  /** The device-state transfer under way (SET_DEVICE_STATE_FD): null when it worked, else why not. */
  private stateTransfer: Promise<string | null> | null = null;
  /** The pipe of the device-state transfer under way, if any (destroyed when replaced or closed). */
  private statePipe: net.Socket | null = null;
  /** LOAD transfers not ended yet: no queue may start meanwhile (a load replaces the state they serve). */
  private loadsUnderWay = 0;
  /** A save happened and no queue has started since (migration.resume() is owed if one does). */
  private savedSinceStart = false;
  private watcher: InstanceType<typeof native.FdWatcher> | null = null;
  private faultWatcher: InstanceType<typeof native.FdWatcher> | null = null;
  /** Keeps the part of a message that has arrived (a front end may write one in pieces). */
  private readonly reader: MessageReader;
  private closed = false;
  private done!: () => void;
  readonly finished: Promise<void>;

  constructor(
    private readonly fd: number,
    private readonly device: DeviceSpec,
    private readonly log: Logger,
  ) {
    this.vrings = Array.from({ length: device.maxQueues }, () => this.freshVring());
    this.memTableId = native.memTableCreate();
    this.reader = new MessageReader(fd, MAX_PAYLOAD);
    this.finished = new Promise((r) => (this.done = r));
  }

  /** Virtio features we offer: the device's plus the transport's. */
  get offeredFeatures(): bigint {
    return (
      this.device.deviceFeatures |
      bit(VirtioFeature.VERSION_1) |
      bit(VirtioFeature.RING_INDIRECT_DESC) |
      bit(VirtioFeature.RING_EVENT_IDX) |
      bit(VirtioFeature.VHOST_USER_PROTOCOL_FEATURES) |
      bit(VHOST_F_LOG_ALL)
    );
  }

  get offeredProtocolFeatures(): bigint {
    let f =
      bit(ProtocolFeature.MQ) |
      bit(ProtocolFeature.LOG_SHMFD) |
      bit(ProtocolFeature.REPLY_ACK) |
      bit(ProtocolFeature.BACKEND_REQ) |
      bit(ProtocolFeature.BACKEND_SEND_FD) |
      bit(ProtocolFeature.RESET_DEVICE) |
      bit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
      bit(ProtocolFeature.STATUS);
    if (this.device.shmemSizes.length > 0) f |= bit(ProtocolFeature.SHMEM);
    if (this.device.configSpace) f |= bit(ProtocolFeature.CONFIG);
    if (this.device.migration) f |= bit(ProtocolFeature.DEVICE_STATE);
    return f;
  }

  /** Starts reading requests; `finished` resolves when the connection has ended. */
  start(): void {
    this.watcher = new native.FdWatcher(this.fd, false, () => void this.onReadable());
    this.watcher.start();
    // One eventfd for the process, which serves one connection at a time (src/daemon.ts).
    if (native.memFaultFd() >= 0) {
      this.faultWatcher = new native.FdWatcher(native.memFaultFd(), false, () => void this.onMemoryFault());
      this.faultWatcher.start();
    }
  }

  /**
   * The front end shrank the file of a memory region (or of the dirty log) under us: a page
   * past its new end faulted, and reads as zeros here now (native/memory.cc), so what the
   * guest's rings and buffers hold can no longer be trusted. The connection ends.
   */
  private async onMemoryFault(): Promise<void> {
    const [faults, address, code] = native.memTakeFaults();
    if (faults === 0 || this.closed) return;
    // si_code 2 (BUS_ADRERR): a page past the end of its file; 4 and 5: a hardware memory error.
    this.log.error({ faults, address: `0x${address.toString(16)}`, siCode: code }, 'the front end shrank the file of its shared memory under us (SIGBUS): closing the connection');
    await this.close();
  }

  private freshVring(): Vring {
    return { num: 0, addrs: null, base: 0, kickFd: -1, callFd: -1, errFd: -1, enabled: false, running: false, host: null };
  }

  private async onReadable(): Promise<void> {
    // One request at a time: stop watching while a request is served (it may wait for a
    // queue to drain), then look again.
    this.watcher?.stop();
    try {
      while (!this.closed) {
        const msg = this.reader.next();
        if (msg === 'incomplete') break;
        if (msg === 'closed') {
          if (this.reader.midMessage) this.log.warn('front end closed the connection in the middle of a message');
          else this.log.info('front end closed the connection');
          await this.close();
          return;
        }
        await this.serve(msg);
      }
    } catch (e) {
      this.log.error({ err: e }, 'vhost-user connection failed; closing it');
      await this.close();
      return;
    }
    if (!this.closed) this.watcher?.start();
  }

  private async serve(msg: ReceivedMessage): Promise<void> {
    const { request, flags, size, payload, fds } = msg;
    const name = FrontendReq[request] ?? `request ${request}`;
    if ((flags & Flags.VERSION_MASK) !== Flags.VERSION || (flags & Flags.REPLY) !== 0) {
      closeFds(fds);
      throw new MessageError(`${name}: bad header flags 0x${flags.toString(16)}`);
    }
    if (payload === null) {
      closeFds(fds);
      throw new MessageError(`${name}: payload of ${size} bytes exceeds ${MAX_PAYLOAD}`);
    }
    if (msg.truncatedFds) {
      closeFds(fds);
      throw new MessageError(`${name}: more descriptors than a message may carry`);
    }
    const needReply = (flags & Flags.NEED_REPLY) !== 0 && hasBit(this.ackedProtocol, ProtocolFeature.REPLY_ACK);
    // A GET_* request always owes a reply that a refusal cannot give; the front end would
    // wait for it forever, so such a refusal ends the connection instead.
    const owesReply = REQUEST_SHAPES[request as FrontendReq]?.reply ?? false;
    const shapeError = checkShape(request, size, fds.length);
    if (shapeError) {
      closeFds(fds);
      this.log.warn({ request: name }, `refused malformed request: ${shapeError}`);
      if (owesReply) throw new MessageError(`${name} refused, and it owes a reply`);
      if (needReply) this.ack(request, 1);
      return;
    }
    this.log.debug({ request: name, size, fds: fds.length }, 'vhost-user request');
    let reply: Buffer | null = null;
    try {
      reply = await this.dispatch(request as FrontendReq, payload, fds);
    } catch (e) {
      if (this.closed) return;
      // Anything a request provokes is refused, never fatal; an error that is not one of
      // our validation or system errors is a bug on our side and is logged as such.
      const expected = e instanceof RequestError || e instanceof MessageError || e instanceof RangeError || isSystemError(e);
      if (expected) this.log.warn({ request: name }, `refused request: ${(e as Error).message}`);
      else this.log.error({ request: name, err: e }, 'request failed unexpectedly; refused');
      if (owesReply) throw new MessageError(`${name} refused, and it owes a reply`);
      if (needReply) this.ack(request, 1);
      return;
    }
    // The connection closed while the request waited (SIGTERM during a queue's stop): its
    // socket is gone, and so is whatever the request would have touched.
    if (this.closed) return;
    if (reply) this.send(request, reply);
    else if (needReply) this.ack(request, 0);
  }

  private async dispatch(req: FrontendReq, p: Buffer, fds: number[]): Promise<Buffer | null> {
    switch (req) {
      case FrontendReq.GET_FEATURES:
        return u64(this.offeredFeatures);
      case FrontendReq.SET_FEATURES: {
        const f = p.readBigUInt64LE(0);
        if ((f & ~this.offeredFeatures) !== 0n) throw new RequestError(`front end acked features we do not offer: 0x${(f & ~this.offeredFeatures).toString(16)}`);
        const logAll = hasBit(f, VHOST_F_LOG_ALL);
        // Logging without a log would let a migration miss the pages we write: refused, so
        // that the front end's migration fails instead (QEMU waits for this reply then).
        if (logAll && !this.logMapped) throw new RequestError('VHOST_F_LOG_ALL without a dirty log (SET_LOG_BASE)');
        if (logAll !== hasBit(this.ackedFeatures, VHOST_F_LOG_ALL)) {
          // Prepared before logging goes on, so that a failing prepare() leaves both off.
          if (logAll) this.stateMigration()?.prepare();
          native.dirtyLogEnable(this.memTableId, logAll);
          this.log.info(logAll ? 'dirty-page logging on (migration started)' : 'dirty-page logging off');
          if (!logAll) this.stateMigration()?.unprepare();
        }
        this.ackedFeatures = f;
        // Without PROTOCOL_FEATURES, rings are enabled as soon as they start.
        return null;
      }
      case FrontendReq.GET_PROTOCOL_FEATURES:
        return u64(this.offeredProtocolFeatures);
      case FrontendReq.SET_PROTOCOL_FEATURES: {
        const f = p.readBigUInt64LE(0);
        if ((f & ~this.offeredProtocolFeatures) !== 0n) throw new RequestError(`front end acked protocol features we do not offer: 0x${(f & ~this.offeredProtocolFeatures).toString(16)}`);
        this.ackedProtocol = f;
        return null;
      }
      case FrontendReq.GET_QUEUE_NUM:
        return u64(BigInt(this.device.maxQueues));
      case FrontendReq.SET_OWNER:
        return null;
      case FrontendReq.RESET_OWNER:
      case FrontendReq.RESET_DEVICE:
        await this.reset();
        return null;
      case FrontendReq.GET_MAX_MEM_SLOTS:
        this.requireProtocol(ProtocolFeature.CONFIGURE_MEM_SLOTS);
        return u64(BigInt(MAX_MEM_SLOTS));
      case FrontendReq.SET_MEM_TABLE:
        return this.setMemTable(p, fds);
      case FrontendReq.ADD_MEM_REG:
        return this.addMemReg(p, fds);
      case FrontendReq.REM_MEM_REG:
        return this.remMemReg(p, fds);
      case FrontendReq.SET_LOG_BASE:
        return this.setLogBase(p, fds);
      case FrontendReq.SET_LOG_FD:
        // The eventfd to signal after a log change we never make: nothing to keep.
        closeFds(fds);
        return null;
      case FrontendReq.SET_BACKEND_REQ_FD:
        this.requireProtocol(ProtocolFeature.BACKEND_REQ, fds);
        if (this.backendFd >= 0) {
          this.device.onBackendChannel?.(-1, 0n);
          native.close(this.backendFd);
        }
        this.backendFd = fds[0];
        this.device.onBackendChannel?.(this.backendFd, this.ackedProtocol);
        return null;
      case FrontendReq.SET_VRING_NUM: {
        const s = decodeVringState(p);
        const v = this.vring(s.index);
        if (v.running) throw new RequestError(`SET_VRING_NUM on running queue ${s.index}`);
        if (s.num === 0 || s.num > MAX_QUEUE_SIZE || (s.num & (s.num - 1)) !== 0) throw new RequestError(`queue size ${s.num} is not a power of two up to ${MAX_QUEUE_SIZE}`);
        v.num = s.num;
        return null;
      }
      case FrontendReq.SET_VRING_ADDR: {
        const a = decodeVringAddr(p);
        const v = this.vring(a.index);
        // QEMU sends the same addresses again, with or without VRING_ADDR_F_LOG, to a running
        // queue when a migration starts or ends. The used ring's writes are logged whenever
        // the connection logs, at the guest address its front-end address maps to (the
        // log_guest_addr QEMU gives).
        const same = v.addrs !== null && v.addrs.desc === a.desc && v.addrs.avail === a.avail && v.addrs.used === a.used;
        if (v.running && same) return null;
        if (v.running) throw new RequestError(`SET_VRING_ADDR on running queue ${a.index}`);
        v.addrs = { desc: a.desc, avail: a.avail, used: a.used };
        return null;
      }
      case FrontendReq.SET_VRING_BASE: {
        const s = decodeVringState(p);
        const v = this.vring(s.index);
        if (v.running) throw new RequestError(`SET_VRING_BASE on running queue ${s.index}`);
        if (s.num > 0xffff) throw new RequestError(`vring base ${s.num} out of range`);
        v.base = s.num;
        return null;
      }
      case FrontendReq.GET_VRING_BASE: {
        const s = decodeVringState(p);
        const v = this.vring(s.index);
        if (v.running) await this.stopQueue(s.index);
        if (this.closed) return null;
        v.enabled = false;
        // The ring is stopped: its kick descriptor is no longer ours to watch.
        if (v.kickFd >= 0) native.close(v.kickFd);
        v.kickFd = -1;
        return encodeVringState({ index: s.index, num: v.base });
      }
      case FrontendReq.SET_VRING_KICK:
      case FrontendReq.SET_VRING_CALL:
      case FrontendReq.SET_VRING_ERR:
        return this.setVringFd(req, p, fds);
      case FrontendReq.SET_VRING_ENABLE: {
        const s = decodeVringState(p);
        const v = this.vring(s.index);
        if (!hasBit(this.ackedFeatures, VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) throw new RequestError('SET_VRING_ENABLE without PROTOCOL_FEATURES');
        if (s.num > 1) throw new RequestError(`SET_VRING_ENABLE with ${s.num}`);
        v.enabled = s.num === 1;
        if (v.enabled) await this.maybeStart(s.index);
        else if (v.running) await this.stopQueue(s.index);
        return null;
      }
      case FrontendReq.SET_STATUS:
        this.requireProtocol(ProtocolFeature.STATUS);
        this.status = Number(p.readBigUInt64LE(0) & 0xffn);
        return null;
      case FrontendReq.GET_STATUS:
        this.requireProtocol(ProtocolFeature.STATUS);
        return u64(BigInt(this.status));
      case FrontendReq.GET_CONFIG: {
        // A refusal is a reply without config bytes, whose size the front end sees is wrong.
        const refuse = (why: string): Buffer => {
          this.log.warn({ request: 'GET_CONFIG' }, `refused request: ${why}`);
          return encodeConfig({ offset: 0, size: 0, flags: 0 }, Buffer.alloc(0));
        };
        if (!this.device.configSpace || !hasBit(this.ackedProtocol, ProtocolFeature.CONFIG)) return refuse('protocol feature CONFIG was not negotiated');
        let c;
        try {
          c = decodeConfig(p);
        } catch (e) {
          return refuse((e as Error).message);
        }
        return encodeConfig(c, this.device.configSpace(this.queuesSetUp()));
      }
      case FrontendReq.SET_CONFIG:
        throw new RequestError('the config space is read-only');
      case FrontendReq.GET_SHMEM_CONFIG:
        this.requireProtocol(ProtocolFeature.SHMEM);
        return encodeShmemConfig(this.device.shmemSizes);
      case FrontendReq.SET_DEVICE_STATE_FD:
        return this.setDeviceStateFd(p, fds[0]);
      case FrontendReq.CHECK_DEVICE_STATE:
        return this.checkDeviceState();
      default:
        closeFds(fds);
        throw new RequestError('request not supported by this device');
    }
  }

  /**
   * SET_DEVICE_STATE_FD: the front end hands over one end of a pipe, for the device state to
   * be written into (save, on the source) or read from (load, on the destination), with the
   * device stopped. The transfer runs on after the reply; CHECK_DEVICE_STATE waits for it.
   * The reply is a u64: DEVICE_STATE_NO_FD (we use the front end's pipe), plus an error code
   * in the low byte for a refusal.
   */
  private setDeviceStateFd(p: Buffer, fd: number): Buffer {
    const refuse = (why: string): Buffer => {
      native.close(fd);
      this.log.warn({ request: 'SET_DEVICE_STATE_FD' }, `refused request: ${why}`);
      return u64(1n | DEVICE_STATE_NO_FD);
    };
    const m = this.stateMigration();
    if (!m) return refuse('DEVICE_STATE was not negotiated');
    const { direction, phase } = decodeDeviceStateFd(p);
    if (phase !== PHASE_STOPPED) return refuse(`migration phase ${phase} (only 0, stopped, is defined)`);
    if (direction !== TransferDirection.SAVE && direction !== TransferDirection.LOAD) return refuse(`transfer direction ${direction}`);
    const running = this.vrings.findIndex((v) => v.running);
    if (running >= 0) return refuse(`queue ${running} is running`);
    // net.Socket takes a pipe or a socket; anything else would throw from its constructor.
    const st = new Float64Array(STATX_FIELDS);
    const { S_IFMT, S_IFIFO, S_IFSOCK } = fsConstants;
    const type = native.statx(fd, '', AT_EMPTY_PATH, st) === 0 ? st[StatxField.mode] & S_IFMT : -1;
    if (type !== S_IFIFO && type !== S_IFSOCK) return refuse('the descriptor is not a pipe or a socket');
    // A new transfer replaces one the front end gave up on.
    this.statePipe?.destroy();
    if (direction === TransferDirection.SAVE) this.savedSinceStart = true;
    this.stateTransfer = direction === TransferDirection.SAVE ? this.sendState(fd, m.save) : this.receiveState(fd, m.load);
    return u64(DEVICE_STATE_NO_FD);
  }

  /**
   * The device's migration, when the front end negotiated DEVICE_STATE (only a front end
   * that may ask for the device state will, so only then is a precopy prepared for it).
   */
  private stateMigration(): DeviceSpec['migration'] {
    return hasBit(this.ackedProtocol, ProtocolFeature.DEVICE_STATE) ? this.device.migration : undefined;
  }

  /** The transfer's pipe, or why it cannot be had (the descriptor is closed then). */
  private openStatePipe(fd: number, writable: boolean): net.Socket | string {
    try {
      this.statePipe = new net.Socket({ fd, readable: !writable, writable });
      return this.statePipe;
    } catch (e) {
      native.close(fd);
      return `the device state's pipe cannot be used: ${(e as Error).message}`;
    }
  }

  private async sendState(fd: number, save: () => Buffer): Promise<string | null> {
    let state: Buffer;
    try {
      state = save();
    } catch (e) {
      native.close(fd);
      return (e as Error).message;
    }
    return new Promise((resolve) => {
      const pipe = this.openStatePipe(fd, true);
      if (typeof pipe === 'string') return resolve(pipe);
      pipe.on('close', () => resolve('the transfer was given up'));
      pipe.on('error', (e) => {
        pipe.destroy();
        resolve(`writing the device state failed: ${e.message}`);
      });
      // Closing the pipe is the end of the state for the reader.
      pipe.end(state, () => {
        pipe.destroy();
        resolve(null);
      });
    });
  }

  private receiveState(fd: number, load: (state: Buffer) => void): Promise<string | null> {
    this.loadsUnderWay++;
    const received = new Promise<string | null>((resolve) => {
      const pipe = this.openStatePipe(fd, false);
      if (typeof pipe === 'string') return resolve(pipe);
      // A pipe replaced by a newer transfer, or destroyed by close(), ends this one.
      pipe.on('close', () => resolve('the transfer was given up'));
      const parts: Buffer[] = [];
      let size = 0;
      pipe.on('data', (b: Buffer) => {
        size += b.length;
        parts.push(b);
        if (size > MAX_DEVICE_STATE) {
          pipe.destroy();
          resolve(`device state over ${MAX_DEVICE_STATE} bytes`);
        }
      });
      pipe.on('error', (e) => {
        pipe.destroy();
        resolve(`reading the device state failed: ${e.message}`);
      });
      pipe.on('end', () => {
        pipe.destroy();
        if (size > MAX_DEVICE_STATE) return;
        try {
          load(Buffer.concat(parts, size));
          resolve(null);
        } catch (e) {
          resolve((e as Error).message);
        }
      });
    });
    return received.finally(() => this.loadsUnderWay--);
  }

  /** CHECK_DEVICE_STATE: waits for the transfer to end; the reply is a u64, 0 when it worked. */
  private async checkDeviceState(): Promise<Buffer> {
    const transfer = this.stateTransfer;
    this.stateTransfer = null;
    const failed = transfer ? await transfer : 'no device-state transfer to check (SET_DEVICE_STATE_FD)';
    if (failed === null) return u64(0n);
    this.log.error({ request: 'CHECK_DEVICE_STATE' }, `device state not transferred: ${failed}`);
    return u64(1n);
  }

  /**
   * SET_LOG_BASE: maps the dirty log QEMU shares for a migration. The reply is a u64, 0 when
   * mapped; on a failure it is 1 and a later VHOST_F_LOG_ALL is refused.
   */
  private setLogBase(p: Buffer, fds: number[]): Buffer {
    try {
      this.requireProtocol(ProtocolFeature.LOG_SHMFD);
      const { size, offset } = decodeLog(p);
      native.dirtyLogMap(this.memTableId, fds[0], Number(size), Number(offset));
      this.logMapped = true;
      this.log.info({ size: Number(size) }, 'dirty log mapped');
      return u64(0n);
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'refused the dirty log (SET_LOG_BASE)');
      return u64(1n);
    } finally {
      closeFds(fds);
    }
  }

  private requireProtocol(feature: number, fds: number[] = []): void {
    if (!hasBit(this.ackedProtocol, feature)) {
      closeFds(fds);
      throw new RequestError(`protocol feature ${feature} was not negotiated`);
    }
  }

  /** Queues the front end has set up: the highest index it gave a size or descriptor, plus one. */
  private queuesSetUp(): number {
    let n = 0;
    this.vrings.forEach((v, i) => {
      if (v.num > 0 || v.kickFd >= 0 || v.callFd >= 0) n = i + 1;
    });
    return n;
  }

  private vring(index: number): Vring {
    const v = this.vrings[index];
    if (!v) throw new RequestError(`queue index ${index} out of range (device has ${this.vrings.length})`);
    return v;
  }

  private setMemTable(p: Buffer, fds: number[]): null {
    try {
      const regions = decodeMemoryTable(p);
      if (regions.length !== fds.length) throw new RequestError(`${regions.length} regions but ${fds.length} descriptors`);
      native.memTableSet(this.memTableId, regions.map((r, i) => spec(r, fds[i])));
      this.slots.splice(0, this.slots.length, ...regions);
      this.log.debug({ regions }, 'memory table set');
      return null;
    } finally {
      closeFds(fds);
    }
  }

  private addMemReg(p: Buffer, fds: number[]): null {
    try {
      this.requireProtocol(ProtocolFeature.CONFIGURE_MEM_SLOTS);
      if (this.slots.length >= MAX_MEM_SLOTS) throw new RequestError('no free memory slot');
      const r = decodeMemRegMsg(p);
      native.memTableAdd(this.memTableId, spec(r, fds[0]));
      this.slots.push(r);
      return null;
    } finally {
      closeFds(fds);
    }
  }

  private remMemReg(p: Buffer, fds: number[]): null {
    closeFds(fds);
    this.requireProtocol(ProtocolFeature.CONFIGURE_MEM_SLOTS);
    const r = decodeMemRegMsg(p);
    if (native.memTableRemove(this.memTableId, r.guestPhysAddr, r.memorySize) < 0) {
      throw new RequestError(`no region at 0x${r.guestPhysAddr.toString(16)} of ${r.memorySize} bytes`);
    }
    const i = this.slots.findIndex((s) => s.guestPhysAddr === r.guestPhysAddr && s.memorySize === r.memorySize);
    if (i >= 0) this.slots.splice(i, 1);
    return null;
  }

  private async setVringFd(req: FrontendReq, p: Buffer, fds: number[]): Promise<null> {
    const raw = Number(p.readBigUInt64LE(0) & 0xffffffffn);
    const index = raw & VRING_IDX_MASK;
    const noFd = (raw & VRING_NOFD_MASK) !== 0;
    if (noFd !== (fds.length === 0)) {
      closeFds(fds);
      throw new RequestError(`${FrontendReq[req]}: no-fd flag ${noFd} with ${fds.length} descriptors`);
    }
    if ((raw & ~(VRING_IDX_MASK | VRING_NOFD_MASK)) !== 0 || index >= this.vrings.length) {
      closeFds(fds);
      throw new RequestError(`${FrontendReq[req]}: bad queue index 0x${raw.toString(16)}`);
    }
    const v = this.vrings[index];
    const fd = noFd ? -1 : fds[0];
    // The call and error notifiers are written by queue and pool threads under the used
    // ring's mutex: a pipe the front end stops reading would block that write, then every
    // thread of the queue and the JS thread behind it. Linux front ends send eventfds.
    if (fd >= 0 && req !== FrontendReq.SET_VRING_KICK && !native.isEventfd(fd)) {
      native.close(fd);
      throw new RequestError(`${FrontendReq[req]}: queue ${index}'s notifier is not an eventfd`);
    }
    if (req === FrontendReq.SET_VRING_CALL) {
      // The old fd is closed only once the queue's thread has switched to the new one: a
      // queue's thread may be signalling it right now, and a signal to a closed fd is a lost call.
      const old = v.callFd;
      v.callFd = fd;
      if (v.running) await v.host!.setCallFd(fd);
      if (old >= 0) native.close(old);
      return null;
    }
    if (req === FrontendReq.SET_VRING_ERR) {
      // As the call fd: the running queue takes the new one before the old is closed (its
      // number could otherwise be reused by the next descriptor received, and a broken ring
      // reported into that).
      const old = v.errFd;
      v.errFd = fd;
      if (v.running) await v.host!.setErrFd(fd);
      if (old >= 0) native.close(old);
      return null;
    }
    // SET_VRING_KICK starts the ring (enabled at once without PROTOCOL_FEATURES).
    if (noFd) throw new RequestError('polling mode (kick without an eventfd) is not supported');
    if (v.running) {
      try {
        await this.stopQueue(index);
      } catch (e) {
        native.close(fd);
        throw e;
      }
    }
    if (this.closed) {
      native.close(fd);
      return null;
    }
    if (v.kickFd >= 0) native.close(v.kickFd);
    v.kickFd = fd;
    if (!hasBit(this.ackedFeatures, VirtioFeature.VHOST_USER_PROTOCOL_FEATURES)) v.enabled = true;
    await this.maybeStart(index);
    return null;
  }

  private async maybeStart(index: number): Promise<void> {
    const v = this.vrings[index];
    if (this.closed || v.running || !v.enabled || v.kickFd < 0 || !v.addrs || v.num === 0) return;
    if (this.loadsUnderWay > 0) throw new RequestError(`queue ${index} cannot start while a device state is being loaded`);
    v.host ??= this.device.createQueueHost(index);
    try {
      await v.host.start({
        index,
        size: v.num,
        addrs: v.addrs,
        base: v.base,
        eventIdx: hasBit(this.ackedFeatures, VirtioFeature.RING_EVENT_IDX),
        kickFd: v.kickFd,
        callFd: v.callFd,
        errFd: v.errFd,
        memTableId: this.memTableId,
        pollMaxNs: this.device.pollMaxNs?.(index) ?? 0,
      });
    } catch (e) {
      throw new RequestError(`queue ${index} cannot start: ${(e as Error).message}`);
    }
    v.running = true;
    this.log.debug({ queue: index, size: v.num, base: v.base }, 'queue started');
    if (this.savedSinceStart) {
      this.savedSinceStart = false;
      this.device.migration?.resume();
    }
  }

  /**
   * A stop that fails still leaves the queue stopped (its host dropped the runner first), so
   * that a later request may start it again instead of stopping it twice.
   */
  private async stopQueue(index: number): Promise<void> {
    const v = this.vrings[index];
    try {
      v.base = await v.host!.stop();
    } finally {
      v.running = false;
    }
    this.log.debug({ queue: index, base: v.base }, 'queue stopped');
  }

  private async reset(): Promise<void> {
    for (let i = 0; i < this.vrings.length; i++) {
      const v = this.vrings[i];
      if (v.running) await this.stopQueue(i);
      if (this.closed) return;
      for (const fd of [v.kickFd, v.callFd, v.errFd]) if (fd >= 0) native.close(fd);
      this.vrings[i] = { ...this.freshVring(), host: v.host };
    }
    // A reset during a precopy ends it: what it prepared goes too.
    if (hasBit(this.ackedFeatures, VHOST_F_LOG_ALL)) this.stateMigration()?.unprepare();
    this.ackedFeatures = 0n;
    native.dirtyLogEnable(this.memTableId, false);
    this.status = 0;
    this.device.onReset?.();
  }

  private send(request: number, payload: Buffer): void {
    const b = encodeHeader({ request, flags: Flags.VERSION | Flags.REPLY, size: payload.length });
    payload.copy(b, HEADER_SIZE);
    native.vhostSend(this.fd, b);
  }

  private ack(request: number, value: number): void {
    this.send(request, u64(BigInt(value)));
  }

  /** Per-queue request counts and the handlers' own counts, for the exit report. */
  async queueStats(): Promise<{
    served: Record<number, number>;
    detail: Record<number, Record<string, number>>;
    polls: Record<number, PollCounts>;
    pooled: Record<number, number>;
    native: Record<number, number>;
    nativeDetail: Record<number, Record<string, number>>;
    nativeKicks: Record<number, number>;
  }> {
    const served: Record<number, number> = {};
    const detail: Record<number, Record<string, number>> = {};
    const polls: Record<number, PollCounts> = {};
    const pooled: Record<number, number> = {};
    const native: Record<number, number> = {};
    const nativeDetail: Record<number, Record<string, number>> = {};
    const nativeKicks: Record<number, number> = {};
    for (let i = 0; i < this.vrings.length; i++) {
      const h = this.vrings[i].host;
      if (!h) continue;
      const s = await h.stats().catch(() => ({ served: -1, detail: {}, polls: { ...NO_POLLS }, pooled: 0, native: 0, nativeDetail: {}, nativeKicks: 0 }));
      served[i] = s.served;
      if (Object.keys(s.detail).length > 0) detail[i] = s.detail;
      if (s.polls.hits + s.polls.misses > 0) polls[i] = s.polls;
      if (s.pooled > 0) pooled[i] = s.pooled;
      if (s.native > 0) native[i] = s.native;
      if (Object.keys(s.nativeDetail).length > 0) nativeDetail[i] = s.nativeDetail;
      if (s.nativeKicks > 0) nativeKicks[i] = s.nativeKicks;
    }
    return { served, detail, polls, pooled, native, nativeDetail, nativeKicks };
  }

  /**
   * Stops every queue, releases every descriptor and ends the connection. A request that was
   * waiting meanwhile (for a queue to stop) does nothing more once it resumes: every step
   * after an await in serve() looks at `closed`.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watcher?.close();
    this.watcher = null;
    this.faultWatcher?.close();
    this.faultWatcher = null;
    // The queues stop first: a kick thread counts a chain it served after it completed it,
    // so only once it has been joined are its counts final.
    for (let i = 0; i < this.vrings.length; i++) {
      if (this.vrings[i].running) await this.stopQueue(i).catch(() => undefined);
    }
    const stats = await this.queueStats();
    this.log.info(
      { requestsPerQueue: stats.served, opcodesPerQueue: stats.detail, pollsPerQueue: stats.polls, pooledPerQueue: stats.pooled, nativePerQueue: stats.native, nativeOpcodesPerQueue: stats.nativeDetail, nativeKicksPerQueue: stats.nativeKicks },
      'connection closed',
    );
    for (let i = 0; i < this.vrings.length; i++) {
      const v = this.vrings[i];
      await v.host?.close().catch(() => undefined);
      for (const fd of [v.kickFd, v.callFd, v.errFd]) if (fd >= 0) native.close(fd);
    }
    if (this.backendFd >= 0) {
      this.device.onBackendChannel?.(-1, 0n);
      native.close(this.backendFd);
    }
    // The front end's mappings of the shared-memory regions end with the connection.
    this.device.onReset?.();
    this.statePipe?.destroy();
    this.reader.dispose();
    native.close(this.fd);
    native.dirtyLogReset(this.memTableId);
    native.memTableDestroy(this.memTableId);
    this.done();
  }
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(v);
  return b;
}

function spec(r: MemoryRegion, fd: number) {
  return { gpa: r.guestPhysAddr, size: r.memorySize, uaddr: r.userspaceAddr, mmapOffset: r.mmapOffset, fd };
}

function closeFds(fds: number[]): void {
  for (const fd of fds) native.close(fd);
}

function isSystemError(e: unknown): boolean {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string';
}
