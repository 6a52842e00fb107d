#!/usr/bin/env node
// A WebGPU device that fails: the trainer must fall back to the CPU with the reason ("auto"),
// refuse with an Error ("webgpu"), and go on working, or say why it stopped: never hang.
//   node client_web/bin/webgpu-fallback.mjs [--refuse-device | --lose-device | --lose-device-in-read]
// Runs a headless Chromium with a (SwiftShader) WebGPU adapter, with one forced failure:
//   --refuse-device        every adapter's requestDevice rejects, as when the GPU process cannot give one;
//   --lose-device          a WebGPU trainer's device is destroyed after a job, and lost (a driver reset)
//                          by the time the next job reads;
//   --lose-device-in-read  it is destroyed mid-job, as a read maps its buffer: Burn's runtime panics on that.
// Prints one JSON line: {auto: {backend, reason}, webgpu: "started" | its error, job (the WebGPU
// job's outcome, when a device is lost), gpuFault, panic (what the module said before it trapped),
// trained: steps of a CPU job afterwards (null when the module is dead)}.
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";

import { serve } from "../parity/parity-browser.mjs";
import { launchChromium } from "./chromium.mjs";

const { values: a } = parseArgs({
  options: {
    "refuse-device": { type: "boolean" },
    "lose-device": { type: "boolean" },
    "lose-device-in-read": { type: "boolean" },
  },
});
const LOSE = a["lose-device"] ? "between-jobs" : a["lose-device-in-read"] ? "in-read" : null;
const PAGE = `<!doctype html><meta charset="utf-8"><title>webgpu fallback</title><script type="module">
import init, { Trainer } from "/client_wasm/pkg/web/pollen_trainer.js";
const SPEC = JSON.stringify({ name: "t", input_shape: [4], num_classes: 2,
  layers: [{ type: "linear", in_features: 4, out_features: 2 }] });
const out = { panic: null };
window.pollenTrainerPanic = (message) => {
  out.panic = message;
  window.result = out; // the module is about to trap: nothing else will answer
};
const cpuJob = async (trainer) => {
  trainer.loadWeights(await trainer.weights());
  return (await trainer.train(new Float32Array(8).fill(0.5), Int32Array.of(0, 1), { batchSize: 2 })).steps;
};
try {
  await init();
  if (${JSON.stringify(LOSE)}) {
    const gpu = await Trainer.create(SPEC, "webgpu");
    gpu.loadWeights(await gpu.weights());
    const x = new Float32Array(4 * 256).fill(0.5), y = new Int32Array(256);
    let batches = 0;
    try {
      // The losses are read every 16 steps: in a read, the device goes as the second read maps.
      const lose = () => { if (++batches === 16 && ${JSON.stringify(LOSE)} === "in-read") window.loseDevice(); };
      await gpu.train(x, y, { batchSize: 2 }, lose);
      out.job = "trained";
      await window.loseDevice();
      await gpu.train(x, y, { batchSize: 2 });
      out.job = "trained twice";
    } catch (e) {
      out.job = String(e?.message ?? e);
    }
    out.gpuFault = Trainer.gpuFault() ?? null;
  }
  const auto = await Trainer.create(SPEC, "auto");
  out.auto = { backend: auto.backend, reason: auto.fallbackReason ?? null };
  try {
    await Trainer.create(SPEC, "webgpu");
    out.webgpu = "started";
  } catch (e) {
    out.webgpu = String(e?.message ?? e);
  }
  out.trained = await cpuJob(auto);
  window.result = out;
} catch (e) {
  window.result = { ...out, error: String(e?.message ?? e) };
}
</script>`;

// Forced failures, installed before the page's scripts run.
function failures(mode) {
  if (mode.refuse) {
    GPUAdapter.prototype.requestDevice = () =>
      Promise.reject(new DOMException("the GPU process refused (forced by the test)", "OperationError"));
  }
  let device = null;
  const request = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = async function (...args) {
    device = await request.apply(this, args);
    return device;
  };
  window.loseDevice = async () => {
    if (mode.lose === "between-jobs") {
      device.destroy();
      return device.lost;
    }
    const map = GPUBuffer.prototype.mapAsync;
    GPUBuffer.prototype.mapAsync = function (...args) {
      GPUBuffer.prototype.mapAsync = map;
      device.destroy();
      return map.apply(this, args);
    };
  };
}

const server = serve(tmpdir(), PAGE);
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const browser = await launchChromium({ webgpu: true });
try {
  const context = await browser.newContext();
  await context.addInitScript(failures, { refuse: Boolean(a["refuse-device"]), lose: LOSE });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page: ${e.message}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: 120000, polling: 100 });
  console.log(JSON.stringify(await page.evaluate(() => window.result)));
} finally {
  await browser.close();
  server.close();
}
