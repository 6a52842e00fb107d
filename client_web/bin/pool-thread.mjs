// One thread of the trainer's CPU pool under Node (see loadTrainerModule in trainer.mjs): it
// instantiates the threaded build on the main thread's memory, says so, and then runs rayon's
// thread loop until the process ends.
import { createRequire } from "node:module";
import { setFlagsFromString } from "node:v8";
import { parentPort, workerData } from "node:worker_threads";

setFlagsFromString("--no-liftoff"); // as trainer.mjs does, and for its reasons
const pkg = createRequire(import.meta.url)("../../client_wasm/pkg/node-threads/pollen_trainer.js");
pkg.initSync({ module: workerData.module, memory: workerData.memory });
parentPort.postMessage("ready");
pkg.runPoolThread(workerData.token);
