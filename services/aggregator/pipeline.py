"""Per-partition aggregation with transactional checkpoints, independent of the consumer.

The Faust worker (`distributed.py`), the benchmark's plain loop and the tests all feed
`Pipeline.handle(records)`. For each events-topic partition the pipeline keeps one `Centre`
(the pure core) restored from PostgreSQL when the partition is claimed. A write upserts, in
one transaction: the fencing check and applied offset of each partition, the absolute
values of every bucket, leg and agent row the batch changed, and the core state it changed
(legs and timelines, one row per key). Only then are the batch's records acknowledged to
the consumer, so a failed or fenced write never acknowledges an event.

Replays are exact: a claimed partition resumes from the state of its last committed write
and skips records at or below that write's offset, so every event is applied to the state
exactly once whatever the consumer re-delivers (its committed offset is only a lower bound).
Dead-letter records are sent, and acknowledged by the broker, before the write that
acknowledges their source record.

Writes overlap with consuming: a flush snapshots the changes into plain rows (`prepare`)
and queues them; one background writer commits the queue in order, retrying a failed write
(with backoff) before any later one, so the store only ever moves forward. While a write
fails, no further writes are queued: consuming goes on into the state, unacknowledged, up
to `max_pending` records, and one write of the final values follows the store's return. A
store that stays down stops the consumer, never the exactness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter

from ..bus.kafka import decode_message
from ..bus.snapshots import AgentLive, PartitionLive, QueueLive, Snapshot
from ..kpi.centre import QUARANTINED, Centre, Settings
from ..kpi.events import AgentStateChanged, CallLegEvent, SurveyCompleted
from ..kpi.leg import LegKey, at_ms
from ..store.postgres import Fenced, PartitionWrite, PartitionWriter, Prepared, prepare
from ..store.tenancy import SurveyRecord
from .metrics import AggregatorMetrics
from .poison import dead_letter

log = logging.getLogger(__name__)


class PipelineMetrics(AggregatorMetrics):
    """The embedded aggregator's metrics plus those of partitions and dead letters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.claims = Counter(
            "callpulse_aggregator_partition_claims_total",
            "Partitions taken over (state restored from the store)",
            registry=registry,
        )
        self.fenced = Counter(
            "callpulse_aggregator_fenced_writes_total",
            "Writes refused because another worker had claimed a partition",
            registry=registry,
        )
        self.gaps = Counter(
            "callpulse_aggregator_offset_gaps_total",
            "Records that arrived after a hole in a partition (the consumer was rewound)",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "callpulse_aggregator_dead_letters_total",
            "Poison events written to the dead-letter topic",
            registry=registry,
        )


@dataclass(frozen=True)
class Record:
    """One consumed message; `token` is what the consumer needs to acknowledge it."""

    partition: int
    offset: int
    value: bytes
    token: Any = None


class Output(Protocol):
    """Where snapshots (best effort) and dead letters (awaited) go."""

    async def publish(self, snapshots: Sequence[Snapshot]) -> None: ...

    async def dead_letters(self, values: Sequence[bytes]) -> None: ...


class NoOutput:
    async def publish(self, snapshots: Sequence[Snapshot]) -> None:
        return None

    async def dead_letters(self, values: Sequence[bytes]) -> None:
        if values:
            raise RuntimeError("no dead-letter topic configured")


@dataclass(frozen=True)
class PipelineConfig:
    """Cadences in seconds; `max_pending` bounds the records held unacknowledged while
    writes are queued or failing (beyond it the consumer waits for the store); eviction
    runs every `evict_interval_s` of wall clock or `evict_every_ms` of event time."""

    core: Settings
    flush_interval_s: float = 0.5
    evict_interval_s: float = 10.0
    evict_every_ms: int = 15 * 60_000
    heartbeat_interval_s: float = 1.0
    republish_interval_s: float = 60.0
    max_pending: int = 200_000
    max_queued_writes: int = 3
    retry_max_s: float = 10.0


