// A client's side of the connection, sans I/O (SPEC §4), named as in the `websockets`
// library (the coordinator's counterpart is the Python `ServerProtocol`): feed received
// bytes to `receive()`, send what `dataToSend()` returns. The same object runs in the
// browser, in a Web Worker and under Node.

import { DEFAULT_MAX_PARTIAL_MESSAGES, Reassembler, splitFrame } from "./chunking.js";
import { ProtocolError } from "./errors.js";
import { decodeFrame } from "./frame.js";
import * as msg from "./messages.js";

export const DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024;

let messageCounter = 0;
const messageId = () => `m${Date.now().toString(36)}${(messageCounter++).toString(36)}`;

export class ClientProtocol {
  /** `maxPartialBytes` (default: `maxMessageBytes`) and `maxPartialMessages` bound unfinished chunked messages. */
  constructor({
    maxFrameBytes = DEFAULT_MAX_FRAME_BYTES,
    maxMessageBytes = 512 * 1024 * 1024,
    maxPartialBytes = maxMessageBytes,
    maxPartialMessages = DEFAULT_MAX_PARTIAL_MESSAGES,
  } = {}) {
    this.maxFrameBytes = maxFrameBytes;
    this.peerMaxFrameBytes = DEFAULT_MAX_FRAME_BYTES;
    this.reassembler = new Reassembler(maxMessageBytes, { maxPartialBytes, maxPartialMessages });
    this.outbox = [];
    this.welcome = null;
    this.closed = false;
    this.seq = 0;
  }

  dataToSend() {
    const out = this.outbox;
    this.outbox = [];
    return out;
  }

  sendFrame(frame) {
    if (this.closed) return;
    this.outbox.push(...splitFrame(frame, this.peerMaxFrameBytes, messageId()));
  }

  /** `resumable` and `resume` (task ids this client can still finish after a reconnect): SPEC §4.2. */
  hello({ token = null, clientId = null, secret = null, backend, agent, encodings, resumable = false, resume }) {
    const maxFrameBytes = this.maxFrameBytes;
    this.sendFrame(msg.hello({ token, clientId, secret, backend, maxFrameBytes, agent, encodings, resumable, resume }));
  }

  heartbeat() {
    this.sendFrame(msg.heartbeat(this.seq++));
  }

  /** Send a task's reply, as a TaskWorker returns it: {type: "result", ...} or {type: "error", ...}. */
  send(reply) {
    if (reply.type === "result") this.result(reply.replyTo, reply.numExamples, reply.metrics, reply.delta);
    else if (reply.type === "error") this.error(reply.code, reply.message, reply.replyTo);
    else throw new TypeError(`a client cannot send ${reply.type}`);
  }

  result(replyTo, numExamples, metrics, delta) {
    this.sendFrame(msg.result({ replyTo, numExamples, metrics }, delta));
  }

  error(code, message, replyTo = null, fatal = false) {
    this.sendFrame(msg.error({ code, message, replyTo, fatal }));
    if (fatal) {
      this.closed = true;
      this.reassembler.clear();
    }
  }

  /**
   * Never throws for anything the peer sends: a violation queues an error frame.
   * @returns {Array<{type: string}>} events: welcome, task, error, heartbeat
   */
  receive(data) {
    if (this.closed) return [];
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    let frame;
    try {
      if (bytes.length > this.maxFrameBytes) {
        throw new ProtocolError("frame_too_large", `frame of ${bytes.length} bytes exceeds ${this.maxFrameBytes}`);
      }
      frame = msg.parse(decodeFrame(bytes));
      if (frame.header.type === "chunk" && this.welcome === null) {
        throw new ProtocolError("not_ready", "chunk before welcome");
      }
      if (frame.header.type === "chunk") {
        const whole = this.reassembler.feed(frame);
        if (whole === null) return [];
        frame = msg.parse(decodeFrame(whole));
        if (frame.header.type === "chunk")
          throw new ProtocolError("invalid_message", "a chunk may not carry another chunk");
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.error(e.code, e.detail, null, e.fatal);
      return [];
    }
    const h = frame.header;
    switch (h.type) {
      case "welcome":
        this.welcome = h;
        this.peerMaxFrameBytes = h.max_frame_bytes;
        // The jobs of `hello.resume` to finish; the others are void (SPEC §4.2). A coordinator that
        // predates `resumed` resumes nothing.
        return [{ type: "welcome", welcome: h, resumed: h.resumed ?? [] }];
      case "train":
      case "evaluate":
        return [
          {
            type: "task",
            task: {
              kind: h.type,
              taskId: h.task_id,
              runId: h.run_id,
              round: h.round,
              model: h.model,
              config: h.config,
              data: h.data ?? null, // the run's data schema (SPEC §2.3), when it has one
              weights: frame.payload,
            },
          },
        ];
      case "error":
        if (h.fatal) this.closed = true;
        return [{ type: "error", error: h }];
      case "heartbeat":
        return [{ type: "heartbeat", seq: h.seq }];
      default:
        this.error("invalid_message", `a coordinator may not send ${h.type}`);
        return [];
    }
  }
}
