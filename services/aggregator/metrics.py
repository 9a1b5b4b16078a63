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
        self.batch_seconds = Histogram(
            "callpulse_aggregator_batch_duration_seconds",
            "Processing time of one batch of events (decode and apply to the core)",
            registry=registry,
        )
        self.event_delay_seconds = Histogram(
            "callpulse_aggregator_event_delay_seconds",
            "Wall clock at apply minus event time of the newest event of each batch",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=registry,
        )
