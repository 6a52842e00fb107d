// One parity case through a trainer: forward logits, gradients, or the delta after local
// training, as safetensors bytes. No Node APIs, so the WebGPU harness page runs it too (the
// Node default for `ParityProbe` below is only imported under Node).
import { writeSafetensors } from "../src/protocol/safetensors.js";

/** Run case `c` ({kind, spec, options, resumeAt?}) on `trainer`, which already holds the case's weights.
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
  if (c.resumeAt === undefined) {
    await trainer.train(x, y, c.options);
    return (await trainer.delta(undefined, undefined)).delta;
  }
  // Checkpointed at step `resumeAt`, then resumed in a fresh trainer: it must end byte for byte
  // where the whole job ended, and the resumed delta is what is compared with PyTorch.
  const global = await trainer.weights();
  const blobs = [];
  await trainer.train(x, y, c.options, undefined, { everySteps: c.resumeAt, save: (b) => blobs.push(b) });
  const whole = (await trainer.delta(undefined, undefined)).delta;
  const fresh = await trainer.constructor.create(JSON.stringify(c.spec), trainer.backend);
  try {
    fresh.loadWeights(global);
    await fresh.train(x, y, c.options, undefined, { resume: blobs[0] });
    const resumed = (await fresh.delta(undefined, undefined)).delta;
    if (resumed.length !== whole.length || resumed.some((b, i) => b !== whole[i])) {
      throw new Error(`${c.id}: resumed from step ${c.resumeAt}, the job ends elsewhere than the whole job`);
    }
    return resumed;
  } finally {
    fresh.free();
  }
}
