// One local training job in a headless Chromium page: the trainer's web build, as participants
// load it, on the page's CPU backend or on WebGPU (SwiftShader there, unless the browser has a GPU).
// train-once.mjs --runtime chromium runs its jobs here, so a benchmark can put the same job
// under Node and in a browser side by side.
import { copyFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { serve } from "../parity/parity-browser.mjs";
import { launchChromium } from "./chromium.mjs";

// The job, as a module that runs in the page or, with threads, in a worker (a trainer thread
// waits for its pool, which a page's main thread may not).
const JOB = `import init, { Trainer } from "/client_wasm/pkg/web/pollen_trainer.js";
import * as single from "/client_wasm/pkg/web-relaxed/pollen_trainer.js";
import * as threaded from "/client_wasm/pkg/web-threads/pollen_trainer.js";
import { relaxedSimd, threadedTrainer } from "/client_web/src/cpu-pool.js";
import { decodeDataFile } from "/client_web/src/data-file.js";
const bytes = async (path) => new Uint8Array(await (await fetch(path)).arrayBuffer());
async function trainerClass(backend, threads, relaxed) {
  if (!threads && backend === "cpu" && relaxed && relaxedSimd()) {
    await single.default();
    return single.Trainer;
  }
  if (!threads) {
    await init();
    return Trainer;
  }
  const build = relaxed && relaxedSimd() ? "web-threads-relaxed" : "web-threads";
  const wasm = { module_or_path: "/client_wasm/pkg/" + build + "/pollen_trainer_bg.wasm" };
  return threadedTrainer(threaded, threads, "/client_web/src/page/pool-thread.js", wasm);
}
export async function runJob({ backend, options, warmup, clip, threads, relaxed }) {
  try {
    const T = await trainerClass(backend, threads, relaxed);
    const trainer = await T.create(await (await fetch("/cases/spec.json")).text(), backend);
    const weights = await bytes("/cases/weights.safetensors");
    trainer.loadWeights(weights);
    const { x, y } = decodeDataFile(await bytes("/cases/data.safetensors"), "data.safetensors");
    if (warmup) {
      const until = performance.now() + warmup * 1000;
      do await trainer.train(x, y, options);
      while (performance.now() < until);
      trainer.loadWeights(weights);
    }
    const loadedBytes = T.memoryBytes();
    const started = performance.now();
    const report = await trainer.train(x, y, options);
    const seconds = (performance.now() - started) / 1000;
    const gpu = trainer.gpuMemory();
    const d = await trainer.delta(clip ?? undefined, undefined);
    const put = await fetch("/out/delta", { method: "PUT", body: d.delta });
    if (!put.ok) throw new Error("saving the delta: HTTP " + put.status);
    return { loss: report.loss, steps: report.steps, examples: report.examples, batchParts: report.batchParts, seconds,
      precision: report.precision, overflowSteps: report.overflowSteps, gpuPeakBytes: gpu?.peakBytesReserved ?? null,
      samplesPerSecond: report.examples / seconds, norm: d.norm, clipped: d.clipped ?? null,
      backend: trainer.backend, wasmBytes: T.memoryBytes(), wasmBytesLoaded: loadedBytes, threads: threads ? threaded.cpuThreads() : 1,
      relaxedSimd: T.relaxedSimd() };
  } catch (e) {
    return { error: String(e?.message ?? e) };
  }
}
`;
const SCRIPTS = {
  "/job.js": JOB,
  "/job-worker.js": `import { runJob } from "/job.js";
self.onmessage = async ({ data }) => self.postMessage(await runJob(data));`,
};
const PAGE = `<!doctype html><meta charset="utf-8"><title>training job</title><script type="module">
import { runJob } from "/job.js";
const job = JSON.parse(decodeURIComponent(location.hash.slice(1)));
if (job.threads) {
  const worker = new Worker("/job-worker.js", { type: "module" });
  worker.onmessage = ({ data }) => { window.result = data; };
  worker.onerror = (e) => { window.result = { error: "the job's worker: " + e.message }; };
  worker.postMessage(job);
} else {
  window.result = await runJob(job);
}
</script>`;

/**
 * Train once in Chromium: `files` = {spec, weights, data} paths, `options` the trainer's train
 * options, `backend` "cpu" or "webgpu"; `warmup` (seconds) trains untimed epochs first, at least one
 * and until that long has passed (see train-once.mjs); `clip` bounds the
 * delta's norm; `threads` (CPU) runs the threaded build in a worker with a pool of that many, and
 * without it a CPU job runs on one thread on the page; either in its relaxed-SIMD variant where the
 * browser has relaxed SIMD and `relaxed` is true. Resolves to
 * {report, delta}: the job's report (loss, steps, examples, batchParts, seconds, samplesPerSecond,
 * norm, clipped, backend, wasmBytes, threads, relaxedSimd) and the delta's safetensors bytes; rejects
 * with the page's error or on timeout.
 */
export async function trainInChromium(
  files,
  options,
  { backend = "cpu", warmup = 0, clip, threads, relaxed = true } = {},
) {
  const dir = await mkdtemp(join(tmpdir(), "pollen-page-job-"));
  const server = serve(dir, PAGE, SCRIPTS);
  let browser;
  try {
    await copyFile(files.spec, join(dir, "spec.json"));
    await copyFile(files.weights, join(dir, "weights.safetensors"));
    await copyFile(files.data, join(dir, "data.safetensors"));
    await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
    browser = await launchChromium({ webgpu: backend === "webgpu" });
    const page = await browser.newPage();
    page.on("pageerror", (e) => console.error(`page: ${e.message}`));
    const job = encodeURIComponent(JSON.stringify({ backend, options, warmup, clip, threads, relaxed }));
    await page.goto(`http://127.0.0.1:${server.address().port}/#${job}`);
    await page.waitForFunction(() => window.result !== undefined, null, { timeout: 600_000, polling: 100 });
    const report = await page.evaluate(() => window.result);
    if (report.error) throw new Error(`the page's job failed: ${report.error}`);
    return { report, delta: await readFile(join(dir, "delta.webgpu.safetensors")) };
  } finally {
    await browser?.close();
    server.close();
    await rm(dir, { recursive: true, force: true });
  }
}
