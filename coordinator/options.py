"""Typer options generated from `Settings`, so `serve` and `simulate` share one definition."""

from __future__ import annotations

import inspect
import tomllib
import typing
from collections.abc import Callable
from dataclasses import fields
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import typer
from click.core import ParameterSource

from coordinator.settings import Settings

HELP = {
    "host": "Interface to listen on.",
    "port": "Port for HTTP and WebSocket (/ws).",
    "db": "SQLAlchemy URL of the database (SQLite or PostgreSQL).",
    "join_token": "Clients must present this token to join.",
    "admin_token": "Bearer token for the admin API under /api/admin/ (unset: the admin API is off).",
    "max_frame_bytes": "Largest WebSocket frame accepted; larger messages are chunked.",
    "heartbeat_seconds": "Heartbeat interval; a client silent for 3x this is dropped.",
    "demo_shards": "The page's demo data: browser clients split the MNIST training digits into this many shards.",
    "gateways": (
        "WebSocket gateways to start on Ray: each serves its own clients on its own port and pre-aggregates"
        " their updates; clients find one through GET /api/join. 0: clients connect to this process's /ws."
    ),
    "ray_address": "Ray cluster for the gateways (e.g. 10.0.0.5:6379); unset: a local Ray instance.",
    "gateway_port": "Gateway i listens on this port + i (0: --port + 1).",
    "trusted_proxies": (
        "Reverse proxies whose X-Forwarded-For header names the client (IPs or CIDRs, comma-separated): "
        "per-address limits then count real clients, not the proxy."
    ),
    "hello_timeout": "Seconds a new connection has to send its hello; then it is closed with 4002.",
    "request_timeout": "Seconds a client has to send an HTTP request's headers (a WebSocket upgrade included).",
    "max_connections_per_address": (
        "WebSocket connections one remote address may hold (0: no limit; behind a proxy, see --trusted-proxies)."
    ),
    "max_messages_per_second": "Messages per second one connection may send (token bucket); above: closed, 4004.",
    "message_burst": "Messages one connection may send at once above --max-messages-per-second.",
    "max_joins_per_second": (
        "GET /api/join calls per second one remote address may make, with a burst of --max-connections-per-address"
        " (0 there: no limit here either); above: 429. Each call reserves a place on a gateway for --hello-timeout s."
    ),
    "max_send_buffer_bytes": (
        "Bytes queued to one client before it is dropped with 4003 (it does not read); must hold a whole task."
    ),
    "max_buffered_bytes": (
        "Bytes buffered for all clients together, queued to them or held in their unfinished chunked messages; "
        "above it new connections are refused with 1013, and a connection that pushes it over is closed with 1013."
    ),
    "max_message_bytes": (
        "Largest message a client may send once its chunks are put together (a result holds one model delta), "
        "and so what one connection may hold in unfinished chunks."
    ),
    "max_receiving_bytes": (
        "Bytes of client messages the coordinator holds at once, still arriving or not yet checked; above it,"
        " connections are not read (TCP holds their data) until it drains. Small: a round's memory stays near one"
        " model however many clients answer at once. Large: many slow uploads progress together."
    ),
    "min_upload_rate": (
        "Bytes a second a client's message must arrive at while the coordinator reads it (averaged over 3"
        " heartbeat periods; time the client waits for the inbound budget does not count); slower: closed, 4006."
        " 0: no minimum."
    ),
    "new_run": "Start a new run even if the database holds an unfinished one.",
    "model": "Built-in model (mnist-mlp, mnist-2nn, mnist-cnn, mnist-cnn-bn, mnist-vit) or a model-spec JSON file.",
    "rounds": "Number of federated rounds.",
    "clients_per_round": "Clients sampled per round (0: --fraction-train of those connected).",
    "fraction_train": "Fraction of the connected clients sampled per round when --clients-per-round is 0.",
    "overselect": (
        "Send each round's train task to up to this many times the cohort, from the idle clients, and close the"
        " round when the cohort's worth of updates is in; the rest are cancelled (1: off)."
    ),
    "max_memory": (
        "Bytes the updates one round keeps may take. FedAvg-family strategies fold updates as they arrive and"
        " keep one model; robust ones (fedmedian, trimmed-mean, krum, bulyan) keep every update, so their"
        " cohort must fit: a larger --clients-per-round is refused, and otherwise a round takes at most what fits."
    ),
    "min_clients": "Clients that must be connected before a round starts.",
    "wait_for": "Clients to wait for before the first round (0: min-clients).",
    "round_timeout": "Seconds to wait for replies in each train or evaluate phase.",
    "resume_grace": (
        "Seconds a task waits for a client that keeps its jobs across reconnects (a browser page reloaded"
        " mid-training) to come back and finish it, within its phase's --round-timeout; then it fails. 0: at once."
    ),
    "init": "Start from a PyTorch .pt state_dict or a .safetensors file.",
    "seed": "Seed for the initial model.",
    "fraction_evaluate": "Fraction of clients asked for federated evaluation each round (0: off).",
    "evaluate_every": (
        "Evaluate the global model on the coordinator's test set every this many rounds, and after the last (0: never)."
    ),
    "strategy": "fedavg, fedavgm, fedprox, fedadam, fedyogi, fedadagrad, fedmedian, trimmed-mean, krum or bulyan.",
    "proximal_mu": "FedProx proximal term mu.",
    "server_lr": "Server learning rate (fedavgm, fedadam, fedyogi, fedadagrad).",
    "server_momentum": "Server momentum (fedavgm).",
    "trim_beta": "Fraction trimmed from each end (trimmed-mean).",
    "byzantine": "Number of malicious clients Krum and Bulyan tolerate.",
    "krum_select": "Updates Multi-Krum averages (0: cohort size minus --byzantine; 1: classic Krum).",
    "local_epochs": "Local epochs per round.",
    "batch_size": (
        "Local mini-batch size, or auto: each client takes the largest power of two up to 256 whose training"
        " step fits its memory budget (SPEC §5)."
    ),
    "memory_budget_mb": "For --batch-size auto: the memory a client's training step may use (unset: the client's own;"
    " the page's is 256 MB).",
    "lr": "Local learning rate.",
    "optimizer": "Local optimizer: sgd, adam, adamw or rmsprop (PyTorch's defaults).",
    "momentum": "Local momentum (sgd, rmsprop).",
    "nesterov": "Nesterov momentum (sgd with --momentum).",
    "weight_decay": "Local weight decay (unset: PyTorch's default, 0.01 for adamw and 0 otherwise).",
    "lr_schedule": (
        "Learning rate over a round's local steps, as PyTorch's schedulers: constant, step (StepLR), exponential"
        " (ExponentialLR), cosine (CosineAnnealingLR over the round), one-cycle (OneCycleLR peaking at --lr) or"
        " warmup (LinearLR from a third of --lr)."
    ),
    "lr_step_size": "Local steps between decays (step schedule).",
    "lr_gamma": "Decay factor (step: default 0.1; exponential: required).",
    "lr_warmup_steps": "Local steps to warm up over (warmup schedule).",
    "grad_clip_norm": "Clip each local step's gradients to this global L2 norm (unset: off).",
    "precision": (
        "Local arithmetic: fp32, or fp16 for mixed precision (half-precision matrix products, float32 master"
        " weights, loss scaling) on clients that compute in f16, the page on WebGPU with shader-f16; others train"
        " in fp32."
    ),
    "augment_crop": "Image inputs: shift each example by up to this many pixels each way, 0-filled (random crop).",
    "augment_flip": "Image inputs: mirror each example left to right with probability 1/2.",
    "augment_rotate": "Image inputs: rotate each example by an angle uniform in ± this many degrees.",
    "augment_brightness": "Image inputs: add one value uniform in ± this to each example.",
    "augment_contrast": "Image inputs: scale each example's distance from its mean by a factor in 1 ± this.",
    "augment_mixup": "Image inputs: mixup's alpha (0: off); one Beta(alpha, alpha) weight per batch.",
    "round_lr_schedule": (
        "--lr across rounds: constant, exponential (times --round-lr-gamma each round) or cosine (to near 0 by the"
        " last round). The coordinator sends each round's rate."
    ),
    "round_lr_gamma": "Per-round decay factor (exponential round schedule).",
    "dp_clip": "DP: each delta's L2 norm is clipped to this, by the clients and again by the server.",
    "dp_noise": "Client-side DP: server noise multiplier z (stddev z*C/n).",
    "dp_delta": "Delta at which epsilon is reported.",
    "update_encoding": (
        "How clients that can send their deltas: fp32, fp16, or int8 (per-chunk scales, stochastic rounding:"
        " about a quarter of the bytes). Clients that cannot send fp32."
    ),
    "weights_encoding": "How the global weights go down to clients that can read it: fp32, fp16 or int8.",
    "test_data": (
        "The operator's test set, scored centrally after rounds (see --evaluate-every): an .npz or .safetensors"
        " of x and y, a CSV or Parquet table (with --label-column), a folder of class folders of pictures, or"
        " mnist (the bundled test digits). It also sets how clients prepare their data: a table's feature"
        " statistics and the class list go to every client. Unset: only the built-in MNIST models are scored."
    ),
    "label_column": "The label column of a CSV or Parquet --test-data; every other column is a feature.",
    "classes": (
        "Class names in index order, comma-separated (unset: a table's sorted label values, an image folder's"
        " sorted subfolders, or 0..K-1)."
    ),
    "max_examples_per_client": (
        "A train or evaluate reply claiming more examples than this is refused (not clamped): a claim no client"
        " can back is a lie, and FedAvg weighs by it. The default is above any browser shard (the page's demo"
        " shards hold 800 digits; a tab trains on a few thousand at most) and keeps one client's weight bounded."
    ),
    "max_update_norm": (
        "Clip every delta's global L2 norm to this on the server (unset: off). A bounded bad update is then"
        " the strategy's to outvote; under DP the bound is the tighter of this and --dp-clip."
    ),
}

