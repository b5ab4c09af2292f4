/**
 * Assembles vhost-user messages from a non-blocking stream socket. A front end may write a
 * message in several pieces (header, then payload), and the kernel may hand over less than
 * was written; the reader keeps what has arrived and gives back a message only once it is
 * whole. It reads exactly up to the end of the message under way, never into the next one,
 * so descriptors (which ride on the bytes they were sent with) belong to the message they
 * arrived in.
 */

import { native } from '../native';
import { HEADER_SIZE, MAX_FDS, type ReceivedMessage } from './messages';

/** What next() gives: a whole message, nothing yet, or the end of the stream. */
export type ReadResult = ReceivedMessage | 'incomplete' | 'closed';

export class MessageReader {
  private readonly header = Buffer.alloc(HEADER_SIZE);
  private headerBytes = 0;
  private payload: Buffer | null = null;
  private payloadBytes = 0;
  private fds: number[] = [];
  private truncatedFds = false;

  constructor(
    private readonly fd: number,
    private readonly maxPayload: number,
  ) {}

  /** True while part of a message has arrived and the rest has not. */
  get midMessage(): boolean {
    return this.headerBytes > 0;
  }

  /**
   * Reads what the socket has for the message under way. A header announcing more than
   * maxPayload gives a message with payload null at once (the caller ends the connection).
   */
  next(): ReadResult {
    while (this.headerBytes < HEADER_SIZE) {
      const got = this.receive(this.header, this.headerBytes, HEADER_SIZE - this.headerBytes);
      if (got === 0) return 'closed';
      if (got < 0) return 'incomplete';
      this.headerBytes += got;
    }
    const size = this.header.readUInt32LE(8);
    if (size > this.maxPayload) return this.take(null);
    if (this.payload === null) this.payload = Buffer.alloc(size);
    while (this.payloadBytes < size) {
      const got = this.receive(this.payload, this.payloadBytes, size - this.payloadBytes);
      if (got === 0) return 'closed';
      if (got < 0) return 'incomplete';
      this.payloadBytes += got;
    }
    return this.take(this.payload);
  }

  /** Closes the descriptors of a message that never completed. */
  dispose(): void {
    for (const fd of this.fds) native.close(fd);
    this.reset();
  }

  private receive(buf: Buffer, offset: number, length: number): number {
    const r = native.recvSome(this.fd, buf, offset, length);
    for (const fd of r.fds) {
      // More than a message may carry: keep none of the extra ones.
      if (this.fds.length < MAX_FDS) this.fds.push(fd);
      else {
        native.close(fd);
        this.truncatedFds = true;
      }
    }
    if (r.truncatedFds) this.truncatedFds = true;
    return r.bytes;
  }

  private take(payload: Buffer | null): ReceivedMessage {
    const msg: ReceivedMessage = {
      request: this.header.readUInt32LE(0),
      flags: this.header.readUInt32LE(4),
      size: this.header.readUInt32LE(8),
      payload,
      fds: this.fds,
      truncatedFds: this.truncatedFds,
    };
    this.reset();
    return msg;
  }

  private reset(): void {
    this.headerBytes = 0;
    this.payload = null;
    this.payloadBytes = 0;
    this.fds = [];
    this.truncatedFds = false;
  }
}
