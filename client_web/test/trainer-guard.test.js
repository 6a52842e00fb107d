// What a trainer's callers see when its GPU fails: src/trainer-guard.js against a fake trainer
// whose calls the test settles by hand, and a fake global for the module's panic hook.
import assert from "node:assert/strict";
import { test } from "node:test";

import { TrainerStopped, watchTrainer } from "../src/trainer-guard.js";

/** A trainer whose `train()` stays pending until the test resolves or rejects it. */
function handTrainer() {
  const t = { backend: "webgpu", calls: 0 };
  t.train = () => {
    t.calls += 1;
    return new Promise((resolve, reject) => Object.assign(t, { resolve, reject }));
  };
  t.free = () => "freed";
  return t;
}

const pending = (promise, ms = 50) =>
  Promise.race([
    promise.then(
      () => "settled",
      () => "settled",
    ),
    new Promise((ok) => setTimeout(() => ok("pending"), ms)),
  ]);

test("a guarded trainer answers as the module does while nothing fails", { timeout: 5000 }, async () => {
  const target = {};
  const { guard, stopped } = watchTrainer({ target });
  const trainer = handTrainer();
  const g = guard(trainer);
  assert.equal(g.backend, "webgpu");
  assert.equal(g.free(), "freed");
  const job = g.train();
  trainer.resolve({ steps: 3 });
  assert.deepEqual(await job, { steps: 3 });
  const failing = g.train();
  trainer.reject(new Error("bad options"));
  await assert.rejects(failing, /bad options/);
  assert.equal(stopped(), null);
});

test("a panic rejects the pending call and every later one with the module's message", { timeout: 5000 }, async () => {
  const target = {};
  const { guard, stopped } = watchTrainer({ target });
  const trainer = handTrainer();
  const g = guard(trainer);
  const job = g.train();
  target.pollenTrainerPanic("the trainer stopped: Failed to map buffer (the WebGPU device was lost)");
  await assert.rejects(job, (e) => e instanceof TrainerStopped && /device was lost/.test(e.message));
  assert.throws(() => g.train(), TrainerStopped);
  assert.equal(trainer.calls, 1, "a dead module is not called again");
  assert.match(stopped(), /Failed to map buffer/);
});

test("with onStop, a GPU fault or a panic hands the job over once and leaves the call pending", {
  timeout: 5000,
}, async () => {
  for (const how of ["fault", "panic"]) {
    const target = {};
    const stops = [];
    let fault = null;
    const { guard } = watchTrainer({ target, gpuFault: () => fault, onStop: (why) => stops.push(why) });
    const trainer = handTrainer();
    const job = guard(trainer).train();
    if (how === "fault") {
      fault = "the WebGPU device was lost (Destroyed): destroyed";
      trainer.reject(new Error("backend failure: the WebGPU device was lost (Destroyed): destroyed"));
    } else {
      target.pollenTrainerPanic("the trainer stopped: Failed to map buffer");
      target.pollenTrainerPanic("a second report is ignored");
    }
    assert.equal(await pending(job), "pending", how);
    assert.equal(stops.length, 1, how);
    assert.match(stops[0], how === "fault" ? /device was lost/ : /Failed to map buffer/);
  }
});

test("with onStop, a failure that is not the GPU's still rejects: the task fails as usual", {
  timeout: 5000,
}, async () => {
  const stops = [];
  const { guard } = watchTrainer({ target: {}, gpuFault: () => null, onStop: (why) => stops.push(why) });
  const trainer = handTrainer();
  const job = guard(trainer).train();
  trainer.reject(new Error("non-finite loss"));
  await assert.rejects(job, /non-finite loss/);
  assert.deepEqual(stops, []);
});
