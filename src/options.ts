/**
 * Command-line options, compatible with the Rust virtiofsd (same names and meanings, the
 * legacy `-o source=...,cache=...` form, and every `-o` option libvirt may send to the C
 * virtiofsd), plus an optional TOML file (--config) whose keys are the long option names.
 * Command-line values override the file. Everything is validated with one zod schema.
 */
import { parseDaxWindowSize } from './dax/window';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { parse as parseToml } from 'smol-toml';
import { z } from 'zod';
import { parseCacheMode } from './cache/policy';
import { parseIdMaps } from './fuse/passthrough/idmap';
import { parseXattrMap } from './fuse/passthrough/xattrmap';
import { keptCapabilities } from './capabilities';

/** Default --poll-max-us (the README's option table and "Speed" say why). */
export const DEFAULT_POLL_MAX_US = 100;

const logLevels = ['error', 'warn', 'info', 'debug', 'trace', 'off'] as const;

/** A --uid-map/--gid-map value, `:inside:outside:count:` (the Rust virtiofsd's form). */
export interface NamespaceIdMap {
  inside: number;
  outside: number;
  count: number;
}

/** Parses a --uid-map/--gid-map value; throws an Error saying what is wrong. */
export function parseNamespaceIdMap(text: string): NamespaceIdMap {
  const m = /^:(\d+):(\d+):(\d+):$/.exec(text.trim());
  if (!m || Number(m[3]) < 1) throw new Error(`'${text}' is not :namespace_id:host_id:count: (count at least 1)`);
  return { inside: Number(m[1]), outside: Number(m[2]), count: Number(m[3]) };
}

/**
 * Parses all the ranges of one --uid-map or --gid-map (the option may be given several
 * times, as for the Rust virtiofsd); throws when one is malformed or two overlap, inside the
 * namespace or on the host, which the kernel would refuse.
 */
export function parseNamespaceIdMaps(texts: string[]): NamespaceIdMap[] {
  const maps = texts.map(parseNamespaceIdMap);
  for (let i = 0; i < maps.length; i++) {
    for (let j = i + 1; j < maps.length; j++) {
      const [a, b] = [maps[i], maps[j]];
      const overlap = (x: number, y: number): boolean => x < y + b.count && y < x + a.count;
      if (overlap(a.inside, b.inside)) throw new Error(`'${texts[i]}' and '${texts[j]}' map the same namespace IDs`);
      if (overlap(a.outside, b.outside)) throw new Error(`'${texts[i]}' and '${texts[j]}' map the same host IDs`);
    }
  }
  return maps;
}

/** A value that may be given once or several times: a TOML file may give one string. */
const repeated = z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(z.string()).default([]));

/**
 * A zod refinement from a parser: a value the parser refuses (throwing an Error) is a usage
 * error with its message; an absent optional value is fine.
 */
function parsedBy<T>(parse: (value: T) => unknown): (value: T | undefined, ctx: z.RefinementCtx) => void {
  return (value, ctx) => {
    if (value === undefined) return;
    try {
      parse(value);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
    }
  };
}

