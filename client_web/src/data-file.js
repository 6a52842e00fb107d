// Data files for the trainer: safetensors with `x` (float32 [N, ...]) and `y` (int64 or int32 class
// indices, or float32 targets for a regression, [N]).
// No Node APIs here, so pages (the WebGPU parity harness) decode data the same way Node does.
import { readSafetensors } from "./protocol/safetensors.js";

/** `{x: Float32Array, y: Int32Array|Float32Array}` from a data file's bytes; `name` labels errors. */
export function decodeDataFile(bytes, name) {
  const t = readSafetensors(bytes);
  const x = t.get("x");
  const y = t.get("y");
  if (!x || !y) throw new Error(`${name}: needs tensors "x" and "y"`);
  if (x.dtype !== "F32") throw new Error(`${name}: x must be float32`);
  const labels = y.dtype === "F32" ? y.data : Int32Array.from(y.data, (v) => Number(v));
  if (x.data.length !== labels.length * x.shape.slice(1).reduce((a, b) => a * b, 1)) {
    throw new Error(`${name}: x has shape ${JSON.stringify(x.shape)} but y has ${labels.length} labels`);
  }
  return { x: x.data, y: labels };
}
