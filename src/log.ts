/**
 * Logging: pino, synchronous so that nothing is lost when the process exits. By default JSON lines to stderr, which
 * libvirt and users read; with --syslog, syslog messages to /dev/log instead (RFC 3164, as
 * glibc's syslog() sends them: facility user, the level as severity, the message text and
 * then the line's other fields as JSON). The syslog socket is connected once, before the
 * sandbox hides /dev/log, and its descriptor is named in the environment, so the process
 * started again in the sandbox logs to it too. Levels follow the
 * Rust virtiofsd's --log-level names.
 */
import * as fs from 'node:fs';
import pino from 'pino';
import { native } from './native';

export type Logger = pino.Logger;
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'off';

/** The environment variable holding the descriptor of the syslog socket (--syslog). */
export const SYSLOG_FD_ENV = 'VIRTIOFSD_TS_SYSLOG_FD';
/** Where the system logger listens (glibc's _PATH_LOG). */
const SYSLOG_PATH = '/dev/log';

export function createLogger(level: LogLevel = 'info', bindings: Record<string, unknown> = {}): Logger {
  const fd = syslogFd();
  return pino(
    { level: level === 'off' ? 'silent' : level, base: { pid: process.pid, ...bindings } },
    fd === null ? pino.destination({ fd: 2, sync: true }) : new SyslogStream(fd),
  );
}

/**
 * --syslog: connects to the system logger; every logger this process and its restarts
 * create from now on writes there. Returns why it could not, or null.
 */
export function openSyslog(): string | null {
  try {
    process.env[SYSLOG_FD_ENV] = String(native.unixDatagram(SYSLOG_PATH));
    return null;
  } catch (e) {
    return `--syslog: cannot connect to the system logger at ${SYSLOG_PATH} (${(e as Error).message})`;
  }
}

/** The syslog socket's descriptor when --syslog is in force, else null. */
export function syslogFd(): number | null {
  const v = process.env[SYSLOG_FD_ENV];
  return v === undefined || !/^\d+$/.test(v) ? null : Number(v);
}

/** pino level -> syslog severity: fatal crit, error err, warn warning, info info, debug and trace debug. */
function severity(level: number): number {
  return level >= 60 ? 2 : level >= 50 ? 3 : level >= 40 ? 4 : level >= 30 ? 6 : 7;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const LOG_USER = 1 << 3;

/** RFC 3164's timestamp, local time: "Dec  4 15:28:41". */
function timestamp(d: Date): string {
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2, ' ')} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** One pino JSON line as a syslog message. */
export function syslogMessage(line: string, now = new Date()): string {
  const { level, time: _time, pid, msg, ...rest } = JSON.parse(line) as { level: number; time?: number; pid?: number; msg?: string };
  const fields = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
  return `<${LOG_USER | severity(level)}>${timestamp(now)} virtiofsd-ts[${pid ?? process.pid}]: ${msg ?? ''}${fields}`;
}

/**
 * A pino destination writing each line to the syslog socket as one datagram. A line the
 * logger does not take (it went away, or stalled for a second) goes to stderr instead.
 */
class SyslogStream {
  constructor(private readonly fd: number) {}

  write(line: string): void {
    try {
      fs.writeSync(this.fd, syslogMessage(line));
    } catch {
      process.stderr.write(line);
    }
  }
}