export const OptionsSchema = z
  .object({
    sharedDir: z.string().min(1).optional(),
    socketPath: z.string().min(1).optional(),
    fd: z.number().int().min(0).optional(),
    socketGroup: z.string().optional(),
    // The config space gives the tag 36 bytes (virtio_fs_config); the Rust virtiofsd's limit too.
    tag: z.string().min(1).refine((t) => Buffer.byteLength(t) <= 36, 'a tag has at most 36 bytes').optional(),
    threadPoolSize: z.number().int().min(0).max(1024).default(0),
    pollMaxUs: z.number().int().min(0).max(10000).default(DEFAULT_POLL_MAX_US),
    cache: z.string().transform((s, ctx) => {
      try {
        return parseCacheMode(s);
      } catch (e) {
        ctx.addIssue({ code: 'custom', message: (e as Error).message });
        return z.NEVER;
      }
    }).default('auto'),
    allowMmap: z.boolean().default(false),
    noReaddirplus: z.boolean().default(false),
    writeback: z.boolean().default(false),
    allowDirectIo: z.boolean().default(false),
    xattr: z.boolean().default(false),
    posixAcl: z.boolean().default(false),
    posixLock: z.boolean().default(true),
    flock: z.boolean().default(true),
    xattrmap: z.string().optional().superRefine(parsedBy(parseXattrMap)),
    securityLabel: z.boolean().default(false),
    /** Unset: namespace for a root daemon, none otherwise (src/daemon.ts, sandboxMode). */
    sandbox: z.enum(['namespace', 'chroot', 'none']).optional(),
    seccomp: z.enum(['none', 'kill', 'log', 'trap']).default('none'),
    modcaps: z.string().optional(),
    readonly: z.boolean().default(false),
    announceSubmounts: z.boolean().default(true),
    // fallback: the Rust virtiofsd's older name for prefer.
    inodeFileHandles: z.enum(['never', 'prefer', 'mandatory', 'fallback']).transform((v) => (v === 'fallback' ? 'prefer' : v)).default('prefer'),
    killprivV2: z.boolean().default(false),
    daxWindowSize: z.string().optional().superRefine(parsedBy(parseDaxWindowSize)),
    logLevel: z.enum(logLevels).default('info'),
    syslog: z.boolean().default(false),
    rlimitNofile: z.number().int().min(0).optional(),
    preserveNoatime: z.boolean().default(false),
    uidMap: repeated.superRefine(parsedBy(parseNamespaceIdMaps)),
    gidMap: repeated.superRefine(parsedBy(parseNamespaceIdMaps)),
    translateUid: repeated.superRefine(parsedBy(parseIdMaps)),
    translateGid: repeated.superRefine(parsedBy(parseIdMaps)),
    migrationMode: z.enum(['find-paths', 'file-handles']).optional(),
    migrationOnError: z.enum(['abort', 'guest-error']).optional(),
    migrationVerifyHandles: z.boolean().default(false),
    migrationConfirmPaths: z.boolean().default(false),
    printCapabilities: z.boolean().default(false),
    config: z.string().optional(),
  })
  .strict()
  .superRefine((o, ctx) => {
    try {
      keptCapabilities(o.modcaps, o.inodeFileHandles);
    } catch (e) {
      ctx.addIssue({ code: 'custom', path: ['modcaps'], message: (e as Error).message });
    }
  });

export type Options = z.infer<typeof OptionsSchema>;

/** The sandbox for the options: --sandbox, or by default namespace for a root daemon (src/sandbox.ts). */
export function sandboxMode(opts: Options): 'namespace' | 'chroot' | 'none' {
  const userns = opts.uidMap.length > 0 || opts.gidMap.length > 0;
  return opts.sandbox ?? (userns || process.geteuid?.() === 0 ? 'namespace' : 'none');
}

/**
 * Options of the Rust virtiofsd that are accepted, so that libvirt and scripts written for
 * it start us unchanged, but that change nothing here yet: when one is given, what the
 * daemon does instead (logged as a warning at start).
 */
const WITHOUT_EFFECT: Array<{ option: string; given: (o: Options) => boolean; instead: string }> = [
  {
    option: '--seccomp',
    given: (o) => o.seccomp !== 'none' && sandboxMode(o) === 'none',
    instead: 'the seccomp filter is installed only with a sandbox; without one there is none',
  },
  {
    option: '--modcaps',
    given: (o) => o.modcaps !== undefined && sandboxMode(o) === 'none',
    instead: 'capabilities are limited only in the sandbox; without one the daemon keeps all it has',
  },
];

/** The options given that have no effect here, each with what the daemon does instead. */
export function optionsWithoutEffect(o: Options): Array<{ option: string; instead: string }> {
  return WITHOUT_EFFECT.filter((w) => w.given(o)).map(({ option, instead }) => ({ option, instead }));
}

