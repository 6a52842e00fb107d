// The trainer's JavaScript API under Node: errors arrive as exceptions with clear messages,
// and the module keeps working after them. Needs client_wasm/build.sh to have run.
import assert from "node:assert/strict";
import { test } from "node:test";
import { loadTrainerModule } from "../bin/trainer.mjs";
import { decodeTensors, encodeTensors } from "../src/protocol/encodings.js";
import { readSafetensors, writeSafetensors } from "../src/protocol/safetensors.js";

const { Trainer } = loadTrainerModule();
const SPEC = JSON.stringify({
  name: "tiny",
  input_shape: [4],
  num_classes: 3,
  layers: [{ type: "linear", in_features: 4, out_features: 3 }],
});

function weights(shape = [3, 4]) {
  const n = shape.reduce((a, b) => a * b, 1);
  return writeSafetensors(
    new Map([
      ["layers.0.weight", { shape, data: Float32Array.from({ length: n }, (_, i) => (i % 7) / 10 - 0.3) }],
      ["layers.0.bias", { shape: [3], data: new Float32Array(3) }],
    ]),
  );
}

function data(n = 30) {
  const x = Float32Array.from({ length: n * 4 }, (_, i) => ((i * 37) % 11) / 11);
  const y = Int32Array.from({ length: n }, (_, i) => i % 3);
  return { x, y };
}

function trainer() {
  const t = new Trainer(SPEC, "cpu");
  t.loadWeights(weights());
  return t;
}

test("auto picks the CPU under Node and says why; webgpu refuses instead of falling back", async () => {
  const t = await Trainer.create(SPEC, "auto");
  assert.equal(t.backend, "cpu");
  assert.match(t.fallbackReason, /no WebGPU in this runtime/);
  assert.equal((await Trainer.create(SPEC, "cpu")).fallbackReason, undefined);
  await assert.rejects(Trainer.create(SPEC, "webgpu"), /WebGPU unavailable: no WebGPU in this runtime/);
  await assert.rejects(Trainer.create(SPEC, "tpu"), /unknown backend "tpu"/);
});

test("a bad spec is refused with the layer at fault", () => {
  assert.throws(() => new Trainer("{not json", "cpu"), /bad model spec/);
  const wrong = JSON.stringify({
    name: "w",
    input_shape: [4],
    num_classes: 3,
    layers: [{ type: "linear", in_features: 5, out_features: 3 }],
  });
  assert.throws(
    () => new Trainer(wrong, "cpu"),
    /bad model spec: layer 0 with input shape \[4\]: linear expects a flat input of 5/,
  );
});

test("weights of the wrong shape are refused and the old ones stay", async () => {
  const t = trainer();
  assert.throws(() => t.loadWeights(weights([4, 3])), /bad weights/);
  const { x, y } = data();
  assert.equal((await t.evaluate(x, y)).examples, 30);
});

test("bad data is refused: labels out of range, NaN images, ragged lengths", async () => {
  const t = trainer();
  const { x, y } = data();
  await assert.rejects(
    t.train(
      x,
      Int32Array.from(y, () => 3),
      {},
    ),
    /bad data: label 3 is not a class in 0..3/,
  );
  const nan = x.slice();
  nan[5] = NaN;
  await assert.rejects(t.train(nan, y, {}), /bad data: images contain NaN/);
  await assert.rejects(t.train(x.subarray(1), y, {}), /bad data/);
});

test("a diverging loss stops training with an error and leaves the global weights", async () => {
  // Weights near float32's limit overflow the logits on the first batch.
  const t = new Trainer(SPEC, "cpu");
  const big = (shape) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(3e38) });
  t.loadWeights(
    writeSafetensors(
      new Map([
        ["layers.0.weight", big([3, 4])],
        ["layers.0.bias", big([3])],
      ]),
    ),
  );
  const { x, y } = data();
  await assert.rejects(
    t.train(x, y, { shuffle: false }),
    /training diverged: loss became (NaN|inf) in epoch 1, batch 1/,
  );
  assert.equal((await t.delta(undefined, undefined)).norm, 0);
  t.loadWeights(weights());
  await t.train(x, y, { lr: 0.05 });
  assert.ok((await t.delta(undefined, undefined)).norm > 0);
});

test("a second call while training is refused as busy", async () => {
  const t = trainer();
  const { x, y } = data(300);
  const first = t.train(x, y, { epochs: 2 }, () => new Promise((ok) => setTimeout(ok, 0)));
  await assert.rejects(t.train(x, y, {}), /the trainer is busy/);
  assert.equal((await first).examples, 600);
});

test("a model too big for wasm memory is an error, and the module still works", async () => {
  const huge = JSON.stringify({
    name: "huge",
    input_shape: [784],
    num_classes: 10,
    layers: [
      { type: "linear", in_features: 784, out_features: 2000000 },
      { type: "relu" },
      { type: "linear", in_features: 2000000, out_features: 10 },
    ],
  });
  assert.throws(() => new Trainer(huge, "cpu"), /out of memory: the model needs about \d+ MB/);
  await assert.rejects(Trainer.create(huge, "auto"), /out of memory/);
  const { x, y } = data();
  assert.equal((await trainer().train(x, y, {})).examples, 30);
});

