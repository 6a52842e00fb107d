"""Regenerate `vectors/frames.json` from the literal cases below.

Frames are assembled by hand (struct + RFC 8785), not through any Pollen codec,
so the vectors test the codecs rather than echo them. `invalid` holds one case
per bound of SPEC §1.1; `tensors` holds safetensors payloads: valid ones from the
reference writer, and one hand-built lie per check of SPEC §2. Run from the repo root:
    PYTHONPATH=. .venv/bin/python protocol/tools/make_vectors.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import rfc8785
from safetensors.numpy import save

from protocol.tools.resume_vectors import RESUMED, RESUMING, resuming_lies

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


def laid_out(header: dict[str, Any], payload: bytes) -> bytes:
    """SPEC §2: a tensors payload's header re-padded so its data starts 8-aligned in the frame."""
    if header["type"] not in ("train", "evaluate", "result") or not payload:
        return payload
    (n,) = struct.unpack("<Q", payload[:8])
    text = payload[8 : 8 + n].rstrip(b" ")
    at = 8 + len(rfc8785.dumps(header)) + 8 + len(text)
    text += b" " * ((8 - at % 8) % 8)
    return struct.pack("<Q", len(text)) + text + payload[8 + n :]


def tensors() -> bytes:
    w = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    b = np.array([0.5, -0.25], dtype=np.float32)
    return save({"layers.0.weight": w, "layers.0.bias": b})


def valid() -> list[dict[str, Any]]:
    payload = tensors()
    cases: list[tuple[str, dict[str, Any], bytes]] = [
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
            "train-with-table-data",
            {**TASK, "data": TABLE_DATA},
            payload,
        ),
        (
            "evaluate-with-image-data",
            {**TASK, "type": "evaluate", "data": {"kind": "image", "classes": ["cat", "dog"]}},
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
        ("hello-resuming", RESUMING, b""),
        ("welcome-resumed", RESUMED, b""),
        (
            "chunk",
            {"type": "chunk", "message_id": "m1", "index": 0, "count": 2, "total_bytes": 10},
            b"PLN1\x02\x00\x00\x00{}"[:5],
        ),
    ]
    cases = [(n, h, laid_out(h, p)) for n, h, p in cases]
    return [{"name": n, "header": h, "payload_hex": p.hex(), "frame_hex": frame(h, p).hex()} for n, h, p in cases]


def raw_frame(header_json: str | bytes, payload: bytes = b"") -> bytes:
    """A frame around header bytes as written, for JSON that RFC 8785 will not produce."""
    body = header_json.encode() if isinstance(header_json, str) else header_json
    return b"PLN1" + struct.pack("<I", len(body)) + body + payload


