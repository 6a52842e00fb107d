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
  INTERNAL: "internal",
});

export class ProtocolError extends Error {
  constructor(code, message, replyTo = null) {
    super(`${code}: ${message}`);
    this.name = "ProtocolError";
    this.code = code;
    this.detail = message;
    this.replyTo = replyTo;
  }
}