/** The long options and whether they take a value (string) or not (boolean). */
const LONG: Record<string, 'string' | 'boolean'> = {
  'shared-dir': 'string', 'socket-path': 'string', fd: 'string', 'socket-group': 'string', tag: 'string',
  'thread-pool-size': 'string', 'poll-max-us': 'string', cache: 'string', 'allow-mmap': 'boolean', 'no-readdirplus': 'boolean',
  writeback: 'boolean', 'allow-direct-io': 'boolean', xattr: 'boolean', 'posix-acl': 'boolean',
  xattrmap: 'string', 'security-label': 'boolean', sandbox: 'string', seccomp: 'string', modcaps: 'string',
  readonly: 'boolean', 'announce-submounts': 'boolean', 'no-announce-submounts': 'boolean',
  'inode-file-handles': 'string', 'killpriv-v2': 'boolean', 'no-killpriv-v2': 'boolean', 'dax-window-size': 'string', 'log-level': 'string', syslog: 'boolean',
  'rlimit-nofile': 'string', 'preserve-noatime': 'boolean', 'uid-map': 'string', 'gid-map': 'string',
  'translate-uid': 'string', 'translate-gid': 'string', 'migration-mode': 'string',
  'migration-on-error': 'string', 'migration-verify-handles': 'boolean', 'migration-confirm-paths': 'boolean',
  'print-capabilities': 'boolean', config: 'string', help: 'boolean', version: 'boolean',
  // accepted for compatibility: foreground is our only mode; debug is -d, --log-level=debug;
  // socket is the Rust virtiofsd's older name for socket-path
  foreground: 'boolean', debug: 'boolean', socket: 'string',
};

/** Every long option name the command line takes. */
export const LONG_OPTIONS: readonly string[] = Object.keys(LONG);

const camel = (s: string): string => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const NUMERIC = new Set(['fd', 'thread-pool-size', 'poll-max-us', 'rlimit-nofile']);

export class UsageError extends Error {}

/** Applies one `-o` option (C virtiofsd / libvirt syntax) to the raw option object. */
function applyLegacy(raw: Record<string, unknown>, item: string): void {
  const [k, v] = item.split(/=(.*)/s, 2);
  switch (k) {
    case 'source': raw.sharedDir = v; break;
    case 'cache': raw.cache = v; break;
    case 'xattr': raw.xattr = true; break;
    case 'no_xattr': raw.xattr = false; break;
    case 'flock': raw.flock = true; break;
    case 'no_flock': raw.flock = false; break;
    case 'posix_lock': raw.posixLock = true; break;
    case 'no_posix_lock': raw.posixLock = false; break;
    case 'writeback': raw.writeback = true; break;
    case 'no_writeback': raw.writeback = false; break;
    case 'readdirplus': raw.noReaddirplus = false; break;
    case 'no_readdirplus': raw.noReaddirplus = true; break;
    case 'sandbox': raw.sandbox = v; break;
    case 'log_level': raw.logLevel = v; break;
    case 'debug': raw.logLevel = 'debug'; break;
    case 'announce_submounts': raw.announceSubmounts = true; break;
    case 'killpriv_v2': raw.killprivV2 = true; break;
    case 'no_killpriv_v2': raw.killprivV2 = false; break;
    case 'xattrmap': raw.xattrmap = v; break;
    case 'modcaps': raw.modcaps = v; break;
    case 'allow_direct_io': raw.allowDirectIo = true; break;
    case 'no_allow_direct_io': raw.allowDirectIo = false; break;
    case 'posix_acl': raw.posixAcl = true; break;
    case 'no_posix_acl': raw.posixAcl = false; break;
    case 'security_label': raw.securityLabel = true; break;
    case 'no_security_label': raw.securityLabel = false; break;
    case 'timeout': case 'norace': case 'readdirplus_auto': case 'allow_root': case 'default_permissions':
      break; // C virtiofsd tunables with no effect here
    default:
      throw new UsageError(`unknown -o option '${k}'`);
  }
}

