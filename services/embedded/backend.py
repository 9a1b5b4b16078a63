"""The embedded mode's API backend: the SQLite log, the SQLite store and the live core."""

from __future__ import annotations

import asyncio
import time

from ..aggregator.embedded import EmbeddedAggregator
from ..api.backend import Health, Unavailable
from ..bus.sqlite_log import EventLog
from ..kpi.contracts import Contract
from ..kpi.counters import Counters, merged
from ..kpi.events import Event, encode_event
from ..kpi.gauges import QueueGauges, queue_gauges
from ..store.keys import ApiKey
from ..store.sqlite import SqliteStore


class EmbeddedBackend:
    """Reads combine the store (minutes the core has evicted) with the core's memory."""

    def __init__(
        self, log: EventLog, store: SqliteStore, aggregator: EmbeddedAggregator,
        stale_after_s: float,
    ) -> None:  # fmt: skip
        self.log = log
        self.store = store
        self.aggregator = aggregator
        self.stale_after_s = stale_after_s
        self._lock = asyncio.Lock()

    async def ingest(self, events: list[Event]) -> int:
        records = [(e.tenant_id, e.event_id, encode_event(e)) for e in events]
        try:
            async with self._lock:
                new = self.log.append(records)
        except Exception as exc:  # a full disk or a locked file: nothing was appended
            raise Unavailable(f"the event log did not accept the events: {exc}") from exc
        self.aggregator.wake.set()
        return new

    def gauges(self, tenant_id: str, queue_id: str, now_ms: int) -> QueueGauges:
        centre = self.aggregator.centre
        timelines = [t for (tenant, _), t in centre.timelines.items() if tenant == tenant_id]
        return queue_gauges(
            list(centre.waiting_legs(tenant_id, queue_id)), timelines, queue_id, now_ms,
            centre.settings.stale_leg_ms,
        )  # fmt: skip

    def bucket_map(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> dict[int, Counters]:
        centre = self.aggregator.centre
        split = max(start_ms, min(end_ms, centre.evicted_until_ms))
        found = (
            self.store.queue_buckets(tenant_id, queue_id, start_ms, split)
            if split > start_ms
            else {}
        )
        for (tenant, queue, minute), counters in centre.queue_buckets.items():
            if tenant == tenant_id and queue == queue_id and split <= minute < end_ms:
                found[minute] = counters
        return found

    def buckets(self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int) -> Counters:
        return merged(list(self.bucket_map(tenant_id, queue_id, start_ms, end_ms).values()))

    def queues(self, tenant_id: str) -> list[str]:
        found = set(self.store.queues(tenant_id))
        centre = self.aggregator.centre
        found.update(q for (t, q, _) in centre.queue_buckets if t == tenant_id)
        found.update(q for (t, q) in centre.waiting if t == tenant_id)
        return sorted(found)

    def contracts(self, tenant_id: str) -> list[Contract]:
        return self.store.contracts(tenant_id)

    def get_key(self, key_id: str) -> ApiKey | None:
        return self.store.get_key(key_id)

    def health(self) -> Health:
        lag = self.aggregator.lag()
        behind_s = time.time() - self.aggregator.processed_wall_ms / 1000 if lag else 0.0
        stale = (
            lag > 0 and behind_s > self.stale_after_s
        ) or self.aggregator.store_error is not None
        detail = self.aggregator.store_error or ("catching up" if lag else "up to date")
        return Health(
            ok=self.aggregator.store_error is None, stale=stale, lag_events=lag, detail=detail
        )