@dataclass
class _Partition:
    generation: int
    applied_offset: int
    centre: Centre
    legs: set[LegKey] = field(default_factory=set)
    timelines: set[tuple[str, str]] = field(default_factory=set)
    gone: set[LegKey] = field(default_factory=set)
    queues: set[tuple[str, str]] = field(default_factory=set)
    surveys: list[SurveyRecord] = field(default_factory=list)
    meta_dirty: bool = False
    seeking: bool = False
    evicted_at_ms: int = 0
    # leg -> `leg_at` of its row in the store (restored legs: as of the claimed write)
    written: dict[LegKey, int] = field(default_factory=dict)

    def changed(self) -> bool:
        c = self.centre
        return bool(
            self.meta_dirty or self.legs or self.timelines or self.gone or self.surveys
            or c.dirty_queue or c.dirty_agent or c.dirty_segments or c.dirty_agents
        )  # fmt: skip


@dataclass
class _Write:
    """A queued write: prepared partitions, the records it acknowledges, dead letters to
    send before it, snapshots to publish after it."""

    parts: dict[int, Prepared]
    records: list[Record]
    dead: list[bytes]
    snapshots: list[Snapshot]


def survey_record(event: SurveyCompleted) -> SurveyRecord:
    """The stored form of a survey, counted at the instant it was completed (ms)."""
    return SurveyRecord(
        tenant_id=event.tenant_id, event_id=event.event_id, call_id=event.call_id,
        queue_id=event.queue_id, agent_id=event.agent_id, at_ms=at_ms(event),
        score=event.score, scale_max=event.scale_max,
    )  # fmt: skip


Acker = Callable[[list[Any]], Awaitable[None]]
Seeker = Callable[[int, int], Awaitable[None]]


