// The safetensors container (8-byte LE header length, JSON header, raw LE data), F32 only,
// as protocol v1 needs (SPEC §2).

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** @returns {Map<string, {shape: number[], data: Float32Array}>} */
export function readSafetensors(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 8) throw new Error("safetensors: too short");
  const n = Number(view.getBigUint64(0, true));
  if (8 + n > bytes.length) throw new Error("safetensors: header length exceeds the file");
  const header = JSON.parse(decoder.decode(bytes.subarray(8, 8 + n)));
  const base = 8 + n;
  const out = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [start, end] = info.data_offsets;
    const raw = bytes.slice(base + start, base + end);
    let data;
    if (info.dtype === "F32") data = new Float32Array(raw.buffer, 0, (end - start) / 4);
    else if (info.dtype === "I64") data = new BigInt64Array(raw.buffer, 0, (end - start) / 8);
    else if (info.dtype === "I32") data = new Int32Array(raw.buffer, 0, (end - start) / 4);
    else throw new Error(`safetensors: dtype ${info.dtype} is not supported`);
    out.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return out;
}

/** Write F32 tensors: entries of [name, {shape, data: Float32Array}]. */
export function writeSafetensors(tensors) {
  const header = {};
  let offset = 0;
  const names = [...tensors.keys()].sort();
  for (const name of names) {
    const { shape, data } = tensors.get(name);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + data.byteLength] };
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
