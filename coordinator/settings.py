"""Everything a run is configured by; the CLI fills it and the database keeps it for resume."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from coordinator.models.augmentation import Augmentation
from coordinator.models.optimization import OptimizerConfig
from coordinator.protocol.encodings import ENCODINGS

STRATEGIES = (
    "fedavg",
    "fedavgm",
    "fedprox",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "trimmed-mean",
    "krum",
    "bulyan",
)
# Their server step starts from the example-weighted mean, so replies fold into a running sum as they
# arrive (O(model) memory per round); the others need every update at once.
STREAMING_STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedadagrad")
ROUND_SCHEDULES = ("constant", "exponential", "cosine")


@dataclass(frozen=True)
class Settings:
    # serving
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = "sqlite:///pollen.db"
    join_token: str | None = None
    admin_token: str | None = None
    max_frame_bytes: int = 16 * 1024 * 1024
    heartbeat_seconds: float = 10.0
    new_run: bool = False
    demo_shards: int = 10  # the page's demo data: node n trains on MNIST shard ((n-1) mod this) + 1
    gateways: int = 0  # WebSocket gateways on Ray (0: clients connect to this process's /ws)
    ray_address: str | None = None  # the Ray cluster for gateways (None: a local instance)
    gateway_port: int = 0  # gateway i listens on this + i (0: --port + 1)
    # limits on what one peer may hold (0 turns a count limit off)
    trusted_proxies: str = "127.0.0.1"  # whose X-Forwarded-For names the client (comma-separated IPs/CIDRs, or *)
    hello_timeout: float = 10.0
    request_timeout: float = 10.0  # to send an HTTP request's headers (and so a WebSocket upgrade)
    max_connections_per_address: int = 16
    max_messages_per_second: float = 50.0
    message_burst: int = 200
    max_joins_per_second: float = 1.0  # /api/join calls one address may make (burst: max_connections_per_address)
    max_send_buffer_bytes: int = 64 * 1024 * 1024
    max_buffered_bytes: int = 1024 * 1024 * 1024
    max_message_bytes: int = 64 * 1024 * 1024  # a whole (chunked) message, and what a connection holds unfinished
    max_receiving_bytes: int = 256 * 1024 * 1024  # received bytes held across connections before reads wait
    min_upload_rate: float = 16 * 1024  # bytes/s a message must keep up while it is read (0: no minimum)
    # run
    model: str = "mnist-mlp"
    rounds: int = 20
    clients_per_round: int = 0  # 0: --fraction-train of the connected clients
    fraction_train: float = 1.0
    overselect: float = 1.3  # train tasks go to up to this many times the cohort; the round takes the first
    max_memory: int = 4 * 1024**3  # what the updates a round keeps may take (robust strategies keep them all)
    min_clients: int = 2
    wait_for: int = 0  # clients to wait for before the first round (0: min-clients)
    round_timeout: float = 600.0
    resume_grace: float = 60.0  # how long a task waits for a node whose client keeps its jobs to reconnect
    init: str | None = None
    seed: int = 0
    fraction_evaluate: float = 0.0
    test_data: str | None = None  # the operator's test set, scored after rounds ("mnist": the bundled digits)
    label_column: str | None = None  # --test-data's label column, when it is a table
    classes: str | None = None  # the class names in index order, comma-separated (unset: from --test-data)
    evaluate_every: int = 1  # central evaluation on the test set every this many rounds (0: never)
    # strategy
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_lr: float | None = None  # None: the strategy's own default
    server_momentum: float = 0.9
    trim_beta: float = 0.2
    byzantine: int = 2
    krum_select: int = 0  # 0: cohort size − byzantine (Multi-Krum); 1: classic Krum
    # local training
    local_epochs: int = 5
    batch_size: int | str = 10  # or "auto": each client picks the largest its memory budget fits
    memory_budget_mb: float | None = None  # for --batch-size auto; None: each client's own (the page's 256 MB)
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float | None = None  # None: the optimizer's PyTorch default
    lr_schedule: str = "constant"
    lr_step_size: int = 1
    lr_gamma: float | None = None
    lr_warmup_steps: int = 5
    grad_clip_norm: float | None = None
    precision: str = "fp32"  # or fp16: mixed precision on clients that compute in f16 (SPEC §5)
    augment_crop: int = 0
    augment_flip: bool = False
    augment_rotate: float = 0.0
    augment_brightness: float = 0.0
    augment_contrast: float = 0.0
    augment_mixup: float = 0.0
    round_lr_schedule: str = "constant"
    round_lr_gamma: float = 0.9
    # privacy
    dp_clip: float | None = None
    dp_noise: float | None = None
    dp_delta: float = 1e-5
    # what travels (SPEC §2.1): to clients that can, deltas come up and weights go down in these
    update_encoding: str = "fp32"
    weights_encoding: str = "fp32"
    # what one participant can weigh (issue 10)
    max_examples_per_client: int = 10_000
    max_update_norm: float | None = None  # None: deltas are not norm-bounded (except to --dp-clip under DP)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}: one of {', '.join(STRATEGIES)}")
        if self.update_encoding not in ENCODINGS or self.weights_encoding not in ENCODINGS:
            raise ValueError(f"--update-encoding and --weights-encoding are one of {', '.join(ENCODINGS)}")
        self.optimization()  # checks the local optimizer's options
        self.augmentation()  # and the augmentation's
        if self.precision not in ("fp32", "fp16"):
            raise ValueError("--precision is fp32 or fp16")
        if self.round_lr_schedule not in ROUND_SCHEDULES:
            raise ValueError(f"--round-lr-schedule is one of {', '.join(ROUND_SCHEDULES)}")
        if not 0 < self.round_lr_gamma <= 1:
            raise ValueError("--round-lr-gamma must be in (0, 1]")
        object.__setattr__(self, "batch_size", _batch_size(self.batch_size))  # frozen: normalised once, here
        if self.memory_budget_mb is not None and not (self.batch_size == "auto" and self.memory_budget_mb > 0):
            raise ValueError("--memory-budget-mb is a positive number of MB, for --batch-size auto")
        if self.rounds < 1 or self.min_clients < 1 or self.local_epochs < 1:
            raise ValueError("rounds, min-clients and local-epochs must be at least 1")
        if self.clients_per_round < 0 or (0 < self.clients_per_round < self.min_clients):
            raise ValueError("clients-per-round must be 0 (all) or at least min-clients")
        if not 0 < self.fraction_train <= 1:
            raise ValueError("--fraction-train must be in (0, 1]")
        if not 1 <= self.overselect <= 10:
            raise ValueError("--overselect must be between 1 (off) and 10")
        if not 0 <= self.resume_grace < float("inf"):
            raise ValueError("--resume-grace must be a number of seconds, 0 (off) or more")
        if self.evaluate_every < 0:
            raise ValueError("--evaluate-every must be 0 (never) or positive")
        if self.max_memory < 1:
            raise ValueError("--max-memory must be positive")
        if (self.dp_clip is None) != (self.dp_noise is None):
            raise ValueError("differential privacy needs both --dp-clip and --dp-noise")
        if self.dp_clip is not None and (self.dp_clip <= 0 or (self.dp_noise or 0) <= 0):
            raise ValueError("--dp-clip and --dp-noise must be positive")
        if not 0 < self.dp_delta < 1:
            raise ValueError("--dp-delta must be in (0, 1)")
        if self.max_examples_per_client < 1:
            raise ValueError("--max-examples-per-client must be at least 1")
        if self.max_update_norm is not None and not 0 < self.max_update_norm < float("inf"):
            raise ValueError("--max-update-norm must be a positive number")
        if min(self.hello_timeout, self.request_timeout, self.max_messages_per_second, self.max_joins_per_second) <= 0:
            raise ValueError(
                "--hello-timeout, --request-timeout, --max-messages-per-second and --max-joins-per-second"
                " must be positive"
            )
        if self.max_connections_per_address < 0 or self.message_burst < 1:
            raise ValueError("--max-connections-per-address must be at least 0 and --message-burst at least 1")
        if not 0 <= self.min_upload_rate < float("inf"):
            raise ValueError("--min-upload-rate must be a number of bytes a second, 0 or more")
        if self.max_receiving_bytes < 1:
            raise ValueError("--max-receiving-bytes must be positive")
        if self.max_message_bytes < 1:
            raise ValueError("--max-message-bytes must be at least 1")
        if not 0 < self.max_send_buffer_bytes <= self.max_buffered_bytes:
            raise ValueError("need 0 < max-send-buffer-bytes <= max-buffered-bytes")

    @property
    def dp(self) -> bool:
        return self.dp_clip is not None

    @property
    def streaming(self) -> bool:
        """Whether train replies fold into a running mean as they arrive (see STREAMING_STRATEGIES)."""
        return self.strategy in STREAMING_STRATEGIES

    @property
    def cohort_size(self) -> int:
        """Clients sampled per round when it must be fixed (DP); else the minimum."""
        return self.clients_per_round or self.min_clients

    @property
    def update_norm_bound(self) -> float | None:
        """The L2 norm the server clips every delta to: the tighter of --max-update-norm and --dp-clip."""
        bounds = [b for b in (self.max_update_norm, self.dp_clip) if b is not None]
        return min(bounds) if bounds else None

    def optimization(self) -> OptimizerConfig:
        return OptimizerConfig.of(self)

    def augmentation(self) -> Augmentation:
        return Augmentation.of(self)

    def train_config(self) -> dict[str, Any]:
        """The training keys sent to clients (SPEC §5); options left at their defaults are not sent."""
        config: dict[str, Any] = {
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            **({} if self.memory_budget_mb is None else {"memory-budget-mb": self.memory_budget_mb}),
            "lr": self.lr,
            "optimizer": self.optimizer,
            "momentum": self.momentum,
        }
        if self.strategy == "fedprox":
            config["proximal-mu"] = self.proximal_mu
        optional = {"nesterov": self.nesterov or None, "weight-decay": self.weight_decay,
                    "lr-schedule": None if self.lr_schedule == "constant" else self.lr_schedule,
                    "lr-step-size": self.lr_step_size if self.lr_schedule == "step" else None,
                    "lr-gamma": self.lr_gamma,
                    "lr-warmup-steps": self.lr_warmup_steps if self.lr_schedule == "warmup" else None,
                    "grad-clip-norm": self.grad_clip_norm,
                    "precision": None if self.precision == "fp32" else self.precision}  # fmt: skip
        augment = asdict(self.augmentation())  # crop, flip, rotate, ... as augment-crop, augment-flip, ...
        optional.update({f"augment-{k}": v for k, v in augment.items() if v})
        config.update({k: v for k, v in optional.items() if v is not None})
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    # Options that say where and how to serve, not what to train: a resumed run takes these from the command line.
    SERVING = (
        "gateways",
        "ray_address",
        "gateway_port",
        "host",
        "port",
        "db",
        "join_token",
        "admin_token",
        "max_frame_bytes",
        "heartbeat_seconds",
        "new_run",
        "demo_shards",
        "trusted_proxies",
        "hello_timeout",
        "request_timeout",
        "max_connections_per_address",
        "max_messages_per_second",
        "message_burst",
        "max_joins_per_second",
        "max_send_buffer_bytes",
        "max_buffered_bytes",
        "max_message_bytes",
        "max_receiving_bytes",
        "min_upload_rate",
        "max_memory",
    )
    # Credentials: never stored with a run, never printed.
    SECRETS = ("join_token", "admin_token")


def storable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as a run may keep them: without the tokens, and the database URL without its password.

    A resumed run takes every serving option, these included, from its invocation (`Settings.SERVING`).
    """
    kept = {k: v for k, v in settings.items() if k not in Settings.SECRETS}
    if isinstance(kept.get("db"), str):
        kept["db"] = redact_url(kept["db"])
    return kept


def redact_url(url: str) -> str:
    """A database URL fit to print or store: its password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _batch_size(value: int | str) -> int | str:
    """--batch-size as given on the command line, in TOML or from a stored run: a positive integer or "auto"."""
    if value == "auto":
        return value
    try:
        batch = int(value)
    except (TypeError, ValueError):
        batch = 0
    if isinstance(value, bool) or batch < 1 or (isinstance(value, float) and value != batch):
        raise ValueError(f'--batch-size is a positive integer or "auto", got {value!r}')
    return batch
