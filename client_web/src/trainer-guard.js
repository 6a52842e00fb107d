// What to do when the GPU fails under the trainer.
//
// A WebGPU device can be lost mid-job (a driver reset, the browser reclaiming the GPU) or run out
// of memory. The trainer records the fault and its next read rejects with the reason; later
// trainers of the module start on the CPU (`Trainer.gpuFault()` says why). But a GPU lost while a
// read is in flight panics inside Burn's runtime, and the module is built with `panic = "abort"`:
// the panic traps, the WebAssembly instance is dead, and every promise pending on it would never
// settle. Before it traps, the module calls `globalThis.pollenTrainerPanic(message)`, which
// `watchTrainer` installs.

/** The trainer's module panicked: it is dead, and only a fresh instance trains again. */
export class TrainerStopped extends Error {
  constructor(message) {
    super(message);
    this.name = "TrainerStopped";
  }
}

/**
 * Watch the trainer module: install the panic hook on `target` and return `guard(trainer)`.
 *
 * Without `onStop`, a guarded trainer's calls reject as the module's do, and once the module has
 * panicked every call, pending or new, rejects with a TrainerStopped. With `onStop(reason)` (a
 * page's worker, which is replaced by a fresh one on the CPU), a panic, or a call that fails while
 * `gpuFault()` names a GPU fault, calls `onStop` once and leaves the call pending for good, so that
 * nothing reports the job as failed: the fresh worker resumes it from its checkpoint.
 */
export function watchTrainer({ target = globalThis, gpuFault = () => null, onStop = null } = {}) {
  let stopped = null;
  let fail;
  const panicked = new Promise((_, reject) => {
    fail = reject;
  });
  panicked.catch(() => {}); // seen through guarded calls only
  const stop = (reason) => {
    if (stopped !== null) return;
    stopped = reason;
    fail(new TrainerStopped(reason));
    onStop?.(reason);
  };
  target.pollenTrainerPanic = (message) => stop(String(message));
  const never = new Promise(() => {});
  // What a pending call races: the panic's rejection, or (with onStop) a promise that never settles.
  const ending = onStop ? panicked.catch(() => never) : panicked;
  const settle = async (call) => {
    try {
      return await Promise.race([call, ending]);
    } catch (e) {
      const fault = onStop ? gpuFault() : null;
      if (!fault) throw e;
      stop(fault);
      return never;
    }
  };
  const guard = (trainer) =>
    new Proxy(trainer, {
      get(object, key) {
        const value = Reflect.get(object, key, object);
        if (typeof value !== "function") return value;
        return (...args) => {
          if (stopped !== null) throw new TrainerStopped(stopped);
          const out = value.apply(object, args);
          return out instanceof Promise ? settle(out) : out;
        };
      },
    });
  return { stopped: () => stopped, guard };
}
