"""Prometheus metrics of one Server, in a registry of its own (never the global default), so
tests can run several servers in one process and ``/metrics`` shows only pochta's numbers."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """The counters and gauges every service shares; services may register more."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.connections_total = Counter(
            "pochta_connections_total",
            "Connections accepted, per listener.",
            ["listener"],
            registry=self.registry,
        )
        self.connections_open = Gauge(
            "pochta_connections_open",
            "Connections open now, per listener.",
            ["listener"],
            registry=self.registry,
        )
        self.reloads_total = Counter(
            "pochta_reloads_total",
            "Configuration reloads (SIGHUP), by result: ok or failed.",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "failed"):
            self.reloads_total.labels(result)  # both series exist from the start, at 0

    def render(self) -> bytes:
        """The Prometheus text exposition format of this registry."""
        data: bytes = generate_latest(self.registry)
        return data