/** Parses argv (without node and script) into validated Options. */
export function parseOptions(argv: string[]): Options & { help: boolean; version: boolean } {
  const optionDefs: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = {};
  for (const [name, type] of Object.entries(LONG)) optionDefs[name] = { type };
  optionDefs['translate-uid'].multiple = true;
  optionDefs['translate-gid'].multiple = true;
  optionDefs['uid-map'].multiple = true;
  optionDefs['gid-map'].multiple = true;
  optionDefs.o = { type: 'string', multiple: true, short: 'o' };
  optionDefs.foreground.short = 'f';
  optionDefs.debug.short = 'd';
  optionDefs.help.short = 'h';
  optionDefs.version.short = 'V';
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: optionDefs, strict: true, allowPositionals: false });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const v = parsed.values as Record<string, unknown>;
  if (v['killpriv-v2'] === true && v['no-killpriv-v2'] === true) throw new UsageError('--killpriv-v2 and --no-killpriv-v2 contradict each other');
  if (v.socket !== undefined && v['socket-path'] !== undefined) throw new UsageError('--socket is an older name of --socket-path: give one of them');
  const cli: Record<string, unknown> = {};
  // Which long option set each key, for a -o that says otherwise.
  const setBy = new Map<string, string>();
  for (const [name, val] of Object.entries(v)) {
    if (name === 'o' || name === 'help' || name === 'version' || name === 'foreground') continue;
    if (name === 'debug') {
      cli.logLevel = 'debug';
      setBy.set('logLevel', '-d');
      continue;
    }
    if (applyAlias(cli, camel(name), val, `--${name}`)) {
      setBy.set(ALIASES[camel(name)].sets, `--${name}`);
      continue;
    }
    setBy.set(camel(name), `--${name}`);
    if (NUMERIC.has(name)) {
      const n = Number(val);
      if (!Number.isInteger(n)) throw new UsageError(`--${name} expects an integer, got '${String(val)}'`);
      cli[camel(name)] = n;
    } else {
      cli[camel(name)] = val;
    }
  }
  // Among -o options the last one wins (as in the C virtiofsd); one that says otherwise than a
  // long option is refused rather than silently taking over.
  const fromLong = new Map([...setBy].map(([key, option]) => [key, { option, value: cli[key] }]));
  for (const item of (v.o as string[] | undefined) ?? []) {
    for (const part of item.split(',')) {
      if (!part) continue;
      applyLegacy(cli, part);
      for (const [key, { option, value }] of fromLong) {
        if (!sameSetting(key, cli[key], value)) throw new UsageError(`-o ${part} contradicts ${option}`);
        cli[key] = value;
      }
    }
  }
  let raw: Record<string, unknown> = cli;
  if (typeof cli.config === 'string') raw = { ...readConfigFile(cli.config), ...cli };
  const r = OptionsSchema.safeParse(raw);
  if (!r.success) {
    throw new UsageError(r.error.issues.map((i) => `${i.path.join('.') || 'options'}: ${i.message}`).join('; '));
  }
  // ACL entries name host IDs that the guest reads and writes as they are: translating the
  // owners but not the entries would give them other users' rights (as the Rust virtiofsd).
  if (r.data.posixAcl && (r.data.translateUid.length > 0 || r.data.translateGid.length > 0)) {
    throw new UsageError('--posix-acl cannot be used with --translate-uid or --translate-gid: ACL entries would keep host IDs');
  }
  return { ...r.data, help: v.help === true, version: v.version === true };
}

/** Whether two spellings of option `key` say the same (cache none is never; a path is a path). */
function sameSetting(key: string, a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'string' || typeof b !== 'string') return false;
  if (key === 'cache') return (a === 'none' ? 'never' : a) === (b === 'none' ? 'never' : b);
  if (key === 'sharedDir') return resolve(a) === resolve(b);
  return false;
}

/** Reads a TOML config file; keys are long option names (kebab or snake case). */
export function readConfigFile(path: string): Record<string, unknown> {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`config file ${path}: ${(e as Error).message}`);
  }
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(doc)) {
    const key = camel(k.replace(/_/g, '-'));
    if (!applyAlias(out, key, val, `config file ${path}: ${k}`)) out[key] = val;
  }
  return out;
}

/**
 * Other spellings of options, on the command line and as config-file keys: the Rust
 * virtiofsd's older name of --socket-path, and the --no- forms (by camel-case name).
 */
const ALIASES: Record<string, { sets: string; negates: boolean }> = {
  socket: { sets: 'socketPath', negates: false },
  noKillprivV2: { sets: 'killprivV2', negates: true },
  noAnnounceSubmounts: { sets: 'announceSubmounts', negates: true },
};

