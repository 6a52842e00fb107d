// Frames larger than the peer's limit travel as `chunk` frames (SPEC §7).

import { ErrorCode, ProtocolError } from "./errors.js";
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

export class Reassembler {
  constructor(maxMessageBytes) {
    this.maxMessageBytes = maxMessageBytes;
    this.partial = new Map();
  }

  /** Feed a parsed chunk frame; returns the whole frame's bytes once complete, else null. */
  feed({ header: h, payload }) {
    const fail = (code, msg) => {
      this.partial.delete(h.message_id);
      throw new ProtocolError(code, msg);
    };
    if (h.total_bytes > this.maxMessageBytes) {
      fail(ErrorCode.FRAME_TOO_LARGE, `chunked message of ${h.total_bytes} bytes exceeds ${this.maxMessageBytes}`);
    }
    const p = this.partial.get(h.message_id) ?? { count: h.count, total: h.total_bytes, pieces: [], size: 0 };
    if (p.count !== h.count || p.total !== h.total_bytes || h.index !== p.pieces.length || h.index >= h.count) {
      fail(ErrorCode.INVALID_MESSAGE, `chunk ${h.index}/${h.count} of ${h.message_id} is out of order or inconsistent`);
    }
    p.pieces.push(payload);
    p.size += payload.length;
    if (p.size > p.total) fail(ErrorCode.INVALID_MESSAGE, `chunks of ${h.message_id} exceed total_bytes`);
    if (p.pieces.length < p.count) {
      this.partial.set(h.message_id, p);
      return null;
    }
    this.partial.delete(h.message_id);
    if (p.size !== p.total) throw new ProtocolError(ErrorCode.INVALID_MESSAGE, `chunks of ${h.message_id} are short`);
    const whole = new Uint8Array(p.total);
    let at = 0;
    for (const piece of p.pieces) {
      whole.set(piece, at);
      at += piece.length;
    }
    return whole;
  }
}
