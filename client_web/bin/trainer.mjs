// The WebAssembly trainer under Node, and data files from disk, for the Node CLIs and tests.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { setFlagsFromString } from "node:v8";
import { Worker } from "node:worker_threads";

import { relaxedSimd } from "../src/cpu-pool.js";
import { decodeDataFile } from "../src/data-file.js";

const require = createRequire(import.meta.url);

// V8 first runs a wasm function as baseline (Liftoff) code and optimises it once hot; under
// Node 20 much of a training job stayed baseline even after a warm-up epoch (mnist-mlp trained
// 2-3x slower than optimised from the start), and V8 11 miscomputed a shared-memory module's
// results in baseline code now and then. So the trainer is compiled optimised from the start.
// The flag is process-wide, and read when a module is compiled: set once, before any load.
setFlagsFromString("--no-liftoff");
// Relaxed SIMD (the threaded build's fused multiply-add variant) is on by default from Node 22
// (V8 11.4); Node 20's V8 has it complete behind this flag, read at compile time like the other.
if (!relaxedSimd()) setFlagsFromString("--experimental-wasm-relaxed-simd");

function load(build) {
  try {
    return require(`../../client_wasm/pkg/${build}/pollen_trainer.js`);
  } catch (e) {
    throw new Error(`the WebAssembly trainer is not built (run client_wasm/build.sh): ${e.message}`);
  }
}

/** The wasm-bindgen module built by client_wasm/build.sh (target nodejs), on one thread: WebGPU and the CPU. */
export function loadTrainerModule() {
  return load("node");
}

/**
 * The trainer for CPU jobs on one thread: the CPU-only build with relaxed SIMD's fused multiply-add
 * (`node-relaxed`) where this engine runs relaxed SIMD and `relaxed` is not false, else the
 * single-threaded build. Both train to the same weights but for the rounding of fused products.
 */
export function loadCpuTrainerModule({ relaxed = true } = {}) {
  return load(relaxed && relaxedSimd() ? "node-relaxed" : "node");
}

/** How many CPU threads `--threads` asks for: a positive count, or "auto" (this machine's cores). */
export function threadCount(value) {
  if (value === undefined || value === "auto") return availableParallelism();
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--threads is a positive integer or auto, not ${value}`);
  return n;
}

let threaded = null; // {threads, build, ready}: the pool being started or started, shared by every caller

/**
 * The threaded build (CPU only) with its pool of `threads` worker threads started; one pool per
 * process, so a call with another count is refused, and calls made while the pool starts wait
 * for that one start. A pool that failed to start is forgotten, so a later call tries again.
 * Worker threads do not keep the process alive. For one thread no pool is started: the build
 * then runs everything on the calling thread, as fast as the single-threaded build. `relaxed`
 * picks the variant built with relaxed SIMD's fused multiply-add (`node-threads-relaxed`), by
 * default where this engine runs it; like the thread count, it is fixed by the first call.
 */
export async function loadThreadedTrainerModule(threads, { relaxed = relaxedSimd() } = {}) {
  const build = relaxed ? "node-threads-relaxed" : "node-threads";
  if (threaded) {
    if (threaded.threads !== threads) throw new Error(`the trainer's pool already has ${threaded.threads} threads`);
    if (threaded.build !== build) throw new Error(`the trainer's pool already runs ${threaded.build}`);
    return threaded.ready;
  }
  const pkg = load(build);
  const ready = threads > 1 ? startPool(pkg, build, threads).then(() => pkg) : Promise.resolve(pkg);
  const mine = { threads, build, ready };
  threaded = mine;
  ready.catch(() => {
    if (threaded === mine) threaded = null;
  });
  return ready;
}

/** `threads` worker threads on `pkg`'s memory (the build named `build`), then rayon's pool over them (see src/threads.rs). */
async function startPool(pkg, build, threads) {
  const pool = new pkg.ThreadPool(threads);
  const started = Array.from({ length: threads }, () => {
    const workerData = { build, module: pkg.sharedModule(), memory: pkg.sharedMemory(), token: pool.handOut() };
    const worker = new Worker(new URL("./pool-thread.mjs", import.meta.url), { workerData });
    worker.unref();
    return new Promise((ready, fail) => {
      worker.once("message", ready);
      worker.once("error", fail);
    });
  });
  await Promise.all(started);
  pool.start();
}

/** A data file: safetensors with `x` (float32 [N, ...]) and `y` (int64 or int32 [N]). */
export function readDataFile(path) {
  return decodeDataFile(new Uint8Array(readFileSync(path)), path);
}
