// Protocol error codes (SPEC §6) and the exception that carries one.

export const ErrorCode = Object.freeze({
  BAD_FRAME: "bad_frame",
  TRUNCATED: "truncated",
  INVALID_MESSAGE: "invalid_message",
  UNKNOWN_TYPE: "unknown_type",
  UNSUPPORTED_VERSION: "unsupported_version",
  UNAUTHORIZED: "unauthorized",
  NOT_READY: "not_ready",
  FRAME_TOO_LARGE: "frame_too_large",
  UNKNOWN_TASK: "unknown_task",
  INVALID_UPDATE: "invalid_update",
  TRAINING_FAILED: "training_failed",
  TASK_CANCELLED: "task_cancelled",
  INTERNAL: "internal",
});

/** JSON of `value`, cut to `limit` characters: what a peer sent is quoted, never echoed in full. */
export function quote(value, limit = 64) {
  const text = typeof value === "string" ? JSON.stringify(value) : String(JSON.stringify(value));
  return text.length <= limit ? text : `${text.slice(0, limit - 1)}…`;
}

export class ProtocolError extends Error {
  /** `fatal`: the connection cannot go on (e.g. a per-connection bound was broken). */
  constructor(code, message, replyTo = null, { fatal = false } = {}) {
    super(`${code}: ${message}`);
    this.name = "ProtocolError";
    this.code = code;
    this.detail = message;
    this.replyTo = replyTo;
    this.fatal = fatal;
  }
}
