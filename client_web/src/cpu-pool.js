// The threaded trainer build's CPU pool in a browser (client_wasm/src/threads.rs): Web Workers
// that share the trainer's memory. It needs SharedArrayBuffer, which browsers give only to
// cross-origin isolated pages (COOP and COEP headers, which the coordinator sends), and a
// trainer that runs in a worker itself, since its thread waits for the pool.

/** Why this context cannot run the pool, or null when it can. */
export function whyNoThreads(scope = globalThis) {
  if (typeof scope.SharedArrayBuffer !== "function") return "SharedArrayBuffer is unavailable";
  if (scope.crossOriginIsolated === false) return "the page is not cross-origin isolated";
  if (typeof scope.WorkerGlobalScope !== "function" || !(scope instanceof scope.WorkerGlobalScope)) {
    return "the trainer does not run in a worker";
  }
  return null;
}

// A module of one function, f32x4.relaxed_madd over its three v128 parameters: an engine
// without relaxed SIMD rejects it.
const RELAXED_MADD = Uint8Array.of(
  ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // magic, version
  ...[0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b], // type: (v128 v128 v128) -> v128
  ...[0x03, 0x02, 0x01, 0x00], // one function of that type
  ...[0x0a, 0x0d, 0x01, 0x0b, 0x00, 0x20, 0x00, 0x20, 0x01, 0x20, 0x02], // its code: three local.get,
  ...[0xfd, 0x85, 0x02, 0x0b], // f32x4.relaxed_madd, end
);

/**
 * Whether this engine runs relaxed SIMD, which the threaded build's fused multiply-add variant
 * (`web-threads-relaxed`) needs: a module using it is rejected whole where it is missing.
 */
export function relaxedSimd(wasm = globalThis.WebAssembly) {
  try {
    return wasm.validate(RELAXED_MADD);
  } catch {
    return false;
  }
}

/** How many threads to use: the browser's cores, at most `cap` (beyond, small models gain nothing). */
export function poolSize(cores = globalThis.navigator?.hardwareConcurrency, cap = 8) {
  return Math.max(1, Math.min(cap, Number.isInteger(cores) ? cores : 1));
}

/**
 * The threaded build's Trainer class, ready for `threads` threads: `pkg` (the build's module,
 * whose default export is its init) initialised with `initArg`, and its pool of workers running
 * `threadScript` started when there is more than one thread; with one, the calling thread runs
 * everything. `panics` names the BroadcastChannel on which a pool thread that dies says so (see
 * page/pool-thread.js).
 */
export async function threadedTrainer(pkg, threads, threadScript, initArg, panics = null) {
  await pkg.default(initArg);
  if (threads > 1) await startPool(pkg, threads, threadScript, panics);
  return pkg.Trainer;
}

/**
 * Start `threads` workers running `threadScript` (a URL of pool-thread.js) on the initialised
 * threaded build `pkg`, each instantiating its module on its shared memory and told the `panics`
 * channel's name; resolves once every worker is ready and the pool is built, rejects if a worker
 * fails to start or none answers within `timeoutMs`.
 */
export async function startPool(pkg, threads, threadScript, panics = null, timeoutMs = 30_000) {
  const pool = new pkg.ThreadPool(threads);
  const [module, memory] = [pkg.sharedModule(), pkg.sharedMemory()];
  const workers = [];
  const ready = Array.from({ length: threads }, () => {
    const worker = new Worker(threadScript, { type: "module" });
    workers.push(worker);
    return new Promise((resolve, reject) => {
      worker.onmessage = resolve;
      worker.onerror = (e) => reject(new Error(`a trainer thread did not start: ${e.message ?? e}`));
      worker.postMessage({ module, memory, token: pool.handOut(), panics });
    });
  });
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the trainer's threads did not start in ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([Promise.all(ready), late]);
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  pool.start();
  return workers;
}
