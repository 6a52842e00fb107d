// The federated client runtime: join a coordinator, answer train/evaluate tasks with a
// local trainer, heartbeat, and reconnect with backoff. Transport-agnostic: pass the
// browser's WebSocket or Node's `ws`.

import { endpoint } from "./directory.js";
import { ClientProtocol } from "./protocol/client-protocol.js";
import { ErrorCode } from "./protocol/errors.js";
import { TaskWorker } from "./task.js";

/** The encodings Pollen's trainer sends deltas in and reads weights in (SPEC §2.1). */
export const TRAINER_ENCODINGS = Object.freeze({ update: ["int8", "fp16", "fp32"], weights: ["fp16", "fp32"] });

/**
 * Run until the coordinator ends the run (resolves 0) or refuses us (resolves 2).
 *
 * Only close code 1000 means the run is over. Every other close (replaced by a newer connection
 * of ours, dropped for silence, a server error, a limit, a restart) means reconnect with backoff.
 * The identity (client id and secret) lives across reconnects; a welcome that carries a secret
 * is a new identity, reported in the `welcome` event for the caller to keep.
 *
 * @param {object} o
 * @param {string} o.url                  the coordinator's http(s)://host:port (asks /api/join where to
 *   connect, before every attempt: a gateway, or its own /ws), or a ws(s)://host:port/ws URL
 * @param {typeof fetch} [o.fetch]        the fetch to ask /api/join with (default: the global one)
 * @param {string|null} [o.token]
 * @param {string|null} [o.clientId]     the identity a previous welcome gave, to resume its node…
 * @param {string|null} [o.secret]       …with the secret that came with it
 * @param {typeof WebSocket} o.WebSocket  the WebSocket class to use
 * @param {(spec: object) => Promise<object>} o.createTrainer  a Trainer for a model spec
 * @param {(welcome: object, need: {schema: object|null, model: object}) => Promise<{x: Float32Array, y: Int32Array}>} o.data
 *   the local data provider: `need.schema` is the run's data schema (SPEC §2.3), by which an app prepares
 *   its own data (`prepareTable` does it for a CSV), or null when the run has none
 * @param {string} o.backend              reported to the coordinator (e.g. "wasm-cpu")
 * @param {{update: string[], weights: string[]}|null} [o.encodings]  what the trainer can send and read
 *   (SPEC §2.1; default: everything Pollen's trainer does); the welcome names the coordinator's choice
 * @param {(event: object) => void} [o.onEvent]  status updates for a UI or a log
 * @param {number|null} [o.giveUpAfter]   seconds without a connection before giving up (null: never)
 * @param {AbortSignal} [o.signal]        abort to leave the federation (closes with 1000, resolves 0)
 */
export async function runClient(o) {
  const emit = o.onEvent ?? (() => {});
  let clientId = o.clientId ?? null;
  let secret = o.secret ?? null;
  let backoff = 250;
  let lastConnected = Date.now();
  let welcome = null;
  const encodings = o.encodings === undefined ? TRAINER_ENCODINGS : o.encodings;
  const worker = new TaskWorker({
    createTrainer: o.createTrainer,
    data: (need) => o.data(welcome, need),
    updateEncoding: () => welcome?.encodings?.update ?? "fp32",
    onEvent: emit,
  });
  for (;;) {
    if (o.signal?.aborted) return 0;
    let outcome;
    try {
      outcome = await connectOnce(await endpoint(o.url, o.fetch));
    } catch (e) {
      outcome = { reason: String(e?.message ?? e) }; // no endpoint now: back off as for a refused connection
    }
    if (outcome.done !== undefined) return outcome.done;
    if (o.giveUpAfter != null && Date.now() - lastConnected > o.giveUpAfter * 1000) {
      emit({ type: "gave-up" });
      return 3;
    }
    emit({ type: "reconnecting", inMs: backoff, reason: outcome.reason });
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 5000);
  }

  function connectOnce(url) {
    return new Promise((resolve) => {
      const protocol = new ClientProtocol();
      const ws = new o.WebSocket(url);
      ws.binaryType = "arraybuffer";
      let beat = null;
      let queue = Promise.resolve();
      const cancelled = new Set(); // task ids the coordinator no longer needs (SPEC §6, task_cancelled)
      let finished = false;
      const finish = (value) => {
        if (finished) return;
        finished = true;
        clearInterval(beat);
        o.signal?.removeEventListener("abort", leave);
        resolve(value);
      };
      const leave = () => {
        ws.close(1000, "left");
        finish({ done: 0 });
      };
      o.signal?.addEventListener("abort", leave, { once: true });
      const flush = () => {
        for (const frame of protocol.dataToSend()) if (ws.readyState === 1) ws.send(frame);
      };
      ws.onopen = () => {
        lastConnected = Date.now();
        backoff = 250;
        emit({ type: "connected" });
        protocol.hello({ token: o.token ?? null, clientId, secret, backend: o.backend, agent: o.agent, encodings });
        flush();
        beat = setInterval(() => {
          protocol.heartbeat();
          flush();
        }, 5000);
      };
      ws.onmessage = (ev) => {
        // Tasks run one after another; frames keep arriving (and heartbeats keep going) meanwhile.
        const events = protocol.receive(new Uint8Array(ev.data));
        flush();
        for (const event of events) {
          if (event.type === "welcome") {
            welcome = event.welcome;
            clientId = event.welcome.client_id;
            if (event.welcome.secret != null) secret = event.welcome.secret; // a new node: ours was not resumed
            emit({ type: "welcome", welcome: event.welcome, identity: { clientId, secret } });
          } else if (event.type === "task") {
            queue = queue.then(() => answer(event.task)).then(flush);
          } else if (event.type === "error" && event.error.code === ErrorCode.TASK_CANCELLED) {
            // The round has the updates it needs (or its deadline passed): this task's result is not wanted.
            if (event.error.reply_to != null) cancelled.add(event.error.reply_to);
            emit({ type: "task-cancelled", message: event.error.message });
          } else if (event.type === "error") {
            emit({ type: "coordinator-error", error: event.error });
            // A fatal error (SPEC §3) means the coordinator is closing on us: refused, not dropped.
            if (event.error.fatal) finish({ done: 2 });
          }
        }
      };
      ws.onclose = (ev) => {
        if (ev.code === 1000)
          finish({ done: 0 }); // the run is complete; nothing else ends the client
        else finish({ reason: `closed with code ${ev.code}` });
      };
      ws.onerror = () => {}; // onclose follows with the code

      async function answer(task) {
        if (cancelled.has(task.taskId)) return;
        const reply = await worker.answer(task);
        if (cancelled.delete(task.taskId)) return; // cancelled while it ran: the coordinator refuses it anyway
        try {
          protocol.send(reply);
        } catch (e) {
          // A result that cannot be framed is still a failed task for the coordinator.
          const message = String(e?.message ?? e);
          protocol.error(ErrorCode.TRAINING_FAILED, message, task.taskId);
          emit({ type: "task-failed", round: task.round, message });
        }
      }
    });
  }
}
