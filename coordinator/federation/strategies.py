"""Flower strategies by name, sized from the settings, wrapped for DP when asked."""

from __future__ import annotations

from typing import Any

from flwr.serverapp import PrivacyConfig, RdpAccountant, SamplingMethod
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    MultiKrum,
    Strategy,
)
from flwr.supercore.privacy_accounting import GaussianPrivacyEvent, NeighboringRelation, PrivacyAccountant

from coordinator.federation.dp_strategy import DifferentialPrivacyOverValidReplies
from coordinator.federation.record_mean import install as install_record_mean
from coordinator.settings import Settings

# Make sampling exact: with a tiny fraction, Flower samples max(int(N * f), min_train_nodes) = the cohort size.
_TINY_FRACTION = 1e-9


def sampling(settings: Settings) -> dict[str, Any]:
    if settings.clients_per_round or settings.dp:
        train = {"fraction_train": _TINY_FRACTION, "min_train_nodes": settings.cohort_size}
    else:
        train = {"fraction_train": settings.fraction_train, "min_train_nodes": settings.min_clients}
    evaluate: dict[str, Any] = {"fraction_evaluate": settings.fraction_evaluate, "min_evaluate_nodes": 0}
    if settings.fraction_evaluate > 0:
        evaluate["min_evaluate_nodes"] = settings.min_clients
    return {**train, **evaluate, "min_available_nodes": max(settings.min_clients, train["min_train_nodes"])}


def base_strategy(settings: Settings) -> Strategy:
    common = sampling(settings)
    name = settings.strategy
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedavgm":
        return FedAvgM(
            **common, server_learning_rate=settings.server_lr or 1.0, server_momentum=settings.server_momentum
        )
    if name == "fedprox":
        return FedProx(**common, proximal_mu=settings.proximal_mu)
    if name == "fedadam":
        return FedAdam(**common, eta=settings.server_lr or 0.01)
    if name == "fedyogi":
        return FedYogi(**common, eta=settings.server_lr or 0.01)
    if name == "fedadagrad":
        return FedAdagrad(**common, eta=settings.server_lr or 0.1)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "trimmed-mean":
        return FedTrimmedAvg(**common, beta=settings.trim_beta)
    if name == "krum":
        # Classic Krum keeps one client's model, which overfits that client's shard (87% on
        # MNIST in our runs); Multi-Krum averages the m most central updates (Blanchard et al. 2017).
        cohort = settings.clients_per_round or max(settings.wait_for, settings.min_clients)
        select = settings.krum_select or max(1, cohort - settings.byzantine)
        return MultiKrum(**common, num_malicious_nodes=settings.byzantine, num_nodes_to_select=select)
    if name == "bulyan":
        # Bulyan needs n ≥ 4f + 3 replies (El Mhamdi et al. 2018); Flower checks it each round.
        return Bulyan(**common, num_malicious_nodes=settings.byzantine)
    raise ValueError(f"unknown strategy {name!r}")


def build_strategy(settings: Settings) -> Strategy:
    install_record_mean()  # Flower's FedAvg mean, in one model's memory instead of four
    strategy = base_strategy(settings)
    if not settings.dp:
        return strategy
    assert settings.dp_clip is not None and settings.dp_noise is not None
    accountant = None
    # Flower's accountant covers plain FedAvg aggregation only; other strategies run DP without an ε readout.
    if type(strategy) is FedAvg:
        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=settings.dp_delta,
                population_size=settings.cohort_size,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
    return DifferentialPrivacyOverValidReplies(
        strategy,
        noise_multiplier=settings.dp_noise,
        clipping_norm=settings.dp_clip,
        num_sampled_clients=settings.cohort_size,
        accountant=accountant,
    )


def epsilon(strategy: Strategy) -> float | None:
    spent = getattr(strategy, "privacy_spent", lambda: None)()
    return None if spent is None else float(spent.epsilon)


def accountant(strategy: Strategy) -> PrivacyAccountant | None:
    """The strategy's privacy accountant, if it keeps one."""
    return getattr(strategy, "accountant", None)


def privacy_state(strategy: Strategy) -> dict[str, object] | None:
    """The accountant's state as JSON-ready data, to store with the round; None without an accountant."""
    keeper = accountant(strategy)
    if keeper is None:
        return None
    state = keeper.state_dict()
    # The ledger gains an entry per release and is stored with every round. RDP composition is a sum, so identical
    # events merge into one entry with their counts added: the ledger stays as long as the distinct cohort sizes.
    merged: dict[str, dict[str, Any]] = {}
    ledger = state.get("compositions")
    entries: list[Any] = ledger if isinstance(ledger, list) else []
    for entry in entries:
        key = repr(sorted(entry["event"].items()))
        if key in merged:
            merged[key]["count"] += entry["count"]
        else:
            merged[key] = {"event": dict(entry["event"]), "count": entry["count"]}
    return {**state, "compositions": list(merged.values())}


def restore_privacy(strategy: Strategy, state: dict[str, object] | None, releases: int) -> None:
    """Put back what the accountant had spent before a resume, so ε never goes backwards.

    `state` is the last stored `privacy_state`; runs recorded before the state was kept
    have none, and then the `releases` rounds that reported an ε are composed again
    (without amplification each release costs the same: it depends on z alone).
    Raises ValueError if the stored state does not fit this run's privacy settings.
    """
    if not isinstance(strategy, DifferentialPrivacyOverValidReplies) or strategy.accountant is None:
        return
    keeper = strategy.accountant
    if state is not None:
        keeper.load_state_dict(state)
    elif releases:
        population = keeper.config.population_size
        keeper.compose(GaussianPrivacyEvent(strategy.noise_multiplier, population, population), releases)
