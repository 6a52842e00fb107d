// Tensor encodings on the wire (SPEC §2.1): fp32, fp16, and int8 with per-chunk scales, byte
// for byte what coordinator/protocol/encodings.py and the Rust trainer write, checked by the
// shared protocol/vectors/encodings.json. Every step is float32 arithmetic: Math.fround after
// each +, ×, ÷ of two float32 values is exactly the float32 operation (a double holds the exact
// result to more than twice float32's precision, so there is no double rounding).

import { ErrorCode, ProtocolError, quote } from "./errors.js";
import { readSafetensors, WIRE_DTYPES, writeSafetensors } from "./safetensors.js";

export const ENCODINGS = Object.freeze(["fp32", "fp16", "int8"]);
export const CHUNK = 256;
export const SCALES_SUFFIX = ":scales";
const FP16_MAX = 65504;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** x rounded to the nearest integer, ties to even. */
export function roundTiesEven(x) {
  const r = Math.round(x); // ties toward +infinity
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** binary16 bits of a float32 value (nearest, ties to even); RangeError past ±65504 or not finite. */
export function toHalfBits(value) {
  if (!Number.isFinite(value) || Math.abs(value) > FP16_MAX) {
    throw new RangeError(`${value} is not finite or beyond float16's ±65504`);
  }
  f32[0] = value;
  const sign = (u32[0] >>> 16) & 0x8000;
  const a = Math.abs(f32[0]);
  if (a < 2 ** -14) return sign | roundTiesEven(a * 2 ** 24); // subnormal; 1024 carries into the exponent
  const e = ((u32[0] >>> 23) & 0xff) - 127;
  const m = roundTiesEven(a * 2 ** (10 - e)); // in [1024, 2048]; 2048 carries into the exponent
  return sign | (((e + 15) << 10) + (m - 1024));
}

/** The float32 value of binary16 bits (every binary16 value is exact in float32). */
export function fromHalfBits(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1024 + m) * 2 ** (e - 25);
}

export const chunkCount = (n) => Math.ceil(n / CHUNK);

/**
 * {q, scales}: int8 levels and one float32 scale per chunk of CHUNK values. Without `uniforms`
 * levels round to nearest (ties to even); with them (float32 in [0, 1), one per value),
 * stochastically, which is unbiased. RangeError for a value that is not finite.
 */
export function quantizeInt8(x, uniforms = null) {
  const scales = new Float32Array(chunkCount(x.length));
  for (let c = 0; c < scales.length; c++) {
    let max = 0;
    for (let i = c * CHUNK; i < Math.min(x.length, (c + 1) * CHUNK); i++) {
      if (!Number.isFinite(x[i])) throw new RangeError(`value ${i} is not finite`);
      max = Math.max(max, Math.abs(x[i]));
    }
    scales[c] = Math.fround(max / 127);
  }
  const q = new Int8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const s = scales[Math.floor(i / CHUNK)];
    const r = s === 0 ? 0 : Math.fround(x[i] / s);
    const level = uniforms === null ? roundTiesEven(r) : Math.floor(Math.fround(r + uniforms[i]));
    q[i] = Math.min(127, Math.max(-127, level));
  }
  return { q, scales };
}

/** float32(q_i) × scales[i / CHUNK], in float32. */
export function dequantizeInt8(q, scales) {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = q[i] * scales[Math.floor(i / CHUNK)];
  return out;
}

/** n float32 uniforms in [0, 1) from the platform's CSPRNG: 24 random bits each, as numpy draws them. */
export function cryptoUniforms(n) {
  const bits = new Uint32Array(n);
  for (let at = 0; at < n; at += 16384) crypto.getRandomValues(bits.subarray(at, at + 16384));
  return Float32Array.from(bits, (b) => (b >>> 8) * 2 ** -24);
}

/**
 * Float32 tensors (a Map of name to {shape, data: Float32Array}) as safetensors in `encoding`.
 * int8 draws its rounding from `uniforms(name, n)`, or rounds to nearest when it is null.
 * RangeError for a value the encoding cannot carry.
 */
export function encodeTensors(tensors, encoding = "fp32", uniforms = null) {
  const out = new Map();
  for (const [name, { shape, data }] of tensors) {
    if (encoding === "fp32") out.set(name, { shape, data: Float32Array.from(data) });
    else if (encoding === "fp16") out.set(name, { shape, data: Uint16Array.from(data, toHalfBits) });
    else if (encoding === "int8") {
      const { q, scales } = quantizeInt8(data, uniforms === null ? null : uniforms(name, data.length));
      out.set(name, { shape, data: q });
      out.set(name + SCALES_SUFFIX, { shape: [scales.length], data: scales });
    } else throw new RangeError(`unknown encoding ${encoding}`);
  }
  return writeSafetensors(out);
}

const invalid = (message) => new ProtocolError(ErrorCode.INVALID_UPDATE, message);
const sameShape = (a, b) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Decode a wire payload in any mix of encodings into a Map of name to {shape, data: Float32Array}.
 * With `expected` (a Map of name to shape), names and shapes are checked before anything is
 * widened. ProtocolError(invalid_update) for anything SPEC §2.1 refuses.
 */
export function decodeTensors(bytes, expected = null) {
  const raw = readSafetensors(bytes, WIRE_DTYPES);
  const names = [...raw.keys()].filter((n) => !n.endsWith(SCALES_SUFFIX));
  if (expected !== null) {
    const missing = [...expected.keys()].filter((n) => !raw.has(n)).sort();
    const extra = names.filter((n) => !expected.has(n)).sort();
    if (missing.length || extra.length) {
      throw invalid(`tensor names differ: missing ${quote(missing)}, unexpected ${quote(extra)}`);
    }
    for (const [name, shape] of expected) {
      const got = raw.get(name).shape;
      if (!sameShape(got, shape)) throw invalid(`${name}: shape [${got}], expected [${shape}]`);
    }
  }
  for (const name of raw.keys()) {
    const of = name.slice(0, -SCALES_SUFFIX.length);
    if (name.endsWith(SCALES_SUFFIX) && raw.get(of)?.dtype !== "I8") {
      throw invalid(`${quote(name)}: scales without an int8 tensor ${quote(of)}`);
    }
  }
  const out = new Map();
  for (const name of names) {
    const { dtype, shape, data } = raw.get(name);
    if (dtype === "F32") out.set(name, { shape, data });
    else if (dtype === "F16") out.set(name, { shape, data: Float32Array.from(data, fromHalfBits) });
    else out.set(name, { shape, data: widenInt8(name, data, raw.get(name + SCALES_SUFFIX)) });
  }
  return out;
}

function widenInt8(name, q, scales) {
  const n = chunkCount(q.length);
  if (scales?.dtype !== "F32" || !sameShape(scales.shape, [n])) {
    throw invalid(`${quote(name)}: an int8 tensor needs ${quote(name + SCALES_SUFFIX)}, float32 of shape [${n}]`);
  }
  if (!scales.data.every((s) => Number.isFinite(s) && s >= 0)) {
    throw invalid(`${quote(name)}: scales must be finite and not negative`);
  }
  if (q.includes(-128)) throw invalid(`${quote(name)}: int8 level -128 is outside the symmetric range ±127`);
  return dequantizeInt8(q, scales.data);
}
