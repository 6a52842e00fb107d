// Frames larger than the peer's limit travel as `chunk` frames (SPEC §7).

import { ErrorCode, ProtocolError, quote } from "./errors.js";
import { encodeFrame } from "./frame.js";

const CHUNK_OVERHEAD = 512;

export function splitFrame(frame, maxFrameBytes, messageId) {
  if (frame.length <= maxFrameBytes) return [frame];
  const piece = maxFrameBytes - CHUNK_OVERHEAD - 8;
  if (piece <= 0) throw new Error(`max_frame_bytes ${maxFrameBytes} is too small to chunk into`);
  const count = Math.ceil(frame.length / piece);
  const out = [];
  for (let i = 0; i < count; i++) {
    const header = { type: "chunk", message_id: messageId, index: i, count, total_bytes: frame.length };
    out.push(encodeFrame(header, frame.subarray(i * piece, (i + 1) * piece)));
  }
  return out;
}

export const DEFAULT_MAX_PARTIAL_MESSAGES = 4; // an honest peer sends one chunked message at a time

/**
 * Joins the pieces of chunked messages; one message per id, pieces in order. What unfinished
 * messages hold is bounded: at most `maxPartialMessages` messages and `maxPartialBytes` bytes;
 * breaking either raises a fatal ProtocolError, any other bad chunk drops its message.
 */
export class Reassembler {
  constructor(
    maxMessageBytes,
    { maxPartialBytes = maxMessageBytes, maxPartialMessages = DEFAULT_MAX_PARTIAL_MESSAGES } = {},
  ) {
    this.maxMessageBytes = maxMessageBytes;
    this.maxPartialBytes = maxPartialBytes;
    this.maxPartialMessages = maxPartialMessages;
    this.partial = new Map();
    this.heldBytes = 0;
  }

  clear() {
    this.partial.clear();
    this.heldBytes = 0;
  }

  drop(id) {
    const p = this.partial.get(id);
    if (p) this.heldBytes -= p.size;
    this.partial.delete(id);
  }

  /** Feed a parsed chunk frame; returns the whole frame's bytes once complete, else null. */
  feed({ header: h, payload }) {
    const fail = (code, msg) => {
      this.drop(h.message_id);
      throw new ProtocolError(code, msg);
    };
    const name = quote(h.message_id, 40);
    if (h.total_bytes > this.maxMessageBytes) {
      fail(ErrorCode.FRAME_TOO_LARGE, `chunked message of ${h.total_bytes} bytes exceeds ${this.maxMessageBytes}`);
    }
    const known = this.partial.get(h.message_id);
    if (!known && this.partial.size >= this.maxPartialMessages) {
      throw new ProtocolError(
        ErrorCode.INVALID_MESSAGE,
        `more than ${this.maxPartialMessages} chunked messages are unfinished at once`,
        null,
        { fatal: true },
      );
    }
    const p = known ?? { count: h.count, total: h.total_bytes, pieces: [], size: 0 };
    if (
      p.count !== h.count ||
      p.total !== h.total_bytes ||
      h.index !== p.pieces.length ||
      h.index >= h.count ||
      h.count > h.total_bytes ||
      payload.length === 0
    ) {
      fail(ErrorCode.INVALID_MESSAGE, `chunk ${h.index}/${h.count} of ${name} is out of order or inconsistent`);
    }
    if (p.size + payload.length > p.total) fail(ErrorCode.INVALID_MESSAGE, `chunks of ${name} exceed total_bytes`);
    if (this.heldBytes + payload.length > this.maxPartialBytes) {
      this.clear();
      throw new ProtocolError(
        ErrorCode.FRAME_TOO_LARGE,
        `unfinished chunked messages would hold more than ${this.maxPartialBytes} bytes`,
        null,
        { fatal: true },
      );
    }
    p.pieces.push(payload);
    p.size += payload.length;
    this.heldBytes += payload.length;
    this.partial.set(h.message_id, p);
    if (p.pieces.length < p.count) return null;
    this.drop(h.message_id);
    if (p.size !== p.total) throw new ProtocolError(ErrorCode.INVALID_MESSAGE, `chunks of ${name} are short`);
    const whole = new Uint8Array(p.total);
    let at = 0;
    for (const piece of p.pieces) {
      whole.set(piece, at);
      at += piece.length;
    }
    return whole;
  }
}
