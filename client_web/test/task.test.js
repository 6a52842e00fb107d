// The client's per-task work (src/task.js) against a fake trainer: what reaches the
// trainer, and what goes back on the wire.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ClientProtocol, decodeFrame } from "../src/protocol/index.js";
import { TaskWorker, trainOptions } from "../src/task.js";

const SPEC = {
  name: "tiny",
  input_shape: [4],
  num_classes: 2,
  layers: [{ type: "linear", in_features: 4, out_features: 2 }],
};
const WEIGHTS = Uint8Array.of(1, 2, 3);
const DELTA = Uint8Array.of(9, 8, 7, 6);
const DATA = { x: new Float32Array(5 * 4), y: Int32Array.of(0, 1, 1, 0, 1) };

/** A trainer that records its calls; the delta's norm is 3, so any clip below 3 clips it. */
function fakeTrainer({ failWith = null, accuracy = 0.875 } = {}) {
  const calls = { loadWeights: [], train: [], delta: [], evaluate: 0 };
  return {
    calls,
    loadWeights(bytes) {
      calls.loadWeights.push(bytes);
    },
    async train(_x, y, options, onBatch) {
      calls.train.push({ examples: y.length, options });
      await onBatch(0, 0, 2, 0.9);
      await onBatch(0, 1, 2, 0.7);
      if (failWith) throw new Error(failWith);
      return { loss: 0.7, precision: "fp32" };
    },
    async delta(clip, noiseStd) {
      calls.delta.push([clip, noiseStd]);
      return clip === undefined
        ? { delta: DELTA, norm: 3 }
        : { delta: DELTA, norm: Math.min(3, clip), clipped: clip < 3 };
    },
    async evaluate(_x, y) {
      calls.evaluate++;
      return { loss: 0.25, accuracy, examples: y.length };
    },
  };
}

/** A TaskWorker over fake trainers; returns it with the trainers it created, its events and data requests. */
function setUp(trainerOptions = {}) {
  const trainers = [];
  const events = [];
  const specs = [];
  let dataRequests = 0;
  const worker = new TaskWorker({
    createTrainer: async (spec) => {
      specs.push(spec);
      trainers.push(fakeTrainer(trainerOptions));
      return trainers.at(-1);
    },
    data: async () => {
      dataRequests++;
      return DATA;
    },
    onEvent: (e) => events.push(e),
  });
  return { worker, trainers, events, specs, dataRequests: () => dataRequests };
}

const task = (kind, config = {}, overrides = {}) => ({
  kind,
  taskId: `${kind}-1`,
  runId: "r1",
  round: 3,
  model: SPEC,
  config,
  weights: WEIGHTS,
  ...overrides,
});

test("a train task produces a result with the trainer's delta and the training metrics", async () => {
  const { worker, trainers, events } = setUp();
  const reply = await worker.answer(task("train", { "local-epochs": 1 }));
  assert.equal(reply.type, "result");
  assert.equal(reply.replyTo, "train-1");
  assert.equal(reply.numExamples, 5);
  assert.equal(reply.delta, DELTA);
  assert.equal(reply.metrics.train_loss, 0.7);
  assert.ok(reply.metrics.train_seconds >= 0 && reply.metrics.train_seconds < 5);
  assert.deepEqual(Object.keys(reply.metrics).sort(), ["train_loss", "train_seconds"]);
  assert.equal(trainers.length, 1);
  assert.deepEqual(trainers[0].calls.loadWeights, [WEIGHTS]);
  assert.equal(trainers[0].calls.train[0].examples, 5);
  assert.deepEqual(
    events.map((e) => e.type),
    ["task", "batch", "batch", "trained"],
  );
  assert.deepEqual(events[0], { type: "task", kind: "train", round: 3 });
  assert.deepEqual(events[2], { type: "batch", round: 3, epoch: 0, batch: 1, batches: 2, loss: 0.7 });
  assert.equal(events[3].loss, 0.7);
  assert.equal(events[3].precision, "fp32", "the trained event says which precision ran");
});

test("config keys map to the trainer's options; unknown keys are left out", async () => {
  const config = {
    "server-round": 3,
    "local-epochs": 2,
    "batch-size": 16,
    lr: 0.05,
    optimizer: "adam",
    momentum: 0.9,
    "weight-decay": 0.001,
    "proximal-mu": 0.01,
    seed: 7,
    nesterov: true,
    "lr-schedule": "step",
    "lr-step-size": 3,
    "lr-gamma": 0.5,
    "lr-warmup-steps": 4,
    "grad-clip-norm": 1.5,
    precision: "fp16",
    "something-else": true,
  };
  const expected = {
    epochs: 2,
    batchSize: 16,
    lr: 0.05,
    optimizer: "adam",
    momentum: 0.9,
    weightDecay: 0.001,
    proximalMu: 0.01,
    seed: 7,
    nesterov: true,
    lrSchedule: "step",
    lrStepSize: 3,
    lrGamma: 0.5,
    lrWarmupSteps: 4,
    gradClipNorm: 1.5,
    precision: "fp16",
  };
  assert.deepEqual(trainOptions(config), expected);
  assert.deepEqual(trainOptions({ lr: 0.1 }), { lr: 0.1 });
  assert.deepEqual(trainOptions({ "batch-size": "auto", "memory-budget-mb": 64 }), {
    batchSize: "auto",
    memoryBudgetMb: 64,
  });
  assert.deepEqual(trainOptions({}), {});
  const { worker, trainers } = setUp();
  await worker.answer(task("train", config));
  assert.deepEqual(trainers[0].calls.train[0].options, expected);
});

