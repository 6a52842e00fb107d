"""Frame vectors for resuming tasks (SPEC §4.2), for `make_vectors`: a reloaded page's hello, its welcome, lies."""

from __future__ import annotations

from typing import Any

# A reloaded page resuming its node and the tasks it was training on, and the coordinator's answer.
RESUMING: dict[str, Any] = {
    "type": "hello",
    "versions": [1],
    "token": None,
    "client_id": "c-1",
    "secret": "S3cret-of-22-chars_ok-",
    "capabilities": {"backend": "webgpu", "max_frame_bytes": 1048576, "resumable": True},
    "resume": ["t1", "t9"],
}
RESUMED: dict[str, Any] = {
    "type": "welcome",
    "version": 1,
    "client_id": "c-1",
    "node_id": 7,
    "run_id": "r1",
    "max_frame_bytes": 16777216,
    "heartbeat_seconds": 10,
    "resumed": ["t1"],
}


def resuming_lies() -> list[tuple[str, dict[str, Any]]]:
    """Hellos and welcomes breaking a bound of `resume` / `resumed` (at most 8 distinct ids of 1 to 128 characters)."""
    nine = [f"t{i}" for i in range(9)]
    return [
        ("resume-over-8-ids", {**RESUMING, "resume": nine}),
        ("resume-id-not-a-string", {**RESUMING, "resume": ["t1", 9]}),
        ("resume-id-twice", {**RESUMING, "resume": ["t1", "t1"]}),
        ("resume-id-empty", {**RESUMING, "resume": [""]}),
        ("resume-id-too-long", {**RESUMING, "resume": ["t" * 129]}),
        ("resume-not-a-list", {**RESUMING, "resume": "t1"}),
        ("resumable-not-a-boolean", {**RESUMING, "capabilities": {**RESUMING["capabilities"], "resumable": 1}}),
        ("resumed-over-8-ids", {**RESUMED, "resumed": nine}),
        ("resumed-id-twice", {**RESUMED, "resumed": ["t1", "t1"]}),
        ("resumed-id-not-a-string", {**RESUMED, "resumed": [None]}),
    ]