def result_with_metrics(metrics_json: str) -> bytes:
    return raw_frame('{"metrics":' + metrics_json + ',"num_examples":1,"reply_to":"t","type":"result"}')


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def limits() -> list[tuple[str, bytes, str]]:
    """One case per bound of SPEC §1.1 and of the schemas' limits."""
    hello: dict[str, Any] = {
        "type": "hello",
        "versions": [1],
        "token": None,
        "client_id": None,
        "capabilities": {"backend": "wasm-cpu", "max_frame_bytes": 1024},
    }
    many_keys = "{" + ",".join(f'"k{i}":0' for i in range(257)) + "}"
    return [
        ("header-length-over-limit", b"PLN1" + struct.pack("<I", 65537) + b"{}", "frame_too_large"),
        ("header-length-huge", b"PLN1" + struct.pack("<I", 0xFFFFFFFF) + b"{}", "frame_too_large"),
        ("header-not-utf8", raw_frame(b'{"seq":1,"type":"heartbeat\xff"}'), "bad_frame"),
        ("integer-above-2^53", raw_frame('{"seq":9007199254740992,"type":"heartbeat"}'), "invalid_message"),
        ("integer-400-digits-metric", result_with_metrics('{"train_loss":1' + "0" * 400 + "}"), "invalid_message"),
        ("integer-5000-digits", raw_frame('{"seq":1' + "0" * 5000 + ',"type":"heartbeat"}'), "invalid_message"),
        ("float-overflows-double", result_with_metrics('{"train_loss":1e400}'), "invalid_message"),
        # 2^53 written as a fraction: the canonical form would write it back as an out-of-range integer.
        (
            "whole-number-above-2^53-as-fraction",
            result_with_metrics('{"train_loss":9007199254740992.0}'),
            "invalid_message",
        ),
        ("whole-number-below-1e21-as-exponent", result_with_metrics('{"train_loss":-1e20}'), "invalid_message"),
        ("nan-token", result_with_metrics('{"train_loss":NaN}'), "bad_frame"),
        ("infinity-token", result_with_metrics('{"train_loss":-Infinity}'), "bad_frame"),
        ("metric-above-1e30", result_with_metrics('{"train_loss":1.7e308}'), "invalid_message"),
        ("metric-below-minus-1e30", result_with_metrics('{"train_loss":-2e30}'), "invalid_message"),
        (
            "too-many-metrics",
            result_with_metrics("{" + ",".join(f'"m{i}":0' for i in range(65)) + "}"),
            "invalid_message",
        ),
        ("metric-name-too-long", result_with_metrics('{"' + "m" * 65 + '":0}'), "invalid_message"),
        (
            "num-examples-above-2^53",
            raw_frame('{"metrics":{},"num_examples":9007199254740993,"reply_to":"t","type":"result"}'),
            "invalid_message",
        ),
        (
            "string-over-4096",
            frame({"type": "error", "code": "internal", "message": "x" * 5000, "reply_to": None, "fatal": False}),
            "invalid_message",
        ),
        (
            "error-message-over-1024",
            frame({"type": "error", "code": "internal", "message": "x" * 1025, "reply_to": None, "fatal": False}),
            "invalid_message",
        ),
        ("nested-17-deep", raw_frame('{"seq":1,"type":"heartbeat","x":' + nested(16) + "}"), "invalid_message"),
        ("nested-5000-deep", raw_frame('{"seq":1,"type":"heartbeat","x":' + nested(5000) + "}"), "invalid_message"),
        ("array-over-1024-items", frame({**hello, "versions": [1] * 1025}), "invalid_message"),
        ("object-over-256-keys", raw_frame('{"seq":1,"type":"heartbeat","x":' + many_keys + "}"), "invalid_message"),
        ("key-over-256-chars", raw_frame('{"seq":1,"type":"heartbeat","' + "k" * 257 + '":0}'), "invalid_message"),
        (
            "agent-too-long",
            frame({**hello, "capabilities": {**hello["capabilities"], "agent": "a" * 257}}),
            "invalid_message",
        ),
        (
            "run-id-too-long",
            frame(
                {"type": "train", "task_id": "t", "run_id": "r" * 129, "round": 1, "model": MLP_TINY, "config": {}},
                b"w",
            ),
            "invalid_message",
        ),
    ]


# A task's data schema (SPEC §2.3): a two-feature table with the run's statistics and classes.
TASK = {"type": "train", "task_id": "t3", "run_id": "r1", "round": 1, "model": MLP_TINY, "config": {}}
TABLE_DATA = {
    "kind": "table",
    "label": "diagnosis",
    "features": ["age", "mean radius"],
    "mean": [52.5, 14.127],
    "std": [11.25, 3.524],
    "classes": ["benign", "malignant"],
}


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
        ("data-unknown-kind", frame({**TASK, "data": {"kind": "audio"}}, b"w"), "invalid_message"),
        ("data-zero-std", frame({**TASK, "data": {**TABLE_DATA, "std": [0.0, 2.0]}}, b"w"), "invalid_message"),
        ("data-extra-field", frame({**TASK, "data": {"kind": "tensor", "scale": 2}}, b"w"), "invalid_message"),
        (
            "bad-error-code",
            frame({"type": "error", "code": "oops", "message": "", "reply_to": None, "fatal": False}),
            "invalid_message",
        ),
        *limits(),
        *[(n, frame(h), "invalid_message") for n, h in resuming_lies()],
    ]
    return [{"name": n, "frame_hex": f.hex(), "error": e} for n, f, e in cases]


def st(header: Any, data: bytes = b"", *, length: int | None = None) -> bytes:
    """A safetensors file from a header as given, lies included; `length` overrides the declared size."""
    body = json.dumps(header, separators=(",", ":")).encode() if not isinstance(header, bytes) else header
    return struct.pack("<Q", len(body) if length is None else length) + body + data


