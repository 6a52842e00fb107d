#!/usr/bin/env node
// Runs the parity cases that tests/test_wasm_parity.py writes, through the WebAssembly trainer:
//   node client_web/parity/parity.mjs DIR [--backend cpu|webgpu]
// Reads DIR/cases.json and writes DIR/<id>.<backend>.safetensors. `cpu` (the default) runs here in
// Node; `webgpu` runs the same cases in a headless Chromium page on its WebGPU backend
// (SwiftShader), and fails rather than fall back to the CPU.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { loadTrainerModule, readDataFile } from "../bin/trainer.mjs";
import { runCase } from "./parity-case.mjs";

const { values, positionals } = parseArgs({
  options: { backend: { type: "string", default: "cpu" } },
  allowPositionals: true,
});
const [dir] = positionals;
const backend = values.backend;
const cases = JSON.parse(readFileSync(join(dir, "cases.json"), "utf8"));

if (backend === "cpu") {
  const { Trainer } = loadTrainerModule();
  for (const c of cases) {
    const trainer = new Trainer(JSON.stringify(c.spec), "cpu");
    trainer.loadWeights(new Uint8Array(readFileSync(join(dir, c.weights))));
    writeFileSync(join(dir, `${c.id}.cpu.safetensors`), await runCase(trainer, c, readDataFile(join(dir, c.data))));
    trainer.free();
  }
} else if (backend === "webgpu") {
  const { inBrowser } = await import("./parity-browser.mjs");
  await inBrowser(dir, cases.length);
} else {
  throw new Error(`--backend ${backend}: use cpu or webgpu`);
}
