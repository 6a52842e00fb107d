// Messages (SPEC §3): decoding with validation, and constructors for what a client sends.

import { ErrorCode, ProtocolError } from "./errors.js";
import { decodeFrame, encodeFrame } from "./frame.js";
import { MAX_ERROR_MESSAGE_CHARS } from "./limits.js";
import { validateHeader } from "./schema.js";

export const PROTOCOL_VERSIONS = Object.freeze([1]);
const WITH_PAYLOAD = new Set(["train", "evaluate", "result", "chunk"]);

/** Validate a decoded frame; returns it as {header, payload}. */
export function parse(frame) {
  validateHeader(frame.header);
  const type = frame.header.type;
  if (frame.payload.length && !WITH_PAYLOAD.has(type)) {
    throw new ProtocolError(ErrorCode.INVALID_MESSAGE, `${type} frames carry no payload`);
  }
  if ((type === "train" || type === "evaluate") && !frame.payload.length) {
    throw new ProtocolError(ErrorCode.INVALID_MESSAGE, `${type} frames must carry the global weights`);
  }
  return frame;
}

export function decode(data) {
  return parse(decodeFrame(data));
}

/**
 * `resumable`: this client keeps its jobs across reconnects; `resume`: the task ids of its previous
 * connection it can still finish (SPEC §4.2). Both are left out unless set, as a client that predates them says.
 */
export const hello = ({
  token = null,
  clientId = null,
  secret = null,
  backend,
  maxFrameBytes,
  agent,
  encodings,
  resumable = false,
  resume,
}) =>
  encodeFrame({
    type: "hello",
    versions: [...PROTOCOL_VERSIONS],
    token,
    client_id: clientId,
    capabilities: {
      backend,
      max_frame_bytes: maxFrameBytes,
      ...(agent === undefined ? {} : { agent }),
      ...(encodings == null ? {} : { encodings }),
      ...(resumable ? { resumable: true } : {}),
    },
    ...(secret === null ? {} : { secret }),
    ...(resume == null ? {} : { resume: [...resume] }),
  });

export const result = ({ replyTo, numExamples, metrics }, delta = new Uint8Array(0)) =>
  encodeFrame({ type: "result", reply_to: replyTo, num_examples: numExamples, metrics }, delta, { tensors: true });

/** Cut a message to the error schema's limit (in code points), so no peer's string is echoed in full. */
export function truncateMessage(message) {
  if (message.length <= MAX_ERROR_MESSAGE_CHARS) return message;
  const chars = [...message];
  return chars.length <= MAX_ERROR_MESSAGE_CHARS ? message : `${chars.slice(0, MAX_ERROR_MESSAGE_CHARS - 1).join("")}…`;
}

export const error = ({ code, message, replyTo = null, fatal = false }) =>
  encodeFrame({ type: "error", code, message: truncateMessage(String(message)), reply_to: replyTo, fatal });

export const heartbeat = (seq) => encodeFrame({ type: "heartbeat", seq });
