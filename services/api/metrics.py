"""Prometheus metrics of the API and ingest (bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "callpulse_ingest_events_total", "Events accepted by ingest (new)", registry=registry
        )
        self.duplicates = Counter(
            "callpulse_ingest_duplicate_events_total",
            "Re-sent events (accepted, no effect)",
            registry=registry,
        )
        self.rejected = Counter(
            "callpulse_ingest_rejected_events_total",
            "Events (or whole bodies) rejected by validation",
            registry=registry,
        )
