"""What one training step needs in memory, and the batch size `batch-size: "auto"` picks (SPEC §5).

The estimate is the WebAssembly trainer's (`client_wasm/src/memory.rs`), word for word, and
`protocol/vectors/auto-batch.json` holds both to the same numbers: a Python client and a
browser given one budget train at one batch size. It counts float32 values: the weights,
their gradients, the optimizer's state and the global copy, plus each layer's output, its
gradient and a temporary per example (a transformer layer's attention scores and hidden
activations on top). It is an estimate of the trainer's own reservation, not of PyTorch's
allocator, which the Python client merely shares the choice with.
"""

from __future__ import annotations

import math

from coordinator.models.graph import walk
from coordinator.models.spec import ModelSpec

MAX_AUTO_BATCH = 256  # past it, a local epoch makes too few steps to learn much
DEFAULT_MEMORY_BUDGET_MB = 256.0  # what a client spends when the task names no budget (the page's)
MB = 1 << 20


def state_slots(optimizer: str, momentum: float) -> int:
    """Values of optimizer state per parameter: momentum 1, Adam's two moments 2, RMSprop's square 1 (+1)."""
    if optimizer in ("adam", "adamw"):
        return 2
    if optimizer == "rmsprop":
        return 1 + int(momentum > 0)
    return int(momentum > 0)


def activation_len(spec: ModelSpec) -> int:
    """Values autodiff keeps per example: every layer's output, and a transformer layer's internals."""
    nodes = spec.nodes()
    found = walk(nodes, spec.input_shape, spec.input_dtype == "int64")
    total = 0
    for node, out in zip(nodes, found.outputs, strict=True):
        total += math.prod(out)
        if node.type == "transformer_encoder_layer" and len(out) == 2:
            t, d = out
            scores = int(node.attrs["nhead"]) * t * t
            hidden = t * int(node.attrs["dim_feedforward"])
            total += 2 * scores + 2 * hidden + 6 * t * d
    return total


def model_bytes(spec: ModelSpec) -> int:
    """The model's weights, its global copy and the conversions between them."""
    return _model_bytes(spec.num_parameters())


def training_bytes(spec: ModelSpec, batch: int, slots: int) -> int:
    """One training step at `batch` examples (see the module's docstring)."""
    return _step_bytes(spec.num_parameters(), slots) + _example_bytes(activation_len(spec)) * batch


# By counts, so that a search over batch sizes walks the model's graph once.
def _model_bytes(params: int) -> int:
    return 4 * params * 3


def _step_bytes(params: int, slots: int) -> int:
    """A step's cost whatever its batch: weights, gradients, optimizer state and their temporaries."""
    return 4 * params * (4 + slots)


def _example_bytes(activations: int) -> int:
    """A step's cost per example: each activation, its gradient and a temporary."""
    return 4 * activations * 3


def budget_bytes(memory_budget_mb: float) -> int:
    """A budget in MB (2^20 bytes) as whole bytes, as the trainer rounds it."""
    if not (math.isfinite(memory_budget_mb) and memory_budget_mb > 0):
        raise ValueError(f"memory-budget-mb must be positive, got {memory_budget_mb}")
    return int(memory_budget_mb * MB)


def largest_batch(spec: ModelSpec, slots: int, budget: int, examples: int) -> int:
    """The largest power of two up to `MAX_AUTO_BATCH` whose step fits `budget` bytes, never past `examples`.

    Raises ValueError, naming the need, when not even one example fits.
    """
    params = spec.num_parameters()
    fixed = _model_bytes(params) + _step_bytes(params, slots)
    per_example = _example_bytes(activation_len(spec))

    def fits(b: int) -> bool:
        return fixed + per_example * min(b, examples) <= budget

    if not fits(1):
        need = -(-(fixed + per_example) // MB)
        raise ValueError(
            f"a training step of this model needs about {need} MB even at batch size 1,"
            f" over the budget of {budget // MB} MB"
        )
    batch = 1
    while batch < MAX_AUTO_BATCH and batch < examples and fits(batch * 2):
        batch *= 2
    return min(batch, examples)
