"""The distributed mode's API backend: history from PostgreSQL, live state from Kafka.

`LiveSnapshots` reads the compacted snapshot topic from its beginning and keeps the newest
record per key (waiting calls per queue, each agent's state, each partition's progress);
every API replica has its own copy, so replicas are stateless and interchangeable. Gauges
are computed from it by the same core function as in embedded mode, at the replica's clock,
so the longest wait keeps ticking between events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import psycopg
from aiokafka import AIOKafkaConsumer

from ..api.backend import Health, StoreUnavailable, Unavailable
from ..bus.snapshots import AgentLive, PartitionLive, QueueLive, decode_snapshot
from ..ingest.kafka import KafkaSink
from ..kpi.agents import Change, Timeline
from ..kpi.contracts import Contract
from ..kpi.counters import AgentCounters, Counters, StateTime
from ..kpi.events import Event
from ..kpi.gauges import QueueGauges, queue_gauges
from ..kpi.leg import Fact, Leg
from ..kpi.quality import ContactLeg
from ..store.keys import ApiKey
from ..store.links import WallboardLink
from ..store.postgres import PostgresStore, StoreError
from ..store.tenancy import AccessRecord, KeyGrants, QueueRecord, SurveyRecord, TenantRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
_key = msgspec.json.Decoder(list[Any])
# Failures that mean "the database cannot be reached now", not "this request is wrong".
_STORE_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, StoreError)
STORE_RETRY_AFTER_S = 5


class LiveSnapshots:
    """The newest snapshot per key, fed by a consumer of the snapshot topic (no group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._lock = threading.Lock()
        self._queues: dict[tuple[str, str], QueueLive] = {}
        self._agents: dict[str, dict[str, AgentLive]] = {}
        self._partitions: dict[tuple[str, int], PartitionLive] = {}
        self.received_ms = 0
        self.count = 0  # records applied: moves whenever live figures may have changed
        self.error: str | None = "not connected yet"

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record in (a tombstone deletes its key)."""
        with self._lock:
            self.received_ms = int(time.time() * 1000)
            self.count += 1
            if value is None:
                if key is not None:
                    self._forget(_key.decode(key))
                return
            snapshot = decode_snapshot(value)
            if isinstance(snapshot, QueueLive):
                self._queues[(snapshot.tenant_id, snapshot.queue_id)] = snapshot
            elif isinstance(snapshot, AgentLive):
                self._agents.setdefault(snapshot.tenant_id, {})[snapshot.agent_id] = snapshot
            else:
                self._partitions[(snapshot.topic, snapshot.partition)] = snapshot

    def _forget(self, key: list[Any]) -> None:
        kind = key[0] if key else None
        if kind == "queue":
            self._queues.pop((key[1], key[2]), None)
        elif kind == "agent":
            self._agents.get(key[1], {}).pop(key[2], None)
        elif kind == "partition":
            self._partitions.pop((key[1], key[2]), None)

    def queue(self, tenant_id: str, queue_id: str) -> QueueLive | None:
        with self._lock:
            return self._queues.get((tenant_id, queue_id))

    def waiting_queues(self, tenant_id: str) -> list[str]:
        with self._lock:
            return [
                q
                for (t, q), live in self._queues.items()
                if t == tenant_id and live.waiting_since_ms
            ]

    def agents(self, tenant_id: str) -> list[AgentLive]:
        with self._lock:
            return list(self._agents.get(tenant_id, {}).values())

    def partitions(self, topic: str) -> list[PartitionLive]:
        with self._lock:
            return [p for (t, _), p in self._partitions.items() if t == topic]

    async def run(self) -> None:
        """Consume forever (reconnecting); cancel to stop."""
        delay = 0.2
        while True:
            # Without a group, a subscription gets every partition of the topic (also ones
            # that appear later) and, with no committed offset, starts at the beginning.
            # A short fetch wait: a broker that holds a fetch until its wait ends instead of
            # answering when a record arrives (librdkafka's mock does) delays live figures.
            consumer = AIOKafkaConsumer(
                self.topic, bootstrap_servers=self.bootstrap.split(","), group_id=None,
                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
            )  # fmt: skip
            try:
                await consumer.start()
                self.error = None
                delay = 0.2
                while True:
                    batches = await consumer.getmany(timeout_ms=100, max_records=5000)
                    for records in batches.values():
                        for record in records:
                            try:
                                self.apply(record.key, record.value)
                            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                                log.warning("snapshot record does not decode: %s", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker unavailable: serve what we have, reconnect
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("snapshot consumer failed (retry in %.1f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()


class _Ttl:
    """A tiny per-key cache (contracts and queue lists change rarely; intervals ask often)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            value: T = hit[1]
            return value
        try:
            value = load()
        except StoreUnavailable:
            if hit is None:
                raise
            last: T = hit[1]  # the last-known value while the store is unreachable
            return last
        with self._lock:
            self._data[key] = (now, value)
        return value

    def forget(self, key: Any) -> None:
        """Reload on the next `get` (the old value stays as the last-known one)."""
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data[key] = (float("-inf"), hit[1])


class DistributedBackend:
    """Implements the API's `Backend` over PostgreSQL, the snapshot topic and Kafka."""

    def __init__(
        self, store: PostgresStore, live: LiveSnapshots | None, sink: KafkaSink | None,
        events_topic: str, stale_after_s: float, stale_leg_ms: int, cache_ttl_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.store = store
        self.live = live
        self.sink = sink
        self.events_topic = events_topic
        self.stale_after_s = stale_after_s
        self.stale_leg_ms = stale_leg_ms
        self._contracts = _Ttl(cache_ttl_s)
        self._queues = _Ttl(cache_ttl_s)
        self._keys: dict[str, ApiKey] = {}  # last known, for while the store is unreachable
        self.store_error: str | None = None

    def _store(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on the store; an unreachable store becomes `StoreUnavailable` (503
        with Retry-After) and marks figures stale until the store answers again."""
        try:
            value = call(*args)
        except _STORE_DOWN as exc:
            self.store_error = f"{type(exc).__name__}: {exc}".strip()
            raise StoreUnavailable(
                f"the store is unreachable: {self.store_error}", STORE_RETRY_AFTER_S
            ) from exc
        self.store_error = None
        return value

    async def ingest(self, events: list[Event]) -> int:
        if self.sink is None:
            raise Unavailable("this replica does not ingest; send events to `callpulse ingest`")
        return await self.sink.send(events)

    def gauges(self, tenant_id: str, queue_id: str, now_ms: int) -> QueueGauges:
        waiting: list[Leg] = []
        timelines: list[Timeline] = []
        if self.live is not None:
            queue = self.live.queue(tenant_id, queue_id)
            if queue is not None:
                waiting = [
                    Leg(tenant_id=tenant_id, call_id="", queue_id=queue_id, visit=1,
                        queued=Fact(at, ""))
                    for at in queue.waiting_since_ms
                ]  # fmt: skip
            timelines = [
                Timeline(tenant_id=tenant_id, agent_id=a.agent_id, changes=[a.change])
                for a in self.live.agents(tenant_id)
            ]
        return queue_gauges(waiting, timelines, queue_id, now_ms, self.stale_leg_ms)

    def buckets(self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int) -> Counters:
        return self._store(self.store.queue_total, tenant_id, queue_id, start_ms, end_ms)

    def bucket_map(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> dict[int, Counters]:
        return self._store(self.store.queue_buckets, tenant_id, queue_id, start_ms, end_ms)

    def restated_minutes(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> set[int]:
        return self._store(self.store.restated_minutes, tenant_id, queue_id, start_ms, end_ms)

    def queues(self, tenant_id: str) -> list[str]:
        stored = self._queues.get(tenant_id, lambda: self._store(self.store.queues, tenant_id))
        live = self.live.waiting_queues(tenant_id) if self.live is not None else []
        return sorted(set(stored).union(live))

    def has_queue(self, tenant_id: str, queue_id: str) -> bool:
        if queue_id in self.queues(tenant_id):
            return True
        self._queues.forget(tenant_id)  # a queue may have appeared since
        return queue_id in self.queues(tenant_id)

    def contracts(self, tenant_id: str) -> list[Contract]:
        return self._contracts.get(tenant_id, lambda: self._store(self.store.contracts, tenant_id))

    def get_key(self, key_id: str) -> ApiKey | None:
        try:
            record = self._store(self.store.get_key, key_id)
        except StoreUnavailable:
            # While the store is down, a key seen before still authenticates (its secret is
            # checked against the stored hash as always); revocations wait for the store.
            if key_id in self._keys:
                return self._keys[key_id]
            raise
        if record is not None:
            if len(self._keys) >= 10_000:
                self._keys.clear()
            self._keys[key_id] = record
        else:
            self._keys.pop(key_id, None)
        return record

    # -- live feed, agents and wallboard links ----------------------------------------

    def change_count(self) -> int:
        return 0 if self.live is None else self.live.count

    def agents(self, tenant_id: str) -> dict[str, Change]:
        if self.live is None:
            return {}
        return {a.agent_id: a.change for a in self.live.agents(tenant_id)}

    def agent_counters(
        self, tenant_id: str, start_ms: int, end_ms: int
    ) -> dict[str, AgentCounters]:
        return self._store(self.store.agent_totals, tenant_id, start_ms, end_ms)

    def state_times(self, tenant_id: str, start_ms: int, end_ms: int) -> dict[str, StateTime]:
        return self._store(self.store.state_totals, tenant_id, start_ms, end_ms)

    def put_link(self, link: WallboardLink) -> None:
        self._store(self.store.put_link, link)

    def get_link(self, link_id: str) -> WallboardLink | None:
        return self._store(self.store.get_link, link_id)

    def links(self, tenant_id: str | None) -> list[WallboardLink]:
        return [
            link
            for link in self._store(self.store.links)
            if tenant_id is None or tenant_id in link.tenants
        ]

    # -- tenancy ----------------------------------------------------------------------

    def tenants(self) -> list[TenantRecord]:
        return self._store(self.store.tenants)

    def put_tenant(self, tenant: TenantRecord) -> None:
        self._store(self.store.put_tenant, tenant)

    def declared_queues(self, tenant_id: str) -> list[QueueRecord]:
        return self._store(self.store.declared_queues, tenant_id)

    def put_queue(self, queue: QueueRecord) -> None:
        self._store(self.store.put_queue, queue)
        self._queues.forget(queue.tenant_id)

    def put_contract(self, contract: Contract) -> None:
        self._store(self.store.put_contract, contract)
        self._contracts.forget(contract.tenant_id)

    def put_key(self, key: ApiKey, grants: KeyGrants | None = None) -> None:
        self._store(self.store.put_key, key, grants)

    def key_grants(self, key_id: str) -> KeyGrants:
        return self._store(self.store.key_grants, key_id)

    def keys(self, tenant_id: str | None, after: str, limit: int) -> list[ApiKey]:
        return self._store(self.store.keys, tenant_id, after, limit)

    def surveys(self, tenant_id: str, start_ms: int, end_ms: int) -> list[SurveyRecord]:
        return self._store(self.store.surveys, tenant_id, start_ms, end_ms)

    def contact_legs(self, tenant_id: str, start_ms: int, end_ms: int) -> list[ContactLeg]:
        return self._store(self.store.contact_legs, tenant_id, start_ms, end_ms)

    def record_access(self, records: list[AccessRecord]) -> None:
        self._store(self.store.record_access, records)

    def access_log(
        self, tenant_id: str | None, start_ms: int, end_ms: int, after_seq: int, limit: int,
        every_tenant: bool = False,
    ) -> list[AccessRecord]:  # fmt: skip
        return self._store(
            self.store.access_log, tenant_id, start_ms, end_ms, after_seq, limit, every_tenant
        )

    async def watch_store(self, interval_s: float = 1.0) -> None:
        """Keep `store_error` current (health must not wait on a dead database)."""
        while True:
            try:
                await asyncio.to_thread(self.store.ping)
                self.store_error = None
            except Exception as exc:  # any failure means: not healthy
                self.store_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(interval_s)

    def health(self) -> Health:
        now_ms = int(time.time() * 1000)
        problems = []
        if self.store_error is not None:
            problems.append(f"store: {self.store_error}")
        if self.sink is not None and not self.sink.connected:
            problems.append(f"kafka: {self.sink.last_error or 'connecting'}")
        lag = 0
        stale = False
        if self.live is not None:
            if self.live.error is not None:
                problems.append(f"snapshots: {self.live.error}")
            beats = self.live.partitions(self.events_topic)
            lag = sum(max(0, b.end_offset - b.applied_offset - 1) for b in beats)
            newest = max((b.published_ms for b in beats), default=0)
            stale = now_ms - newest > self.stale_after_s * 1000 or self.live.error is not None
            errors = sorted({b.store_error for b in beats if b.store_error})
            if errors:
                stale = True
                problems.append(f"aggregator: {errors[0]}")
        ok = self.store_error is None and (self.sink is None or self.sink.connected)
        detail = "; ".join(problems) or ("catching up" if lag else "up to date")
        return Health(ok=ok, stale=stale or self.store_error is not None, lag_events=lag,
                      detail=detail)  # fmt: skip
