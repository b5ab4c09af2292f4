/**
 * Request bodies built by hand, for tests that send FUSE structures the client has no encoder
 * for, or fields a well-behaved client would not set (the fuzz and accounting tests).
 */

/** A little-endian structure of `bytes` bytes (zeroed), with each [offset, value, width] field set. */
export function leStruct(bytes: number, fields: Array<[number, number | bigint, 4 | 8]>): Buffer {
  const b = Buffer.alloc(bytes);
  for (const [at, v, w] of fields) {
    if (w === 4) b.writeUInt32LE(Number(v) >>> 0, at);
    else b.writeBigUInt64LE(BigInt(v), at);
  }
  return b;
}
