"""Regenerate `vectors/frames.json` from the literal cases below.

Frames are assembled by hand (struct + RFC 8785), not through any Pollen codec,
so the vectors test the codecs rather than echo them. Run from the repo root:
    python protocol/tools/make_vectors.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785
from safetensors.numpy import save

OUT = Path(__file__).resolve().parents[1] / "vectors" / "frames.json"
MLP_TINY = {
    "name": "tiny",
    "input_shape": [4],
    "num_classes": 2,
    "layers": [{"type": "linear", "in_features": 4, "out_features": 2}],
}


def frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    body = rfc8785.dumps(header)
    return b"PLN1" + struct.pack("<I", len(body)) + body + payload


def tensors() -> bytes:
    w = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    b = np.array([0.5, -0.25], dtype=np.float32)
    return save({"layers.0.weight": w, "layers.0.bias": b})


def valid() -> list[dict[str, Any]]:
    payload = tensors()
    cases = [
        (
            "hello",
            {
                "type": "hello",
                "versions": [1],
                "token": "s3cret",
                "client_id": None,
                "capabilities": {"backend": "wasm-cpu", "max_frame_bytes": 16777216, "agent": "pollen-web/0.1 ✓"},
            },
            b"",
        ),
        (
            "hello-minimal",
            {
                "type": "hello",
                "versions": [1, 2],
                "token": None,
                "client_id": "c-1",
                "capabilities": {"backend": "webgpu", "max_frame_bytes": 1024},
            },
            b"",
        ),
        (
            "welcome",
            {
                "type": "welcome",
                "version": 1,
                "client_id": "c-1",
                "node_id": 7,
                "run_id": "r1",
                "max_frame_bytes": 16777216,
                "heartbeat_seconds": 10,
            },
            b"",
        ),
        (
            "train",
            {
                "type": "train",
                "task_id": "t1",
                "run_id": "r1",
                "round": 3,
                "model": MLP_TINY,
                "config": {
                    "server-round": 3,
                    "local-epochs": 5,
                    "batch-size": 10,
                    "lr": 0.05,
                    "optimizer": "sgd",
                    "clipping_norm": 1e-7,
                    "big": 1e21,
                },
            },
            payload,
        ),
        (
            "evaluate",
            {"type": "evaluate", "task_id": "t2", "run_id": "r1", "round": 3, "model": MLP_TINY, "config": {}},
            payload,
        ),
        (
            "result-train",
            {
                "type": "result",
                "reply_to": "t1",
                "num_examples": 800,
                "metrics": {"train_loss": 0.123456789, "norm_bit": 1},
            },
            payload,
        ),
        (
            "result-evaluate",
            {"type": "result", "reply_to": "t2", "num_examples": 200, "metrics": {"loss": 0.25, "accuracy": 0.9375}},
            b"",
        ),
        (
            "error",
            {
                "type": "error",
                "code": "invalid_update",
                "message": "layers.0.weight: shape [3], expected [2, 4]",
                "reply_to": "t1",
                "fatal": False,
            },
            b"",
        ),
        ("heartbeat", {"type": "heartbeat", "seq": 42}, b""),
        (
            "chunk",
            {"type": "chunk", "message_id": "m1", "index": 0, "count": 2, "total_bytes": 10},
            b"PLN1\x02\x00\x00\x00{}"[:5],
        ),
    ]
    return [{"name": n, "header": h, "payload_hex": p.hex(), "frame_hex": frame(h, p).hex()} for n, h, p in cases]


def invalid() -> list[dict[str, Any]]:
    hb = frame({"type": "heartbeat", "seq": 1})
    cases = [
        ("short-prefix", b"PLN", "truncated"),
        ("bad-magic", b"XXXX" + hb[4:], "bad_frame"),
        ("header-length-too-long", hb[:4] + struct.pack("<I", 999) + hb[8:], "truncated"),
        ("header-not-json", b"PLN1" + struct.pack("<I", 3) + b"{x}", "bad_frame"),
        ("header-not-object", frame([1, 2]), "bad_frame"),  # type: ignore[arg-type]
        ("unknown-type", frame({"type": "gossip"}), "unknown_type"),
        ("missing-field", frame({"type": "heartbeat"}), "invalid_message"),
        ("extra-field", frame({"type": "heartbeat", "seq": 1, "x": 0}), "invalid_message"),
        ("payload-on-heartbeat", hb + b"\x00", "invalid_message"),
        (
            "train-without-weights",
            frame({"type": "train", "task_id": "t", "run_id": "r", "round": 1, "model": MLP_TINY, "config": {}}),
            "invalid_message",
        ),
        (
            "zero-examples",
            frame({"type": "result", "reply_to": "t", "num_examples": 0, "metrics": {}}),
            "invalid_message",
        ),
        (
            "bad-error-code",
            frame({"type": "error", "code": "oops", "message": "", "reply_to": None, "fatal": False}),
            "invalid_message",
        ),
    ]
    return [{"name": n, "frame_hex": f.hex(), "error": e} for n, f, e in cases]


if __name__ == "__main__":
    OUT.write_text(
        json.dumps({"version": 1, "valid": valid(), "invalid": invalid()}, indent=2, ensure_ascii=False) + "\n"
    )
    print(f"wrote {OUT}")
