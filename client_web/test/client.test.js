// runClient against a scripted coordinator on a fake WebSocket: a task answered end to end,
// and fatal errors told apart by the wire's `fatal` flag, not by their code.
import assert from "node:assert/strict";
import { test } from "node:test";

import { runClient, TRAINER_ENCODINGS } from "../src/client.js";
import { DELTA, fakeTrainer, SPEC, scripted, welcome } from "./fake-coordinator.js";

const options = (WebSocket, events) => ({
  url: "ws://coordinator/ws",
  token: "s3cret",
  WebSocket,
  backend: "wasm-cpu",
  agent: "test",
  createTrainer: async () => fakeTrainer(),
  data: async (w) => {
    assert.equal(w.client_id, "c-1");
    return { x: new Float32Array(12), y: Int32Array.of(0, 1, 1) };
  },
  onEvent: (e) => events.push(e),
});

test("a train task is answered with a result carrying the delta; a normal close ends the run", async () => {
  const received = [];
  const { FakeSocket } = scripted((frame, socket) => {
    received.push(frame);
    if (frame.header.type === "hello") {
      socket.deliver(welcome("c-1"));
      const config = { "local-epochs": 1, clipping_norm: 1 };
      socket.deliver({ type: "train", task_id: "t1", run_id: "r1", round: 1, model: SPEC, config }, Uint8Array.of(1));
    }
    if (frame.header.type === "result") socket.hangUp(1000);
  });
  const events = [];
  assert.equal(await runClient(options(FakeSocket, events)), 0);
  const hello = received[0].header;
  assert.deepEqual(
    [hello.type, hello.token, hello.client_id, hello.capabilities.backend],
    ["hello", "s3cret", null, "wasm-cpu"],
  );
  const result = received.find((f) => f.header.type === "result");
  assert.equal(result.header.reply_to, "t1");
  assert.equal(result.header.num_examples, 3);
  assert.deepEqual(result.header.metrics.train_loss, 0.5);
  assert.equal(result.header.metrics.norm_bit, 1);
  assert.deepEqual(result.payload, DELTA);
  assert.deepEqual(
    events.map((e) => e.type),
    ["connected", "welcome", "task", "trained"],
  );
});

test("a fatal error stops the client, whatever its code", async () => {
  const { FakeSocket, sockets } = scripted((_frame, socket, index) => {
    if (index === 0) {
      socket.deliver({ type: "error", code: "not_ready", message: "hello first", reply_to: null, fatal: true });
      socket.hangUp(1002);
    } else {
      socket.deliver(welcome("c-1")); // a client that came back would end the run normally
      socket.hangUp(1000);
    }
  });
  const events = [];
  assert.equal(await runClient(options(FakeSocket, events)), 2);
  assert.equal(sockets.length, 1);
  assert.equal(events.at(-1).type, "coordinator-error");
  assert.equal(events.at(-1).error.code, "not_ready");
});

test("a non-fatal error does not stop the client, even with a refusal's code: it reconnects", async () => {
  const { FakeSocket, sockets } = scripted((frame, socket, index) => {
    if (frame.header.type !== "hello") return;
    if (index === 0) {
      socket.deliver({ type: "error", code: "unauthorized", message: "not now", reply_to: null, fatal: false });
      socket.hangUp(1011);
    } else {
      assert.equal(frame.header.client_id, null);
      socket.deliver(welcome("c-1"));
      socket.hangUp(1000);
    }
  });
  const events = [];
  assert.equal(await runClient(options(FakeSocket, events)), 0);
  assert.equal(sockets.length, 2);
  assert.deepEqual(
    events.map((e) => e.type),
    ["connected", "coordinator-error", "reconnecting", "connected", "welcome"],
  );
});

test("the secret a welcome issues is sent with the client id on every reconnect", async () => {
  const hellos = [];
  const { FakeSocket } = scripted((frame, socket, index) => {
    if (frame.header.type !== "hello") return;
    hellos.push(frame.header);
    if (index === 0) {
      socket.deliver({ ...welcome("c-1"), secret: "s".repeat(43) });
      socket.hangUp(4001); // replaced by a newer connection: not the end
    } else if (index === 1) {
      socket.deliver(welcome("c-1")); // resumed: no new secret
      socket.hangUp(1011);
    } else {
      socket.deliver(welcome("c-1"));
      socket.hangUp(1000);
    }
  });
  const events = [];
  assert.equal(await runClient(options(FakeSocket, events)), 0);
  assert.deepEqual(
    hellos.map((h) => [h.client_id, h.secret]),
    [
      [null, undefined],
      ["c-1", "s".repeat(43)],
      ["c-1", "s".repeat(43)],
    ],
  );
  const identities = events.filter((e) => e.type === "welcome").map((e) => e.identity);
  assert.deepEqual(identities, Array(3).fill({ clientId: "c-1", secret: "s".repeat(43) }));
});

test("a caller's saved identity is presented on the first hello", async () => {
  const hellos = [];
  const { FakeSocket } = scripted((frame, socket) => {
    if (frame.header.type !== "hello") return;
    hellos.push(frame.header);
    socket.deliver(welcome("c-1"));
    socket.hangUp(1000);
  });
  const o = { ...options(FakeSocket, []), clientId: "c-1", secret: "k".repeat(43) };
  assert.equal(await runClient(o), 0);
  assert.deepEqual([hellos[0].client_id, hellos[0].secret], ["c-1", "k".repeat(43)]);
});

