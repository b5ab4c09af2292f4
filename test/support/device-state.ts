/**
 * The front end's half of a live migration's device state (vhost-user DEVICE_STATE), as QEMU
 * does it: SET_DEVICE_STATE_FD hands the daemon one end of a socket pair (QEMU: a pipe), the
 * state goes through it to EOF, and CHECK_DEVICE_STATE says whether it all went well. Used by
 * the device-state tests and by npm run bench:migration.
 */
import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import { native } from '../../src/native';
import { encodeDeviceStateFd, FrontendReq, TransferDirection } from '../../src/vhost/messages';
import type { VhostUserFrontend } from '../frontend/frontend';

/** SET_DEVICE_STATE_FD with one end of a socket pair, ours kept: the reply's u64 and our end. */
export async function setStateFd(fe: VhostUserFrontend, direction: number, phase = 0): Promise<{ reply: bigint; ours: number }> {
  const [ours, theirs] = native.socketPair();
  try {
    const r = await fe.request(FrontendReq.SET_DEVICE_STATE_FD, encodeDeviceStateFd({ direction, phase }), { hasReply: true, fds: [theirs] });
    return { reply: r!.readBigUInt64LE(0), ours };
  } finally {
    native.close(theirs);
  }
}

/** CHECK_DEVICE_STATE: 0 when the transfer went well. */
export async function checkState(fe: VhostUserFrontend): Promise<bigint> {
  return (await fe.requestReply(FrontendReq.CHECK_DEVICE_STATE)).readBigUInt64LE(0);
}

/** The source's half, its queues stopped: the state read to EOF, then the check. */
export async function readState(fe: VhostUserFrontend): Promise<{ state: Buffer; check: bigint }> {
  const { reply, ours } = await setStateFd(fe, TransferDirection.SAVE);
  assert.equal(reply, 0x100n, 'SET_DEVICE_STATE_FD: the daemon takes the front end\'s descriptor');
  const sock = new net.Socket({ fd: ours, readable: true, writable: false });
  const parts: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    sock.on('data', (b: Buffer) => parts.push(b));
    sock.on('end', () => resolve());
    sock.on('error', reject);
  });
  sock.destroy();
  return { state: Buffer.concat(parts), check: await checkState(fe) };
}

/** The destination's half: the state written and our end closed, then the check. */
export async function writeState(fe: VhostUserFrontend, state: Buffer): Promise<bigint> {
  const { reply, ours } = await setStateFd(fe, TransferDirection.LOAD);
  assert.equal(reply, 0x100n, 'SET_DEVICE_STATE_FD: the daemon takes the front end\'s descriptor');
  const sock = new net.Socket({ fd: ours, readable: false, writable: true });
  await new Promise<void>((resolve, reject) => {
    sock.on('error', reject);
    sock.end(state, () => resolve());
  });
  sock.destroy();
  return checkState(fe);
}
