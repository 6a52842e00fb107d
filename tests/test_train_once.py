"""`train-once.mjs`, the job the speed benchmarks time, on each runtime and backend it offers.

The page's build in headless Chromium must train exactly as the Node build does: same wasm,
same CPU backend, so the same delta byte for byte. WebGPU under Node is Dawn's: on a machine
without a Vulkan GPU (CI) it must refuse with a reason, not crash; where Dawn has a GPU it must
train to the CPU's delta within float tolerance.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from bench.wasm_speed import run_train_once, write_job
from coordinator.data.mnist import load_split


def train_once(tmp: Path, out: str, *options: str) -> subprocess.CompletedProcess[str]:
    return run_train_once(tmp, "--batch-size", "16", "--seed", "3", *options, out=out)


def report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_page_build_in_chromium_trains_exactly_as_the_node_build(tmp_path: Path) -> None:
    train = load_split("train")
    write_job("mnist-mlp", train.x[:96], train.y[:96], tmp_path)
    node = report(train_once(tmp_path, "node.safetensors"))
    page = report(train_once(tmp_path, "page.safetensors", "--runtime", "chromium", "--warmup"))
    assert (node["backend"], page["backend"]) == ("cpu", "cpu")
    assert node["steps"] == page["steps"] == 6 and node["examples"] == page["examples"] == 96
    assert node["loss"] == page["loss"]
    assert (tmp_path / "node.safetensors").read_bytes() == (tmp_path / "page.safetensors").read_bytes()
    # Both have relaxed SIMD, so that was the CPU-only relaxed build; the plain one, for engines without it:
    assert (node["relaxedSimd"], page["relaxedSimd"]) == (True, True)
    plain = ("--no-relaxed-simd",)
    node = report(train_once(tmp_path, "node-plain.safetensors", *plain))
    page = report(train_once(tmp_path, "page-plain.safetensors", "--runtime", "chromium", *plain))
    assert (node["relaxedSimd"], page["relaxedSimd"], node["loss"]) == (False, False, page["loss"])
    assert (tmp_path / "node-plain.safetensors").read_bytes() == (tmp_path / "page-plain.safetensors").read_bytes()


def test_the_threaded_build_trains_on_two_threads_as_on_one(tmp_path: Path) -> None:
    """Under Node (worker_threads) and in Chromium (a worker with nested workers, the page's way).
    Two threads split each step's batch in two and add the halves' gradients (client_wasm's
    batch_split), so the CNN's delta moves by rounding only. Both runtimes have relaxed SIMD, so
    each build runs its fused multiply-add variant, whose rounding differs too; asked not to, the
    plain one (the single-threaded build's, on one thread)."""
    train = load_split("train")
    write_job("mnist-cnn", train.x[:32], train.y[:32], tmp_path)
    one = report(train_once(tmp_path, "one.safetensors", "--no-relaxed-simd"))
    fused = report(train_once(tmp_path, "fused.safetensors"))
    node = report(train_once(tmp_path, "node2.safetensors", "--threads", "2"))
    page = report(train_once(tmp_path, "page2.safetensors", "--threads", "2", "--runtime", "chromium"))
    plain = report(train_once(tmp_path, "plain2.safetensors", "--threads", "2", "--no-relaxed-simd"))
    assert (one["threads"], fused["threads"], node["threads"], page["threads"], plain["threads"]) == (1, 1, 2, 2, 2)
    assert (one["batchParts"], fused["batchParts"], node["batchParts"], page["batchParts"]) == (1, 1, 2, 2)
    relaxed = (one["relaxedSimd"], fused["relaxedSimd"], node["relaxedSimd"], page["relaxedSimd"])
    assert relaxed == (False, True, True, True) and plain["relaxedSimd"] is False
    assert one["steps"] == fused["steps"] == node["steps"] == page["steps"] == 2
    theirs = load_file(str(tmp_path / "one.safetensors"))
    for out in ("fused.safetensors", "node2.safetensors", "page2.safetensors", "plain2.safetensors"):
        ours = load_file(str(tmp_path / out))
        for name, delta in theirs.items():
            np.testing.assert_allclose(ours[name], delta, atol=1e-6, err_msg=f"{out}: {name}")
    assert train_once(tmp_path, "x.safetensors", "--threads", "2", "--backend", "webgpu").returncode == 1


def test_webgpu_under_node_trains_on_a_gpu_or_refuses_with_the_reason(tmp_path: Path) -> None:
    train = load_split("train")
    write_job("mnist-mlp", train.x[:64], train.y[:64], tmp_path)
    cpu = report(train_once(tmp_path, "cpu.safetensors"))
    done = train_once(tmp_path, "gpu.safetensors", "--backend", "webgpu")
    if done.returncode != 0:  # no GPU that Dawn can use: CI's machines
        assert done.stderr.strip().splitlines()[-1].startswith("train-once: Dawn found no WebGPU adapter"), done.stderr
        assert not (tmp_path / "gpu.safetensors").exists()
        return
    gpu = report(done)
    assert gpu["backend"] == "webgpu" and gpu["adapter"]
    assert abs(gpu["loss"] - cpu["loss"]) < 1e-4
    ours, theirs = load_file(str(tmp_path / "gpu.safetensors")), load_file(str(tmp_path / "cpu.safetensors"))
    for name, delta in theirs.items():
        np.testing.assert_allclose(ours[name], delta, atol=1e-4)


def test_train_once_refuses_an_unknown_backend_or_runtime(tmp_path: Path) -> None:
    train = load_split("train")
    write_job("mnist-mlp", train.x[:8], train.y[:8], tmp_path)
    for flag, value in (("--backend", "tpu"), ("--runtime", "deno")):
        done = train_once(tmp_path, "x.safetensors", flag, value)
        assert done.returncode == 1
        assert f"{flag} is " in done.stderr and value in done.stderr


def test_a_fp16_job_without_f16_arithmetic_trains_in_float32_and_says_so(tmp_path: Path) -> None:
    """Mixed precision needs a WebGPU device with `shader-f16`; Burn's CPU backend on the page and
    SwiftShader (CI's WebGPU, which lacks the feature) train such a job in float32: the CPU's delta
    is byte for byte the float32 job's, and the reports say which precision ran. The WebGPU job
    also reports its GPU memory, which holds at least the weights and their gradients."""
    train = load_split("train")
    write_job("mnist-mlp", train.x[:32], train.y[:32], tmp_path)
    plain = report(train_once(tmp_path, "plain.safetensors"))
    asked = report(train_once(tmp_path, "asked.safetensors", "--precision", "fp16"))
    assert (plain["precision"], asked["precision"], asked["fp16"], asked["overflowSteps"]) == ("fp32", "fp32", False, 0)
    assert plain["gpuPeakBytes"] is None
    assert (tmp_path / "plain.safetensors").read_bytes() == (tmp_path / "asked.safetensors").read_bytes()
    page = report(train_once(tmp_path, "page.safetensors", "--runtime", "chromium", "--backend", "webgpu",
                             "--precision", "fp16"))  # fmt: skip
    assert (page["backend"], page["precision"], page["overflowSteps"]) == ("webgpu", "fp32", 0), page
    model_bytes = sum(t.nbytes for t in load_file(str(tmp_path / "w.safetensors")).values())
    assert 2 * model_bytes <= page["gpuPeakBytes"] <= 64 << 20, (page["gpuPeakBytes"], model_bytes)
