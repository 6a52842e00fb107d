// The CPU pool's preconditions and size (src/cpu-pool.js), and the threaded build under Node:
// its pool starts, and training on it gives the single-threaded build's weights.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { loadCpuTrainerModule, loadThreadedTrainerModule, loadTrainerModule, threadCount } from "../bin/trainer.mjs";
import { poolSize, relaxedSimd, whyNoThreads } from "../src/cpu-pool.js";
import { readSafetensors, writeSafetensors } from "../src/protocol/safetensors.js";

class WorkerGlobalScope {}
const worker = (extra) => Object.assign(Object.create(WorkerGlobalScope.prototype), { WorkerGlobalScope }, extra);

test("threads need shared memory, cross-origin isolation and a worker, and say which is missing", () => {
  const ok = { SharedArrayBuffer, crossOriginIsolated: true };
  assert.equal(whyNoThreads(worker(ok)), null);
  assert.equal(whyNoThreads(worker({ crossOriginIsolated: true })), "SharedArrayBuffer is unavailable");
  assert.equal(whyNoThreads(worker({ ...ok, crossOriginIsolated: false })), "the page is not cross-origin isolated");
  assert.equal(whyNoThreads({ ...ok, WorkerGlobalScope }), "the trainer does not run in a worker");
  assert.equal(whyNoThreads(ok), "the trainer does not run in a worker");
});

test("relaxed SIMD is what the engine validates, and nothing where it cannot say", () => {
  assert.equal(relaxedSimd({ validate: () => false }), false);
  assert.equal(
    relaxedSimd({
      validate: () => {
        throw new Error("no");
      },
    }),
    false,
  );
  assert.equal(relaxedSimd(null), false); // no WebAssembly at all
});

test("the pool takes the machine's cores, at least one and at most the cap", () => {
  assert.deepEqual([poolSize(4), poolSize(32), poolSize(0), poolSize(undefined), poolSize(3, 2)], [4, 8, 1, 1, 2]);
  assert.equal(threadCount("3"), 3);
  assert.ok(threadCount("auto") >= 1 && threadCount(undefined) === threadCount("auto"));
  for (const bad of ["0", "-1", "1.5", "many"]) assert.throws(() => threadCount(bad), /positive integer or auto/);
});

const SPEC = JSON.stringify({
  name: "tiny-cnn",
  input_shape: [1, 12, 12],
  num_classes: 3,
  layers: [
    { type: "conv2d", in_channels: 1, out_channels: 8, kernel_size: 3 },
    { type: "relu" },
    { type: "maxpool2d", kernel_size: 2 },
    { type: "flatten" },
    { type: "linear", in_features: 200, out_features: 3 },
  ],
});

const WEIGHTS = writeSafetensors(
  new Map(
    [
      ["layers.0.weight", [8, 1, 3, 3]],
      ["layers.0.bias", [8]],
      ["layers.4.weight", [3, 200]],
      ["layers.4.bias", [3]],
    ].map(([name, shape]) => {
      const n = shape.reduce((a, b) => a * b, 1);
      return [name, { shape, data: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 1.7) / 4) }];
    }),
  ),
);

async function delta(Trainer) {
  const trainer = new Trainer(SPEC, "cpu");
  trainer.loadWeights(WEIGHTS);
  const n = 64;
  const x = Float32Array.from({ length: n * 144 }, (_, i) => Math.sin(i * 0.37));
  const y = Int32Array.from({ length: n }, (_, i) => i % 3);
  await trainer.train(x, y, { epochs: 2, batchSize: 16, lr: 0.05, shuffle: false });
  const tensors = readSafetensors((await trainer.delta(undefined, undefined)).delta);
  return Float32Array.from([...tensors.values()].flatMap((t) => [...t.data]));
}

