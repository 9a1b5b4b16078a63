"""Agent state timelines: order-independent, with per-minute time in state."""

from __future__ import annotations

from bisect import bisect_left
from itertools import pairwise

import msgspec

from .contracts import Ratio, ratio
from .counters import STATE_FIELD, AgentCounters, StateTime
from .leg import MINUTE_MS, minute_of


class Change(msgspec.Struct, array_like=True, order=True, gc=False):
    """One `agent.state_changed`, ordered by (instant, event id) for a total order.

    Immutable fields only (`queues` is a tuple, stored as the same array as a list): a
    change can be in no reference cycle, so it needs no cyclic-GC tracking, and the
    collector's passes do not walk the thousands of changes timelines hold."""

    at: int
    event_id: str
    state: str
    team_id: str
    reason: str | None
    queues: tuple[str, ...]


class Timeline(msgspec.Struct, kw_only=True):
    """An agent's state changes in event-time order."""

    tenant_id: str
    agent_id: str
    changes: list[Change] = []

    def insert(self, change: Change) -> tuple[int, int] | None:
        """Add a change; returns the span (ms) whose time in state it altered, or None for
        a duplicate (the same event id at the same instant: changes sort by instant, then
        id, so a re-sent change lands on its twin)."""
        changes = self.changes
        i = bisect_left(changes, change)
        if i < len(changes) and changes[i].event_id == change.event_id:
            return None
        changes.insert(i, change)
        start = changes[i - 1].at if i > 0 else change.at
        end = changes[i + 1].at if i + 1 < len(changes) else change.at
        return start, end

    @property
    def current(self) -> Change | None:
        return self.changes[-1] if self.changes else None

    def state_at(self, at_ms: int) -> Change | None:
        """The change in force at an instant (the latest at or before it)."""
        for change in reversed(self.changes):
            if change.at <= at_ms:
                return change
        return None

    def state_times(self, start: int, end: int) -> dict[int, StateTime]:
        """Time in each state per minute for the minutes touched by [start, end], from the
        closed segments only (the segment after the last change is open and is added at
        read time). Every touched minute is in the result, empty or not."""
        first, last = minute_of(start), minute_of(max(start, end))
        lo, hi = first, last + MINUTE_MS
        result: dict[int, StateTime] = {}
        changes = self.changes
        i = max(0, bisect_left(changes, lo, key=_at) - 1)
        for before, after in pairwise(changes[i:]):
            if before.at >= hi:
                break
            seg_lo, seg_hi = max(before.at, lo), min(after.at, hi)
            field = STATE_FIELD[before.state]
            while seg_lo < seg_hi:
                minute = seg_lo - seg_lo % MINUTE_MS
                piece = min(seg_hi, minute + MINUTE_MS) - seg_lo
                bucket = result.get(minute)
                if bucket is None:
                    bucket = result[minute] = StateTime()
                setattr(bucket, field, getattr(bucket, field) + piece)
                seg_lo += piece
        for minute in range(first, hi, MINUTE_MS):
            if minute not in result:
                result[minute] = StateTime()
        return result

    def state_time(self, minute: int) -> StateTime:
        """Time in each state inside one minute (see `state_times`)."""
        return self.state_times(minute, minute)[minute]

    def open_segment(self, start: int, end: int) -> tuple[str, int] | None:
        """(state, ms) of the open segment after the last change, inside [start, end)."""
        last = self.current
        if last is None:
            return None
        overlap = end - max(last.at, start)
        return (last.state, overlap) if overlap > 0 else None

    def evict_before(self, cutoff_ms: int) -> bool:
        """Forget changes before `cutoff_ms`, keeping the last one (it sets the state
        after); True when any was forgotten."""
        keep_from = max(0, bisect_left(self.changes, cutoff_ms, key=_at) - 1)
        if keep_from:
            del self.changes[:keep_from]
        return keep_from > 0


def _at(change: Change) -> int:
    return change.at


def minutes_between(start: int, end: int) -> range:
    """Starts of the minutes touched by [start, end] (at least the minute of `start`)."""
    return range(minute_of(start), max(minute_of(start), end) + 1, MINUTE_MS)


def occupancy(time_in_state: StateTime) -> Ratio:
    """(on_call + wrapup) / (on_call + wrapup + available), from state durations (ms)."""
    busy = time_in_state.on_call_ms + time_in_state.wrapup_ms
    return ratio(busy, busy + time_in_state.available_ms)


def agent_aht(counters: AgentCounters) -> Ratio:
    """(talk + hold + wrap-up) / handled for an agent or a team (ms)."""
    return ratio(counters.talk_ms + counters.hold_ms + counters.wrap_ms, counters.handled)


class AgentFigures(msgspec.Struct, kw_only=True):
    """One agent's figures over a window, next to its team's (weighted) averages."""

    agent_id: str
    team_id: str
    state: str | None
    state_since_ms: int | None
    handled: int
    aht_ms: Ratio
    occupancy: Ratio
    team_aht_ms: Ratio
    team_occupancy: Ratio


def team_figures(
    agents: dict[str, tuple[str, Change | None, AgentCounters, StateTime]],
) -> list[AgentFigures]:
    """Per-agent AHT and occupancy with the team average beside each.

    `agents` maps agent id to (team id, current change, summed counters, summed state time).
    Team averages weigh every call and millisecond alike (sums divided, not averages averaged).
    """
    team_counters: dict[str, AgentCounters] = {}
    team_time: dict[str, StateTime] = {}
    for team_id, _, counters, time_in_state in agents.values():
        team_counters.setdefault(team_id, AgentCounters()).merge(counters)
        team_time.setdefault(team_id, StateTime()).merge(time_in_state)
    return [
        AgentFigures(
            agent_id=agent_id,
            team_id=team_id,
            state=None if change is None else change.state,
            state_since_ms=None if change is None else change.at,
            handled=counters.handled,
            aht_ms=agent_aht(counters),
            occupancy=occupancy(time_in_state),
            team_aht_ms=agent_aht(team_counters[team_id]),
            team_occupancy=occupancy(team_time[team_id]),
        )
        for agent_id, (team_id, change, counters, time_in_state) in sorted(agents.items())
    ]
