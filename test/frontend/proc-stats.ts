/**
 * What /proc says about a daemon under test, summed over its process tree (the C virtiofsd
 * serves from a child it forks): CPU time so far and resident-memory fields. Used by the
 * benchmarks and the guest runner to put each daemon's cost beside its speed.
 */
import * as fs from 'node:fs';

/** Clock ticks per second of /proc/PID/stat times (sysconf(_SC_CLK_TCK) on Linux x86_64). */
const CLK_TCK = 100;

/** pid and every process below it. */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      parent.set(Number(e), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
}

/** CPU time (user + system) of pid's processes so far, in seconds; NaN once they are gone. */
export function cpuSeconds(pid: number): number {
  let total = 0;
  let seen = false;
  for (const p of processTree(pid)) {
    try {
      const f = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      total += (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
      seen = true;
    } catch {
      // gone
    }
  }
  return seen ? total : NaN;
}

/** The given kB fields of /proc/PID/status (VmHWM, RssAnon...), summed over the tree, in MiB. */
export function statusMiB(pid: number, fields: string[]): number[] {
  const kb = fields.map(() => 0);
  for (const p of processTree(pid)) {
    try {
      const status = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      fields.forEach((f, i) => {
        const m = new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(status);
        if (m) kb[i] += Number(m[1]);
      });
    } catch {
      // gone
    }
  }
  return kb.map((k) => k / 1024);
}
