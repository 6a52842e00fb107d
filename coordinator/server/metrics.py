"""Prometheus metrics, on a registry of the coordinator's own (so several coordinators can share a process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rounds = Counter("pollen_rounds_completed", "Federated rounds completed.", registry=r)
        self.round_seconds = Histogram(
            "pollen_round_duration_seconds",
            "Wall time of a round, from broadcast to the committed checkpoint.",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.bytes_in = Counter("pollen_bytes_received", "WebSocket frame bytes received from clients.", registry=r)
        self.bytes_out = Counter("pollen_bytes_sent", "WebSocket frame bytes sent to clients.", registry=r)
        self.rejected = Counter(
            "pollen_rejected_frames", "Client frames or updates refused with an error, by code.", ["code"], registry=r
        )
        self.clients = Gauge("pollen_clients_connected", "Clients connected now.", registry=r)
        self.current_round = Gauge("pollen_current_round", "The last completed round of the current run.", registry=r)
        self.accuracy = Gauge("pollen_global_accuracy", "Test accuracy of the global model.", registry=r)
        self.epsilon = Gauge("pollen_dp_epsilon", "Differential privacy spent so far (epsilon).", registry=r)

    def count_rejections(self, rejections: list[str]) -> None:
        """Count and clear the error codes a connection sent (event-loop thread only)."""
        for code in rejections:
            self.rejected.labels(code).inc()
        rejections.clear()

    def track_clients(self, count: Callable[[], int]) -> None:
        self.clients.set_function(lambda: float(count()))

    def track_gateways(self, describe: Callable[[], list[dict[str, Any]]]) -> None:
        """Per-gateway gauges, labelled `gateway`, read from `describe()` at each scrape."""
        self.registry.register(_GatewayCollector(describe))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _GatewayCollector(Collector):
    GAUGES = (
        ("clients", "pollen_gateway_clients", "Clients connected to the gateway now."),
        ("alive", "pollen_gateway_alive", "1 while the gateway answers the coordinator, 0 while it is down."),
        ("last_phase_bytes", "pollen_gateway_phase_bytes", "Bytes the gateway sent and received in its last phase."),
        ("last_phase_seconds", "pollen_gateway_phase_seconds", "Wall time of the gateway's last phase."),
    )

    def __init__(self, describe: Callable[[], list[dict[str, Any]]]) -> None:
        self._describe = describe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gateways = self._describe()
        for key, name, doc in self.GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["gateway"])
            for g in gateways:
                family.add_metric([str(g["id"])], float(g[key]))
            yield family
