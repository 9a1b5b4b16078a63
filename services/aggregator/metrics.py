"""Prometheus metrics of the aggregation pipeline (bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class AggregatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.applied = Counter(
            "callpulse_aggregator_events_total", "Events applied to the core", registry=registry
        )
        self.quarantined = Counter(
            "callpulse_aggregator_quarantined_events_total",
            "Events older than the correction horizon, set aside and counted",
            registry=registry,
        )
        self.poison = Counter(
            "callpulse_aggregator_poison_records_total",
            "Log records that could not be decoded",
            registry=registry,
        )
        self.store_errors = Counter(
            "callpulse_store_write_errors_total", "Failed store writes", registry=registry
        )
        self.rows_written = Counter(
            "callpulse_store_rows_written_total", "Rows upserted into the store", registry=registry
        )
        self.store_write_seconds = Histogram(
            "callpulse_store_write_duration_seconds",
            "Duration of one batched store write",
            registry=registry,
        )
