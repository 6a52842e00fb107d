// The trainer's linear memory over a session of jobs, in a process of its own (a module's
// memory only grows, so another test's jobs would hide this one's). Needs client_wasm/build.sh.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { loadTrainerModule } from "../bin/trainer.mjs";

const { Trainer } = loadTrainerModule();
const SPEC = readFileSync(new URL("../../protocol/models/mnist-cnn.json", import.meta.url), "utf8");

test("later jobs grow memory by one tensor at most: the step's reservation fits what the first freed", async () => {
  const t = new Trainer(SPEC, "cpu");
  const n = 40;
  const x = Float32Array.from({ length: n * 784 }, (_, i) => ((i * 37) % 101) / 101);
  const y = Int32Array.from({ length: n }, (_, i) => i % 10);
  const global = await t.weights(); // the model's initial weights, as a round's would come
  const sizes = [];
  for (let job = 0; job < 3; job++) {
    t.loadWeights(global);
    await t.train(x, y, { epochs: 1, batchSize: 32, lr: 0.01, shuffle: false });
    await t.delta();
    sizes.push(Trainer.memoryBytes());
  }
  // Reserved as one block, the step's 58 MiB did not fit among the blocks the first job freed,
  // and the second job grew memory by as much again. In pieces of the step's largest tensor
  // (the first linear layer's weight, 3136 x 512 floats) it grows by one piece at most, once,
  // with the allocator's own bookkeeping rounded up to wasm's 64 KiB pages.
  const piece = 4 * 3136 * 512;
  assert.ok(sizes[1] - sizes[0] <= piece + (1 << 20), `memory after each job: ${sizes}`);
  assert.equal(sizes[2], sizes[1], `memory after each job: ${sizes}`);
});
