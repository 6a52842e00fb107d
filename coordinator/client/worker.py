"""Answering one task: decode the global weights, train or evaluate locally, encode the reply."""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from coordinator.client.local_data import ClientData
from coordinator.data.dataset import DataError
from coordinator.data.schema import DataSchema
from coordinator.models.local_training import TrainConfig, evaluate, train_delta
from coordinator.models.spec import spec_from_dict
from coordinator.models.torch_model import SpecModel, build_module, load_wire_weights
from coordinator.protocol.encodings import Encoding
from coordinator.protocol.errors import ErrorCode, ProtocolError
from coordinator.protocol.messages import Error, Result, Task
from coordinator.protocol.tensors import check_tensors, decode_tensors, encode_tensors

log = logging.getLogger(__name__)


class TaskWorker:
    def __init__(self, data: ClientData, *, poison_scale: float | None = None) -> None:
        self.data = data
        self.poison_scale = poison_scale
        self.update_encoding: Encoding = "fp32"  # what the coordinator's welcome asked for (SPEC §2.1)
        self._rng = np.random.default_rng()  # stochastic rounding of int8 deltas
        self._modules: dict[str, SpecModel] = {}
        self.unusable: str | None = None  # why this client's data cannot feed the run: it should leave

    def answer(self, task: Task) -> Result | Error:
        try:
            return self._answer(task)
        except ProtocolError as exc:
            return Error(exc.code.value, exc.message, task.task_id)
        except DataError as exc:
            self.unusable = str(exc)
            return Error(ErrorCode.TRAINING_FAILED.value, f"the client's data cannot be used: {exc}", task.task_id)
        except (ValueError, FloatingPointError, RuntimeError) as exc:
            log.warning("task %s failed: %s", task.task_id, exc)
            return Error(ErrorCode.TRAINING_FAILED.value, f"{type(exc).__name__}: {exc}", task.task_id)

    def _module(self, model: dict[str, object]) -> SpecModel:
        spec = spec_from_dict(model)
        key = repr(sorted(spec.raw.items()))
        if key not in self._modules:
            self._modules[key] = build_module(spec)
        return self._modules[key]

    def _answer(self, task: Task) -> Result:
        module = self._module(task.model)
        weights = decode_tensors(task.weights)
        check_tensors(weights, module.spec.wire_shapes())
        schema = None if task.data is None else DataSchema.from_dict(task.data)
        train, held_out = self.data.prepare(schema, module.spec)
        if task.kind == "evaluate":
            load_wire_weights(module, weights)
            loss, accuracy = evaluate(module, held_out.x, held_out.y)
            metrics = {"loss": loss} if math.isnan(accuracy) else {"loss": loss, "accuracy": accuracy}
            return Result(task.task_id, len(held_out), metrics)
        started = time.perf_counter()
        delta, metrics = train_delta(module, weights, train.x, train.y, TrainConfig.from_wire(task.config))
        metrics["train_seconds"] = time.perf_counter() - started
        if self.poison_scale is not None:
            delta = {k: v * np.float32(self.poison_scale) for k, v in delta.items()}
        return Result(task.task_id, len(train), metrics, self._encode(delta))

    def _encode(self, delta: dict[str, np.ndarray]) -> bytes:
        try:
            return encode_tensors(delta, self.update_encoding, self._rng)
        except ValueError:  # a value fp16 cannot carry: fp32 is always understood (SPEC §2.1)
            return encode_tensors(delta)
