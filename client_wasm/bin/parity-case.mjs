// One parity case through a trainer: forward logits, gradients, or the delta after local
// training, as safetensors bytes. No Node APIs, so the WebGPU harness page runs it too.
import { writeSafetensors } from "../../client_web/src/protocol/safetensors.js";

/** Run case `c` ({kind, options}) on `trainer`, which already holds the case's weights. */
export async function runCase(trainer, c, { x, y }) {
  if (c.kind === "forward") {
    const logits = await trainer.forward(x, false);
    return writeSafetensors(new Map([["logits", { shape: [y.length, logits.length / y.length], data: logits }]]));
  }
  if (c.kind === "gradients") return trainer.gradients(x, y);
  await trainer.train(x, y, c.options);
  return (await trainer.delta(undefined, undefined)).delta;
}
