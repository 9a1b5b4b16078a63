"""The discrete-event engine: a heap of timed actions driving queues, calls and agents.

`simulate()` yields schema-valid events in `occurred_at` order (ties keep the order in which
they happened). Simulation time is integer milliseconds after `start`, so every duration a
consumer derives from the timestamps is exact to the millisecond. Everything random comes
from one `random.Random(seed)` and every id from the run id and counters, so a scenario, a
seed and a start instant give the same events, byte for byte.

What an answered leg looks like (all on one source clock)::

    call.queued ─ wait ─ call.answered ─ talk ─ [hold_started ─ hold ─ hold_ended ─ talk]
        ─ call.ended | call.transferred ─ wrap-up ─ call.wrapup_ended

with the agent going on_call at the answer, wrapup at the end of talk (skipped when the
wrap-up is 0 s) and then available, or straight on to the next waiting call. A transferred
leg has no `call.ended` (its talk ends at the transfer); the caller is queued on the target
queue at the same instant, as the next visit of the call to that queue. A waiting caller
abandons after their patience, or flows out with reason "timeout" after the queue's
timeout, whichever is first.

Routing: a new call goes to the longest-idle available agent with the skill; an agent who
becomes free takes, from their lowest skill level with a waiting call, the call with the
highest priority, first come first served. Agents log on (available) at their shift's
start and off (offline) at its end, finishing a call in progress first; a break (aux) that
falls due during a call starts after its wrap-up.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from services.kpi.events import (
    SCHEMA_VERSION,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallFlowedOut,
    CallHoldEnded,
    CallHoldStarted,
    CallLegEvent,
    CallQueued,
    CallTransferred,
    CallWrapupEnded,
    Event,
)

from .scenario import MAX_LEGS_PER_CALL, AgentGroup, Queue, Scenario, Tenant
from .timetable import (
    DAY,
    HOUR_MS,
    MS,
    Arrivals,
    LocalClock,
    break_start,
    has_arrivals,
    rate_segments,
    shift_span,
)

# Kinds of timed action; an action is (t ms, sequence, kind, subject, argument).
_ARRIVAL: Final = 0
_ABANDON: Final = 1
_TIMEOUT: Final = 2
_HOLD_START: Final = 3
_HOLD_END: Final = 4
_TALK_END: Final = 5
_WRAP_END: Final = 6
_LOGON: Final = 7
_LOGOFF: Final = 8
_BREAK: Final = 9
_BREAK_END: Final = 10
_PLAN_DAY: Final = 11

# Leg states.
_WAITING: Final = 0
_ANSWERED: Final = 1
_GONE: Final = 2

_BUSY: Final = frozenset({"on_call", "wrapup"})
_PLAN_AHEAD_MS: Final = 2 * HOUR_MS
"""A tenant's next local day is planned this long before its midnight (DST-safe margin)."""


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds."""
    return round(seconds * 1000)


class _TenantRt:
    __slots__ = ("clock", "has_shifts", "id", "queues", "spec", "zone")

    def __init__(self, spec: Tenant, start: datetime) -> None:
        self.spec = spec
        self.id = spec.id
        self.zone: ZoneInfo = spec.zone
        self.clock = LocalClock(self.zone, start)
        self.queues: dict[str, _QueueRt] = {}
        self.has_shifts = any(group.shift is not None for group in spec.agents)


class _QueueRt:
    __slots__ = ("arrivals", "available", "gone", "id", "spec", "tenant", "transfers", "waiting")

    def __init__(self, spec: Queue, tenant: _TenantRt) -> None:
        self.spec = spec
        self.id = spec.id
        self.tenant = tenant
        # (-priority, queued ms, leg sequence, leg); answered/gone legs are dropped lazily.
        self.waiting: list[tuple[int, int, int, _Leg]] = []
        # Available agents with this skill, in the order they became available, so the
        # first one is the longest idle (the engine processes time in order).
        self.available: dict[_Agent, None] = {}
        self.arrivals: Arrivals | None = None
        self.transfers: list[tuple[float, _QueueRt]] = []
        self.gone = 0  # legs in `waiting` that have left

    def drop_gone(self) -> None:
        """Count a leg that left `waiting` without an agent; compact when they pile up, so
        that a queue nobody serves keeps only its waiting callers in memory."""
        self.gone += 1
        if self.gone > 64 and self.gone * 2 > len(self.waiting):
            self.waiting = [entry for entry in self.waiting if entry[3].state == _WAITING]
            heapq.heapify(self.waiting)
            self.gone = 0


class _Call:
    __slots__ = ("caller_key", "id", "legs", "visits")

    def __init__(self, call_id: str, caller_key: str | None) -> None:
        self.id = call_id
        self.caller_key = caller_key
        self.legs = 0
        self.visits: dict[str, int] = {}


class _Leg:
    __slots__ = ("agent", "call", "hold_ms", "queue", "split_ms", "state", "talk_ms", "visit")

    def __init__(self, call: _Call, queue: _QueueRt, visit: int) -> None:
        self.call = call
        self.queue = queue
        self.visit = visit
        self.state = _WAITING
        self.agent: _Agent | None = None
        self.talk_ms = 0
        self.hold_ms = 0
        self.split_ms = 0


class _Agent:
    __slots__ = (
        "break_token",
        "group",
        "id",
        "leaving",
        "levels",
        "on_shift",
        "pending_break",
        "queue_ids",
        "reason",
        "skill_queues",
        "state",
        "tenant",
    )

    def __init__(self, agent_id: str, group: AgentGroup, tenant: _TenantRt) -> None:
        self.id = agent_id
        self.group = group
        self.tenant = tenant
        skills = group.skill_levels()
        self.queue_ids = [queue_id for queue_id, _ in skills]
        self.skill_queues = [tenant.queues[queue_id] for queue_id in self.queue_ids]
        by_level: dict[int, list[_QueueRt]] = {}
        for queue_id, level in skills:
            by_level.setdefault(level, []).append(tenant.queues[queue_id])
        self.levels = [by_level[level] for level in sorted(by_level)]
        self.state = "offline"
        self.reason: str | None = None
        self.on_shift = False
        self.leaving = False
        self.pending_break: tuple[int, str] | None = None  # (length ms, reason)
        self.break_token = 0


def simulate(
    scenario: Scenario, seed: int, start: datetime, duration: timedelta
) -> Iterator[Event]:
    """Events of `scenario` from `start` for `duration`, in `occurred_at` order.

    `start` must be timezone-aware; events are stamped in each tenant's local offset. Events
    at or after `start + duration` are not produced: calls still in progress then stay open.
    `duration` may be very long (e.g. `timedelta.max` for a live feed): days are planned
    lazily, so memory is bounded by the calls in progress.
    """
    if start.utcoffset() is None:
        raise ValueError("start must be a timezone-aware datetime")
    if duration <= timedelta(0):
        raise ValueError("duration must be positive")
    if not -(2**63) <= seed < 2**63:
        raise ValueError("seed must fit in 64 bits (it becomes part of every event id)")
    return _Engine(scenario, seed, start, duration).run()


def run_id(scenario: Scenario, seed: int, start: datetime) -> str:
    """The prefix of every event and call id of a run: scenario, seed and start (UTC)."""
    return f"{scenario.name}-{seed}-{start.astimezone(UTC):%Y%m%dT%H%M%S}Z"


class _Engine:
    """One run. Not reusable: `run()` consumes it."""

    def __init__(self, scenario: Scenario, seed: int, start: datetime, duration: timedelta):
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
        self.start = start.astimezone(UTC)
        self.end_ms = duration // MS
        self.source = scenario.source
        self.run_id = run_id(scenario, seed, start)
        self.heap: list[tuple[int, int, int, Any, Any]] = []
        self.seq = 0
        self.events = 0
        self.calls = 0
        self.out: list[Event] = []
        self.tenants = [_TenantRt(spec, self.start) for spec in scenario.tenants]
        self.agents: dict[str, list[_Agent]] = {}
        for tenant in self.tenants:
            for queue in tenant.spec.queues:
                tenant.queues[queue.id] = _QueueRt(queue, tenant)
            for rt in tenant.queues.values():
                rt.transfers = [(t.probability, tenant.queues[t.to]) for t in rt.spec.transfers]
            self.agents[tenant.id] = [
                _Agent(agent_id, group, tenant)
                for group in tenant.spec.agents
                for agent_id in group.agent_ids()
            ]

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> Iterator[Event]:
        out = self.out
        self._setup()
        heap, end = self.heap, self.end_ms
        while True:
            if out:
                yield from out
                out.clear()
            if not heap or heap[0][0] >= end:
                return
            t, _, kind, subject, arg = heapq.heappop(heap)
            self._dispatch(t, kind, subject, arg)

    def _push(self, t: int, kind: int, subject: Any, arg: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, subject, arg))

    def _dispatch(self, t: int, kind: int, subject: Any, arg: Any) -> None:
        if kind == _ARRIVAL:
            self._arrival(t, subject, arg)
        elif kind in (_ABANDON, _TIMEOUT):
            leg: _Leg = subject
            if leg.state == _WAITING:
                leg.state = _GONE
                leg.queue.drop_gone()
                if kind == _ABANDON:
                    self._emit_leg(CallAbandoned, leg, t)
                else:
                    self._emit_leg(CallFlowedOut, leg, t, reason="timeout")
        elif kind == _HOLD_START:
            self._emit_leg(CallHoldStarted, subject, t)
            self._push(t + subject.hold_ms, _HOLD_END, subject)
        elif kind == _HOLD_END:
            self._emit_leg(CallHoldEnded, subject, t)
            self._push(t + subject.talk_ms - subject.split_ms, _TALK_END, subject)
        elif kind == _TALK_END:
            self._talk_end(t, subject)
        elif kind == _WRAP_END:
            self._emit_leg(CallWrapupEnded, subject, t)
            subject.state = _GONE
            self._free(subject.agent, t)
        elif kind == _LOGON:
            self._logon(t, subject)
        elif kind == _LOGOFF:
            self._logoff(t, subject)
        elif kind == _BREAK:
            self._break_due(t, subject, arg)
        elif kind == _BREAK_END:
            if arg == subject.break_token and subject.state == "aux":
                self._free(subject, t)
        elif kind == _PLAN_DAY:
            self._plan_day(subject, arg, t)
            self._schedule_planning(subject, arg + DAY, t)

    # -- setup and agents' days ----------------------------------------------------------

    def _setup(self) -> None:
        for tenant in self.tenants:
            agents = self.agents[tenant.id]
            for agent in agents:
                if agent.group.shift is None:
                    self._push(0, _LOGON, agent)
            if tenant.has_shifts:
                today = tenant.clock.day_of(0)
                self._plan_day(tenant, today - DAY, 0)
                self._plan_day(tenant, today, 0)
                self._schedule_planning(tenant, today + DAY, 0)
            starting = {
                id(subject) for t, _, kind, subject, _ in self.heap if kind == _LOGON and t == 0
            }
            for agent in agents:
                if id(agent) not in starting:
                    # The roster: an agent off shift at the start is reported offline.
                    self._emit_state(agent, 0, "offline", force=True)
        for tenant in self.tenants:
            for queue in tenant.queues.values():
                if has_arrivals(queue.spec):
                    first_day = tenant.clock.day_of(0) - DAY
                    queue.arrivals = Arrivals(rate_segments(queue.spec, tenant.clock, first_day))
                    self._next_arrival(queue, 0.0)

    def _schedule_planning(self, tenant: _TenantRt, day: date, now: int) -> None:
        at = max(now, tenant.clock.at(day, 0) - _PLAN_AHEAD_MS)
        self._push(at, _PLAN_DAY, tenant, day)

    def _plan_day(self, tenant: _TenantRt, day: date, now: int) -> None:
        """Schedule log-ons, log-offs and breaks of the shifts starting on local `day`."""
        for agent in self.agents[tenant.id]:
            shift = agent.group.shift
            if shift is None:
                continue
            span = shift_span(shift, tenant.clock, day)
            if span is None or span[1] <= now:
                continue
            on, off = span
            self._push(max(on, now), _LOGON, agent)
            self._push(off, _LOGOFF, agent)
            for item in agent.group.breaks:
                due = break_start(item, shift, tenant.clock, day, self.rng)
                if max(on, now) <= due < off:
                    self._push(due, _BREAK, agent, (round(item.minutes * 60_000), item.reason))

    def _logon(self, t: int, agent: _Agent) -> None:
        agent.on_shift = True
        agent.leaving = False
        if agent.state == "offline":
            self._free(agent, t)

    def _logoff(self, t: int, agent: _Agent) -> None:
        agent.on_shift = False
        agent.pending_break = None
        if agent.state in _BUSY:
            agent.leaving = True  # log off after the call's wrap-up
            return
        if agent.state == "available":
            self._take(agent)
        agent.break_token += 1  # cancels the end of a break in progress
        self._emit_state(agent, t, "offline")

    def _break_due(self, t: int, agent: _Agent, item: tuple[int, str]) -> None:
        if not agent.on_shift or agent.leaving or agent.state in ("aux", "offline"):
            return
        if agent.state in _BUSY:
            agent.pending_break = item
            return
        self._take(agent)
        self._start_break(agent, t, item)

    def _start_break(self, agent: _Agent, t: int, item: tuple[int, str]) -> None:
        length_ms, reason = item
        agent.break_token += 1
        self._emit_state(agent, t, "aux", reason)
        self._push(t + length_ms, _BREAK_END, agent, agent.break_token)

    def _free(self, agent: _Agent, t: int) -> None:
        """The agent finished something: log off, take a due break, a call, or wait."""
        if agent.leaving or not agent.on_shift:
            agent.leaving = False
            self._emit_state(agent, t, "offline")
            return
        if agent.pending_break is not None:
            item, agent.pending_break = agent.pending_break, None
            self._start_break(agent, t, item)
            return
        leg = self._pick(agent)
        if leg is not None:
            self._answer(leg, agent, t)
            return
        self._emit_state(agent, t, "available")
        for queue in agent.skill_queues:
            queue.available[agent] = None

    def _take(self, agent: _Agent) -> None:
        """The agent stops being available."""
        for queue in agent.skill_queues:
            queue.available.pop(agent, None)

    def _pick(self, agent: _Agent) -> _Leg | None:
        """The waiting leg the agent takes next: lowest skill level, then the highest
        priority, then the longest waiting."""
        for level in agent.levels:
            best: _QueueRt | None = None
            best_key: tuple[int, int, int] | None = None
            for queue in level:
                waiting = queue.waiting
                while waiting and waiting[0][3].state != _WAITING:
                    heapq.heappop(waiting)
                    queue.gone -= 1
                if waiting:
                    key = waiting[0][:3]
                    if best_key is None or key < best_key:
                        best, best_key = queue, key
            if best is not None:
                return heapq.heappop(best.waiting)[3]
        return None

    # -- calls ---------------------------------------------------------------------------

    def _next_arrival(self, queue: _QueueRt, after: float) -> None:
        assert queue.arrivals is not None
        at = queue.arrivals.next_after(self.rng, after, self.end_ms)
        if at is not None:
            self._push(round(at), _ARRIVAL, queue, at)

    def _arrival(self, t: int, queue: _QueueRt, exact: float) -> None:
        self.calls += 1
        pool = queue.tenant.spec.caller_pool
        caller_key = (
            None if pool is None else f"{queue.tenant.id}-caller-{self.rng.randrange(pool)}"
        )
        call = _Call(f"{self.run_id}-c{self.calls:07d}", caller_key)
        self._enqueue(call, queue, t)
        self._next_arrival(queue, exact)

    def _enqueue(self, call: _Call, queue: _QueueRt, t: int) -> None:
        call.legs += 1
        visit = call.visits[queue.id] = call.visits.get(queue.id, 0) + 1
        leg = _Leg(call, queue, visit)
        spec = queue.spec
        self._emit_leg(CallQueued, leg, t, priority=spec.priority, caller_key=call.caller_key)
        if queue.available:
            self._answer(leg, next(iter(queue.available)), t)
            return
        self.seq += 1
        heapq.heappush(queue.waiting, (-spec.priority, t, self.seq, leg))
        patience = spec.patience.sample(self.rng)
        patience_ms = None if patience is None else _ms(patience)
        timeout_ms = None if spec.timeout is None else _ms(spec.timeout)
        if patience_ms is not None and (timeout_ms is None or patience_ms < timeout_ms):
            self._push(t + patience_ms, _ABANDON, leg)
        elif timeout_ms is not None:
            self._push(t + timeout_ms, _TIMEOUT, leg)

    def _answer(self, leg: _Leg, agent: _Agent, t: int) -> None:
        leg.state = _ANSWERED
        leg.agent = agent
        if agent.state == "available":
            self._take(agent)
        self._emit_leg(CallAnswered, leg, t, agent_id=agent.id)
        self._emit_state(agent, t, "on_call")
        spec = leg.queue.spec
        leg.talk_ms = _ms(spec.talk.sample(self.rng))
        hold = spec.hold
        if hold.probability > 0 and self.rng.random() < hold.probability:
            assert hold.length is not None
            leg.hold_ms = _ms(hold.length.sample(self.rng))
            leg.split_ms = int(self.rng.random() * leg.talk_ms)
            self._push(t + leg.split_ms, _HOLD_START, leg)
        else:
            self._push(t + leg.talk_ms, _TALK_END, leg)

    def _talk_end(self, t: int, leg: _Leg) -> None:
        agent = leg.agent
        assert agent is not None
        spec = leg.queue.spec
        target: _QueueRt | None = None
        if leg.queue.transfers and leg.call.legs < MAX_LEGS_PER_CALL:
            draw = self.rng.random()
            for probability, queue in leg.queue.transfers:
                if draw < probability:
                    target = queue
                    break
                draw -= probability
        if target is not None:
            self._emit_leg(CallTransferred, leg, t, to_queue_id=target.id)
            self._enqueue(leg.call, target, t)
        else:
            self._emit_leg(CallEnded, leg, t)
        wrap_ms = _ms(spec.wrapup.sample(self.rng))
        if wrap_ms > 0:
            self._emit_state(agent, t, "wrapup")
            self._push(t + wrap_ms, _WRAP_END, leg)
        else:
            self._emit_leg(CallWrapupEnded, leg, t)
            leg.state = _GONE
            self._free(agent, t)

    # -- events --------------------------------------------------------------------------

    def _envelope(self, tenant: _TenantRt, t: int) -> dict[str, Any]:
        self.events += 1
        return {
            "schema_version": SCHEMA_VERSION,
            # Zero-padded so that ids sort like the order of emission (a tie-breaker
            # consumers use for events of one instant).
            "event_id": f"{self.run_id}-{self.events:09d}",
            "occurred_at": (self.start + t * MS).astimezone(tenant.zone),
            "tenant_id": tenant.id,
            "source": self.source,
        }

    def _emit_leg(self, kind: type[CallLegEvent], leg: _Leg, t: int, **fields: Any) -> None:
        self.out.append(
            kind(  # type: ignore[arg-type]
                **self._envelope(leg.queue.tenant, t),
                call_id=leg.call.id,
                queue_id=leg.queue.id,
                visit=leg.visit,
                **fields,
            )
        )

    def _emit_state(
        self, agent: _Agent, t: int, state: str, reason: str | None = None, force: bool = False
    ) -> None:
        """Record and report the agent's new state (nothing when it does not change)."""
        if state == agent.state and reason == agent.reason and not force:
            return
        agent.state, agent.reason = state, reason
        self.out.append(
            AgentStateChanged(
                **self._envelope(agent.tenant, t),
                agent_id=agent.id,
                team_id=agent.group.team,
                state=state,  # type: ignore[arg-type]
                reason=reason,
                queues=agent.queue_ids,
            )
        )
