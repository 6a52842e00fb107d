// The federated client runtime: join a coordinator, answer train/evaluate tasks with a
// local trainer, heartbeat, and reconnect with backoff. Transport-agnostic: pass the
// browser's WebSocket or Node's `ws`.

import { ClientSession } from "./protocol/session.js";

/** Protocol config keys (SPEC §5) → the trainer's TrainOptions. */
export function trainOptions(config) {
  const o = {};
  const map = {
    "local-epochs": "epochs",
    "batch-size": "batchSize",
    lr: "lr",
    optimizer: "optimizer",
    momentum: "momentum",
    "weight-decay": "weightDecay",
    "proximal-mu": "proximalMu",
    seed: "seed",
  };
  for (const [wire, key] of Object.entries(map)) if (config[wire] !== undefined) o[key] = config[wire];
  return o;
}

const FATAL = new Set(["unauthorized", "unsupported_version"]);

/**
 * Run until the coordinator ends the run (resolves 0) or refuses us (resolves 2).
 *
 * @param {object} o
 * @param {string} o.url                  ws://host:port/ws
 * @param {string|null} [o.token]
 * @param {typeof WebSocket} o.WebSocket  the WebSocket class to use
 * @param {(spec: object) => Promise<object>} o.createTrainer  a Trainer for a model spec
 * @param {(welcome: object) => Promise<{x: Float32Array, y: Int32Array}>} o.data  the local data provider
 * @param {string} o.backend              reported to the coordinator (e.g. "wasm-cpu")
 * @param {(event: object) => void} [o.onEvent]  status updates for a UI or a log
 * @param {number|null} [o.giveUpAfter]   seconds without a connection before giving up (null: never)
 * @param {AbortSignal} [o.signal]        abort to leave the federation (closes with 1000, resolves 0)
 */
export async function runClient(o) {
  const emit = o.onEvent ?? (() => {});
  let clientId = o.clientId ?? null;
  let backoff = 250;
  let lastConnected = Date.now();
  const trainers = new Map();
  let data = null;
  for (;;) {
    if (o.signal?.aborted) return 0;
    const outcome = await connectOnce();
    if (outcome.done !== undefined) return outcome.done;
    if (o.giveUpAfter != null && Date.now() - lastConnected > o.giveUpAfter * 1000) {
      emit({ type: "gave-up" });
      return 3;
    }
    emit({ type: "reconnecting", inMs: backoff, reason: outcome.reason });
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 5000);
  }

  function connectOnce() {
    return new Promise((resolve) => {
      const session = new ClientSession();
      const ws = new o.WebSocket(o.url);
      ws.binaryType = "arraybuffer";
      let beat = null;
      let queue = Promise.resolve();
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
        for (const frame of session.dataToSend()) if (ws.readyState === 1) ws.send(frame);
      };
      ws.onopen = () => {
        lastConnected = Date.now();
        backoff = 250;
        emit({ type: "connected" });
        session.hello({ token: o.token ?? null, clientId, backend: o.backend, agent: o.agent });
        flush();
        beat = setInterval(() => {
          session.heartbeat();
          flush();
        }, 5000);
      };
      ws.onmessage = (ev) => {
        // Tasks run one after another; frames keep arriving (and heartbeats keep going) meanwhile.
        const events = session.receive(new Uint8Array(ev.data));
        flush();
        for (const event of events) {
          if (event.type === "welcome") {
            clientId = event.welcome.client_id;
            emit({ type: "welcome", welcome: event.welcome });
          } else if (event.type === "task") {
            queue = queue.then(() => answer(event.task, event.welcome)).then(flush);
          } else if (event.type === "error") {
            emit({ type: "coordinator-error", error: event.error });
            if (FATAL.has(event.error.code)) finish({ done: 2 });
          }
        }
      };
      ws.onclose = (ev) => {
        if (ev.code === 1000) finish({ done: 0 });
        else finish({ reason: `closed with code ${ev.code}` });
      };
      ws.onerror = () => {}; // onclose follows with the code

      async function answer(task) {
        const started = Date.now();
        emit({ type: "task", kind: task.kind, round: task.round });
        try {
          data ??= await o.data(session.welcome);
          const key = JSON.stringify(task.model);
          if (!trainers.has(key)) trainers.set(key, await o.createTrainer(task.model));
          const trainer = trainers.get(key);
          trainer.loadWeights(task.weights);
          const n = data.y.length;
          if (task.kind === "evaluate") {
            const r = await trainer.evaluate(data.x, data.y);
            session.result(task.taskId, n, { loss: r.loss, accuracy: r.accuracy });
            emit({ type: "evaluated", round: task.round, ...r });
            return;
          }
          let lastPause = Date.now();
          const onBatch = (epoch, batch, batches, loss) => {
            emit({ type: "batch", round: task.round, epoch, batch, batches, loss });
            // WASM training is synchronous: pause every ~50 ms so heartbeats and the UI keep running.
            if (Date.now() - lastPause > 50) {
              lastPause = Date.now();
              return new Promise((r) => setTimeout(r, 0));
            }
          };
          const report = await trainer.train(data.x, data.y, trainOptions(task.config), onBatch);
          const clip = task.config.clipping_norm;
          const d = await trainer.delta(clip ?? undefined, undefined);
          const metrics = { train_loss: report.loss, train_seconds: (Date.now() - started) / 1000 };
          if (d.clipped !== undefined) metrics.norm_bit = d.clipped ? 1 : 0;
          session.result(task.taskId, n, metrics, d.delta);
          emit({ type: "trained", round: task.round, loss: report.loss, seconds: metrics.train_seconds });
        } catch (e) {
          session.error("training_failed", String(e?.message ?? e), task.taskId);
          emit({ type: "task-failed", round: task.round, message: String(e?.message ?? e) });
        }
      }
    });
  }
}