F = TypeVar("F", bound=Callable[..., Any])


def with_settings(**overrides: Any) -> Callable[[F], F]:
    """Add one `--flag` per Settings field to a command; it receives them as `settings: Settings`.

    Every flag also reads `POLLEN_<NAME>` from the environment.
    """

    def decorate(fn: F) -> F:
        # The command's own annotations are strings (postponed evaluation): resolved here, so that typer
        # reads their Annotated options (help, -o) rather than taking each for a bare parameter.
        hints = typing.get_type_hints(fn, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.name != "settings"
        ]
        config_option = typer.Option(
            None,
            "--config",
            envvar="POLLEN_CONFIG",
            help="TOML file of run settings, named like the flags; flags and POLLEN_* variables win.",
            rich_help_panel="Run settings",
        )
        extra = [
            inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context),
            inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=config_option, annotation=Path | None),
        ]
        for f in fields(Settings):
            default = overrides.get(f.name, f.default)
            option = typer.Option(
                default,
                f"--{f.name.replace('_', '-')}",
                help=HELP.get(f.name, ""),
                envvar=f"POLLEN_{f.name.upper()}",
                rich_help_panel="Run settings",
            )
            annotation = f.type if not isinstance(f.type, str) else eval(f.type)
            if annotation == int | str:  # a number or a word ("auto"): typer takes it as text, Settings reads it
                annotation, option.default = str, str(default)
            extra.append(
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
            )

        @wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            ctx: typer.Context = kwargs.pop("ctx")
            # An empty variable (POLLEN_JOIN_TOKEN= in a compose file) means unset, not "".
            values: dict[str, Any] = {f.name: kwargs.pop(f.name) for f in fields(Settings)}
            values.update({f.name: None for f in fields(Settings) if f.default is None and values[f.name] == ""})
            config: Path | None = kwargs.pop("config")
            if config is not None:
                for name, value in read_config(config).items():
                    if ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
                        values[name] = value
            try:
                settings = Settings(**values)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
            return fn(settings=settings, **kwargs)

        wrapper.__signature__ = inspect.Signature([*own, *extra])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def read_config(path: Path) -> dict[str, Any]:
    """Settings from a TOML file; keys as the flags (`rounds`, `dp-clip`) or with underscores."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"cannot read config {path}: {exc}") from None
    known = {f.name for f in fields(Settings)}
    values = {key.replace("-", "_"): value for key, value in raw.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise typer.BadParameter(f"config {path}: unknown settings {unknown}")
    return values
