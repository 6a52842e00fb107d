// One thread of the trainer's CPU pool in the page (see ../cpu-pool.js): it instantiates the
// threaded build on the trainer worker's memory, says so, then runs the pool's thread loop
// for as long as the trainer worker lives.
//
// If this thread dies (a panic traps it: the module is built with panic = "abort"; or it runs
// out of memory), the trainer worker that waits for it waits for good and can hear nothing.
// So the thread tells the page itself, on the page's `panics` channel: the page replaces the
// worker (see main.js), and the job under way resumes from its last checkpoint.
import { initSync, runPoolThread } from "../../../client_wasm/pkg/web-threads/pollen_trainer.js";

self.onmessage = ({ data }) => {
  let told = false;
  const tell = (reason) => {
    if (told || !data.panics) return;
    told = true;
    new BroadcastChannel(data.panics).postMessage({ type: "cpu-thread-died", reason });
  };
  self.pollenTrainerPanic = tell; // the panic hook's message, before the trap
  initSync({ module: data.module, memory: data.memory });
  self.postMessage("ready");
  try {
    runPoolThread(data.token);
  } catch (e) {
    tell(String(e?.message ?? e)); // a trap without a panic (out of memory): what the engine says
    throw e;
  }
};
