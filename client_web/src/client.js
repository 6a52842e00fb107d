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
 * @typedef {object} JobStore  one job per identity (client id), kept wherever the caller likes (IndexedDB)
 * @property {(clientId: string) => Promise<object|null>} load
 * @property {(clientId: string, job: object) => Promise<void>} save     the job, replacing any kept before
 * @property {(clientId: string, taskId: string, checkpoint: Uint8Array) => Promise<void>} checkpoint  its latest
 * @property {(clientId: string) => Promise<void>} discard
 */

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
 * @param {JobStore|null} [o.jobs]        where a train job is kept while it runs (its task, data and latest
 *   checkpoint), so that the next run of this client (a reloaded page) resumes it: the hello says
 *   `resumable` and names the job's task, and the coordinator's welcome says whether it is still wanted
 *   (SPEC §4). Without a store the client is not resumable, and a dropped connection fails its tasks.
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
    jobs: o.jobs
      ? {
          save: (job) => o.jobs.save(clientId, job),
          checkpoint: (taskId, blob) => o.jobs.checkpoint(clientId, taskId, blob),
        }
      : null,
  });
  // Tasks run one after another, whichever connection brought them: a job goes on training while
  // its connection drops, and its reply goes out on the connection it was resumed on (or nowhere).
  let queue = Promise.resolve();
  const unanswered = new Set(); // task ids taken and not yet answered, on any connection
  const cancelled = new Set(); // task ids the coordinator no longer needs (SPEC §6, task_cancelled)
  const held = new Map(); // replies finished while no connection was up, for the next welcome to take
  let link = null; // the live connection: {protocol, flush, inFlight}
  for (;;) {
    if (o.signal?.aborted) return 0;
    let outcome;
    try {
      outcome = await connectOnce(await endpoint(o.url, o.fetch));
    } catch (e) {
      outcome = { reason: String(e?.message ?? e) }; // no endpoint now: back off as for a refused connection
    }
    link = null;
    if (outcome.done !== undefined) return outcome.done;
    if (o.giveUpAfter != null && Date.now() - lastConnected > o.giveUpAfter * 1000) {
      emit({ type: "gave-up" });
      return 3;
    }
    emit({ type: "reconnecting", inMs: backoff, reason: outcome.reason });
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 5000);
  }

  /** The job a previous run of this client (a page before its reload) kept for this identity. */
  async function storedJob() {
    if (!o.jobs || clientId === null) return null;
    return o.jobs.load(clientId).catch(() => null);
  }

  function connectOnce(url) {
    return new Promise((resolve) => {
      const protocol = new ClientProtocol();
      const ws = new o.WebSocket(url);
      ws.binaryType = "arraybuffer";
      let beat = null;
      let finished = false;
      let stored = null;
      const here = { protocol, flush: () => flush(), inFlight: new Set() };
      const finish = (value) => {
        if (finished) return;
        finished = true;
        clearInterval(beat);
        o.signal?.removeEventListener("abort", leave);
        resolve(value);
      };
      const leave = () => {
        // Say so for the tasks under way, or a resumable client's would be held open for its return.
        for (const taskId of here.inFlight) protocol.error(ErrorCode.TRAINING_FAILED, "the participant left", taskId);
        flush();
        if (o.jobs && clientId !== null) o.jobs.discard(clientId).catch(() => {});
        ws.close(1000, "left");
        finish({ done: 0 });
      };
      o.signal?.addEventListener("abort", leave, { once: true });
      const flush = () => {
        for (const frame of protocol.dataToSend()) if (ws.readyState === 1) ws.send(frame);
      };
      ws.onopen = async () => {
        lastConnected = Date.now();
        backoff = 250;
        emit({ type: "connected" });
        stored = await storedJob();
        const resume = [...unanswered, ...(stored && !unanswered.has(stored.taskId) ? [stored.taskId] : [])];
        const resumable = o.jobs != null;
        protocol.hello({
          token: o.token ?? null,
          clientId,
          secret,
          backend: o.backend,
          agent: o.agent,
          encodings,
          resumable,
          resume: resumable ? resume.slice(0, 8) : undefined,
        });
        flush();
        beat = setInterval(() => {
          protocol.heartbeat();
          flush();
        }, 5000);
      };
      ws.onmessage = (ev) => {
        const events = protocol.receive(new Uint8Array(ev.data));
        flush();
        for (const event of events) {
          if (event.type === "welcome") {
            welcome = event.welcome;
            clientId = event.welcome.client_id;
            if (event.welcome.secret != null) secret = event.welcome.secret; // a new node: ours was not resumed
            emit({ type: "welcome", welcome: event.welcome, identity: { clientId, secret } });
            link = here;
            resumeJobs(new Set(event.welcome.resumed ?? []), stored);
          } else if (event.type === "task") {
            take(event.task);
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
    });
  }

  /** Queue a task taken on the live connection, or resumed from a stored job (with its checkpoint). */
  function take(task, resume) {
    link.inFlight.add(task.taskId);
    unanswered.add(task.taskId);
    queue = queue.then(() => answer(task, resume));
  }

  /**
   * After a welcome: the tasks it resumed stay in flight on this connection; a stored job it did not
   * resume is void and discarded, as is the reply of a job under way whose task was not resumed.
   */
  function resumeJobs(resumed, stored) {
    for (const taskId of unanswered) if (resumed.has(taskId)) link.inFlight.add(taskId);
    for (const [taskId, reply] of held) {
      held.delete(taskId);
      unanswered.delete(taskId);
      if (resumed.has(taskId)) deliver(taskId, reply);
    }
    if (stored === null || unanswered.has(stored.taskId)) return;
    if (resumed.has(stored.taskId)) {
      emit({ type: "job-resumed", round: stored.task.round, checkpoint: stored.checkpoint != null });
      take({ ...stored.task, examples: stored.examples }, stored.checkpoint ?? undefined);
    } else {
      emit({ type: "job-discarded", round: stored.task.round });
      o.jobs.discard(clientId).catch(() => {});
    }
  }

  async function answer(task, resume) {
    try {
      if (cancelled.has(task.taskId)) return;
      const reply = await worker.answer(task, resume);
      if (link === null && o.jobs) {
        held.set(task.taskId, reply); // between connections: the next welcome says whether it is wanted
        return;
      }
      deliver(task.taskId, reply);
    } finally {
      if (!held.has(task.taskId)) unanswered.delete(task.taskId);
      if (o.jobs && clientId !== null) await o.jobs.discard(clientId).catch(() => {});
    }
  }

  function deliver(taskId, reply) {
    // Cancelled while it ran, or not resumed after a reconnect: the coordinator would refuse it.
    if (cancelled.delete(taskId) || !link?.inFlight.has(taskId)) return;
    try {
      link.protocol.send(reply);
    } catch (e) {
      // A result that cannot be framed is still a failed task for the coordinator.
      const message = String(e?.message ?? e);
      link.protocol.error(ErrorCode.TRAINING_FAILED, message, taskId);
      emit({ type: "task-failed", message });
    }
    link.inFlight.delete(taskId);
    link.flush();
  }
}
