// Hostile input against the JS codec and ClientProtocol: refused by name, bounded, never thrown.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  ClientProtocol,
  decode,
  decodeFrame,
  decodeTensors,
  encodeFrame,
  ProtocolError,
  readSafetensors,
  splitFrame,
  WIRE_DTYPES,
} from "../src/protocol/index.js";

const enc = new TextEncoder();
const rawFrame = (json) => {
  const body = enc.encode(json);
  const out = new Uint8Array(8 + body.length);
  out.set([0x50, 0x4c, 0x4e, 0x31]);
  new DataView(out.buffer).setUint32(4, body.length, true);
  out.set(body, 8);
  return out;
};
const refusedWith = (fn, code) => assert.throws(fn, (e) => e instanceof ProtocolError && e.code === code);
const welcome = encodeFrame({
  type: "welcome",
  version: 1,
  client_id: "c",
  node_id: 1,
  run_id: "r",
  max_frame_bytes: 1 << 20,
  heartbeat_seconds: 10,
});
const sentErrors = (c) => c.dataToSend().map((f) => decodeFrame(f).header);
const chunks = (size, id) => splitFrame(encodeFrame({ type: "heartbeat", seq: 1, pad: "x".repeat(size) }), 2048, id);

function safetensors(dtype, shape, nbytes) {
  const header = enc.encode(JSON.stringify({ w: { dtype, shape, data_offsets: [0, nbytes] } }));
  const out = new Uint8Array(8 + header.length + nbytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  return out;
}

for (const [dtype, size] of [
  ["BF16", 2],
  ["F8_E4M3", 1],
  ["F8_E5M2", 1],
  ["I64", 8],
]) {
  test(`a ${dtype} delta is refused by name`, () => {
    assert.throws(
      () => readSafetensors(safetensors(dtype, [4], 4 * size), WIRE_DTYPES),
      (e) => e.code === "invalid_update" && e.detail.includes(`dtype ${dtype} is not allowed`),
    );
  });
}

test("data files may still hold I64 labels", () => {
  assert.equal(readSafetensors(safetensors("I64", [2], 16)).get("w").data.length, 2);
});

test("a 400-digit integer is refused, its digits quoted cut", () => {
  const frame = rawFrame(`{"metrics":{"a":1${"0".repeat(400)}},"num_examples":1,"reply_to":"t","type":"result"}`);
  assert.throws(
    () => decode(frame),
    (e) => e.code === "invalid_message" && e.detail.length < 200,
  );
});

test("an integer above 2^53 − 1 is refused, one at the bound accepted", () => {
  refusedWith(() => decode(rawFrame('{"seq":9007199254740992,"type":"heartbeat"}')), "invalid_message");
  assert.equal(decode(rawFrame('{"seq":9007199254740991,"type":"heartbeat"}')).header.seq, 2 ** 53 - 1);
});

test("deep nesting is refused", () => {
  const deep = `${"[".repeat(5000)}${"]".repeat(5000)}`;
  refusedWith(() => decode(rawFrame(`{"seq":1,"type":"heartbeat","x":${deep}}`)), "invalid_message");
});

test("the client refuses a chunk before welcome and reassembles nothing", () => {
  const c = new ClientProtocol();
  assert.deepEqual(c.receive(chunks(10_000, "m")[0]), []);
  assert.equal(sentErrors(c)[0].code, "not_ready");
  assert.equal(c.reassembler.heldBytes, 0);
});

test("the client bounds unfinished chunked messages in number and bytes", () => {
  const c = new ClientProtocol({ maxPartialMessages: 2, maxPartialBytes: 1 << 20 });
  c.receive(welcome);
  c.receive(chunks(10_000, "a")[0]);
  c.receive(chunks(10_000, "b")[0]);
  assert.deepEqual(sentErrors(c), []);
  c.receive(chunks(10_000, "c")[0]);
  const [err] = sentErrors(c);
  assert.equal(err.code, "invalid_message");
  assert.equal(err.fatal, true);
  assert.equal(c.closed, true);
  assert.equal(c.reassembler.heldBytes, 0);

  const d = new ClientProtocol({ maxPartialBytes: 3000 });
  d.receive(welcome);
  for (const f of chunks(20_000, "m").slice(0, 3)) d.receive(f);
  assert.equal(sentErrors(d).at(-1).code, "frame_too_large");
  assert.equal(d.closed, true);
});

test("error messages are cut to the schema's limit", () => {
  const c = new ClientProtocol();
  c.error("training_failed", "e".repeat(100_000), "t1");
  const [err] = sentErrors(c);
  assert.equal([...err.message].length, 1024);
});

// A small seeded fuzzer over the shared vectors (bit flips, truncations, hostile JSON tokens spliced
// into headers, mutated safetensors payloads): the codec raises only ProtocolError, the client never throws.
const vectors = JSON.parse(readFileSync(new URL("../../protocol/vectors/frames.json", import.meta.url)));
const encodings = JSON.parse(readFileSync(new URL("../../protocol/vectors/encodings.json", import.meta.url)));
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));

