"""The aggregation state of a set of tenants: legs, bucket counters, agents and gauges.

`Centre.apply(event, occurred_ms)` folds one event in and marks the buckets whose absolute
values changed (`dirty_*`), for an adapter to upsert and then `clear_dirty()`. Bucket values
are always a pure function of the deduplicated events seen so far within the correction
horizon, whatever their order: a leg's contribution is recomputed from its facts, and a
changed contribution is retracted by recomputing the affected buckets from their legs.

Lateness: `watermark = max event time seen - allowed lateness`. Events older than the
watermark but inside the correction horizon restate past buckets (listed in `restated`);
events older than `max seen - horizon` are quarantined (counted, returned to the caller).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from .agents import Change, Timeline, minutes_between
from .counters import AgentCounters, Counters, StateTime, wait_bin
from .events import AgentStateChanged, CallLegEvent, Event, QaEvaluated, SurveyCompleted
from .leg import (
    ABANDONED,
    ANSWERED,
    MINUTE_MS,
    Contribution,
    Leg,
    LegKey,
    minute_of,
    new_leg,
)

QKey = tuple[str, str, int]  # (tenant_id, queue_id, minute_ms)
AKey = tuple[str, str, int]  # (tenant_id, agent_id, minute_ms)

APPLIED: Final = "applied"
DUPLICATE: Final = "duplicate"
QUARANTINED: Final = "quarantined"
IGNORED: Final = "ignored"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Event-time tolerances (ms)."""

    allowed_lateness_ms: int = 2 * 60_000
    correction_horizon_ms: int = 2 * 3_600_000
    stale_leg_ms: int = 4 * 3_600_000


class Stats(msgspec.Struct, kw_only=True):
    applied: int = 0
    duplicates: int = 0
    quarantined: int = 0
    late: int = 0
    ignored: int = 0


def _add_parts(
    contribution: Contribution,
    key: LegKey,
    q: dict[QKey, Counters],
    a: dict[AKey, AgentCounters],
    qkeys: set[QKey],
    akeys: set[AKey],
) -> None:
    """Add a leg's contribution into bucket counters (only the buckets listed, if any)."""
    tenant, _, queue, _ = key
    offered, outcome, handle, transfer = contribution
    if offered is not None:
        k = (tenant, queue, offered[0])
        if not qkeys or k in qkeys:
            _q(q, k).offered += 1
    if outcome is not None:
        minute, kind, wait, agent = outcome
        k = (tenant, queue, minute)
        if not qkeys or k in qkeys:
            c = _q(q, k)
            if kind == ANSWERED:
                c.answered += 1
                c.wait_answered_ms += wait
                c.max_wait_answered_ms = max(c.max_wait_answered_ms, wait)
                c.hist_answered[wait_bin(wait)] += 1
            elif kind == ABANDONED:
                c.abandoned += 1
                c.wait_abandoned_ms += wait
                c.max_wait_abandoned_ms = max(c.max_wait_abandoned_ms, wait)
                c.hist_abandoned[wait_bin(wait)] += 1
            else:
                c.flowed_out += 1
        if kind == ANSWERED:
            ak = (tenant, agent, minute)
            if not akeys or ak in akeys:
                _a(a, ak).answered += 1
    if handle is not None:
        minute, agent, talk, hold, wrap = handle
        k = (tenant, queue, minute)
        if not qkeys or k in qkeys:
            c = _q(q, k)
            c.handled += 1
            c.talk_ms += talk
            c.hold_ms += hold
            c.wrap_ms += wrap
        ak = (tenant, agent, minute)
        if not akeys or ak in akeys:
            ac = _a(a, ak)
            ac.handled += 1
            ac.talk_ms += talk
            ac.hold_ms += hold
            ac.wrap_ms += wrap
    if transfer is not None:
        minute, agent = transfer
        k = (tenant, queue, minute)
        if not qkeys or k in qkeys:
            _q(q, k).transferred += 1
        ak = (tenant, agent, minute)
        if not akeys or ak in akeys:
            _a(a, ak).transferred += 1