test("clipping_norm reaches the trainer's delta call and norm_bit says whether it clipped", async () => {
  const { worker, trainers } = setUp();
  const clipped = await worker.answer(task("train", { clipping_norm: 1.5 }));
  const unclipped = await worker.answer(task("train", { clipping_norm: 10 }));
  const plain = await worker.answer(task("train", {}));
  // The protocol carries no client-side noise (the coordinator adds it): noiseStd stays unset.
  assert.deepEqual(trainers[0].calls.delta, [
    [1.5, undefined],
    [10, undefined],
    [undefined, undefined],
  ]);
  assert.equal(clipped.metrics.norm_bit, 1);
  assert.equal(unclipped.metrics.norm_bit, 0);
  assert.equal("norm_bit" in plain.metrics, false);
});

test("a trainer that throws gives a training_failed error answering the task", async () => {
  const { worker, events } = setUp({ failWith: "loss is NaN at epoch 0" });
  const reply = await worker.answer(task("train", {}, { taskId: "t-7" }));
  assert.deepEqual(reply, {
    type: "error",
    code: "training_failed",
    message: "loss is NaN at epoch 0",
    replyTo: "t-7",
  });
  assert.deepEqual(events.at(-1), { type: "task-failed", round: 3, message: "loss is NaN at epoch 0" });
  assert.equal(
    events.some((e) => e.type === "trained"),
    false,
  );
});

test("a trainer that cannot be created, or data that cannot be loaded, fails the task too", async () => {
  const noTrainer = new TaskWorker({
    createTrainer: async () => {
      throw new Error("spec: unknown layer type 'lstm'");
    },
    data: async () => DATA,
  });
  const reply = await noTrainer.answer(task("evaluate", {}, { taskId: "e-2" }));
  assert.deepEqual(reply, {
    type: "error",
    code: "training_failed",
    message: "spec: unknown layer type 'lstm'",
    replyTo: "e-2",
  });

  let attempts = 0;
  const flaky = new TaskWorker({
    createTrainer: async () => fakeTrainer(),
    data: async () => {
      if (++attempts === 1) throw new Error("demo data: HTTP 503");
      return DATA;
    },
  });
  assert.equal((await flaky.answer(task("train"))).message, "demo data: HTTP 503");
  assert.equal((await flaky.answer(task("train"))).type, "result"); // asked again after the failure
  assert.equal(attempts, 2);
});

test("a regression's evaluation reports its loss alone", async () => {
  const { worker } = setUp({ accuracy: null });
  const reply = await worker.answer(task("evaluate"));
  assert.deepEqual(reply.metrics, { loss: 0.25 });
});

test("an evaluate task gives loss and accuracy, without training", async () => {
  const { worker, trainers, events } = setUp();
  const reply = await worker.answer(task("evaluate"));
  assert.deepEqual(reply, {
    type: "result",
    replyTo: "evaluate-1",
    numExamples: 5,
    metrics: { loss: 0.25, accuracy: 0.875 },
  });
  assert.deepEqual(trainers[0].calls.loadWeights, [WEIGHTS]);
  assert.equal(trainers[0].calls.evaluate, 1);
  assert.equal(trainers[0].calls.train.length, 0);
  assert.deepEqual(events.at(-1), { type: "evaluated", round: 3, loss: 0.25, accuracy: 0.875, examples: 5 });
});

test("one trainer per model spec, kept across tasks; the data is asked for once", async () => {
  const { worker, trainers, specs, dataRequests } = setUp();
  await worker.answer(task("train"));
  await worker.answer(task("evaluate", {}, { model: structuredClone(SPEC) })); // equal spec, another object
  const other = { ...SPEC, name: "tiny-2", num_classes: 3 };
  await worker.answer(task("train", {}, { model: other }));
  await worker.answer(task("train"));
  assert.equal(trainers.length, 2);
  assert.deepEqual(specs, [SPEC, other]);
  assert.equal(trainers[0].calls.loadWeights.length, 3);
  assert.equal(trainers[1].calls.loadWeights.length, 1);
  assert.equal(dataRequests(), 1);
});

test("replies go on the wire as result and error frames", async () => {
  const { worker } = setUp();
  const protocol = new ClientProtocol();
  protocol.send(await worker.answer(task("train", { clipping_norm: 1 })));
  protocol.send(await setUp({ failWith: "boom" }).worker.answer(task("train", {}, { taskId: "t-9" })));
  const [result, error] = protocol.dataToSend().map((f) => decodeFrame(f));
  assert.equal(result.header.type, "result");
  assert.equal(result.header.reply_to, "train-1");
  assert.equal(result.header.num_examples, 5);
  assert.equal(result.header.metrics.norm_bit, 1);
  assert.deepEqual(result.payload, DELTA);
  assert.deepEqual(error.header, {
    type: "error",
    code: "training_failed",
    message: "boom",
    reply_to: "t-9",
    fatal: false,
  });
  assert.equal(error.payload.length, 0);
  assert.throws(() => protocol.send({ type: "hello" }), TypeError);
});

test("the data provider is given the task's data schema, and asked again only when it changes", async () => {
  const needs = [];
  const worker = new TaskWorker({
    createTrainer: async () => fakeTrainer(),
    data: async (need) => {
      needs.push(need);
      return DATA;
    },
  });
  const table = { kind: "table", label: "y", features: ["a"], mean: [0], std: [1], classes: ["0", "1"] };
  await worker.answer(task("train", {}, { data: table }));
  await worker.answer(task("evaluate", {}, { data: table }));
  assert.equal(needs.length, 1);
  assert.deepEqual(needs[0].schema, table);
  assert.ok(needs[0].model);
  await worker.answer(task("train", {}, { data: { ...table, mean: [2] } }));
  await worker.answer(task("train"));
  assert.deepEqual(
    needs.map((n) => n.schema?.mean ?? null),
    [[0], [2], null],
  );
});
