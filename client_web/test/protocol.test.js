// The shared protocol vectors, and the JS client protocol's chunking, against the spec.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  ClientProtocol,
  decode,
  decodeFrame,
  encodeFrame,
  ProtocolError,
  Reassembler,
  readSafetensors,
  splitFrame,
  WIRE_DTYPES,
} from "../src/protocol/index.js";
import { alignedInFrame } from "../src/protocol/safetensors.js";

const vectors = JSON.parse(readFileSync(new URL("../../protocol/vectors/frames.json", import.meta.url)));
const hex = (s) => Uint8Array.from(Buffer.from(s, "hex"));

for (const v of vectors.valid) {
  test(`valid vector ${v.name} decodes and re-encodes byte for byte`, () => {
    const bytes = hex(v.frame_hex);
    const frame = decode(bytes);
    assert.deepEqual(frame.header, v.header);
    assert.equal(Buffer.from(frame.payload).toString("hex"), v.payload_hex);
    assert.equal(Buffer.from(encodeFrame(frame.header, frame.payload)).toString("hex"), v.frame_hex);
  });
}

test("a tensors payload is laid out so its data starts 8-aligned in the frame, at any offset", () => {
  const carrying = vectors.valid.filter((v) => v.payload_hex && v.header.type !== "chunk");
  assert.ok(carrying.length >= 3);
  for (const v of carrying) {
    assert.equal(
      Buffer.from(encodeFrame(v.header, hex(v.payload_hex), { tensors: true })).toString("hex"),
      v.frame_hex,
    );
    const want = readSafetensors(hex(v.payload_hex), WIRE_DTYPES);
    for (let offset = 0; offset < 16; offset++) {
      const { head, data } = alignedInFrame(hex(v.payload_hex), offset);
      assert.equal((offset + head.length) % 8, 0, `offset ${offset}`);
      const moved = readSafetensors(Uint8Array.from([...head, ...data]), WIRE_DTYPES);
      assert.deepEqual([...moved.entries()], [...want.entries()]);
    }
  }
  const garbage = Uint8Array.from([1, 2, 3]);
  assert.deepEqual(alignedInFrame(garbage, 5).head, garbage);
});

for (const v of vectors.invalid) {
  test(`invalid vector ${v.name} is refused with ${v.error}`, () => {
    assert.throws(
      () => decode(hex(v.frame_hex)),
      (e) => e instanceof ProtocolError && e.code === v.error,
    );
  });
}

for (const v of vectors.tensors.valid) {
  test(`valid tensors vector ${v.name} decodes`, () => {
    const tensors = readSafetensors(hex(v.payload_hex), WIRE_DTYPES);
    assert.deepEqual([...tensors.keys()].sort(), Object.keys(v.tensors).sort());
    for (const [name, want] of Object.entries(v.tensors)) {
      assert.deepEqual(tensors.get(name).shape, want.shape);
      assert.deepEqual([...tensors.get(name).data], want.values);
    }
  });
}

for (const v of vectors.tensors.invalid) {
  test(`invalid tensors vector ${v.name} is refused with ${v.error}`, () => {
    assert.throws(
      () => readSafetensors(hex(v.payload_hex), WIRE_DTYPES),
      (e) => e instanceof ProtocolError && e.code === v.error,
    );
  });
}

test("chunks reassemble to the original bytes, each within the limit", () => {
  const big = new Uint8Array(50_000).map((_, i) => i % 251);
  const frames = splitFrame(big, 4096, "m1");
  assert.ok(frames.length > 10 && frames.every((f) => f.length <= 4096));
  const r = new Reassembler(1 << 20);
  let out = null;
  for (const f of frames) out = r.feed(decode(f));
  assert.deepEqual(out, big);
});

test("chunks out of order are refused", () => {
  const frames = splitFrame(new Uint8Array(20_000), 4096, "m2").map((f) => decode(f));
  const r = new Reassembler(1 << 20);
  r.feed(frames[0]);
  assert.throws(
    () => r.feed(frames[2]),
    (e) => e.code === "invalid_message",
  );
});

test("the client protocol answers a bad frame with an error frame", () => {
  const s = new ClientProtocol();
  assert.deepEqual(s.receive(new Uint8Array([1, 2, 3])), []);
  const [err] = s.dataToSend().map((f) => decodeFrame(f).header);
  assert.equal(err.type, "error");
  assert.equal(err.code, "truncated");
});

test("welcome sets the peer's frame limit and results are chunked to it", () => {
  const s = new ClientProtocol();
  const welcome = encodeFrame({
    type: "welcome",
    version: 1,
    client_id: "c",
    node_id: 1,
    run_id: "r",
    max_frame_bytes: 4096,
    heartbeat_seconds: 10,
  });
  assert.equal(s.receive(welcome)[0].type, "welcome");
  s.result("t", 5, { train_loss: 0.5 }, new Uint8Array(20_000));
  const frames = s.dataToSend();
  assert.ok(frames.length > 1 && frames.every((f) => f.length <= 4096));
});

test("a resuming hello says so, and the welcome event carries the resumed tasks (SPEC §4.2)", () => {
  const vector = (name) => vectors.valid.find((v) => v.name === name);
  const { header } = vector("hello-resuming");
  const c = new ClientProtocol({ maxFrameBytes: header.capabilities.max_frame_bytes });
  c.hello({
    clientId: header.client_id,
    secret: header.secret,
    backend: "webgpu",
    resumable: true,
    resume: header.resume,
  });
  assert.deepEqual(
    c.dataToSend().map((f) => Buffer.from(f).toString("hex")),
    [vector("hello-resuming").frame_hex],
  );
  const plain = new ClientProtocol();
  plain.hello({ backend: "webgpu" });
  const said = decodeFrame(plain.dataToSend()[0]).header;
  assert.ok(!("resume" in said) && !("resumable" in said.capabilities));

  const [welcomed] = c.receive(hex(vector("welcome-resumed").frame_hex));
  assert.equal(welcomed.type, "welcome");
  assert.deepEqual(welcomed.resumed, ["t1"]);
  const [older] = plain.receive(hex(vector("welcome").frame_hex));
  assert.deepEqual(older.resumed, []);
});
