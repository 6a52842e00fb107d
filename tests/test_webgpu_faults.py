"""A WebGPU device that fails under the trainer: refused, lost between jobs, lost mid-job.

The trainer's module is built with `panic = "abort"`, and Burn's wgpu runtime panics on a device it
cannot get or use: a panic traps the whole module, and every promise pending on it would hang. The
trainer asks for the device itself first (a refusal falls back to the CPU), records a lost device
and fails its next read with the reason once the browser has reported the loss (later trainers
start on the CPU), and where a panic still happens (a device lost mid-job, before the browser says
so: Burn's runtime panics when the read cannot map its buffer) tells JavaScript why before it traps. The page
replaces a dead worker with one on the CPU, and the job resumes there from its checkpoint.
Failures are forced in headless Chromium on SwiftShader's adapter (`webgpu-fallback.mjs`,
`browsers.mjs --lose-gpu-mid-job`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordinator.simulation import WEB_BIN

from .test_browser import one_page_run


def fallback(*flags: str) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(WEB_BIN / "webgpu-fallback.mjs"), *flags], capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    print("webgpu fallback:", result)
    return result


@pytest.mark.parametrize("refuse", [False, True], ids=["device-given", "device-refused"])
def test_a_webgpu_adapter_that_refuses_its_device_leaves_the_trainer_on_the_cpu(refuse: bool) -> None:
    """Burn's own device request panics when the adapter refuses, which would abort the module: the
    trainer asks first, so "auto" falls back to the CPU with the reason and "webgpu" is an Error."""
    result = fallback(*(["--refuse-device"] if refuse else []))
    assert result["trained"] == 1, result  # the module still works
    if not refuse:
        assert result["auto"] == {"backend": "webgpu", "reason": None} and result["webgpu"] == "started", result
        return
    assert result["auto"]["backend"] == "cpu", result
    assert "the WebGPU device request failed: the GPU process refused" in result["auto"]["reason"], result
    assert result["webgpu"].startswith("backend failure: WebGPU unavailable: the WebGPU device request failed"), result


def test_a_device_lost_between_jobs_fails_the_next_job_with_the_reason_and_the_module_goes_on() -> None:
    result = fallback("--lose-device")
    assert result["panic"] is None, result
    assert result["job"] == "backend failure: " + result["gpuFault"], result  # the first job trained
    assert result["gpuFault"].startswith("the WebGPU device was lost (Destroyed)"), result
    assert result["auto"] == {"backend": "cpu", "reason": result["gpuFault"]}, result
    assert result["webgpu"] == "backend failure: WebGPU unavailable: " + result["gpuFault"], result
    assert result["trained"] == 1, result


def test_a_device_lost_during_a_read_says_why_before_the_module_traps() -> None:
    result = fallback("--lose-device-in-read")
    assert result["panic"].startswith("the trainer stopped: "), result
    assert "Failed to map buffer" in result["panic"] and "the WebGPU device was lost" in result["panic"], result
    assert "trained" not in result, result  # the module is dead: the page replaces its worker


def test_a_page_whose_gpu_is_lost_mid_job_resumes_the_job_on_the_cpu(tmp_path: Path) -> None:
    """The worker's WebGPU device is destroyed after the job's first checkpoint: the page starts a fresh
    worker on the CPU, which resumes the job from that checkpoint; the round counts the update, no failure."""
    state, rounds = one_page_run(tmp_path, [], ["--webgpu", "--lose-gpu-mid-job"])
    print("page that lost its GPU:", state)
    # Lost between reads, the job's read fails with the loss; lost during one, Burn's map panics.
    assert any(why in state["trainerStopped"] for why in ("device was lost", "Failed to map buffer")), state
    assert state["backend"] == "cpu" and state["reason"].startswith("the GPU failed mid-job: "), state
    assert state["resumed"] == 1 and "job-resumed" in state["events"], state
    assert state["rounds"] == [1, 2], state
    assert [(r.round, r.clients, r.failures) for r in rounds] == [(1, 1, 0), (2, 1, 0)], rounds
    assert [r.metrics["resumed"] for r in rounds] == [1, 0], rounds
