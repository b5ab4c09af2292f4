/**
 * The capabilities the sandboxed daemon keeps (--modcaps), as in the Rust virtiofsd: by
 * default only what a file server acting for many users needs (chown, dac_override,
 * fowner, fsetid, setgid, setuid, mknod, setfcap; dac_read_search for file handles unless
 * --inode-file-handles=never). --modcaps adds or removes from that, e.g. `+sys_admin:-mknod`
 * (':' or ',' between items; names as in capabilities(7), without CAP_, any case). They are
 * dropped from the bounding set before the daemon starts again inside the sandbox
 * (native/sandbox.cc, limitCapabilities), so that the new program never has the others.
 */

/** Linux capability numbers (include/uapi/linux/capability.h). */
export const CAPABILITIES: Readonly<Record<string, number>> = Object.freeze({
  chown: 0, dac_override: 1, dac_read_search: 2, fowner: 3, fsetid: 4, kill: 5, setgid: 6, setuid: 7, setpcap: 8,
  linux_immutable: 9, net_bind_service: 10, net_broadcast: 11, net_admin: 12, net_raw: 13, ipc_lock: 14, ipc_owner: 15,
  sys_module: 16, sys_rawio: 17, sys_chroot: 18, sys_ptrace: 19, sys_pacct: 20, sys_admin: 21, sys_boot: 22, sys_nice: 23,
  sys_resource: 24, sys_time: 25, sys_tty_config: 26, mknod: 27, lease: 28, audit_write: 29, audit_control: 30, setfcap: 31,
  mac_override: 32, mac_admin: 33, syslog: 34, wake_alarm: 35, block_suspend: 36, audit_read: 37, perfmon: 38, bpf: 39,
  checkpoint_restore: 40,
});

const DEFAULT_KEPT = ['chown', 'dac_override', 'fowner', 'fsetid', 'setgid', 'setuid', 'mknod', 'setfcap'];

/**
 * The capability names kept, sorted, for --modcaps (undefined: none given) and the inode
 * file handle mode; throws an Error saying what is wrong.
 */
export function keptCapabilities(modcaps: string | undefined, inodeFileHandles: 'never' | 'prefer' | 'mandatory'): string[] {
  const kept = new Set(DEFAULT_KEPT);
  const handles = inodeFileHandles !== 'never';
  if (handles) kept.add('dac_read_search');
  for (const item of (modcaps ?? '').split(/[:,]/)) {
    const t = item.trim();
    if (t === '') continue;
    const m = /^([+-])(?:cap_)?([a-z_]+)$/i.exec(t);
    if (!m) throw new Error(`--modcaps: '${t}' is not +capability or -capability`);
    const name = m[2].toLowerCase();
    if (!(name in CAPABILITIES)) throw new Error(`--modcaps: unknown capability '${m[2]}'`);
    if (m[1] === '+') kept.add(name);
    else kept.delete(name);
  }
  if (handles && !kept.has('dac_read_search')) {
    throw new Error(`--modcaps: dac_read_search cannot go with --inode-file-handles=${inodeFileHandles} (opening file handles needs it)`);
  }
  return [...kept].sort();
}
