// One parity case through a trainer: forward logits, gradients, or the delta after local
// training, as safetensors bytes. No Node APIs, so the WebGPU harness page runs it too (the
// Node default for `ParityProbe` below is only imported under Node).
import { writeSafetensors } from "../src/protocol/safetensors.js";

/** Run case `c` ({kind, spec, options}) on `trainer`, which already holds the case's weights.
 * Forward and gradient cases run on a `ParityProbe` (the class of the trainer build in use;
 * the Node build's when omitted) with the same backend and weights. */
export async function runCase(trainer, c, { x, y }, ParityProbe) {
  if (c.kind === "forward" || c.kind === "gradients") {
    ParityProbe ??= (await import("../bin/trainer.mjs")).loadTrainerModule().ParityProbe;
    const probe = await ParityProbe.create(JSON.stringify(c.spec), trainer.backend);
    try {
      probe.loadWeights(await trainer.weights());
      if (c.kind === "gradients") return await probe.gradients(x, y);
      const logits = await probe.forward(x, false);
      const shape = [y.length, logits.length / y.length];
      return writeSafetensors(new Map([["logits", { shape, data: logits }]]));
    } finally {
      probe.free();
    }
  }
  await trainer.train(x, y, c.options);
  return (await trainer.delta(undefined, undefined)).delta;
}
