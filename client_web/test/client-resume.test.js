// runClient with a job store: a train job is kept while it runs and named in the next hello; the
// welcome decides whether it goes on (its result answering the old task) or is discarded.
import assert from "node:assert/strict";
import { test } from "node:test";

import { runClient } from "../src/client.js";
import { fakeTrainer, SPEC, scripted, welcome } from "./fake-coordinator.js";

/** A JobStore in memory, recording what was done to it. */
function memoryJobs(initial = {}) {
  const jobs = new Map(Object.entries(initial));
  const log = [];
  return {
    jobs,
    log,
    async load(clientId) {
      return jobs.get(clientId) ?? null;
    },
    async save(clientId, job) {
      log.push(["save", clientId, job.taskId]);
      jobs.set(clientId, { ...job });
    },
    async checkpoint(clientId, taskId, blob) {
      log.push(["checkpoint", clientId, taskId]);
      if (jobs.get(clientId)?.taskId === taskId) jobs.get(clientId).checkpoint = blob;
    },
    async discard(clientId) {
      log.push(["discard", clientId]);
      jobs.delete(clientId);
    },
  };
}

const train = (id, round = 1) => ({ type: "train", task_id: id, run_id: "r1", round, model: SPEC, config: {} });

/** A trainer that calls `save` once with a blob, and records how it was asked to resume. */
function checkpointingTrainer(calls) {
  return async () => ({
    ...fakeTrainer(),
    async train(_x, y, _options, _onBatch, checkpoints) {
      calls.push({ rows: y.length, resume: checkpoints?.resume ?? null });
      await checkpoints?.save?.(Uint8Array.of(7, 7));
      return { loss: 0.25 };
    },
  });
}

const base = (FakeSocket, events, jobs, calls) => ({
  url: "ws://coordinator/ws",
  WebSocket: FakeSocket,
  backend: "wasm-cpu",
  clientId: "c-1",
  secret: "k".repeat(43),
  createTrainer: checkpointingTrainer(calls),
  data: async () => ({ x: new Float32Array(8), y: Int32Array.of(0, 1) }),
  onEvent: (e) => events.push(e.type),
  jobs,
});

test("a train job is kept with its data and checkpoints while it runs, and discarded once answered", async () => {
  const hellos = [];
  const { FakeSocket } = scripted((frame, socket) => {
    if (frame.header.type === "hello") {
      hellos.push(frame.header);
      socket.deliver(welcome("c-1"));
      socket.deliver(train("t1"), Uint8Array.of(1));
    }
    if (frame.header.type === "result") socket.hangUp(1000);
  });
  const jobs = memoryJobs();
  const calls = [];
  assert.equal(await runClient(base(FakeSocket, [], jobs, calls)), 0);
  assert.equal(hellos[0].capabilities.resumable, true);
  assert.deepEqual(jobs.log, [
    ["save", "c-1", "t1"],
    ["checkpoint", "c-1", "t1"],
    ["discard", "c-1"],
  ]);
  assert.equal(jobs.jobs.size, 0);
});

test("a stored job the welcome resumes is trained from its checkpoint on its own data, answering the old task", async () => {
  const stored = {
    taskId: "t-old",
    task: { kind: "train", taskId: "t-old", round: 4, model: SPEC, config: {}, weights: Uint8Array.of(1) },
    examples: { x: new Float32Array(12), y: Int32Array.of(2, 1, 0) },
    checkpoint: Uint8Array.of(9, 9, 9),
  };
  const hellos = [];
  const received = [];
  const { FakeSocket } = scripted((frame, socket) => {
    received.push(frame.header);
    if (frame.header.type === "hello") {
      hellos.push(frame.header);
      socket.deliver({ ...welcome("c-1"), resumed: ["t-old"] });
    }
    if (frame.header.type === "result") socket.hangUp(1000);
  });
  const jobs = memoryJobs({ "c-1": stored });
  const calls = [];
  const events = [];
  let asked = 0;
  const o = { ...base(FakeSocket, events, jobs, calls), data: async () => asked++ };
  assert.equal(await runClient(o), 0);
  assert.deepEqual(hellos[0].resume, ["t-old"]);
  assert.deepEqual(calls, [{ rows: 3, resume: Uint8Array.of(9, 9, 9) }]);
  assert.equal(asked, 0, "the kept data, not the provider's");
  const result = received.find((h) => h.type === "result");
  assert.deepEqual([result.reply_to, result.num_examples], ["t-old", 3]);
  assert.ok(events.includes("job-resumed"));
  assert.equal(jobs.jobs.size, 0);
});

