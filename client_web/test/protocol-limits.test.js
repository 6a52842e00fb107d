// Hostile input against the JS codec and ClientProtocol: refused by name, bounded, never thrown.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ClientProtocol,
  decode,
  decodeFrame,
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