def _q(q: dict[QKey, Counters], k: QKey) -> Counters:
    c = q.get(k)
    if c is None:
        c = q[k] = Counters()
    return c


def _a(a: dict[AKey, AgentCounters], k: AKey) -> AgentCounters:
    c = a.get(k)
    if c is None:
        c = a[k] = AgentCounters()
    return c


def bucket_keys(key: LegKey, contribution: Contribution) -> tuple[set[QKey], set[AKey]]:
    """The queue and agent buckets a contribution touches."""
    tenant, _, queue, _ = key
    offered, outcome, handle, transfer = contribution
    qkeys: set[QKey] = set()
    akeys: set[AKey] = set()
    if offered is not None:
        qkeys.add((tenant, queue, offered[0]))
    if outcome is not None:
        qkeys.add((tenant, queue, outcome[0]))
        if outcome[1] == ANSWERED:
            akeys.add((tenant, outcome[3], outcome[0]))
    if handle is not None:
        qkeys.add((tenant, queue, handle[0]))
        akeys.add((tenant, handle[1], handle[0]))
    if transfer is not None:
        qkeys.add((tenant, queue, transfer[0]))
        akeys.add((tenant, transfer[1], transfer[0]))
    return qkeys, akeys


class Centre:
    """Aggregation state; see the module docstring."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.legs: dict[LegKey, Leg] = {}
        self.queue_buckets: dict[QKey, Counters] = {}
        self.agent_buckets: dict[AKey, AgentCounters] = {}
        self.state_buckets: dict[AKey, StateTime] = {}
        self.timelines: dict[tuple[str, str], Timeline] = {}
        self._queue_index: dict[QKey, set[LegKey]] = {}
        self._agent_index: dict[AKey, set[LegKey]] = {}
        self.waiting: dict[tuple[str, str], set[LegKey]] = {}
        self.dirty_queue: set[QKey] = set()
        self.dirty_agent: set[AKey] = set()
        self.dirty_state: set[AKey] = set()
        self.restated: set[QKey] = set()
        self.max_seen_ms: int = 0
        # Buckets before this minute were evicted (they live on in the store only).
        self.evicted_until_ms: int = -(2**62)
        self.stats = Stats()

    @property
    def accept_from_ms(self) -> int:
        """Events before this instant are quarantined."""
        return max(self.max_seen_ms - self.settings.correction_horizon_ms, self.evicted_until_ms)

    # -- applying events --------------------------------------------------------------

    def apply(self, event: Event, occurred_ms: int) -> str:
        """Fold one event in; returns APPLIED, DUPLICATE, QUARANTINED or IGNORED."""
        if occurred_ms < self.accept_from_ms:
            self.stats.quarantined += 1
            return QUARANTINED
        late = occurred_ms < self.max_seen_ms - self.settings.allowed_lateness_ms
        if occurred_ms > self.max_seen_ms:
            self.max_seen_ms = occurred_ms
        if isinstance(event, CallLegEvent):
            result = self._apply_leg(event, occurred_ms, late)
        elif isinstance(event, AgentStateChanged):
            result = self._apply_agent(event, occurred_ms)
        elif isinstance(event, SurveyCompleted | QaEvaluated):
            result = IGNORED  # quality inputs are stored by adapters, not aggregated here
        else:  # pragma: no cover - the union is closed
            raise TypeError(type(event))
        if result == QUARANTINED:
            self.stats.quarantined += 1
        elif result == APPLIED:
            self.stats.applied += 1
            if late:
                self.stats.late += 1
        elif result == DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.ignored += 1
        return result

    def _apply_leg(self, event: CallLegEvent, occurred_ms: int, late: bool) -> str:
        key = (event.tenant_id, event.call_id, event.queue_id, event.visit)
        leg = self.legs.get(key)
        if leg is None:
            leg = self.legs[key] = new_leg(event)
        # A leg older than the evicted buckets may only change parts still in memory;
        # keep a copy to undo an event that would restate an evicted bucket.
        before = _copy(leg) if leg.first_at < self.evicted_until_ms else None
        if not leg.apply(event, occurred_ms):
            return DUPLICATE
        old = leg.contribution
        new = leg.compute_contribution()
        if before is not None and self._touches_evicted(old, new):
            self.legs[key] = before
            return QUARANTINED
        if new != old:
            leg.contribution = new
            self._restate(key, old, new, late)
        wait_key = (event.tenant_id, event.queue_id)
        if leg.waiting:
            self.waiting.setdefault(wait_key, set()).add(key)
        else:
            waiting = self.waiting.get(wait_key)
            if waiting is not None:
                waiting.discard(key)
        return APPLIED

    def _touches_evicted(self, old: Contribution, new: Contribution) -> bool:
        for before, after in zip(old, new, strict=True):
            if before != after:
                for part in (before, after):
                    if part is not None and part[0] < self.evicted_until_ms:
                        return True
        return False

    def _restate(self, key: LegKey, old: Contribution, new: Contribution, late: bool) -> None:
        old_q, old_a = bucket_keys(key, old)
        new_q, new_a = bucket_keys(key, new)
        for k in old_q - new_q:
            self._queue_index[k].discard(key)
        for ak in old_a - new_a:
            self._agent_index[ak].discard(key)
        for k in new_q - old_q:
            self._queue_index.setdefault(k, set()).add(key)
        for ak in new_a - old_a:
            self._agent_index.setdefault(ak, set()).add(key)
        retracting = [part for part in zip(old, new, strict=True) if part[0] is not None]
        if not retracting:
            # The common case: facts only added parts; add them in place.
            _add_parts(new, key, self.queue_buckets, self.agent_buckets, set(), set())
        else:
            # Something already counted changed: rebuild every touched bucket from its legs.
            self._rebuild(old_q | new_q, old_a | new_a)
        self.dirty_queue |= new_q | old_q
        self.dirty_agent |= new_a | old_a
        if late:
            self.restated |= new_q | old_q

    def _rebuild(self, qkeys: set[QKey], akeys: set[AKey]) -> None:
        for k in qkeys:
            self.queue_buckets[k] = Counters()
        for ak in akeys:
            self.agent_buckets[ak] = AgentCounters()
        legs: set[LegKey] = set()
        for k in qkeys:
            legs |= self._queue_index.get(k, set())
        for ak in akeys:
            legs |= self._agent_index.get(ak, set())
        for leg_key in legs:
            leg = self.legs[leg_key]
            _add_parts(
                leg.contribution, leg_key, self.queue_buckets, self.agent_buckets, qkeys, akeys
            )

    def _apply_agent(self, event: AgentStateChanged, occurred_ms: int) -> str:
        tkey = (event.tenant_id, event.agent_id)
        timeline = self.timelines.get(tkey)
        if timeline is None:
            timeline = self.timelines[tkey] = Timeline(
                tenant_id=event.tenant_id, agent_id=event.agent_id
            )
        change = Change(
            occurred_ms,
            event.event_id,
            event.state,
            event.team_id,
            event.reason,
            list(event.queues),
        )
        span = timeline.insert(change)
        if span is None:
            return DUPLICATE
        start, end = span
        for minute in minutes_between(max(start, self.evicted_until_ms), end):
            ak = (event.tenant_id, event.agent_id, minute)
            value = timeline.state_time(minute)
            if value == StateTime() and ak not in self.state_buckets:
                continue
            self.state_buckets[ak] = value
            self.dirty_state.add(ak)
        return APPLIED

    # -- reading ----------------------------------------------------------------------

    def clear_dirty(self) -> None:
        self.dirty_queue.clear()
        self.dirty_agent.clear()
        self.dirty_state.clear()
        self.restated.clear()

    def waiting_legs(self, tenant_id: str, queue_id: str) -> Iterable[Leg]:
        for key in self.waiting.get((tenant_id, queue_id), ()):
            yield self.legs[key]

    # -- bounding memory --------------------------------------------------------------

    def evict(self) -> int:
        """Forget what no acceptable event can change any more; returns legs evicted.

        Call only after the dirty buckets were written: evicted buckets live on in the store.
        Invariant: every bucket still in memory starts after the last event of every evicted
        leg, so rebuilding a bucket from its legs in memory is exact.
        """
        cutoff = self.max_seen_ms - self.settings.correction_horizon_ms
        stale = self.max_seen_ms - self.settings.stale_leg_ms
        gone = [
            key
            for key, leg in self.legs.items()
            if leg.last_at < cutoff and (leg.is_complete() or leg.last_at < stale)
        ]
        for key in gone:
            leg = self.legs.pop(key)
            waiting = self.waiting.get((leg.tenant_id, leg.queue_id))
            if waiting is not None:
                waiting.discard(key)
        until = minute_of(cutoff) + MINUTE_MS
        if until <= self.evicted_until_ms:
            return len(gone)
        self.evicted_until_ms = until
        for mapping in (
            self.queue_buckets,
            self.agent_buckets,
            self.state_buckets,
            self._queue_index,
            self._agent_index,
        ):
            for k in [k for k in mapping if k[2] < until]:
                del mapping[k]
        for timeline in self.timelines.values():
            timeline.evict_before(cutoff)
        return len(gone)

    # -- checkpoints ------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """The state a restart needs; buckets and indexes are derived again on restore."""
        return _checkpoint_encoder.encode(
            Checkpoint(
                legs=list(self.legs.values()),
                timelines=list(self.timelines.values()),
                max_seen_ms=self.max_seen_ms,
                evicted_until_ms=self.evicted_until_ms,
                stats=self.stats,
            )
        )

    @classmethod
    def restore(cls, data: bytes, settings: Settings | None = None) -> Centre:
        """Rebuild a Centre from `checkpoint()` bytes (no dirty buckets afterwards)."""
        cp = _checkpoint_decoder.decode(data)
        centre = cls(settings)
        centre.max_seen_ms = cp.max_seen_ms
        centre.evicted_until_ms = cp.evicted_until_ms
        centre.stats = cp.stats
        for leg in cp.legs:
            key = leg.key
            centre.legs[key] = leg
            if leg.waiting:
                centre.waiting.setdefault((leg.tenant_id, leg.queue_id), set()).add(key)
            qkeys, akeys = bucket_keys(key, leg.contribution)
            for k in qkeys:
                if k[2] >= centre.evicted_until_ms:
                    centre._queue_index.setdefault(k, set()).add(key)
            for ak in akeys:
                if ak[2] >= centre.evicted_until_ms:
                    centre._agent_index.setdefault(ak, set()).add(key)
        centre._rebuild(set(centre._queue_index), set(centre._agent_index))
        for timeline in cp.timelines:
            centre.timelines[(timeline.tenant_id, timeline.agent_id)] = timeline
            if timeline.changes:
                first = max(timeline.changes[0].at, centre.evicted_until_ms)
                for minute in minutes_between(first, timeline.changes[-1].at):
                    value = timeline.state_time(minute)
                    if value != StateTime():
                        centre.state_buckets[(timeline.tenant_id, timeline.agent_id, minute)] = (
                            value
                        )
        return centre


class Checkpoint(msgspec.Struct, kw_only=True):
    legs: list[Leg]
    timelines: list[Timeline]
    max_seen_ms: int
    evicted_until_ms: int
    stats: Stats


_checkpoint_encoder: Final = msgspec.msgpack.Encoder()
_checkpoint_decoder: Final = msgspec.msgpack.Decoder(Checkpoint)
_leg_decoder: Final = msgspec.msgpack.Decoder(Leg)


def _copy(leg: Leg) -> Leg:
    return _leg_decoder.decode(_checkpoint_encoder.encode(leg))