test("a stored job the welcome does not resume is discarded, never trained or answered", async () => {
  const stored = {
    taskId: "t-old",
    task: { kind: "train", taskId: "t-old", round: 4, model: SPEC, config: {}, weights: Uint8Array.of(1) },
    examples: { x: new Float32Array(4), y: Int32Array.of(1) },
    checkpoint: null,
  };
  const received = [];
  const { FakeSocket } = scripted((frame, socket) => {
    received.push(frame.header.type);
    if (frame.header.type === "hello") {
      socket.deliver({ ...welcome("c-1"), resumed: [] });
      setTimeout(() => socket.hangUp(1000), 20);
    }
  });
  const jobs = memoryJobs({ "c-1": stored });
  const calls = [];
  const events = [];
  assert.equal(await runClient(base(FakeSocket, events, jobs, calls)), 0);
  assert.deepEqual(calls, []);
  assert.deepEqual(received, ["hello"]);
  assert.ok(events.includes("job-discarded"));
  assert.equal(jobs.jobs.size, 0);
});

test("a job under way when the connection drops answers on the next connection, if that resumes it", async () => {
  for (const resumed of [true, false]) {
    const hellos = [];
    const results = [];
    let release;
    const gate = new Promise((r) => {
      release = r;
    });
    const { FakeSocket } = scripted((frame, socket, index) => {
      if (frame.header.type === "hello") {
        hellos.push(frame.header);
        if (index === 0) {
          socket.deliver(welcome("c-1"));
          socket.deliver(train("t1"), Uint8Array.of(1));
          setTimeout(() => socket.hangUp(1006), 10); // dropped while the job trains
        } else {
          socket.deliver({ ...welcome("c-1"), resumed: resumed ? ["t1"] : [] });
          setTimeout(release, 10); // the job finishes after the new welcome
          setTimeout(() => socket.hangUp(1000), 60);
        }
      }
      if (frame.header.type === "result") results.push([index, frame.header.reply_to]);
    });
    const calls = [];
    const slow = async () => ({
      ...(await checkpointingTrainer(calls)()),
      train: () => gate.then(() => ({ loss: 1 })),
    });
    const o = { ...base(FakeSocket, [], memoryJobs(), calls), createTrainer: slow };
    assert.equal(await runClient(o), 0);
    assert.deepEqual(hellos[1].resume, ["t1"]);
    assert.deepEqual(results, resumed ? [[1, "t1"]] : []);
  }
});

test("without a job store the client is not resumable and names no tasks", async () => {
  const hellos = [];
  const { FakeSocket } = scripted((frame, socket) => {
    if (frame.header.type !== "hello") return;
    hellos.push(frame.header);
    socket.deliver(welcome("c-1"));
    socket.hangUp(1000);
  });
  assert.equal(await runClient(base(FakeSocket, [], null, [])), 0);
  assert.equal(hellos[0].capabilities.resumable, undefined);
  assert.equal(hellos[0].resume, undefined);
});

test("a participant who leaves fails the task under way at once instead of leaving it held open", async () => {
  const received = [];
  const abort = new AbortController();
  const { FakeSocket } = scripted((frame, socket) => {
    received.push(frame.header);
    if (frame.header.type === "hello") {
      socket.deliver(welcome("c-1"));
      socket.deliver(train("t1"), Uint8Array.of(1));
      setTimeout(() => abort.abort(), 20);
    }
  });
  const jobs = memoryJobs();
  const never = async () => ({ ...fakeTrainer(), train: () => new Promise(() => {}) });
  const o = { ...base(FakeSocket, [], jobs, []), createTrainer: never, signal: abort.signal };
  assert.equal(await runClient(o), 0);
  const error = received.find((h) => h.type === "error");
  assert.deepEqual([error.code, error.reply_to], ["training_failed", "t1"]);
  assert.equal(jobs.jobs.size, 0);
});
