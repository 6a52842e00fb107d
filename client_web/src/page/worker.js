// The Web Worker: the WASM trainer and the WebSocket client live here, so training never
// blocks the page. It reports every client event to the page with postMessage.

import init, { Trainer } from "../../../client_wasm/pkg/web/pollen_trainer.js";
import * as relaxed from "../../../client_wasm/pkg/web-relaxed/pollen_trainer.js";
import * as threaded from "../../../client_wasm/pkg/web-threads/pollen_trainer.js";
import { runClient } from "../client.js";
import { poolSize, relaxedSimd, threadedTrainer, whyNoThreads } from "../cpu-pool.js";
import { readSafetensors } from "../protocol/safetensors.js";
import { watchTrainer } from "../trainer-guard.js";
import { pageJobs } from "./jobs.js";

const TINY_SPEC = JSON.stringify({
  name: "probe",
  input_shape: [2],
  num_classes: 2,
  layers: [{ type: "linear", in_features: 2, out_features: 2 }],
});
const post = (event) => self.postMessage(event);
let abort = null;
// A GPU that fails mid-job (lost, out of memory) may leave this worker's trainer dead: the page
// replaces the worker with one on the CPU, and the job under way resumes there from its last
// checkpoint (the coordinator holds its task meanwhile).
const trainers = watchTrainer({
  target: self,
  gpuFault: () => Trainer.gpuFault() ?? null,
  onStop: (reason) => post({ type: "trainer-stopped", reason }),
});

/** WebGPU when the browser has an adapter and the trainer's WebGPU device starts; the CPU otherwise, with the reason. */
async function pickBackend(cpuBecause) {
  if (cpuBecause) return { backend: "cpu", wire: "wasm-cpu", reason: cpuBecause };
  const probe = await Trainer.create(TINY_SPEC, "auto");
  const choice =
    probe.backend === "webgpu"
      ? { backend: "webgpu", wire: "webgpu", reason: "WebGPU adapter found" }
      : { backend: "cpu", wire: "wasm-cpu", reason: probe.fallbackReason ?? "CPU" };
  probe.free();
  return choice;
}

/**
 * The Trainer class for CPU jobs on one thread: the CPU-only build with relaxed SIMD's fused
 * multiply-add where the browser has relaxed SIMD (mnist-cnn trained 1.2x faster with it, README),
 * else the single-threaded build already loaded. It needs no shared memory, so no isolation.
 */
async function oneThreadTrainer() {
  if (!relaxedSimd()) return Trainer;
  try {
    await relaxed.default({ module_or_path: new URL("pollen_trainer_relaxed_bg.wasm", self.location.href) });
    return relaxed.Trainer;
  } catch {
    return Trainer; // the plain build runs the same jobs, a little slower
  }
}

/**
 * The Trainer class for CPU jobs: the threaded build with its pool when this worker can run one
 * (`threads` of them; 1 keeps one thread), else one thread, with the reason (`why`; null where one
 * thread was asked for or the pool started). A pool thread that dies says so on the page's
 * `panics` channel.
 */
async function cpuTrainer(threads, panics) {
  // One thread asked for (`?threads=1`, or a restart after a pool thread died) needs no reason.
  if (threads === 1) return { CpuTrainer: await oneThreadTrainer(), threads: 1, why: null };
  const why = whyNoThreads(self);
  if (why) return { CpuTrainer: await oneThreadTrainer(), threads: 1, why };
  try {
    // Relaxed SIMD's fused multiply-add: mnist-cnn trained 1.15x faster with it (README).
    const file = relaxedSimd() ? "pollen_trainer_threads_relaxed_bg.wasm" : "pollen_trainer_threads_bg.wasm";
    const wasm = { module_or_path: new URL(file, self.location.href) };
    const CpuTrainer = await threadedTrainer(
      threaded,
      threads,
      new URL("pool-thread.js", self.location.href),
      wasm,
      panics,
    );
    return { CpuTrainer, threads: threaded.cpuThreads(), why: null };
  } catch (e) {
    return { CpuTrainer: await oneThreadTrainer(), threads: 1, why: String(e?.message ?? e) };
  }
}

async function demoShard(welcome) {
  const response = await fetch(`/api/demo-shard?node_id=${welcome.node_id}`);
  if (!response.ok) throw new Error(`demo data: HTTP ${response.status}`);
  const t = readSafetensors(new Uint8Array(await response.arrayBuffer()));
  return {
    x: t.get("x").data,
    y: Int32Array.from(t.get("y").data, Number),
    shard: response.headers.get("x-pollen-shard"),
  };
}

async function start({ url, token, clientId, secret, userData, cpuBecause, threads, panics }) {
  await init({ module_or_path: new URL("pollen_trainer_bg.wasm", self.location.href) });
  const choice = await pickBackend(cpuBecause);
  let create = async (spec) => Trainer.create(JSON.stringify(spec), choice.backend);
  if (choice.backend === "cpu") {
    // `?threads=` comes from the page's address, which anyone can link to: capped like the default.
    const cpu = await cpuTrainer(poolSize(threads ?? navigator.hardwareConcurrency), panics);
    choice.threads = cpu.threads;
    choice.relaxedSimd = cpu.CpuTrainer.relaxedSimd();
    choice.reason += cpu.why
      ? `; one thread: ${cpu.why}`
      : cpu.threads === 1
        ? "; one thread"
        : `; ${cpu.threads} threads`;
    create = async (spec) => cpu.CpuTrainer.create(JSON.stringify(spec), "cpu");
  }
  post({ type: "backend", ...choice });
  abort = new AbortController();
  const code = await runClient({
    url,
    token,
    clientId,
    secret,
    WebSocket: self.WebSocket,
    backend: choice.wire,
    agent: `pollen-web ${navigator.userAgent.match(/(Firefox|Edg|Chrome|Safari)\/[\d.]+/)?.[0] ?? "browser"}`,
    createTrainer: async (spec) => trainers.guard(await create(spec)),
    data: async (welcome, need) => {
      // A run with a data schema trains on what the participant picks: the demo digits would not fit it.
      if (!userData && need.schema) throw new Error("this run trains on your own data: pick a file below");
      const data = userData ?? (await demoShard(welcome));
      post({ type: "data", examples: data.y.length, source: userData ? "your files" : `demo shard ${data.shard}` });
      return data;
    },
    onEvent: post,
    jobs: pageJobs,
    signal: abort.signal,
  });
  post({ type: "stopped", code });
}

self.onmessage = ({ data }) => {
  if (data.type === "start") start(data).catch((e) => post({ type: "fatal", message: String(e?.message ?? e) }));
  if (data.type === "leave") abort?.abort();
  // Fault injection, for tests: one of the pool's threads panics while this worker waits for it.
  if (data.type === "crash-cpu-thread") threaded.crashPoolThread();
};