test("options are checked before training", async () => {
  const t = trainer();
  const { x, y } = data();
  await assert.rejects(t.train(x, y, { optimizer: "lion" }), /optimizer "lion"/);
  await assert.rejects(t.train(x, y, { batchSize: 0 }), /batchSize must be at least 1/);
  await assert.rejects(t.train(x, y, { learningRate: 0.1 }), /unknown field/);
});

test("the delta goes in fp32, fp16 or int8 (stochastic), and fp16 or int8 weights load", async () => {
  const t = trainer();
  const { x, y } = data();
  await t.train(x, y, { epochs: 1, batchSize: 10, lr: 0.5 });
  const exact = decodeTensors((await t.delta(undefined, undefined, "fp32")).delta);
  const half = decodeTensors((await t.delta(undefined, undefined, "fp16")).delta);
  // 128 draws: with 13 values off their levels, three draws came out identical about once in
  // 4,000 jobs (a CI run failed so); many more make that negligible and let the mean show that
  // the rounding is unbiased, which rounding to nearest is not.
  const draws = Array.from({ length: 128 }, async () => (await t.delta(undefined, undefined, "int8")).delta);
  const levels = await Promise.all(draws);
  const dtypes = (bytes) => [...readSafetensors(bytes).values()].map((e) => e.dtype).sort();
  assert.deepEqual(dtypes(levels[0]), ["F32", "F32", "I8", "I8"]); // levels and their scales
  assert.deepEqual(dtypes((await t.delta(undefined, undefined, "fp16")).delta), ["F16", "F16"]);
  assert.deepEqual(dtypes((await t.delta()).delta), ["F32", "F32"]);
  assert.ok(
    levels.some((d) => Buffer.compare(d, levels[0]) !== 0),
    "stochastic rounding varies",
  );
  const decoded = levels.map((d) => decodeTensors(d));
  for (const [name, { data: want }] of exact) {
    const scale = Math.max(...want.map(Math.abs)) / 127;
    for (let i = 0; i < want.length; i++) {
      // Below binary16's normal range (2^-14) the spacing is a fixed 2^-24, not relative.
      const halfStep = Math.max(Math.abs(want[i]) * 2 ** -11, 2 ** -25);
      assert.ok(Math.abs(half.get(name).data[i] - want[i]) <= halfStep, `${name}[${i}]`);
      const got = decoded.map((d) => d.get(name).data[i]);
      for (const g of got) assert.ok(Math.abs(g - want[i]) <= scale * 1.0001);
      // Each draw is off by under one step and unbiased: the mean of 128 has a standard
      // deviation of at most scale / 22, so 0.3 scale is over 6 of them.
      const mean = got.reduce((a, b) => a + b, 0) / got.length;
      assert.ok(Math.abs(mean - want[i]) <= scale * 0.3, `${name}[${i}] mean ${mean} vs ${want[i]}`);
    }
  }
  await assert.rejects(t.delta(undefined, undefined, "bf16"), /unknown encoding "bf16"/);
  const global = decodeTensors(weights());
  for (const encoding of ["fp16", "int8"]) {
    const u = new Trainer(SPEC, "cpu");
    u.loadWeights(encodeTensors(global, encoding));
    const loaded = decodeTensors(await u.weights());
    const w = global.get("layers.0.weight").data;
    const tolerance = encoding === "fp16" ? 2 ** -11 : 0.5 / 127;
    for (let i = 0; i < w.length; i++) {
      assert.ok(Math.abs(loaded.get("layers.0.weight").data[i] - w[i]) <= tolerance * 0.3 + 1e-9);
    }
  }
});

test("augmentation of image inputs is seeded, changes training, and is refused for other inputs", async () => {
  const image = JSON.stringify({
    name: "img",
    input_shape: [1, 4, 4],
    num_classes: 3,
    layers: [{ type: "flatten" }, { type: "linear", in_features: 16, out_features: 3 }],
  });
  const x = Float32Array.from({ length: 30 * 16 }, (_, i) => ((i * 37) % 11) / 11);
  const y = Int32Array.from({ length: 30 }, (_, i) => i % 3);
  const run = async (options) => {
    const t = new Trainer(image, "cpu");
    t.loadWeights(
      writeSafetensors(
        new Map([
          [
            "layers.1.weight",
            { shape: [3, 16], data: Float32Array.from({ length: 48 }, (_, i) => (i % 7) / 10 - 0.3) },
          ],
          ["layers.1.bias", { shape: [3], data: new Float32Array(3) }],
        ]),
      ),
    );
    await t.train(x, y, { seed: 4, batchSize: 10, ...options });
    return readSafetensors((await t.delta(undefined, undefined)).delta).get("layers.1.weight").data;
  };
  const aug = { augmentCrop: 1, augmentFlip: true, augmentRotate: 15, augmentMixup: 0.4 };
  const [a, b, plain] = [await run(aug), await run(aug), await run({})];
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, plain);
  const t = trainer();
  const { x: tx, y: ty } = data();
  await assert.rejects(t.train(tx, ty, { augmentFlip: true }), /augmentation is for image inputs \[C, H, W\]/);
  await assert.rejects(t.train(tx, ty, { augmentContrast: 2 }), /augmentContrast in \[0, 1\)/);
});

