/**
 * Command-line entry point (bin/virtiofsd-ts): parse options, set up logging, run the
 * daemon, and turn failures into an exit status with one clear log line.
 */
import { createLogger, openSyslog } from './log';
import { native } from './native';
import { parseOptions, UsageError, USAGE, type Options } from './options';
import { sandboxedStart, type SocketToRemove } from './sandbox';
import { runDaemon } from './daemon';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const VERSION: string = require('../../package.json').version;

/**
 * What --print-capabilities prints: the vhost-user backend JSON QEMU/libvirt read, as the
 * Rust virtiofsd's: libvirt migrates a guest with a virtiofs device only when its daemon
 * says migrate-precopy (dirty-page logging and the device state, src/vhost/backend.ts).
 */
export const CAPABILITIES = { type: 'fs', features: ['migrate-precopy', 'separate-options'] };

export async function main(argv: string[]): Promise<number> {
  // Started again inside the sandbox: the options were parsed outside.
  const handed = sandboxedStart();
  if (handed) return run(handed.opts, handed.stage, handed.socket ?? null);
  let opts;
  try {
    opts = parseOptions(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`virtiofsd-ts: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  if (opts.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (opts.version) {
    process.stdout.write(`virtiofsd-ts ${VERSION}\n`);
    return 0;
  }
  if (opts.printCapabilities) {
    process.stdout.write(JSON.stringify(CAPABILITIES, null, 2) + '\n');
    return 0;
  }
  return run(opts);
}

async function run(opts: Options, stage: 'start' | 'userns' | 'sandbox' = 'start', socket: SocketToRemove | null = null): Promise<number> {
  // READ, WRITE and FSYNC go to the I/O pool (native/iopool.cc), shared by every queue's
  // thread; libuv's pool (sized at its first use) takes the odd one whose reply buffer
  // cannot hold its header (the server then answers as for any failed request).
  native.ioPoolSetSize(opts.threadPoolSize);
  if (opts.threadPoolSize > 0) process.env.UV_THREADPOOL_SIZE = String(opts.threadPoolSize);
  // --syslog: connected now, before a sandbox hides /dev/log; a restart inherits it.
  if (opts.syslog && stage === 'start') {
    const failed = openSyslog();
    if (failed) {
      process.stderr.write(`virtiofsd-ts: ${failed}\n`);
      return 1;
    }
  }
  const log = createLogger(opts.logLevel);
  if (stage === 'start') dropSupplementaryGroups(log);
  try {
    return await runDaemon(opts, log, stage, socket);
  } catch (e) {
    log.fatal({ err: e }, (e as Error).message);
    return 1;
  }
}

/**
 * A root daemon acts as each guest user by switching only its thread's fsuid and fsgid
 * (native/nodeops.cc, Creds), so its own supplementary groups would count in every check the
 * host makes for that user: a guest user could create files in a setgid directory of one of
 * those groups, or write where only the group may (CVE-2022-0358). They are dropped at
 * start, as the Rust virtiofsd does. A daemon that is not root never switches, and keeps its
 * groups.
 */
function dropSupplementaryGroups(log: ReturnType<typeof createLogger>): void {
  if (process.geteuid?.() !== 0 || (process.getgroups?.() ?? []).length === 0) return;
  try {
    process.setgroups!([]);
  } catch (e) {
    log.warn({ err: e, groups: process.getgroups!() }, 'cannot drop the supplementary groups: guest users act with them');
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`virtiofsd-ts: ${(e as Error).stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
