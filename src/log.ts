/**
 * Logging: pino to stderr, synchronous so that lines from queue workers and the main thread
 * interleave whole and nothing is lost when the process exits. libvirt and users read the
 * daemon's stderr; levels follow the Rust virtiofsd's --log-level names.
 */
import pino from 'pino';

export type Logger = pino.Logger;
export type LogLevel = 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'off';

export function createLogger(level: LogLevel = 'info', bindings: Record<string, unknown> = {}): Logger {
  const logger = pino(
    { level: level === 'off' ? 'silent' : level, base: { pid: process.pid, ...bindings } },
    pino.destination({ fd: 2, sync: true }),
  );
  return logger;
}
