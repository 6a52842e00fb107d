// One thread of the trainer's CPU pool in the page (see ../cpu-pool.js): it instantiates the
// threaded build on the trainer worker's memory, says so, then runs the pool's thread loop
// for as long as the trainer worker lives.
import { initSync, runPoolThread } from "../../../client_wasm/pkg/web-threads/pollen_trainer.js";

self.onmessage = ({ data }) => {
  initSync({ module: data.module, memory: data.memory });
  self.postMessage("ready");
  runPoolThread(data.token);
};
