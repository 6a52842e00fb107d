#!/usr/bin/env node
// A WebGPU adapter that refuses its device: the trainer must fall back to the CPU with the reason
// ("auto"), refuse with an Error ("webgpu"), and go on working: never abort the module.
//   node client_web/bin/webgpu-fallback.mjs [--refuse-device]
// Runs a headless Chromium with a (SwiftShader) WebGPU adapter; `--refuse-device` makes every
// adapter's requestDevice reject, as a browser does when the GPU process cannot give one. Prints
// one JSON line: {auto: {backend, reason}, webgpu: "started" | its error, trained: steps}.
import { tmpdir } from "node:os";
import { parseArgs } from "node:util";

import { serve } from "../parity/parity-browser.mjs";
import { launchChromium } from "./chromium.mjs";

const { values: a } = parseArgs({ options: { "refuse-device": { type: "boolean" } } });
const PAGE = `<!doctype html><meta charset="utf-8"><title>webgpu fallback</title><script type="module">
import init, { Trainer } from "/client_wasm/pkg/web/pollen_trainer.js";
const SPEC = JSON.stringify({ name: "t", input_shape: [4], num_classes: 2,
  layers: [{ type: "linear", in_features: 4, out_features: 2 }] });
try {
  await init();
  const out = {};
  const auto = await Trainer.create(SPEC, "auto");
  out.auto = { backend: auto.backend, reason: auto.fallbackReason ?? null };
  try {
    await Trainer.create(SPEC, "webgpu");
    out.webgpu = "started";
  } catch (e) {
    out.webgpu = String(e?.message ?? e);
  }
  auto.loadWeights(await auto.weights());
  out.trained = (await auto.train(new Float32Array(8).fill(0.5), Int32Array.of(0, 1), { batchSize: 2 })).steps;
  window.result = out;
} catch (e) {
  window.result = { error: String(e?.message ?? e) };
}
</script>`;

const REFUSE = () => {
  GPUAdapter.prototype.requestDevice = () =>
    Promise.reject(new DOMException("the GPU process refused (forced by the test)", "OperationError"));
};

const server = serve(tmpdir(), PAGE);
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const browser = await launchChromium({ webgpu: true });
try {
  const context = await browser.newContext();
  if (a["refuse-device"]) await context.addInitScript(REFUSE);
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page: ${e.message}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => window.result !== undefined, null, { timeout: 120000, polling: 100 });
  console.log(JSON.stringify(await page.evaluate(() => window.result)));
} finally {
  await browser.close();
  server.close();
}