test("the threaded build trains on its pool to the single-threaded build's weights", async () => {
  // Two callers at once (a job resumed as another starts) share the one pool rayon allows.
  const [threaded, again] = await Promise.all([loadThreadedTrainerModule(2), loadThreadedTrainerModule(2)]);
  assert.equal(again, threaded);
  assert.equal(threaded.cpuThreads(), 2);
  await assert.rejects(loadThreadedTrainerModule(3), /already has 2 threads/);
  // trainer.mjs turns relaxed SIMD on where Node has it behind a flag: the pool runs that variant,
  // and its fused multiply-adds train to the plain build's weights.
  assert.equal(relaxedSimd(), true);
  assert.equal(threaded.Trainer.relaxedSimd(), true);
  assert.equal(loadTrainerModule().Trainer.relaxedSimd(), false);
  await assert.rejects(loadThreadedTrainerModule(2, { relaxed: false }), /already runs node-threads-relaxed/);
  const [one, two] = [await delta(loadTrainerModule().Trainer), await delta(threaded.Trainer)];
  assert.equal(one.length, two.length);
  let worst = 0;
  for (let i = 0; i < one.length; i++) worst = Math.max(worst, Math.abs(one[i] - two[i]));
  assert.ok(worst < 1e-5, `largest difference ${worst}`);
  assert.ok(
    one.some((v) => v !== 0),
    "training moved the weights",
  );
});

test("one-thread CPU jobs run the relaxed-SIMD build where Node has it, and train to the plain build's weights", async () => {
  const fused = loadCpuTrainerModule().Trainer;
  assert.equal(fused.relaxedSimd(), true);
  assert.equal(loadCpuTrainerModule({ relaxed: false }), loadTrainerModule());
  const [one, two] = [await delta(loadTrainerModule().Trainer), await delta(fused)];
  assert.equal(one.length, two.length);
  let worst = 0;
  for (let i = 0; i < one.length; i++) worst = Math.max(worst, Math.abs(one[i] - two[i]));
  assert.ok(worst < 1e-5 && worst > 0, `largest difference ${worst}: fused products round differently, by little`);
});

/** Run `body` in a fresh Node process, with `pkg` the threaded build on `threads` threads: its exit. */
async function inChild(threads, body) {
  // A file, not `node -e`: the pool's workers inherit the process's flags, and --input-type refuses files.
  const dir = mkdtempSync(join(tmpdir(), "pollen-pool-"));
  const script = join(dir, "child.mjs");
  const trainer = JSON.stringify(new URL("../bin/trainer.mjs", import.meta.url).href);
  writeFileSync(
    script,
    `import { loadThreadedTrainerModule } from ${trainer};
    const pkg = await loadThreadedTrainerModule(${threads});
    ${body}`,
  );
  const child = spawn(process.execPath, [script], { stdio: ["ignore", "pipe", "pipe"] });
  const out = { stdout: "", stderr: "" };
  child.stdout.on("data", (d) => {
    out.stdout += d;
  });
  child.stderr.on("data", (d) => {
    out.stderr += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000); // a hang ends as SIGKILL
  const [code, signal] = await once(child, "exit");
  clearTimeout(timer);
  rmSync(dir, { recursive: true });
  return { code, signal, ...out };
}

test("a pool thread that dies ends the process with the reason, instead of leaving it waiting for good", async () => {
  // The main thread waits inside the module for the dead thread: only that thread can end it.
  const end = await inChild(2, `pkg.crashPoolThread(); console.log("the crash returned");`);
  assert.equal(end.signal, "SIGTERM", JSON.stringify(end));
  assert.equal(end.stdout, "");
  assert.match(
    end.stderr,
    /a CPU thread of the trainer died, and the trainer with it: .*a fault injected on a pool thread/s,
  );
});

test("without a pool the fault injection refuses, instead of trapping the calling thread", async () => {
  const end = await inChild(1, `try { pkg.crashPoolThread(); } catch (e) { console.log(e.message); }`);
  assert.deepEqual(
    [end.code, end.stdout.trim()],
    [0, "no pool to crash: call from outside a started pool of 2 or more"],
  );
});
