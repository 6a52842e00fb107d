#!/usr/bin/env node
// A headless Node client with the real WebAssembly trainer, for users and for
// `pollen simulate --backend wasm`:
//   node client_web/bin/join.mjs ws://127.0.0.1:8080/ws --data shard.safetensors [--token T] [--give-up-after S]
//     [--threads N|auto] [--quiet]
// --threads trains on the threaded build with N CPU threads (auto: one per core); unset, one thread
// (the relaxed-SIMD build where Node has relaxed SIMD).
// The data file holds `x` (float32 [N, ...]) and `y` (int64 [N]); `pollen shard` writes MNIST shards.
import { parseArgs } from "node:util";

import WebSocket from "ws";

import { runClient } from "../src/client.js";
import { loadCpuTrainerModule, loadThreadedTrainerModule, readDataFile, threadCount } from "./trainer.mjs";

const OPTIONS = {
  data: { type: "string" },
  token: { type: "string" },
  "give-up-after": { type: "string" },
  threads: { type: "string" },
  quiet: { type: "boolean" },
};

async function main() {
  const { values: a, positionals } = parseArgs({ options: OPTIONS, allowPositionals: true });
  const [url] = positionals;
  if (!url || !a.data) throw new Error("usage: join.mjs URL --data FILE [--token T]");
  const { Trainer } =
    a.threads === undefined ? loadCpuTrainerModule() : await loadThreadedTrainerModule(threadCount(a.threads));
  const data = readDataFile(a.data);
  const log = (e) => {
    if (a.quiet && !["coordinator-error", "task-failed", "gave-up"].includes(e.type)) return;
    if (e.type !== "batch") console.error(JSON.stringify(e));
  };
  const code = await runClient({
    url,
    token: a.token ?? process.env.POLLEN_JOIN_TOKEN ?? null,
    WebSocket,
    backend: "wasm-cpu",
    agent: `pollen-node/${process.version}`,
    createTrainer: async (spec) => new Trainer(JSON.stringify(spec), "cpu"),
    data: async () => data,
    onEvent: log,
    giveUpAfter: a["give-up-after"] === undefined ? null : Number(a["give-up-after"]),
  });
  process.exit(code);
}

main().catch((e) => {
  console.error(`join: ${e.message ?? e}`);
  process.exit(1);
});
