#!/usr/bin/env node
// One local training job from files, so anyone can compare the trainer with PyTorch:
//   node client_web/bin/train-once.mjs --spec SPEC.json --weights W.safetensors --data D.safetensors \
//     --epochs E --batch-size B --lr LR --optimizer sgd|adam|adamw [--no-shuffle] [--seed S] [--clip C] \
//     [--backend cpu|webgpu] [--runtime node|chromium] [--threads N|auto] [--out DELTA.safetensors]
//     [--precision fp32|fp16] [--eval TEST.safetensors] [--no-relaxed-simd]
// --precision fp16 trains in mixed precision where the device computes in f16 (WebGPU with
// shader-f16); the report's `precision` says what ran. --eval (Node) reports the trained model's
// loss and accuracy on a second data file. On WebGPU, `gpuPeakBytes` is the most GPU memory Burn's
// allocator held during the timed job.
// --threads runs the CPU backend on the threaded build with a pool of N workers (auto: one per core);
// without it, a CPU job runs on one thread. Either runs its relaxed-SIMD variant (fused multiply-add)
// where the engine has relaxed SIMD, unless --no-relaxed-simd; the report's `relaxedSimd` says which ran.
// --warmup trains untimed epochs first, at least one and until WARMUP_SECONDS have passed, then
// reloads the weights: WebGPU compiles and tunes its kernels for each shape once per session, and
// V8 compiles a module's hot functions with its optimising compiler in the background once they
// are hot. In Chromium 156 that went on for over a second of CPU time after a first mnist-cnn epoch
// of 500 digits, competing with a pool of two threads on two cores: the next epoch ran at 0.7x the
// speed of later ones (as fast as them with --no-wasm-dynamic-tiering). The timed epoch leaves both
// out; a participant pays them once per page load.
// Under Node, WebGPU is Dawn from the npm package webgpu (a GPU with a Vulkan driver); in Chromium it
// is the browser's (SwiftShader here). Prints the job's report as one JSON line.
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { installDawn } from "./dawn.mjs";
import {
  loadCpuTrainerModule,
  loadThreadedTrainerModule,
  loadTrainerModule,
  readDataFile,
  threadCount,
} from "./trainer.mjs";

// The least time --warmup trains for (see the top of this file).
const WARMUP_SECONDS = 3;

const VALUES = [
  "spec",
  "weights",
  "data",
  "epochs",
  "batch-size",
  "lr",
  "optimizer",
  "seed",
  "clip",
  "out",
  "momentum",
  "backend",
  "runtime",
  "threads",
  "precision",
  "eval",
];
const OPTIONS = {
  ...Object.fromEntries(VALUES.map((name) => [name, { type: "string" }])),
  "no-shuffle": { type: "boolean" },
  "no-relaxed-simd": { type: "boolean" },
  warmup: { type: "boolean" },
};

async function main() {
  const { values: a } = parseArgs({ options: OPTIONS });
  for (const required of ["spec", "weights", "data"]) {
    if (!a[required]) throw new Error(`--${required} is required`);
  }
  const backend = a.backend ?? "cpu";
  if (!["cpu", "webgpu"].includes(backend)) throw new Error(`--backend is cpu or webgpu, not ${backend}`);
  const options = {
    epochs: Number(a.epochs ?? 1),
    batchSize: Number(a["batch-size"] ?? 10),
    lr: Number(a.lr ?? 0.05),
    optimizer: a.optimizer ?? "sgd",
    shuffle: !a["no-shuffle"],
  };
  if (a.seed !== undefined) options.seed = Number(a.seed);
  if (a.momentum !== undefined) options.momentum = Number(a.momentum);
  if (a.precision !== undefined) options.precision = a.precision;
  const clip = a.clip === undefined ? undefined : Number(a.clip);
  const threads = a.threads === undefined ? null : threadCount(a.threads);
  if (threads && backend !== "cpu") throw new Error("--threads is for the CPU backend");
  if ((a.runtime ?? "node") === "chromium") {
    const { trainInChromium } = await import("./page-job.mjs"); // Playwright only where a page is wanted
    const relaxed = !a["no-relaxed-simd"];
    const { report, delta } = await trainInChromium(a, options, {
      backend,
      warmup: a.warmup ? WARMUP_SECONDS : 0,
      clip,
      threads,
      relaxed,
    });
    if (a.out) writeFileSync(a.out, delta);
    console.log(JSON.stringify(report));
    return;
  }
  if (a.runtime && a.runtime !== "node") throw new Error(`--runtime is node or chromium, not ${a.runtime}`);
  const adapter = backend === "webgpu" ? await installDawn() : null;
  const relaxed = a["no-relaxed-simd"] ? { relaxed: false } : {};
  const pkg = threads
    ? await loadThreadedTrainerModule(threads, relaxed)
    : backend === "cpu"
      ? loadCpuTrainerModule(relaxed)
      : loadTrainerModule();
  const { Trainer } = pkg;
  const spec = readFileSync(a.spec, "utf8");
  const trainer = backend === "webgpu" ? await Trainer.create(spec, "webgpu") : new Trainer(spec, "cpu");
  const weights = new Uint8Array(readFileSync(a.weights));
  trainer.loadWeights(weights);
  const { x, y } = readDataFile(a.data);
  if (a.warmup) {
    const until = performance.now() + WARMUP_SECONDS * 1000;
    do await trainer.train(x, y, options);
    while (performance.now() < until);
    trainer.loadWeights(weights);
  }
  const loadedBytes = Trainer.memoryBytes();
  const started = performance.now();
  const report = await trainer.train(x, y, options);
  const seconds = (performance.now() - started) / 1000;
  const gpu = trainer.gpuMemory();
  const d = await trainer.delta(clip, undefined);
  if (a.out) writeFileSync(a.out, d.delta);
  const test = a.eval ? readDataFile(a.eval) : null;
  const evaluation = test ? await trainer.evaluate(test.x, test.y) : null;
  console.log(
    JSON.stringify({
      loss: report.loss,
      steps: report.steps,
      examples: report.examples,
      batchParts: report.batchParts,
      precision: report.precision,
      overflowSteps: report.overflowSteps,
      fp16: trainer.fp16,
      evalLoss: evaluation?.loss ?? null,
      evalAccuracy: evaluation?.accuracy ?? null,
      seconds,
      samplesPerSecond: report.examples / seconds,
      norm: d.norm,
      clipped: d.clipped ?? null,
      backend: trainer.backend,
      adapter,
      threads: threads ? pkg.cpuThreads() : 1,
      relaxedSimd: Trainer.relaxedSimd(),
      wasmBytes: Trainer.memoryBytes(), // this process's one job: its peak linear memory
      wasmBytesLoaded: loadedBytes,
      gpuPeakBytes: gpu?.peakBytesReserved ?? null, // WebGPU: the job's most reserved, as Burn counts it
    }),
  );
}

main().catch((e) => {
  console.error(`train-once: ${e.message ?? e}`);
  process.exit(1);
});