test("a job resumed from a checkpoint in a fresh trainer ends exactly where the whole job ends", async () => {
  const { x, y } = data(30);
  const options = { epochs: 2, batchSize: 4, lr: 0.1, optimizer: "adam", seed: 3 };
  const whole = trainer();
  const blobs = [];
  const report = await whole.train(x, y, options, undefined, { everySteps: 5, save: (b) => blobs.push(b) });
  assert.equal(blobs.length, 3); // 8 steps an epoch, 16 in all: after steps 5, 10 and 15
  const resumed = trainer(); // a reloaded page: a new module state, the global weights loaded again
  const again = await resumed.train(x, y, options, undefined, { resume: blobs[1] });
  assert.equal(again.loss, report.loss);
  assert.deepEqual(await resumed.weights(), await whole.weights());
  // Saving a checkpoint can pause training until the store has it.
  const slow = trainer();
  let stored = 0;
  const save = () => new Promise((r) => setTimeout(() => r(stored++), 5));
  await slow.train(x, y, options, undefined, { everySteps: 8, save });
  assert.equal(stored, 1);
});

test("a checkpoint of another job, a damaged one, or bad checkpoint options are refused", async () => {
  const { x, y } = data(30);
  const options = { epochs: 1, batchSize: 4, seed: 3 };
  const blobs = [];
  await trainer().train(x, y, options, undefined, { everySteps: 2, save: (b) => blobs.push(b) });
  const other = { ...options, lr: 0.2 };
  await assert.rejects(trainer().train(x, y, other, undefined, { resume: blobs[0] }), /bad checkpoint: .*another job/);
  const damaged = blobs[0].slice();
  damaged[damaged.length - 3] ^= 0xff;
  await assert.rejects(trainer().train(x, y, options, undefined, { resume: damaged }), /checksum/);
  await assert.rejects(trainer().train(x, y, options, undefined, { resume: blobs[0].slice(0, 30) }), /cut short/);
  await assert.rejects(trainer().train(x, y, options, undefined, { every: 3 }), /unknown option "every"/);
  await assert.rejects(trainer().train(x, y, options, undefined, { save: () => {} }), /needs everySteps/);
  // The module still works after every refusal.
  assert.equal((await trainer().train(x, y, options)).steps, 8);
});

test("a regression trains on fractional Float32Array targets; labels must be whole classes", async () => {
  const spec = JSON.stringify({
    name: "line",
    input_shape: [1],
    num_classes: 1,
    loss: { type: "mse" },
    layers: [{ type: "linear", in_features: 1, out_features: 1 }],
  });
  const t = new Trainer(spec, "cpu");
  t.loadWeights(
    writeSafetensors(
      new Map([
        ["layers.0.weight", { shape: [1, 1], data: new Float32Array(1) }],
        ["layers.0.bias", { shape: [1], data: new Float32Array(1) }],
      ]),
    ),
  );
  // y = 0.5 x + 0.25: fractional targets that an integer label array would round away.
  const x = Float32Array.from({ length: 40 }, (_, i) => i / 20);
  const y = Float32Array.from(x, (v) => 0.5 * v + 0.25);
  await t.train(x, y, { epochs: 60, batchSize: 8, lr: 0.2, shuffle: false });
  const w = readSafetensors(await t.weights());
  assert.ok(Math.abs(w.get("layers.0.weight").data[0] - 0.5) < 0.02, w.get("layers.0.weight").data[0]);
  assert.ok(Math.abs(w.get("layers.0.bias").data[0] - 0.25) < 0.02, w.get("layers.0.bias").data[0]);
  assert.ok((await t.evaluate(x, y)).loss < 1e-3);
  const { x: xs } = data(3);
  await assert.rejects(trainer().train(xs, Float32Array.of(0, 1.5, 2), {}), /label 1.5 is not a class in 0..3/);
  await assert.rejects(trainer().train(xs, [0, 1, 2], {}), /y must be an Int32Array of labels or a Float32Array/);
});

test('batchSize "auto" trains with the largest batch that fits the memory budget, and says which', async () => {
  const { x, y } = data(30);
  const report = await trainer().train(x, y, { batchSize: "auto", seed: 1 });
  assert.deepEqual([report.batchSize, report.steps], [30, 1]); // every batch fits: the whole (small) dataset
  assert.equal((await trainer().train(x, y, { batchSize: 8 })).batchSize, 8);
  await assert.rejects(
    trainer().train(x, y, { batchSize: "auto", memoryBudgetMb: 0.0001 }),
    /out of memory: .* even at batch size 1, over the budget of 0 MB/,
  );
  await assert.rejects(trainer().train(x, y, { batchSize: "all" }), /a number or "auto"/);
});
