// The safetensors container (8-byte LE header length, JSON header, raw LE data). The wire
// carries F32, F16 and I8 (SPEC §2.1, widened by encodings.js); data files also hold I32/I64
// labels. Every field of a file is checked (dtype, shape, offsets in range and contiguous)
// before any array is built, with the same refusals as coordinator/protocol/tensors.py.

import { ErrorCode, ProtocolError, quote } from "./errors.js";
import { loadJson } from "./limits.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

// F16 stays as its raw binary16 bits: JS has no float16 array on Node 20.
const ARRAYS = { F32: Float32Array, F16: Uint16Array, I8: Int8Array, I32: Int32Array, I64: BigInt64Array };
export const WIRE_DTYPES = Object.freeze(["F32", "F16", "I8"]);
export const FILE_DTYPES = Object.freeze(Object.keys(ARRAYS));
const MAX_HEADER_BYTES = 1024 * 1024;
const MAX_RANK = 8;
const HEADER_LIMITS = { maxStringChars: 4096, maxKeyChars: 256, maxArrayItems: 1024, maxObjectKeys: 1024, maxDepth: 4 };

const DTYPE_NAMES = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  F8_E4M3: "float8_e4m3",
  F8_E5M2: "float8_e5m2",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U64: "uint64",
  U32: "uint32",
  U16: "uint16",
  U8: "uint8",
  BOOL: "bool",
};

const invalid = (message) =>
  new ProtocolError(ErrorCode.INVALID_UPDATE, `payload is not a valid safetensors file: ${message}`);
/** A short printable string as is, anything else quoted and cut. */
const shown = (v) =>
  typeof v === "string" && v.length > 0 && v.length <= 64 && !/[\p{C}]/u.test(v) ? v : quote(v, 40);
const isCount = (v) => Number.isSafeInteger(v) && v >= 0;

function entry(name, info, allowed) {
  const keys = info !== null && typeof info === "object" && !Array.isArray(info) ? Object.keys(info).sort() : [];
  if (keys.join() !== "data_offsets,dtype,shape") {
    throw invalid(`${shown(name)}: an entry holds exactly dtype, shape and data_offsets`);
  }
  const { dtype, shape, data_offsets: offsets } = info;
  if (typeof dtype !== "string" || !allowed.includes(dtype) || !(dtype in ARRAYS)) {
    const d = shown(dtype);
    throw invalid(
      `${shown(name)}: dtype ${DTYPE_NAMES[d] ?? d}, expected ${allowed.map((a) => DTYPE_NAMES[a]).join(" or ")}: ` +
        `dtype ${d} is not allowed (allowed: ${[...allowed].sort().join(", ")})`,
    );
  }
  if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every(isCount)) {
    throw invalid(`${shown(name)}: shape must be at most ${MAX_RANK} non-negative integers`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(Number.isSafeInteger)) {
    throw invalid(`${shown(name)}: data_offsets must be two integers`);
  }
  const [start, end] = offsets;
  if (!(start >= 0 && start <= end)) {
    throw invalid(`${shown(name)}: data_offsets [${start}, ${end}] are not an ascending range`);
  }
  const need = shape.reduce((a, b) => a * b, 1) * ARRAYS[dtype].BYTES_PER_ELEMENT;
  if (end - start !== need) {
    throw invalid(`${shown(name)}: shape [${shape}] needs ${need} bytes, data_offsets hold ${end - start}`);
  }
  return { name, dtype, shape, start, end };
}

/**
 * Read a safetensors file whose dtypes are all in `allowed` (default: every dtype this reader
 * holds; pass WIRE_DTYPES for protocol payloads). A malformed or lying file raises
 * ProtocolError(invalid_update).
 * @returns {Map<string, {dtype: string, shape: number[], data: Float32Array | Uint16Array | Int8Array | Int32Array | BigInt64Array}>}
 */
