"""The WebAssembly trainer against PyTorch on the same weights and data: every built-in model,
every graph spec of `protocol/vectors/graph-specs.json` (each layer type and loss), and graphs
of random sizes (`random_graphs`: residual convs, transformers, concatenated branches).

Forward outputs within 1e-5; gradients within 1e-4 and one epoch of SGD without
shuffling within 1e-4, both relative to max(1, |value|). The same cases run on the CPU
backend under Node and on the WebGPU backend in headless Chromium (SwiftShader's adapter), where
each built-in model keeps its first few draws of each kind (`WEBGPU_DRAWS`): a later draw runs the
same kernels on other random numbers, and SwiftShader took 6.5 minutes for all of them.
Dropout masks cannot match across frameworks, so gradient and training cases set every
dropout to 0; forward cases (inference mode) keep the spec whole.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from coordinator.models.losses import spec_loss
from coordinator.models.optimization import OptimizerConfig
from coordinator.models.optimizers import make_optimizer, make_schedule
from coordinator.models.spec import BUILTIN_MODELS, ModelSpec, load_spec, spec_from_dict
from coordinator.models.torch_model import build_module, wire_weights
from tests.random_graphs import random_graphs

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT / "client_web" / "parity" / "parity.mjs"
FORWARD, GRADIENTS, TRAIN = 10, 10, 5
WEBGPU_DRAWS = {"forward": 3, "gradients": 3, "train": 2}  # of a built-in model's cases, on WebGPU


GRAPHS = json.loads((ROOT / "protocol" / "vectors" / "graph-specs.json").read_text())["valid"]
MODELS = (
    [(name, load_spec(name)) for name in BUILTIN_MODELS]
    + [(g["name"], spec_from_dict(g["spec"])) for g in GRAPHS]
    + [(raw["name"], spec_from_dict(raw)) for raw in random_graphs(12)]
)
COUNTS = {"forward": FORWARD, "gradients": GRADIENTS, "train": TRAIN}
GRAPH_COUNTS = {"forward": 2, "gradients": 3, "train": 1}
RANDOM_COUNTS = {"forward": 1, "gradients": 1}


def without_dropout(spec: ModelSpec) -> ModelSpec:
    def still(layer: dict[str, Any]) -> dict[str, Any]:
        if layer["type"] == "dropout":
            return {**layer, "p": 0.0}
        return {**layer, "dropout": 0.0} if layer["type"] == "transformer_encoder_layer" else layer

    return spec_from_dict({**spec.raw, "layers": [still(layer) for layer in spec.raw["layers"]]})


def inputs(spec: ModelSpec, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    if spec.input_dtype == "int64":
        x = rng.integers(0, 5, (n, *spec.input_shape)).astype(np.float32)  # ids, sent as floats
    else:
        x = rng.uniform(0, 1, (n, *spec.input_shape)).astype(np.float32)
    classes = 3 if spec.loss["type"] == "mse" else max(2, spec.num_classes)
    return x, rng.integers(0, classes, n).astype(np.int64)


def random_weights(spec: ModelSpec, rng: np.random.Generator, seed: int) -> dict[str, np.ndarray]:
    weights = wire_weights(build_module(spec, seed=seed))
    for name in weights:
        if name.endswith("running_mean"):
            weights[name] = rng.normal(0, 0.1, weights[name].shape).astype(np.float32)
        elif name.endswith("running_var") or (name.endswith(".weight") and weights[name].ndim == 1):
            # Positive variances; BatchNorm gammas (the only 1-D weights) away from zero.
            weights[name] = rng.uniform(0.5, 1.5, weights[name].shape).astype(np.float32)
    return weights


def torch_module(spec: ModelSpec, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    module = build_module(spec)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    return module


def reference(
    case: dict[str, Any], spec: ModelSpec, weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> dict[str, np.ndarray]:
    module = torch_module(spec, weights)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if case["kind"] == "forward":
        module.eval()
        with torch.no_grad():
            return {"logits": module(xt).numpy()}
    module.train()
    if case["kind"] == "gradients":
        spec_loss(spec.loss, module(xt), yt).backward()
        return {n: p.grad.numpy() for n, p in module.named_parameters() if p.grad is not None}
    o = case["options"]
    optimization = OptimizerConfig(
        o["optimizer"], o["lr"], o.get("momentum", 0.0), o.get("nesterov", False), o.get("weightDecay"),
        o.get("lrSchedule", "constant"), o.get("lrStepSize", 1), o.get("lrGamma"), o.get("lrWarmupSteps", 5),
        o.get("gradClipNorm"),
    )  # fmt: skip
    opt = make_optimizer(optimization, module.parameters())
    bs = o["batchSize"]
    schedule = make_schedule(optimization, opt, o["epochs"] * -(-len(x) // bs))
    for _ in range(o["epochs"]):
        for i in range(0, len(x), bs):
            opt.zero_grad()
            spec_loss(spec.loss, module(xt[i : i + bs]), yt[i : i + bs]).backward()
            if optimization.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), optimization.grad_clip_norm)
            opt.step()
            if schedule is not None:
                schedule.step()
    trained = wire_weights(module)
    return {k: trained[k] - weights[k] for k in trained}


Case = dict[str, Any]
Tensors = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Case, Tensors]]]:
    tmp = tmp_path_factory.mktemp("parity")
    rng = np.random.default_rng(2026)
    out = []
    for name, full in MODELS:
        counts = COUNTS if name in BUILTIN_MODELS else RANDOM_COUNTS if name.startswith("random") else GRAPH_COUNTS
        for kind, count in counts.items():
            for i in range(count):
                spec = full if kind == "forward" else without_dropout(full)
                case_id = f"{name}-{kind}-{i}"
                n = {"forward": 4, "gradients": 8, "train": 24}[kind]
                weights = random_weights(spec, rng, seed=int(rng.integers(1 << 30)))
                x, y = inputs(spec, rng, n)
                save_file(weights, str(tmp / f"{case_id}.w.safetensors"))
                save_file({"x": x, "y": y}, str(tmp / f"{case_id}.d.safetensors"))
                case = {
                    "id": case_id,
                    "kind": kind,
                    "spec": spec.raw,
                    "weights": f"{case_id}.w.safetensors",
                    "data": f"{case_id}.d.safetensors",
                    "options": {"epochs": 1, "batchSize": 8, "lr": 0.05, "optimizer": "sgd", "shuffle": False},
                }
                out.append((case, reference(case, spec, weights, x, y)))
    out += optimizer_cases(tmp, rng)
    (tmp / "cases.json").write_text(json.dumps([c for c, _ in out]))
    return tmp, out


OPTIMIZERS: list[dict[str, Any]] = [
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weightDecay": 0.01},
    {"optimizer": "adam"},
    {"optimizer": "adamw"},
    {"optimizer": "rmsprop", "momentum": 0.5, "weightDecay": 0.001},
]
SCHEDULES: list[dict[str, Any]] = [
    {"lrSchedule": "constant"},
    {"lrSchedule": "step", "lrStepSize": 2, "lrGamma": 0.5},
    {"lrSchedule": "exponential", "lrGamma": 0.8},
    {"lrSchedule": "cosine"},
    {"lrSchedule": "one-cycle"},
    {"lrSchedule": "warmup", "lrWarmupSteps": 4},
]


def optimizer_cases(tmp: Path, rng: np.random.Generator) -> list[tuple[Case, Tensors]]:
    """Two epochs of every optimizer under every schedule, half of them with gradient clipping."""
    spec = without_dropout(spec_from_dict(GRAPHS[0]["spec"]))
    out = []
    for i, (optimizer, schedule) in enumerate((o, s) for o in OPTIMIZERS for s in SCHEDULES):
        case_id = f"optimizers-train-{i}"
        weights = random_weights(spec, rng, seed=int(rng.integers(1 << 30)))
        x, y = inputs(spec, rng, 24)
        save_file(weights, str(tmp / f"{case_id}.w.safetensors"))
        save_file({"x": x, "y": y}, str(tmp / f"{case_id}.d.safetensors"))
        clip = {"gradClipNorm": 0.5} if i % 2 else {}
        lr = 0.002 if optimizer["optimizer"] != "sgd" else 0.05
        options = {"epochs": 2, "batchSize": 8, "lr": lr, "shuffle": False, **optimizer, **schedule, **clip}
        case: Case = {"id": case_id, "kind": "train", "spec": spec.raw, "weights": f"{case_id}.w.safetensors",
                      "data": f"{case_id}.d.safetensors", "options": options}  # fmt: skip
        if not (optimizer["optimizer"] == "rmsprop" and optimizer.get("momentum")):  # not checkpointable
            case["resumeAt"] = 2 + i % 3  # checkpointed there and resumed in a fresh trainer (parity-case.mjs)
        out.append((case, reference(case, spec, weights, x, y)))
    return out


def run_cases(cases: tuple[Path, list[tuple[Case, Tensors]]], backend: str) -> list[tuple[Case, Tensors, Tensors]]:
    tmp, pairs = cases
    subprocess.run(["node", str(PARITY), str(tmp), "--backend", backend], check=True, timeout=1500)
    return [(c, r, load_file(str(tmp / f"{c['id']}.{backend}.safetensors"))) for c, r in pairs]


@pytest.fixture(scope="module")
def results(cases: tuple[Path, list[tuple[Case, Tensors]]]) -> list[tuple[Case, Tensors, Tensors]]:
    return run_cases(cases, "cpu")


def on_webgpu(case: Case) -> bool:
    """Every case but a built-in model's draws past `WEBGPU_DRAWS` (see the module's docstring)."""
    name, kind, draw = case["id"].rsplit("-", 2)
    return name not in BUILTIN_MODELS or int(draw) < WEBGPU_DRAWS[kind]


@pytest.fixture(scope="module")
def webgpu_results(cases: tuple[Path, list[tuple[Case, Tensors]]]) -> list[tuple[Case, Tensors, Tensors]]:
    tmp, pairs = cases
    kept = [(c, r) for c, r in pairs if on_webgpu(c)]
    folder = tmp / "webgpu"
    folder.mkdir()
    for case, _ in kept:
        for name in (case["weights"], case["data"]):
            (folder / name).hardlink_to(tmp / name)
    (folder / "cases.json").write_text(json.dumps([c for c, _ in kept]))
    return run_cases((folder, kept), "webgpu")


def test_there_are_at_least_100_cases_over_every_model_and_graph(results: list[Any]) -> None:
    assert len(results) >= 100
    assert {c["id"].rsplit("-", 2)[0] for c, _, _ in results} == {name for name, _ in MODELS} | {"optimizers"}


def test_every_optimizer_meets_every_schedule(results: list[Any]) -> None:
    options = [c["options"] for c, _, _ in results if c["id"].startswith("optimizers-")]
    assert {(o["optimizer"], o["lrSchedule"]) for o in options} == {
        (o["optimizer"], s["lrSchedule"]) for o in OPTIMIZERS for s in SCHEDULES
    }
    assert any("gradClipNorm" in o for o in options)


TOLERANCES = [("forward", 1e-5, False), ("gradients", 1e-4, True), ("train", 1e-4, True)]


def check(results: list[tuple[Case, Tensors, Tensors]], kind: str, tol: float, relative: bool) -> float:
    worst = 0.0
    for case, ref, got in (r for r in results if r[0]["kind"] == kind):
        assert set(got) == set(ref), case["id"]
        for name, expected in ref.items():
            err = np.abs(got[name] - expected)
            if relative:
                err = err / np.maximum(1.0, np.abs(expected))
            worst = max(worst, float(err.max()))
            assert err.max() <= tol, f"{case['id']} {name}: max error {err.max():.3g} > {tol}"
    return worst


@pytest.mark.parametrize(("kind", "tol", "relative"), TOLERANCES)
def test_wasm_matches_pytorch(results: list[Any], kind: str, tol: float, relative: bool) -> None:
    print(f"cpu {kind}: worst error {check(results, kind, tol, relative):.3g} (tolerance {tol})")


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "tol", "relative"), TOLERANCES)
def test_webgpu_matches_pytorch(webgpu_results: list[Any], kind: str, tol: float, relative: bool) -> None:
    print(f"webgpu {kind}: worst error {check(webgpu_results, kind, tol, relative):.3g} (tolerance {tol})")
