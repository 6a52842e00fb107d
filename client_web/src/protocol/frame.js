// Frame layout (SPEC §1): "PLN1", u32 LE header length, canonical JSON header, payload.

import canonicalize from "canonicalize";

import { ErrorCode, ProtocolError } from "./errors.js";
import { loadJson, MAX_HEADER_BYTES } from "./limits.js";
import { alignedInFrame } from "./safetensors.js";

const MAGIC = [0x50, 0x4c, 0x4e, 0x31]; // "PLN1"
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The frame of `header` and `payload`; a `tensors` payload is laid out for aligned reads (SPEC §2).
 * @returns {Uint8Array}
 */
export function encodeFrame(header, payload = new Uint8Array(0), { tensors = false } = {}) {
  const body = encoder.encode(canonicalize(header));
  const { head, data } =
    tensors && payload.length
      ? alignedInFrame(payload, 8 + body.length)
      : { head: payload, data: payload.subarray(0, 0) };
  const out = new Uint8Array(8 + body.length + head.length + data.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, body.length, true);
  out.set(body, 8);
  out.set(head, 8 + body.length);
  out.set(data, 8 + body.length + head.length);
  return out;
}

/**
 * Split a frame into header and payload; a malformed or over-limit frame raises ProtocolError.
 * @returns {{header: object, payload: Uint8Array}}
 */
export function decodeFrame(data) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length < 8) {
    throw new ProtocolError(ErrorCode.TRUNCATED, `frame of ${bytes.length} bytes is shorter than its 8-byte prefix`);
  }
  if (MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, "bad magic, expected PLN1");
  }
  const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (length > MAX_HEADER_BYTES) {
    throw new ProtocolError(ErrorCode.FRAME_TOO_LARGE, `header length ${length} exceeds ${MAX_HEADER_BYTES} bytes`);
  }
  if (length < 2 || 8 + length > bytes.length) {
    throw new ProtocolError(
      ErrorCode.TRUNCATED,
      `header length ${length} does not fit a frame of ${bytes.length} bytes`,
    );
  }
  let text;
  try {
    text = decoder.decode(bytes.subarray(8, 8 + length));
  } catch {
    throw new ProtocolError(ErrorCode.BAD_FRAME, "header is not UTF-8");
  }
  const header = loadJson(text);
  if (header === null || typeof header !== "object" || Array.isArray(header) || typeof header.type !== "string") {
    throw new ProtocolError(ErrorCode.BAD_FRAME, "header must be a JSON object with a string 'type'");
  }
  return { header, payload: bytes.slice(8 + length) };
}
