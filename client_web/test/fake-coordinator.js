// A scripted coordinator on a fake WebSocket, and a fake trainer: what the runClient tests share.
import { decode, encodeFrame } from "../src/protocol/index.js";

export const SPEC = {
  name: "tiny",
  input_shape: [4],
  num_classes: 2,
  layers: [{ type: "linear", in_features: 4, out_features: 2 }],
};
export const DELTA = Uint8Array.of(4, 3, 2, 1);
export const welcome = (clientId) => ({
  type: "welcome",
  version: 1,
  client_id: clientId,
  node_id: 1,
  run_id: "r1",
  max_frame_bytes: 1 << 20,
  heartbeat_seconds: 10,
});

/**
 * A WebSocket class whose peer is `coordinator(frame, socket, index)`, called with every frame
 * the client sends (decoded); it answers with socket.deliver(header, payload) and socket.hangUp(code).
 */
export function scripted(coordinator) {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.index = sockets.push(this) - 1;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen();
      }, 0);
    }
    send(bytes) {
      coordinator(decode(bytes), this, this.index);
    }
    close(code) {
      this.hangUp(code);
    }
    deliver(header, payload) {
      const bytes = encodeFrame(header, payload);
      setTimeout(() => this.onmessage({ data: bytes.buffer }), 0);
    }
    hangUp(code) {
      this.readyState = 3;
      setTimeout(() => this.onclose({ code }), 0);
    }
  }
  return { FakeSocket, sockets };
}

export const fakeTrainer = () => ({
  loadWeights() {},
  async train() {
    return { loss: 0.5 };
  },
  async delta(clip) {
    return { delta: DELTA, norm: 2, clipped: clip < 2 };
  },
  async evaluate() {
    return { loss: 0.3, accuracy: 0.9 };
  },
});
