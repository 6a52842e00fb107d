// One thread of the trainer's CPU pool under Node (see loadTrainerModule in trainer.mjs): it
// instantiates the threaded build on the main thread's memory, says so, and then runs rayon's
// thread loop until the process ends.
//
// If this thread dies (a panic traps it: the module is built with panic = "abort"; or it runs
// out of memory), the main thread, waiting for it inside the module, waits for good and can
// hear nothing. So this thread ends the process, saying why on stderr: a client that hangs
// forever helps nobody, and one that exits is restarted or reported by whoever started it.
import { writeSync } from "node:fs";
import { createRequire } from "node:module";
import { setFlagsFromString } from "node:v8";
import { parentPort, workerData } from "node:worker_threads";

setFlagsFromString("--no-liftoff"); // as trainer.mjs does, and for its reasons
const pkg = createRequire(import.meta.url)(`../../client_wasm/pkg/${workerData.build}/pollen_trainer.js`);

let died = null;
// The panic hook's message, before the trap.
globalThis.pollenTrainerPanic = (message) => {
  died ??= String(message);
};
pkg.initSync({ module: workerData.module, memory: workerData.memory });
parentPort.postMessage("ready");
try {
  pkg.runPoolThread(workerData.token);
} catch (e) {
  died ??= String(e?.message ?? e); // a trap without a panic (out of memory): what the engine says
  writeSync(2, `pollen: a CPU thread of the trainer died, and the trainer with it: ${died}\n`);
  // process.exit ends only this thread, and the main thread cannot run a handler: a signal ends it.
  process.kill(process.pid, "SIGTERM");
}
