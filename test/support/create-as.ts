/** Test helper: a CREATE (O_EXCL, 0644, in the root) sent as a given guest user. */
import * as fs from 'node:fs';
import * as abi from '../../src/fuse/abi';
import type { FuseClient } from '../frontend/fuse-client';

/** CREATE of `name` in the share's root as guest uid:gid: the error, or the new entry's attributes. */
export async function createAs(c: FuseClient, name: string, uid: number, gid: number): Promise<{ error: number; attr?: abi.Attr }> {
  c.options.uid = uid;
  c.options.gid = gid;
  const a = Buffer.alloc(abi.CREATE_IN_SIZE);
  abi.encodeCreateIn(a, 0, { flags: fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode: 0o100644, umask: 0, openFlags: 0 });
  const r = await c.request(abi.Opcode.CREATE, 1n, Buffer.concat([a, Buffer.from(`${name}\0`)]), abi.ENTRY_OUT_SIZE + abi.OPEN_OUT_SIZE);
  c.options.uid = 0;
  c.options.gid = 0;
  return r.error ? { error: r.error } : { error: 0, attr: abi.decodeEntryOut(r.body, 0).attr };
}
