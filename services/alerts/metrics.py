"""Prometheus metrics of alert evaluation and delivery (bounded labels only)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..kpi.alerts import CHANNELS
from ..store.alerts import AlertStore


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transitions = Counter(
            "callpulse_alerts_transitions_total",
            "Alert lifecycle transitions (pending, firing, resolved, cancelled, acknowledged)",
            ["kind"],
            registry=registry,
        )
        self.notices = Counter(
            "callpulse_alerts_notices_total",
            "Notices put in the outbox, one per recipient (firing, resolved, repeat)",
            ["kind"],
            registry=registry,
        )
        self.deliveries = Counter(
            "callpulse_alerts_deliveries_total",
            "Delivery attempts by channel and outcome (delivered, retry, failed)",
            ["channel", "outcome"],
            registry=registry,
        )
        self.delivery_seconds = Histogram(
            "callpulse_alerts_delivery_duration_seconds",
            "Duration of one delivery attempt",
            ["channel"],
            registry=registry,
        )
        self.evaluation_seconds = Histogram(
            "callpulse_alerts_evaluation_duration_seconds",
            "Duration of one evaluation of every rule",
            registry=registry,
        )
        # Every known label value starts at 0, so rate() and increase() see the first event.
        for kind in ("pending", "firing", "resolved", "cancelled", "acknowledged"):
            self.transitions.labels(kind)
        for kind in ("firing", "resolved", "repeat"):
            self.notices.labels(kind)
        for channel in CHANNELS:
            self.delivery_seconds.labels(channel)
            for outcome in ("delivered", "retry", "failed"):
                self.deliveries.labels(channel, outcome)


class OutboxCollector(Collector):
    """Open alerts and the outbox backlog, read from the store at scrape time."""

    def __init__(self, store: AlertStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.outbox_counts()
        pending = GaugeMetricFamily(
            "callpulse_alerts_outbox_pending_deliveries",
            "Notices not delivered yet (still being tried)",
        )
        pending.add_metric([], counts["pending"])
        yield pending
        failed = GaugeMetricFamily(
            "callpulse_alerts_outbox_failed_deliveries",
            "Notices given up after every retry (see GET /v1/alert-deliveries?state=failed)",
        )
        failed.add_metric([], counts["failed"])
        yield failed
        open_alerts = GaugeMetricFamily(
            "callpulse_alerts_open_alerts",
            "Pending and firing alerts",
            labels=["state", "severity"],
        )
        for state, severity, count in self.store.open_counts():
            open_alerts.add_metric([state, severity], count)
        yield open_alerts