export function readSafetensors(bytes, allowed = FILE_DTYPES) {
  if (bytes.length < 8) throw invalid(`${bytes.length} bytes are shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES) || 8 + Number(n) > bytes.length) {
    throw invalid(`header length ${n} does not fit a file of ${bytes.length} bytes`);
  }
  const base = 8 + Number(n);
  let header;
  try {
    header = loadJson(decoder.decode(bytes.subarray(8, base)), HEADER_LIMITS);
  } catch (e) {
    throw invalid(`header: ${e instanceof ProtocolError ? e.detail : "not UTF-8"}`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header))
    throw invalid("header is not a JSON object");
  const { __metadata__: metadata = {}, ...tensors } = header;
  if (
    metadata === null ||
    typeof metadata !== "object" ||
    !Object.values(metadata).every((v) => typeof v === "string")
  ) {
    throw invalid("__metadata__ must map strings to strings");
  }
  const entries = Object.entries(tensors)
    .map(([name, info]) => entry(name, info, allowed))
    .sort((a, b) => a.start - b.start || a.end - b.end || (a.name < b.name ? -1 : 1));
  let covered = 0;
  for (const e of entries) {
    if (e.start !== covered) {
      const what = e.start < covered ? "overlaps the previous tensor" : "leaves a gap before it";
      throw invalid(`${shown(e.name)}: data_offsets start at ${e.start}, which ${what} (expected ${covered})`);
    }
    covered = e.end;
  }
  if (covered !== bytes.length - base) {
    throw invalid(`tensors cover ${covered} bytes of a data section of ${bytes.length - base}`);
  }
  const out = new Map();
  for (const { name, dtype, shape, start, end } of entries) {
    const raw = bytes.slice(base + start, base + end); // a copy, aligned for the typed array
    const Type = ARRAYS[dtype];
    out.set(name, { dtype, shape, data: new Type(raw.buffer, 0, (end - start) / Type.BYTES_PER_ELEMENT) });
  }
  return out;
}

const DTYPE_OF = new Map([
  [Float32Array, "F32"],
  [Uint16Array, "F16"],
  [Int8Array, "I8"],
  [Int32Array, "I32"],
  [BigInt64Array, "I64"],
]);

/**
 * Write tensors: a Map of name to {shape, data}, the dtype given by data's type (a Uint16Array
 * holds binary16 bits). Laid out as the reference writer lays them out (SPEC §2.1): by element
 * size, largest first, then by name, so every codec writes the same bytes.
 */
export function writeSafetensors(tensors) {
  const header = {};
  let offset = 0;
  const size = (name) => tensors.get(name).data.BYTES_PER_ELEMENT;
  const names = [...tensors.keys()].sort((a, b) => size(b) - size(a) || (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    const { shape, data } = tensors.get(name);
    const dtype = DTYPE_OF.get(data.constructor);
    if (!dtype) throw new TypeError(`${name}: no safetensors dtype for ${data.constructor.name}`);
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = encoder.encode(JSON.stringify(header));
  const pad = (8 - (json.length % 8)) % 8; // keep the data 8-byte aligned, as the reference writer does
  json = encoder.encode(JSON.stringify(header) + " ".repeat(pad));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const name of names) {
    const { data } = tensors.get(name);
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}

/**
 * A safetensors payload laid out to sit `offset` bytes into a frame (SPEC §2): its header re-padded with
 * spaces so that the data section starts at a multiple of 8 bytes from the frame's first byte.
 * Returns the new 8-byte length and header, and the data section (a view, not a copy); bytes that are
 * not a safetensors file come back whole, as the head, for the receiver to refuse.
 * @returns {{head: Uint8Array, data: Uint8Array}}
 */
export function alignedInFrame(payload, offset) {
  const whole = { head: payload, data: new Uint8Array(0) };
  if (payload.length < 8) return whole;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const length = view.getBigUint64(0, true);
  if (length > BigInt(MAX_HEADER_BYTES) || 8n + length > BigInt(payload.length)) return whole;
  let end = 8 + Number(length);
  while (end > 8 && payload[end - 1] === 0x20) end--;
  const pad = (8 - ((offset + end) % 8)) % 8;
  const head = new Uint8Array(end + pad).fill(0x20);
  head.set(payload.subarray(0, end));
  new DataView(head.buffer).setBigUint64(0, BigInt(end + pad - 8), true);
  return { head, data: payload.subarray(8 + Number(length)) };
}