function mulberry32(seed) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HOSTILE = [
  `1${"0".repeat(400)}`,
  "9007199254740993",
  "1e400",
  "NaN",
  "-Infinity",
  "1.7e308",
  `${"[".repeat(3000)}${"]".repeat(3000)}`,
  JSON.stringify("x".repeat(5000)),
  `{${Array.from({ length: 300 }, (_, i) => `"k${i}":0`).join(",")}}`,
];

function mutate(bytes, rand, splice) {
  const pick = (n) => Math.floor(rand() * n);
  switch (pick(3)) {
    case 0: {
      const out = bytes.slice();
      for (let k = 0; k <= pick(4); k++) out[pick(out.length)] ^= 1 << pick(8);
      return out;
    }
    case 1:
      return bytes.slice(0, pick(bytes.length + 1));
    default:
      return splice(bytes, HOSTILE[pick(HOSTILE.length)], pick);
  }
}

function spliceHeader(bytes, token, pick) {
  const { header, payload } = decodeFrame(bytes);
  const text = JSON.stringify(header);
  const spots = [...text.matchAll(/:(-?\d[\d.eE+-]*|"[^"]*"|true|false|null)/g)];
  const at = spots[pick(spots.length)];
  const body = rawFrame(`${text.slice(0, at.index + 1)}${token}${text.slice(at.index + at[0].length)}`);
  const out = new Uint8Array(body.length + payload.length);
  out.set(body);
  out.set(payload, body.length);
  return out;
}

function spliceTensors(bytes, token, pick) {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  const spots = [...text.matchAll(/-?\d+|"F32"/g)];
  const at = spots[pick(spots.length)];
  const swap = pick(2) ? token : JSON.stringify(["BF16", "F8_E4M3", "F8_E5M2", "I64"][pick(4)]);
  const header = enc.encode(`${text.slice(0, at.index)}${swap}${text.slice(at.index + at[0].length)}`);
  const out = new Uint8Array(8 + header.length + bytes.length - 8 - n);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(bytes.subarray(8 + n), 8 + header.length);
  return out;
}

test("mutated frames raise only ProtocolError, and ClientProtocol.receive never throws", () => {
  const rand = mulberry32(10);
  const frames = vectors.valid.map((v) => hex(v.frame_hex));
  for (let i = 0; i < 1500; i++) {
    const data = mutate(frames[i % frames.length], rand, spliceHeader);
    try {
      decode(data);
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `case ${i}: ${e}`);
    }
    const c = new ClientProtocol({ maxPartialBytes: 8192, maxPartialMessages: 2 });
    if (i % 2) c.receive(welcome);
    c.receive(data);
    for (const f of c.dataToSend()) assert.ok([...decode(f).header.message].length <= 1024);
    assert.ok(c.reassembler.heldBytes <= 8192);
  }
});

test("mutated safetensors payloads raise only ProtocolError(invalid_update)", () => {
  const rand = mulberry32(11);
  const payloads = [...vectors.tensors.valid, ...encodings.encode].map((v) => hex(v.payload_hex));
  for (let i = 0; i < 1500; i++) {
    const data = mutate(payloads[i % payloads.length], rand, spliceTensors);
    try {
      for (const { data: values } of decodeTensors(data).values()) assert.ok(values instanceof Float32Array);
    } catch (e) {
      assert.ok(e instanceof ProtocolError && e.code === "invalid_update", `case ${i}: ${e}`);
    }
  }
});