def tensors_valid() -> list[dict[str, Any]]:
    w = np.arange(8, dtype=np.float32).reshape(2, 4) / 8
    b = np.array([0.5, -0.25], dtype=np.float32)
    cases: list[tuple[str, bytes, dict[str, np.ndarray]]] = [
        ("tiny", tensors(), {"layers.0.weight": w, "layers.0.bias": b}),
        (
            "with-metadata-and-empty",
            save({"e": np.zeros((0, 3), np.float32), "b": b}, metadata={"format": "pt"}),
            {"e": np.zeros((0, 3), np.float32), "b": b},
        ),
    ]
    return [
        {
            "name": n,
            "payload_hex": p.hex(),
            "tensors": {k: {"shape": list(t.shape), "values": t.ravel().tolist()} for k, t in sorted(ts.items())},
        }
        for n, p, ts in cases
    ]


def tensors_invalid() -> list[dict[str, Any]]:
    """Safetensors lies: each must be refused with invalid_update, never decoded or crashed on."""
    eight = b"\x00" * 8

    def one(dtype: Any = "F32", shape: Any = (2,), offsets: Any = (0, 8), **extra: Any) -> dict[str, Any]:
        entry = {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape}
        entry["data_offsets"] = list(offsets) if isinstance(offsets, tuple) else offsets
        return {"w": {**entry, **extra}}

    cases: list[tuple[str, bytes]] = [
        ("dtype-bf16", st(one("BF16", (4,)), eight)),
        ("dtype-f8-e4m3", st(one("F8_E4M3", (8,)), eight)),
        ("dtype-f8-e5m2", st(one("F8_E5M2", (8,)), eight)),
        ("dtype-f64", st(one("F64", (1,)), eight)),
        ("dtype-i64", st(one("I64", (1,)), eight)),
        ("dtype-unknown", st(one("Q7"), eight)),
        ("dtype-not-a-string", st(one(5), eight)),
        ("offsets-past-the-end", st(one(offsets=(0, 16), shape=(4,)), eight)),
        ("offsets-descending", st(one(offsets=(8, 0)), eight)),
        ("offsets-negative", st(one(offsets=(-8, 0)), eight)),
        ("offsets-not-integers", st(one(offsets=["0", "8"]), eight)),
        ("offsets-three", st(one(offsets=(0, 4, 8)), eight)),
        (
            "offsets-overlap",
            st(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                eight + b"\x00" * 4,
            ),
        ),
        ("offsets-gap", st(one(offsets=(4, 12)), eight + b"\x00" * 4)),
        ("bytes-not-covered", st(one(), eight + b"\x00" * 4)),
        ("shape-does-not-match-bytes", st(one(shape=(3,)), eight)),
        ("shape-negative", st(one(shape=(-2,)), eight)),
        ("shape-not-a-list", st(one(shape=2), eight)),
        ("shape-rank-9", st(one(shape=[1] * 8 + [2]), eight)),
        ("shape-huge", st(one(shape=(2**40, 2**40)), eight)),
        ("offsets-400-digits", st(b'{"w":{"data_offsets":[0,1' + b"0" * 400 + b'],"dtype":"F32","shape":[2]}}', eight)),
        ("entry-extra-field", st(one(extra=1), eight)),
        ("entry-not-an-object", st({"w": [1, 2]}, eight)),
        ("metadata-not-strings", st({**one(), "__metadata__": {"k": 1}}, eight)),
        ("header-not-json", st(b"{w}", eight)),
        ("header-not-an-object", st([1, 2], eight)),
        ("header-not-utf8", st(b'{"\xff":1}', eight)),
        ("header-length-past-the-end", st(one(), eight, length=4096)),
        ("header-length-huge", st(one(), eight, length=2**63)),
        ("shorter-than-8-bytes", b"\x02\x00\x00"),
    ]
    return [{"name": n, "payload_hex": p.hex(), "error": "invalid_update"} for n, p in cases]


if __name__ == "__main__":
    OUT.write_text(
        json.dumps(
            {
                "version": 1,
                "valid": valid(),
                "invalid": invalid(),
                "tensors": {"valid": tensors_valid(), "invalid": tensors_invalid()},
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    print(f"wrote {OUT}")
