"""The embedded mode's API backend: the SQLite log, the SQLite store and the live core."""

from __future__ import annotations

import asyncio
import time

from ..aggregator.embedded import EmbeddedAggregator
from ..api.backend import Health, Unavailable
from ..bus.sqlite_log import EventLog
from ..kpi.agents import Change, time_in_state
from ..kpi.contracts import Contract
from ..kpi.counters import AgentCounters, Counters, StateTime, merged
from ..kpi.events import Event, encode_event
from ..kpi.gauges import QueueGauges, queue_gauges
from ..store.keys import ApiKey
from ..store.links import WallboardLink
from ..store.sqlite import SqliteStore
from .reads import QUEUES_TTL_S, Memo, StoredSums, copied, memory_buckets, on_loop
from .tenancy import EmbeddedTenancy


class EmbeddedBackend(EmbeddedTenancy):
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
        self.stored_sums = StoredSums()
        self.window_sums = Memo()
        self.queue_lists: dict[str, tuple[float, list[str]]] = {}

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
        def memory() -> tuple[int, dict[int, Counters]]:
            # On the aggregator's loop: the split and the copies come from one state.
            centre = self.aggregator.centre
            split = max(start_ms, min(end_ms, centre.evicted_until_ms))
            found = memory_buckets(centre.queue_buckets, tenant_id, queue_id, split, end_ms)
            return split, copied(found)

        split, in_memory = on_loop(self.aggregator.loop, memory)
        found = (
            self.store.queue_buckets(tenant_id, queue_id, start_ms, split)
            if split > start_ms
            else {}
        )
        found.update(in_memory)
        return found

    def restated_minutes(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> set[int]:
        # The flags are written with the buckets (every flush interval).
        return self.store.restated_minutes(tenant_id, queue_id, start_ms, end_ms)

    def buckets(self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int) -> Counters:
        """The sum (shared with other callers: do not change it); see `reads.py`."""

        def memory() -> tuple[tuple[int, int], int, Counters | None, Counters]:
            # On the aggregator's loop: version, split and sum come from one state.
            centre = self.aggregator.centre
            version = (self.aggregator.offset, centre.evicted_until_ms)
            key = (tenant_id, queue_id, start_ms, end_ms, *version)
            hit = self.window_sums.get(key)
            split = max(start_ms, min(end_ms, centre.evicted_until_ms))
            if hit is not None:
                return version, split, hit, hit
            found = memory_buckets(centre.queue_buckets, tenant_id, queue_id, split, end_ms)
            return version, split, None, merged(list(found.values()))

        version, split, hit, in_memory = on_loop(self.aggregator.loop, memory)
        if hit is not None:
            return hit
        parts = [in_memory]
        if split > start_ms:  # evicted minutes cannot change any more: their sum is cached
            parts.append(self.stored_sums.get(self.store, tenant_id, queue_id, start_ms, split))
        total = merged(parts)
        self.window_sums.put((tenant_id, queue_id, start_ms, end_ms, *version), total)
        return total

    def queues(self, tenant_id: str) -> list[str]:
        """A tenant's queues; the list may be up to QUEUES_TTL_S old (`has_queue` is exact)."""
        cached = self.queue_lists.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < QUEUES_TTL_S:
            return cached[1]
        found = set(self.store.queues(tenant_id))
        found.update(q.queue_id for q in self.store.tenancy.queues(tenant_id))  # declared
        centre = self.aggregator.centre
        found.update(q for (t, q, _) in list(centre.queue_buckets) if t == tenant_id)
        found.update(q for (t, q) in list(centre.waiting) if t == tenant_id)
        listed = sorted(found)
        self.queue_lists[tenant_id] = (time.monotonic(), listed)
        return listed

    def has_queue(self, tenant_id: str, queue_id: str) -> bool:
        if queue_id in self.queues(tenant_id):
            return True
        self.queue_lists.pop(tenant_id, None)  # a queue may have appeared since
        return queue_id in self.queues(tenant_id)

    def contracts(self, tenant_id: str) -> list[Contract]:
        return self.store.contracts(tenant_id)

    def get_key(self, key_id: str) -> ApiKey | None:
        return self.store.get_key(key_id)

    def change_count(self) -> int:
        return self.aggregator.offset

    def agents(self, tenant_id: str) -> dict[str, Change]:
        found = {}
        for (tenant, agent), timeline in self.aggregator.centre.timelines.items():
            if tenant == tenant_id and timeline.current is not None:
                found[agent] = timeline.current
        return found

    def agent_counters(
        self, tenant_id: str, start_ms: int, end_ms: int
    ) -> dict[str, AgentCounters]:
        centre = self.aggregator.centre
        split = max(start_ms, min(end_ms, centre.evicted_until_ms))
        found = self.store.agent_buckets(tenant_id, start_ms, split) if split > start_ms else {}
        for key, counters in centre.agent_buckets.items():
            if key[0] == tenant_id and split <= key[2] < end_ms:
                found[key] = counters
        totals: dict[str, AgentCounters] = {}
        for (_, agent, _), counters in found.items():
            totals.setdefault(agent, AgentCounters()).merge(counters)
        return totals

    def state_times(self, tenant_id: str, start_ms: int, end_ms: int) -> dict[str, StateTime]:
        # The stored segments, with those of changes still in memory taken from memory
        # (the same keys: memory is ahead of the last flush).
        segments = {s.key: s for s in self.store.state_segments(tenant_id, start_ms, end_ms)}
        for (tenant, _), timeline in self.aggregator.centre.timelines.items():
            if tenant == tenant_id:
                segments.update((s.key, s) for s in timeline.segments(start_ms, end_ms))
        return time_in_state(segments.values(), start_ms, end_ms)

    def put_link(self, link: WallboardLink) -> None:
        self.store.put_link(link)

    def get_link(self, link_id: str) -> WallboardLink | None:
        return self.store.get_link(link_id)

    def links(self, tenant_id: str | None) -> list[WallboardLink]:
        return [
            link for link in self.store.links() if tenant_id is None or tenant_id in link.tenants
        ]

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
