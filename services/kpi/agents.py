"""Agent state timelines: order-independent, with time in state as closed segments."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import msgspec

from .contracts import Ratio, ratio
from .counters import AgentCounters, StateTime


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


class Segment(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A closed stretch of one state: from a change (its instant and event id) to the next
    change of the same agent. The stored form of time in state, one row per change; the
    stretch after an agent's latest change is open and is added at read time."""

    tenant_id: str
    agent_id: str
    start_ms: int
    event_id: str
    state: str
    end_ms: int

    @property
    def key(self) -> SegmentKey:
        return self.tenant_id, self.agent_id, self.start_ms, self.event_id


SegmentKey = tuple[str, str, int, str]


class Timeline(msgspec.Struct, kw_only=True):
    """An agent's state changes in event-time order."""

    tenant_id: str
    agent_id: str
    changes: list[Change] = []

    def insert(self, change: Change) -> int | None:
        """Add a change; returns its index, or None for a duplicate (the same event id at
        the same instant: changes sort by instant, then id, so a re-sent change lands on its
        twin)."""
        changes = self.changes
        i = bisect_left(changes, change)
        if i < len(changes) and changes[i].event_id == change.event_id:
            return None
        changes.insert(i, change)
        return i

    @property
    def current(self) -> Change | None:
        return self.changes[-1] if self.changes else None

    def state_at(self, at_ms: int) -> Change | None:
        """The change in force at an instant (the latest at or before it)."""
        for change in reversed(self.changes):
            if change.at <= at_ms:
                return change
        return None

    def segment(self, i: int) -> Segment | None:
        """The closed segment of the `i`-th change, None for the last (open) one."""
        changes = self.changes
        if not 0 <= i < len(changes) - 1:
            return None
        change = changes[i]
        return Segment(self.tenant_id, self.agent_id, change.at, change.event_id,
                       change.state, changes[i + 1].at)  # fmt: skip

    def segments(self, start_ms: int = -(2**62), end_ms: int = 2**62) -> list[Segment]:
        """The closed segments of the changes held that may overlap [start_ms, end_ms)
        (those starting before `end_ms`, from the last one starting before `start_ms`)."""
        changes = self.changes
        first = max(0, bisect_left(changes, start_ms, key=_at) - 1)
        stop = min(bisect_left(changes, end_ms, key=_at), len(changes) - 1)
        return [s for i in range(first, stop) if (s := self.segment(i)) is not None]

    def evict_before(self, cutoff_ms: int) -> bool:
        """Forget changes before `cutoff_ms`, keeping the last one (it sets the state
        after); True when any was forgotten."""
        keep_from = max(0, bisect_left(self.changes, cutoff_ms, key=_at) - 1)
        if keep_from:
            del self.changes[:keep_from]
        return keep_from > 0


def time_in_state(segments: Iterable[Segment], start_ms: int, end_ms: int) -> dict[str, StateTime]:
    """Per agent, the time each state held inside [start_ms, end_ms), from closed segments."""
    totals: dict[str, StateTime] = {}
    for s in segments:
        overlap = min(s.end_ms, end_ms) - max(s.start_ms, start_ms)
        if overlap > 0:
            found = totals.get(s.agent_id)
            if found is None:
                found = totals[s.agent_id] = StateTime()
            found.add(s.state, overlap)
    return totals


def _at(change: Change) -> int:
    return change.at


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