for (const code of [1001, 1006, 1011, 1013, 4001, 4002, 4003, 4004, 4005]) {
  test(`close code ${code} means reconnect, only 1000 means the run is over`, async () => {
    const { FakeSocket, sockets } = scripted((frame, socket, index) => {
      if (frame.header.type !== "hello") return;
      socket.deliver(welcome("c-1"));
      socket.hangUp(index === 0 ? code : 1000);
    });
    const events = [];
    assert.equal(await runClient(options(FakeSocket, events)), 0);
    assert.equal(sockets.length, 2);
    assert.equal(events.find((e) => e.type === "reconnecting").reason, `closed with code ${code}`);
  });
}

test("a task the coordinator cancels while it trains is not answered", async () => {
  const received = [];
  const { FakeSocket } = scripted((frame, socket) => {
    received.push(frame);
    if (frame.header.type === "hello") {
      socket.deliver(welcome("c-1"));
      const train = (id) => ({ type: "train", task_id: id, run_id: "r1", round: 1, model: SPEC, config: {} });
      socket.deliver(train("t1"), Uint8Array.of(1));
      const message = "the round has the updates it needs";
      socket.deliver({ type: "error", code: "task_cancelled", message, reply_to: "t1", fatal: false });
      socket.deliver(train("t2"), Uint8Array.of(1));
    }
    if (frame.header.type === "result") socket.hangUp(1000);
  });
  const events = [];
  const slow = async () => ({
    ...fakeTrainer(),
    train: () => new Promise((resolve) => setTimeout(() => resolve({ loss: 0.5 }), 20)),
  });
  assert.equal(await runClient({ ...options(FakeSocket, events), createTrainer: slow }), 0);
  assert.deepEqual(
    received.filter((f) => f.header.type === "result").map((f) => f.header.reply_to),
    ["t2"],
  );
  assert.ok(events.some((e) => e.type === "task-cancelled"));
});

test("the hello lists the trainer's encodings and the delta goes in the welcome's choice", async () => {
  for (const [chosen, want] of [
    [{ update: "int8", weights: "fp16" }, "int8"],
    [undefined, "fp32"],
  ]) {
    const received = [];
    const asked = [];
    const { FakeSocket } = scripted((frame, socket) => {
      received.push(frame);
      if (frame.header.type === "hello") {
        socket.deliver({ ...welcome("c-1"), ...(chosen && { encodings: chosen }) });
        const config = { "local-epochs": 1 };
        socket.deliver({ type: "train", task_id: "t1", run_id: "r1", round: 1, model: SPEC, config }, Uint8Array.of(1));
      }
      if (frame.header.type === "result") socket.hangUp(1000);
    });
    const trainer = {
      ...fakeTrainer(),
      delta: async (_clip, _noise, encoding) => asked.push(encoding) && { delta: DELTA },
    };
    assert.equal(await runClient({ ...options(FakeSocket, []), createTrainer: async () => trainer }), 0);
    assert.deepEqual(received[0].header.capabilities.encodings, TRAINER_ENCODINGS);
    assert.deepEqual(asked, [want]);
  }
});

test("given the coordinator's http address, every attempt asks /api/join where to connect", async () => {
  const asked = [];
  const answers = [
    { ok: true, url: "ws://gateway-a:8081/ws" }, // hangs up with 1001: its gateway went away
    { ok: false, status: 503 }, // no gateway up: back off and ask again
    { ok: true, url: "ws://gateway-b:8082/ws" },
  ];
  const fakeFetch = async (url) => {
    asked.push(url);
    const a = answers.shift();
    return { ok: a.ok, status: a.status ?? 200, json: async () => ({ url: a.url }) };
  };
  const { FakeSocket, sockets } = scripted((frame, socket, index) => {
    if (frame.header.type !== "hello") return;
    socket.deliver(welcome("c-1"));
    socket.hangUp(index === 0 ? 1001 : 1000);
  });
  const events = [];
  const o = { ...options(FakeSocket, events), url: "http://coordinator:8080/", fetch: fakeFetch };
  assert.equal(await runClient(o), 0);
  assert.deepEqual(asked, Array(3).fill("http://coordinator:8080/api/join"));
  assert.deepEqual(
    sockets.map((s) => s.url),
    ["ws://gateway-a:8081/ws", "ws://gateway-b:8082/ws"],
  );
  assert.ok(events.some((e) => e.type === "reconnecting" && /503/.test(e.reason)));
});

test("a WebSocket URL is used as it is, with no question asked", async () => {
  const fakeFetch = async () => assert.fail("no /api/join for a ws:// URL");
  const { FakeSocket, sockets } = scripted((frame, socket) => {
    if (frame.header.type === "hello") socket.hangUp(1000);
  });
  assert.equal(await runClient({ ...options(FakeSocket, []), fetch: fakeFetch }), 0);
  assert.equal(sockets[0].url, "ws://coordinator/ws");
});
