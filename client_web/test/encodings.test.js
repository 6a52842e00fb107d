// The shared encoding vectors (protocol/vectors/encodings.json): the JS codec writes and reads
// SPEC §2.1's fp16 and int8 byte for byte as the Python codec and the Rust trainer do.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { cryptoUniforms, decodeTensors, encodeTensors, fromHalfBits, toHalfBits } from "../src/protocol/encodings.js";
import { ProtocolError } from "../src/protocol/errors.js";

const vectors = JSON.parse(readFileSync(new URL("../../protocol/vectors/encodings.json", import.meta.url)));
const bytes = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => Number.parseInt(b, 16));
const f32 = (h) => new Float32Array(bytes(h).buffer);
const hex = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString("hex");

for (const v of vectors.encode) {
  test(`encoding vector ${v.name} is written and read byte for byte`, () => {
    const tensors = new Map(
      Object.entries(v.tensors).map(([n, t]) => [n, { shape: t.shape, data: f32(t.values_hex) }]),
    );
    const uniforms = v.uniforms_hex ? (name) => f32(v.uniforms_hex[name]) : null;
    assert.equal(Buffer.from(encodeTensors(tensors, v.encoding, uniforms)).toString("hex"), v.payload_hex);
    const shapes = new Map(Object.entries(v.tensors).map(([n, t]) => [n, t.shape]));
    const out = decodeTensors(bytes(v.payload_hex), shapes);
    assert.deepEqual(Object.fromEntries([...out].map(([n, t]) => [n, hex(t.data)])), v.decoded_hex);
  });
}

for (const v of vectors.unencodable) {
  test(`unencodable vector ${v.name} is refused by the sender`, () => {
    const tensors = new Map([["w", { shape: [f32(v.values_hex).length], data: f32(v.values_hex) }]]);
    assert.throws(() => encodeTensors(tensors, v.encoding, (_, n) => cryptoUniforms(n)), RangeError);
  });
}

for (const v of vectors.refused) {
  test(`refused encoding vector ${v.name} is ${v.error}`, () => {
    assert.throws(
      () => decodeTensors(bytes(v.payload_hex)),
      (e) => e instanceof ProtocolError && e.code === v.error,
    );
  });
}

test("every binary16 value survives float32 and back", () => {
  for (let h = 0; h < 0x10000; h++) {
    if ((h & 0x7c00) === 0x7c00) continue; // infinity and NaN are never sent
    assert.equal(toHalfBits(fromHalfBits(h)), h);
  }
});

test("a wrong model is refused before anything is widened", () => {
  const w = new Map([["w", { shape: [300], data: new Float32Array(300).fill(0.5) }]]);
  const payload = encodeTensors(w, "int8");
  assert.throws(() => decodeTensors(payload, new Map([["w", [301]]])), /w: shape \[300\], expected \[301\]/);
  assert.throws(() => decodeTensors(payload, new Map([["v", [300]]])), /missing \["v"\], unexpected \["w"\]/);
});

test("crypto uniforms lie in [0, 1) and are float32", () => {
  const u = cryptoUniforms(40_000);
  assert.ok(u.every((x) => x >= 0 && x < 1));
  const mean = u.reduce((a, b) => a + b, 0) / u.length;
  assert.ok(Math.abs(mean - 0.5) < 0.01, `mean ${mean}`);
});