class Pipeline:
    """See the module docstring. All entry points are coroutines of one event loop."""

    def __init__(
        self, writer: PartitionWriter, topic: str, config: PipelineConfig,
        metrics: PipelineMetrics, ack: Acker | None = None, output: Output | None = None,
        seek: Seeker | None = None, end_offset: Callable[[int], int | None] | None = None,
    ) -> None:  # fmt: skip
        self.writer = writer
        self.topic = topic
        self.config = config
        self.metrics = metrics
        self.ack = ack
        self.output: Output = output or NoOutput()
        self.seek = seek
        self.end_offset = end_offset
        self.parts: dict[int, _Partition] = {}
        # None: every partition is ours (no consumer group); else the current assignment.
        self.owned: set[int] | None = None
        # Partitions another worker claimed from under us: ignored until assigned again.
        self.fenced: set[int] = set()
        self.pending: list[Record] = []  # applied since the last prepare
        self.dead: list[bytes] = []
        self.store_error: str | None = None
        self.events_applied = 0
        self._queue: deque[_Write] = deque()
        self._lock = asyncio.Lock()  # the cores and the queue's tail
        self._commit_lock = asyncio.Lock()  # one commit at a time, in queue order
        self._writer_task: asyncio.Task[None] | None = None
        self._claiming: asyncio.Future[None] | None = None
        now = time.monotonic()
        self._last_flush = now
        self._last_evict = now
        self._last_heartbeat = 0.0
        self._last_republish = now
        self._retry_at = 0.0
        self._backoff = 0.0

    # -- assignment -----------------------------------------------------------------

    def assign(self, partitions: set[int]) -> None:
        """The consumer's new assignment (the whole of it): forget every other partition.
        A kept partition keeps its state: nobody else can have written it in between. New
        ones are claimed in the background at once, so that their live state is published
        (and a former owner fenced) without waiting for their next record."""
        self.owned = set(partitions)
        self.fenced.clear()
        self._forget({p for p in self.parts if p not in partitions})
        if partitions - self.parts.keys():
            self._claiming = asyncio.ensure_future(self._claim_assigned())

    async def _claim_assigned(self) -> None:
        async with self._lock:
            for p in sorted((self.owned or set()) - self.parts.keys()):
                await self._claim(p)

    def revoke(self, partitions: set[int]) -> None:
        """Stop using these partitions at once (their unwritten work is not acknowledged;
        the next owner redoes it from the last committed write)."""
        if self.owned is not None:
            self.owned -= partitions
        self._forget(partitions)

    def _forget(self, partitions: set[int]) -> None:
        if not partitions:
            return
        for p in partitions:
            self.parts.pop(p, None)
        self.pending = [r for r in self.pending if r.partition not in partitions]
        for write in self._queue:  # queued writes of these partitions would be fenced
            for p in partitions:
                write.parts.pop(p, None)
            write.records = [r for r in write.records if r.partition not in partitions]

    def _ours(self, partition: int) -> bool:
        if partition in self.fenced:
            return False
        return self.owned is None or partition in self.owned

    async def _claim(self, partition: int) -> _Partition | None:
        delay = 0.2
        while self._ours(partition):
            try:
                claim = await self.writer.claim(partition)
            except Exception as exc:  # the database is down or restarting: wait, retry
                log.warning("claiming partition %d failed, retrying in %.1f s: %s",
                            partition, delay, exc)  # fmt: skip
                self.metrics.store_errors.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            if not self._ours(partition):
                return None
            part = _Partition(
                claim.generation, claim.applied_offset, claim.centre,
                evicted_at_ms=claim.centre.max_seen_ms,
                written={key: leg.first_at for key, leg in claim.centre.legs.items()},
            )  # fmt: skip
            self.parts[partition] = part
            self.metrics.claims.inc()
            log.info(
                "claimed partition %d at offset %d (generation %d, %d legs in state)",
                partition, claim.applied_offset, claim.generation, len(claim.centre.legs),
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self.output.publish(self._full_snapshot(partition, part))
            return part
        return None

    # -- consuming ------------------------------------------------------------------

    async def handle(self, records: Sequence[Record]) -> None:
        """Apply a batch of records; queue a write when a flush is due."""
        async with self._lock:
            for record in records:
                p = record.partition
                if not self._ours(p):
                    continue
                part = self.parts.get(p)
                if part is None:
                    part = await self._claim(p)
                    if part is None:
                        continue
                expected = part.applied_offset + 1
                if record.offset < expected:
                    self.pending.append(record)  # in the state already; ack with the next write
                    continue
                if record.offset > expected and part.applied_offset >= 0:
                    if not part.seeking:
                        await self._rewind(p, part, record.offset)
                    continue
                part.seeking = False
                self._apply(part, record)
                self.pending.append(record)
            self._maybe_prepare()
        # Back-pressure: while the store lags this far behind, consume no further.
        while self._held() >= self.config.max_pending or (
            len(self._queue) > self.config.max_queued_writes
        ):
            self._start_writer()
            await asyncio.sleep(0.02)

    def _held(self) -> int:
        return len(self.pending) + sum(len(w.records) for w in self._queue)

    async def _rewind(self, partition: int, part: _Partition, offset: int) -> None:
        """Records after a hole (e.g. re-delivery after a rebalance started later than the
        state): ask the consumer to go back to the first offset the state lacks."""
        self.metrics.gaps.inc()
        log.warning("partition %d: offset %d after %d; seeking back",
                    partition, offset, part.applied_offset)  # fmt: skip
        if self.seek is None:
            raise RuntimeError(f"partition {partition}: records missing before offset {offset}")
        part.seeking = True
        await self.seek(partition, part.applied_offset + 1)

    def _apply(self, part: _Partition, record: Record) -> None:
        events, bad = decode_message(record.value)
        for index, raw, error in bad:
            log.error("poison record %s[%d]@%d #%d: %s at %s", self.topic, record.partition,
                      record.offset, index, error.reason, error.path)  # fmt: skip
            self.dead.append(
                dead_letter(self.topic, record.partition, record.offset, index, raw,
                            error.reason, error.path)
            )  # fmt: skip
            self.metrics.poison.inc()
        centre = part.centre
        legs, timelines, queues = part.legs, part.timelines, part.queues
        for event in events:
            if centre.apply(event, at_ms(event)) == QUARANTINED:
                self.metrics.quarantined.inc()
            if isinstance(event, CallLegEvent):
                legs.add((event.tenant_id, event.call_id, event.queue_id, event.visit))
                queues.add((event.tenant_id, event.queue_id))
            elif isinstance(event, AgentStateChanged):
                timelines.add((event.tenant_id, event.agent_id))
            elif isinstance(event, SurveyCompleted):
                part.surveys.append(survey_record(event))
        self.metrics.applied.inc(len(events))
        self.events_applied += len(events)
        part.applied_offset = record.offset
        part.meta_dirty = True

    # -- writing --------------------------------------------------------------------

    async def tick(self) -> None:
        """Periodic work (call every ~100 ms): due flushes, heartbeats, republishing."""
        async with self._lock:
            self._maybe_prepare()
            now = time.monotonic()
            if now - self._last_heartbeat >= self.config.heartbeat_interval_s:
                self._last_heartbeat = now
                with contextlib.suppress(Exception):
                    await self.output.publish(self._heartbeats())
            if now - self._last_republish >= self.config.republish_interval_s:
                self._last_republish = now
                for p, part in list(self.parts.items()):
                    with contextlib.suppress(Exception):
                        await self.output.publish(self._full_snapshot(p, part))
        self._start_writer()

    async def flush(self) -> bool:
        """Write everything now and wait (e.g. on shutdown); True when all is written,
        False when a write failed (it stays queued)."""
        async with self._lock:
            self._prepare()
        while self._queue:
            if not await self._attempt():
                return False
        return True

    def _maybe_prepare(self) -> None:
        # While a write fails (the store is down), changes gather in the state instead of
        # in more queued writes: consuming goes on up to `max_pending` records, and the
        # store gets one write of their final values when it is back.
        if self.store_error is not None and self._queue:
            self._start_writer()
            return
        if time.monotonic() - self._last_flush >= self.config.flush_interval_s:
            self._prepare()
            self._start_writer()

    def _prepare(self) -> None:
        """Snapshot every change into a queued write (see the module docstring)."""
        self._last_flush = time.monotonic()
        changed = {p: part for p, part in self.parts.items() if part.changed()}
        if not changed and not self.pending and not self.dead:
            return
        wall = int(time.time() * 1000)
        prepared: dict[int, Prepared] = {}
        snapshots: list[Snapshot] = []
        for p, part in changed.items():
            centre = part.centre
            prepared[p] = prepare(
                PartitionWrite(
                    p, part.generation, part.applied_offset, centre, part.legs,
                    part.timelines, part.gone, part.queues, part.surveys, part.written,
                )
            )  # fmt: skip
            snapshots += [self._queue_live(centre, t, q, wall) for t, q in part.queues]
            for tenant, agent in centre.dirty_agents:
                live = self._agent_live(centre, tenant, agent, wall)
                if live is not None:
                    snapshots.append(live)
            centre.clear_dirty()
            part.legs, part.timelines, part.gone, part.queues = set(), set(), set(), set()
            part.surveys = []
            part.meta_dirty = False
        self._queue.append(_Write(prepared, self.pending, self.dead, snapshots))
        self.pending, self.dead = [], []
        self._maybe_evict()

    def _start_writer(self) -> None:
        if self._queue and (self._writer_task is None or self._writer_task.done()):
            self._writer_task = asyncio.ensure_future(self._write_queue())

    async def _write_queue(self) -> None:
        while self._queue:
            delay = self._retry_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._attempt()

    async def _attempt(self) -> bool:
        """Commit the oldest queued write once; on success acknowledge its records."""
        async with self._commit_lock:
            if not self._queue:
                return True
            write = self._queue[0]
            started = time.perf_counter()
            try:
                if write.dead:
                    await self.output.dead_letters(write.dead)
                    self.metrics.dead_lettered.inc(len(write.dead))
                    write.dead = []
                rows = await self.writer.commit(list(write.parts.values())) if write.parts else 0
            except Fenced as exc:
                self.metrics.fenced.inc()
                log.error("%s; dropping their state until they are assigned again", exc)
                self.fenced.update(exc.partitions)
                self.revoke(set(exc.partitions))
                return False
            except Exception as exc:  # the store or the broker failed: keep, retry later
                self.store_error = f"{type(exc).__name__}: {exc}"
                self.metrics.store_errors.inc()
                self._backoff = min(max(self._backoff * 2, 0.2), self.config.retry_max_s)
                self._retry_at = time.monotonic() + self._backoff
                log.warning("store write failed, retrying in %.1f s: %s", self._backoff,
                            self.store_error)  # fmt: skip
                return False
            self._queue.popleft()
            self.store_error = None
            self._backoff = 0.0
            self.metrics.store_write_seconds.observe(time.perf_counter() - started)
            self.metrics.rows_written.inc(rows)
            done = [r.token for r in write.records if self._ours(r.partition)]
            if self.ack is not None and done:
                await self.ack(done)
            with contextlib.suppress(Exception):
                await self.output.publish(write.snapshots)
            return True

    def _maybe_evict(self) -> None:
        """Bound memory (see `Centre.evict`) every so often in wall clock, and as event
        time advances (a replay of history moves hours in seconds); the removals are
        written with the next write."""
        wall_due = time.monotonic() - self._last_evict >= self.config.evict_interval_s
        if wall_due:
            self._last_evict = time.monotonic()
        for part in self.parts.values():
            centre = part.centre
            if (
                not wall_due
                and centre.max_seen_ms - part.evicted_at_ms < self.config.evict_every_ms
            ):
                continue
            part.evicted_at_ms = centre.max_seen_ms
            evicted = centre.evict()
            part.gone.update(evicted.legs)
            for key in evicted.legs:
                part.written.pop(key, None)
            part.timelines.update(evicted.timelines)
            part.meta_dirty = True

    # -- snapshots ------------------------------------------------------------------

    @staticmethod
    def _queue_live(centre: Centre, tenant: str, queue: str, wall: int) -> QueueLive:
        waiting = sorted(
            leg.queued.at for leg in centre.waiting_legs(tenant, queue) if leg.queued is not None
        )
        return QueueLive(tenant_id=tenant, queue_id=queue, waiting_since_ms=waiting,
                         as_of_ms=centre.max_seen_ms, published_ms=wall)  # fmt: skip

    @staticmethod
    def _agent_live(centre: Centre, tenant: str, agent: str, wall: int) -> AgentLive | None:
        timeline = centre.timelines.get((tenant, agent))
        current = None if timeline is None else timeline.current
        if current is None:
            return None
        return AgentLive(tenant_id=tenant, agent_id=agent, change=current, published_ms=wall)

    def _full_snapshot(self, partition: int, part: _Partition) -> list[Snapshot]:
        wall = int(time.time() * 1000)
        centre = part.centre
        out: list[Snapshot] = [self._queue_live(centre, t, q, wall) for t, q in centre.waiting]
        for tenant, agent in centre.timelines:
            live = self._agent_live(centre, tenant, agent, wall)
            if live is not None:
                out.append(live)
        return out

    def _heartbeats(self) -> list[Snapshot]:
        """Per partition: the offset applied in memory and, as `store_error`, a failing
        store (the API shows data as stale then)."""
        wall = int(time.time() * 1000)
        out: list[Snapshot] = []
        for p, part in self.parts.items():
            end = self.end_offset(p) if self.end_offset is not None else None
            out.append(
                PartitionLive(
                    topic=self.topic, partition=p, applied_offset=part.applied_offset,
                    end_offset=part.applied_offset + 1 if end is None else end,
                    published_ms=wall, store_error=self.store_error,
                )
            )  # fmt: skip
        return out
