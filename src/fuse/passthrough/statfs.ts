/** STATFS for the passthrough filesystem: fstatfs of the inode's descriptor via /proc. */
import { statfsSync } from 'node:fs';
import type { StatfsReply } from '../filesystem';

export function statfsOf(fd: number): StatfsReply {
  const s = statfsSync(`/proc/self/fd/${fd}`);
  return {
    blocks: s.blocks,
    bfree: s.bfree,
    bavail: s.bavail,
    files: s.files,
    ffree: s.ffree,
    bsize: s.bsize,
    namelen: 255,
    frsize: s.bsize,
  };
}
