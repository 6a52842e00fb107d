#!/usr/bin/env node
// Runs the parity cases that tests/test_wasm_parity.py writes, through the WebAssembly trainer:
//   node client_wasm/bin/parity.mjs DIR      (reads DIR/cases.json, writes DIR/<id>.out.safetensors)
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

import { writeSafetensors } from "../../client_web/src/protocol/safetensors.js";
import { loadTrainerModule, readDataFile } from "./trainer.mjs";

const dir = process.argv[2];
const { Trainer } = loadTrainerModule();
const cases = JSON.parse(readFileSync(join(dir, "cases.json"), "utf8"));
for (const c of cases) {
  const trainer = new Trainer(JSON.stringify(c.spec), "cpu");
  trainer.loadWeights(new Uint8Array(readFileSync(join(dir, c.weights))));
  const { x, y } = readDataFile(join(dir, c.data));
  let out;
  if (c.kind === "forward") {
    const logits = await trainer.forward(x, false);
    out = writeSafetensors(new Map([["logits", { shape: [y.length, logits.length / y.length], data: logits }]]));
  } else if (c.kind === "gradients") {
    out = await trainer.gradients(x, y);
  } else {
    await trainer.train(x, y, c.options);
    out = (await trainer.delta(undefined, undefined)).delta;
  }
  writeFileSync(join(dir, `${c.id}.out.safetensors`), out);
  trainer.free();
}