/** Sets the option an alias stands for in out; false when key is no alias. `what` names it in an error. */
function applyAlias(out: Record<string, unknown>, key: string, val: unknown, what: string): boolean {
  const a = ALIASES[key];
  if (!a) return false;
  if (a.negates && typeof val !== 'boolean') throw new UsageError(`${what} must be true or false`);
  out[a.sets] = a.negates ? !val : val;
  return true;
}

export const USAGE = `Usage: virtiofsd-ts --socket-path=PATH | --fd=N  --shared-dir=DIR [options]

A vhost-user-fs backend: serves DIR to a guest through QEMU's vhost-user-fs-pci device.
Options take their value as --name=VALUE or --name VALUE; the README says more of each.

Where and how to serve
  --shared-dir=DIR          directory to share (or -o source=DIR)
  --socket-path=PATH        vhost-user socket to listen on (--socket is an older name)
  --fd=N                    an already listening socket (as libvirt passes it)
  --socket-group=GROUP      group owner of the socket
  --tag=TAG                 the tag for front ends that read it from the backend (GET_CONFIG;
                            QEMU's vhost-user-fs-pci takes its own tag=)
  --readonly                refuse every change (EROFS)
  --announce-submounts      mark host mounts inside the share (default; --no-announce-submounts)
  --inode-file-handles=MODE never|prefer|mandatory, default prefer (fallback = prefer)
  --rlimit-nofile=N         open file limit to raise to (default min(1000000, nr_open); 0 keeps it)

Caching and I/O
  --cache=MODE              never|metadata|auto|always (none = never), default auto
  --writeback               let the guest cache writes (FUSE writeback cache)
  --allow-direct-io         honour O_DIRECT from the guest
  --allow-mmap              allow shared mmap in cache=never
  --no-readdirplus          do not use READDIRPLUS
  --preserve-noatime        accepted; O_NOATIME from the guest is always kept
  --thread-pool-size=N      threads for blocking I/O, shared by all queues (0: on the queue's thread)
  --poll-max-us=N           spin up to N µs for the next request before sleeping (adaptive;
                            0: never spin), default 100
  --dax-window-size=SIZE    offer a DAX window of SIZE (e.g. 1G; a multiple of 2M) to a front
                            end that supports vhost-user shared memory (default none)

Attributes, owners and permissions
  --xattr                   support extended attributes
  --posix-acl               POSIX ACLs in the guest (implies --xattr)
  --xattrmap=RULES          map xattr names between guest and host (implies --xattr)
  --security-label          store the label a SELinux guest gives each new file (implies --xattr)
  --killpriv-v2             let the daemon clear setuid/setgid (FUSE_HANDLE_KILLPRIV_V2);
                            off by default (--no-killpriv-v2)
  --translate-uid=MAP, --translate-gid=MAP
                            translate IDs (map:G:H:N, guest:, host:, squash-*, forbid-guest:);
                            repeat for more ranges
  --uid-map=:NS:HOST:N:, --gid-map=:NS:HOST:N:
                            for a daemon started by an unprivileged user: run in a user
                            namespace with these IDs (the user's own and one subordinate range)

Isolation
  --sandbox=namespace|chroot|none
                            isolate the daemon's process from the host (default namespace
                            when run as root, falling back to none where namespaces are
                            not allowed; none otherwise)
  --modcaps=+CAP:-CAP...    change the capabilities kept in the sandbox
  --seccomp=none|kill|log|trap
                            system call filter in the sandbox (default none)

Live migration
  --migration-mode=MODE     find-paths (default) or file-handles: how inodes travel
  --migration-on-error=WHAT abort (default) or guest-error: an inode the destination cannot open
  --migration-verify-handles
                            paths travel with file handles, checked at the destination
  --migration-confirm-paths walk every path again at the switch-over

Logging, configuration, information
  --log-level=LEVEL         error|warn|info|debug|trace|off (default info; -d = debug)
  --syslog                  log to the system logger instead of stderr
  --config=FILE             TOML file with any of these options (long names as keys)
  --print-capabilities      print the vhost-user backend capabilities as JSON and exit
  -o OPT[,OPT...]           C virtiofsd / libvirt style options (source=, cache=, xattr, ...)
  -f                        accepted (the daemon always runs in the foreground)
  -h, --help                this help
  -V, --version             version
`;
