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

from .agents import Change, Segment, SegmentKey, Timeline
from .counters import AgentCounters, Counters, wait_bin
from .events import AgentStateChanged, CallLegEvent, Event, QaEvaluated, SurveyCompleted
from .leg import (
    ABANDONED,
    ANSWERED,
    HANDLE_CHANGED,
    MINUTE_MS,
    NO_CONTRIBUTION,
    NOTHING,
    OUTCOME_CHANGED,
    Contribution,
    Handle,
    Leg,
    LegKey,
    Outcome,
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


class Evicted(msgspec.Struct):
    """What one `Centre.evict` removed: legs, and agents whose timelines lost changes."""

    legs: list[LegKey]
    timelines: list[tuple[str, str]] = []


OFFERED_PART: Final = 0
OUTCOME_PART: Final = 1
HANDLE_PART: Final = 2
TRANSFER_PART: Final = 3


class Centre:
    """Aggregation state; see the module docstring."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._horizon_ms = self.settings.correction_horizon_ms
        self._lateness_ms = self.settings.allowed_lateness_ms
        self.legs: dict[LegKey, Leg] = {}
        self.queue_buckets: dict[QKey, Counters] = {}
        self.agent_buckets: dict[AKey, AgentCounters] = {}
        self.timelines: dict[tuple[str, str], Timeline] = {}
        self.waiting: dict[tuple[str, str], set[LegKey]] = {}
        self.dirty_queue: set[QKey] = set()
        self.dirty_agent: set[AKey] = set()
        self.dirty_segments: dict[SegmentKey, Segment] = {}
        self.dirty_legs: set[LegKey] = set()
        self.dirty_agents: set[tuple[str, str]] = set()
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
        # The same tests as `accept_from_ms` and `settings`, without a property call or
        # attribute chains: this runs once per event.
        max_seen = self.max_seen_ms
        stats = self.stats
        if occurred_ms < max_seen - self._horizon_ms or occurred_ms < self.evicted_until_ms:
            stats.quarantined += 1
            return QUARANTINED
        late = occurred_ms < max_seen - self._lateness_ms
        if occurred_ms > max_seen:
            self.max_seen_ms = occurred_ms
        if type(event) is AgentStateChanged:
            result = self._apply_agent(event, occurred_ms)
        elif isinstance(event, CallLegEvent):
            result = self._apply_leg(event, occurred_ms, late)
        elif isinstance(event, SurveyCompleted | QaEvaluated):
            result = IGNORED  # quality inputs are stored by adapters, not aggregated here
        else:  # pragma: no cover - the union is closed
            raise TypeError(type(event))
        if result == APPLIED:
            stats.applied += 1
            if late:
                stats.late += 1
        elif result == QUARANTINED:
            stats.quarantined += 1
        elif result == DUPLICATE:
            stats.duplicates += 1
        else:
            stats.ignored += 1
        return result

    def _apply_leg(self, event: CallLegEvent, occurred_ms: int, late: bool) -> str:
        key = (event.tenant_id, event.call_id, event.queue_id, event.visit)
        leg = self.legs.get(key)
        if leg is None:
            leg = self.legs[key] = new_leg(event)
        # A leg older than the evicted buckets may only change parts still in memory;
        # keep a copy to undo an event that would restate an evicted bucket.
        before = _copy(leg) if leg.first_at < self.evicted_until_ms else None
        changed = leg.apply(event, occurred_ms)
        if changed == NOTHING:
            return APPLIED if leg.seen[-1] == event.event_id else DUPLICATE
        self.dirty_legs.add(key)
        if changed == HANDLE_CHANGED and leg.wrapup_ended is None:
            return APPLIED  # talk and hold only count once wrap-up has ended
        old = leg.contribution
        new = leg.recompute(changed)  # only the parts the new fact can change
        if before is not None and self._touches_evicted(old, new):
            self.legs[key] = before
            return QUARANTINED
        if new != old:
            leg.contribution = new
            self._restate(key, old, new, late)
        if changed & OUTCOME_CHANGED:
            wait_key = (event.tenant_id, event.queue_id)
            waiting = self.waiting.get(wait_key)
            if leg.waiting:
                if waiting is None:
                    waiting = self.waiting[wait_key] = set()
                waiting.add(key)
            elif waiting is not None:
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
        """Move the buckets from the leg's old contribution to its new one, part by part.

        Counts and sums are exact under subtraction; a maximum is not, so when a wait that
        was a bucket's maximum is taken away the maximum is recomputed from the legs.
        """
        tenant, _, queue, _ = key
        offered, new_offered = old[OFFERED_PART], new[OFFERED_PART]
        if offered != new_offered:
            if offered is not None:
                self._queue_bucket((tenant, queue, offered[0]), late).offered -= 1
            if new_offered is not None:
                self._queue_bucket((tenant, queue, new_offered[0]), late).offered += 1
        outcome, new_outcome = old[OUTCOME_PART], new[OUTCOME_PART]
        if outcome != new_outcome:
            if outcome is not None:
                self._add_outcome(tenant, queue, outcome, -1, late)
            if new_outcome is not None:
                self._add_outcome(tenant, queue, new_outcome, 1, late)
        handle, new_handle = old[HANDLE_PART], new[HANDLE_PART]
        if handle != new_handle:
            if handle is not None:
                self._add_handle(tenant, queue, handle, -1, late)
            if new_handle is not None:
                self._add_handle(tenant, queue, new_handle, 1, late)
        transfer, new_transfer = old[TRANSFER_PART], new[TRANSFER_PART]
        if transfer != new_transfer:
            for part, sign in ((transfer, -1), (new_transfer, 1)):
                if part is not None:
                    minute, agent = part
                    self._queue_bucket((tenant, queue, minute), late).transferred += sign
                    self._agent_bucket((tenant, agent, minute)).transferred += sign

    def _queue_bucket(self, qk: QKey, late: bool) -> Counters:
        """The queue bucket `qk` (created when missing), marked dirty (and restated)."""
        c = self.queue_buckets.get(qk)
        if c is None:
            c = self.queue_buckets[qk] = Counters()
        self.dirty_queue.add(qk)
        if late:
            self.restated.add(qk)
        return c

    def _agent_bucket(self, ak: AKey) -> AgentCounters:
        """The agent bucket `ak` (created when missing), marked dirty."""
        ac = self.agent_buckets.get(ak)
        if ac is None:
            ac = self.agent_buckets[ak] = AgentCounters()
        self.dirty_agent.add(ak)
        return ac

    def _add_outcome(self, tenant: str, queue: str, part: Outcome, sign: int, late: bool) -> None:
        """Add (sign 1) or take away (sign -1) a queue outcome. A taken-away wait that was
        the bucket's maximum is recomputed from the legs."""
        minute, kind, wait, agent = part
        qk = (tenant, queue, minute)
        c = self._queue_bucket(qk, late)
        if kind == ANSWERED:
            self._agent_bucket((tenant, agent, minute)).answered += sign
            c.answered += sign
            c.wait_answered_ms += sign * wait
            c.hist_answered[wait_bin(wait)] += sign
            if sign > 0:
                if wait > c.max_wait_answered_ms:
                    c.max_wait_answered_ms = wait
            elif wait == c.max_wait_answered_ms:
                self._recompute_max(qk, ANSWERED)
        elif kind == ABANDONED:
            c.abandoned += sign
            c.wait_abandoned_ms += sign * wait
            c.hist_abandoned[wait_bin(wait)] += sign
            if sign > 0:
                if wait > c.max_wait_abandoned_ms:
                    c.max_wait_abandoned_ms = wait
            elif wait == c.max_wait_abandoned_ms:
                self._recompute_max(qk, ABANDONED)
        else:
            c.flowed_out += sign

    def _add_handle(self, tenant: str, queue: str, part: Handle, sign: int, late: bool) -> None:
        """Add (sign 1) or take away (sign -1) the handle time of a leg."""
        minute, agent, talk, hold, wrap = part
        c = self._queue_bucket((tenant, queue, minute), late)
        c.handled += sign
        c.talk_ms += sign * talk
        c.hold_ms += sign * hold
        c.wrap_ms += sign * wrap
        ac = self._agent_bucket((tenant, agent, minute))
        ac.handled += sign
        ac.talk_ms += sign * talk
        ac.hold_ms += sign * hold
        ac.wrap_ms += sign * wrap

    def _recompute_max(self, qk: QKey, kind: int) -> None:
        """Recompute a bucket's maximum wait of one outcome kind from the legs in memory
        (by the eviction invariant, every leg that counts in an in-memory bucket is)."""
        tenant, queue, minute = qk
        best = 0
        for (leg_tenant, _, leg_queue, _), leg in self.legs.items():
            outcome = leg.contribution[OUTCOME_PART]
            if (
                outcome is not None
                and outcome[0] == minute
                and outcome[1] == kind
                and leg_queue == queue
                and leg_tenant == tenant
                and outcome[2] > best
            ):
                best = outcome[2]
        c = self.queue_buckets[qk]
        if kind == ANSWERED:
            c.max_wait_answered_ms = best
        else:
            c.max_wait_abandoned_ms = best

    def _apply_agent(self, event: AgentStateChanged, occurred_ms: int) -> str:
        tenant, agent = event.tenant_id, event.agent_id
        tkey = (tenant, agent)
        timeline = self.timelines.get(tkey)
        if timeline is None:
            timeline = self.timelines[tkey] = Timeline(tenant_id=tenant, agent_id=agent)
        change = Change(
            occurred_ms,
            event.event_id,
            event.state,
            event.team_id,
            event.reason,
            tuple(event.queues),  # a copy: callers (the simulator) may share one list
        )
        changes = timeline.changes
        if changes and changes[-1] < change:
            # The usual case, a change after all others (where `insert` would put it): it
            # closes the open segment and alters no other.
            last = changes[-1]
            changes.append(change)
            self.dirty_agents.add(tkey)
            self.dirty_segments[(tenant, agent, last.at, last.event_id)] = Segment(
                tenant, agent, last.at, last.event_id, last.state, occurred_ms
            )
            return APPLIED
        i = timeline.insert(change)
        if i is None:
            return DUPLICATE
        self.dirty_agents.add(tkey)
        # A change before others (or the first one): the segment before it now ends at it,
        # and its own runs to the next change.
        for j in (i - 1, i):
            segment = timeline.segment(j)
            if segment is not None:
                self.dirty_segments[segment.key] = segment
        return APPLIED

    # -- reading ----------------------------------------------------------------------

    def clear_dirty(self) -> None:
        self.dirty_queue.clear()
        self.dirty_agent.clear()
        self.dirty_segments.clear()
        self.dirty_legs.clear()
        self.dirty_agents.clear()
        self.restated.clear()

    def waiting_legs(self, tenant_id: str, queue_id: str) -> Iterable[Leg]:
        for key in self.waiting.get((tenant_id, queue_id), ()):
            yield self.legs[key]

    # -- bounding memory --------------------------------------------------------------

    def evict(self) -> Evicted:
        """Forget what no acceptable event can change any more; returns what it removed.

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
        evicted = Evicted(legs=gone)
        until = minute_of(cutoff) + MINUTE_MS
        if until <= self.evicted_until_ms:
            return evicted
        self.evicted_until_ms = until
        for mapping in (self.queue_buckets, self.agent_buckets):
            for k in [k for k in mapping if k[2] < until]:
                del mapping[k]
        for agent_key, timeline in self.timelines.items():
            if timeline.evict_before(cutoff):
                evicted.timelines.append(agent_key)
        return evicted

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
            centre._restate(
                key, NO_CONTRIBUTION, _in_memory(leg.contribution, cp.evicted_until_ms), False
            )
        centre.clear_dirty()
        for timeline in cp.timelines:
            centre.timelines[(timeline.tenant_id, timeline.agent_id)] = timeline
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


def _in_memory(contribution: Contribution, evicted_until_ms: int) -> Contribution:
    """The parts of a contribution whose buckets are still held in memory."""
    return tuple(  # type: ignore[return-value]
        None if part is None or part[0] < evicted_until_ms else part for part in contribution
    )


def _copy(leg: Leg) -> Leg:
    return _leg_decoder.decode(_checkpoint_encoder.encode(leg))
