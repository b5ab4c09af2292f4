/**
 * Test helper: our daemon on a fresh share in a temp directory, connected through our
 * vhost-user front end (64 MiB of guest memory) and past FUSE INIT, ready for requests;
 * connectEachTest() for a describe() whose tests each connect their own.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as abi from '../../src/fuse/abi';
import { startDaemon, type Daemon } from '../frontend/daemons';
import type { NegotiateOptions, VhostUserFrontend } from '../frontend/frontend';
import { FuseClient, ok, type FuseClientOptions } from '../frontend/fuse-client';

export interface ConnectedDaemon {
  /** The temp directory holding the share and the socket. */
  dir: string;
  /** The shared directory (empty at first). */
  share: string;
  daemon: Daemon;
  fe: VhostUserFrontend;
  c: FuseClient;
}

/**
 * Starts virtiofsd-ts with exactly `args` (besides socket and share) and initialises FUSE.
 * The share is a new empty directory, or `existingShare` (left in place by disconnectDaemon);
 * `negotiate` adds to the front end's options (the memory is 64 MiB unless it says); `init`
 * overrides fields of the INIT request (by default what Linux 6.1 sends).
 */
export async function connectDaemon(
  prefix: string,
  args: string[],
  client: FuseClientOptions = {},
  existingShare?: string,
  negotiate: NegotiateOptions = {},
  wrapper?: string[],
  init: Partial<abi.InitIn> = {},
): Promise<ConnectedDaemon> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const share = existingShare ?? path.join(dir, 'share');
  if (!existingShare) fs.mkdirSync(share);
  const daemon = startDaemon('ts', { sharedDir: share, socketPath: path.join(dir, 'vfs.sock'), replaceDefaultArgs: args, wrapper });
  const fe = await daemon.connect();
  await fe.negotiate({ memory: { size: 64 << 20 }, ...negotiate });
  const c = new FuseClient(fe, { timeoutMs: 60000, ...client });
  ok(await c.init(init), 'INIT');
  return { dir, share, daemon, fe, c };
}

/**
 * For a describe(): a connectDaemon that also remembers the daemon, and an afterEach that
 * disconnects those a test left connected (one that failed midway, or that needs none of
 * its own clean-up).
 */
export function connectEachTest(): typeof connectDaemon {
  const connected: ConnectedDaemon[] = [];
  afterEach(async () => {
    for (const env of connected.splice(0)) await disconnectDaemon(env).catch(() => undefined);
  });
  return async (...args) => {
    const env = await connectDaemon(...args);
    connected.push(env);
    return env;
  };
}

const disconnected = new WeakSet<ConnectedDaemon>();

/**
 * Closes the connection, waits for the daemon to exit and removes the temp directory; once
 * (a second call does nothing).
 */
export async function disconnectDaemon(env: ConnectedDaemon): Promise<void> {
  if (disconnected.has(env)) return;
  disconnected.add(env);
  env.fe.close();
  await env.daemon.stop();
  fs.rmSync(env.dir, { recursive: true, force: true });
}
