#!/usr/bin/env node
// One local training job from files, so anyone can compare the trainer with PyTorch:
//   node client_web/bin/train-once.mjs --spec SPEC.json --weights W.safetensors --data D.safetensors \
//     --epochs E --batch-size B --lr LR --optimizer sgd|adam|adamw [--no-shuffle] [--seed S] [--clip C] \
//     --out DELTA.safetensors
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { loadTrainerModule, readDataFile } from "./trainer.mjs";

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
];
const OPTIONS = {
  ...Object.fromEntries(VALUES.map((name) => [name, { type: "string" }])),
  "no-shuffle": { type: "boolean" },
};

async function main() {
  const { values: a } = parseArgs({ options: OPTIONS });
  for (const required of ["spec", "weights", "data", "out"]) {
    if (!a[required]) throw new Error(`--${required} is required`);
  }
  const { Trainer } = loadTrainerModule();
  const trainer = new Trainer(readFileSync(a.spec, "utf8"), "cpu");
  trainer.loadWeights(new Uint8Array(readFileSync(a.weights)));
  const { x, y } = readDataFile(a.data);
  const options = {
    epochs: Number(a.epochs ?? 1),
    batchSize: Number(a["batch-size"] ?? 10),
    lr: Number(a.lr ?? 0.05),
    optimizer: a.optimizer ?? "sgd",
    shuffle: !a["no-shuffle"],
  };
  if (a.seed !== undefined) options.seed = Number(a.seed);
  if (a.momentum !== undefined) options.momentum = Number(a.momentum);
  const loadedBytes = Trainer.memoryBytes();
  const started = performance.now();
  const report = await trainer.train(x, y, options);
  const seconds = (performance.now() - started) / 1000;
  const d = await trainer.delta(a.clip === undefined ? undefined : Number(a.clip), undefined);
  writeFileSync(a.out, d.delta);
  console.log(
    JSON.stringify({
      loss: report.loss,
      steps: report.steps,
      examples: report.examples,
      seconds,
      samplesPerSecond: report.examples / seconds,
      norm: d.norm,
      clipped: d.clipped ?? null,
      wasmBytes: Trainer.memoryBytes(), // this process's one job: its peak linear memory
      wasmBytesLoaded: loadedBytes,
    }),
  );
}

main().catch((e) => {
  console.error(`train-once: ${e.message ?? e}`);
  process.exit(1);
});
