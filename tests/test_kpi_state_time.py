"""Time in state from agent state changes, in any order, against a batch split.

The core hands the store closed segments, one per change, rewritten when a later-arriving
change shortens one. It takes two paths: a change after all others closes the open
segment; any other change rewrites the segment before it and writes its own. The segments
as stored (the last write of each key wins), cut at minute edges, must give what an
independent computation gives from the sorted, deduplicated changes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.kpi.agents import Segment, SegmentKey, time_in_state
from services.kpi.centre import Centre
from services.kpi.counters import AGENT_STATES
from services.kpi.leg import at_ms
from tests.factories import T0, event

MINUTE = 60_000


def expected(changes: list[tuple[str, int, str, str]]) -> dict[tuple[str, int, str], int]:
    """(agent, minute, state) -> ms from closed segments: each change's state lasts until
    the agent's next change (order: instant, then event id), split at minute edges."""
    t0 = int(T0.timestamp() * 1000)
    result: dict[tuple[str, int, str], int] = {}
    by_agent: dict[str, list[tuple[int, str, str]]] = {}
    for agent, at, event_id, state in set(changes):
        by_agent.setdefault(agent, []).append((t0 + at, event_id, state))
    for agent, timeline in by_agent.items():
        timeline.sort()
        for (start, _, state), (end, _, _) in pairwise(timeline):
            for ms in range(start, end):  # one millisecond at a time: obviously right
                key = (agent, ms - ms % MINUTE, state)
                result[key] = result.get(key, 0) + 1
    return result


def per_minute(segments: Iterable[Segment]) -> dict[tuple[str, int, str], int]:
    """(agent, minute, state) -> ms of the segments, through `time_in_state` per minute."""
    result: dict[tuple[str, int, str], int] = {}
    segments = list(segments)
    first = min((s.start_ms for s in segments), default=0)
    last = max((s.end_ms for s in segments), default=0)
    for minute in range(first - first % MINUTE, last, MINUTE):
        for agent, times in time_in_state(segments, minute, minute + MINUTE).items():
            for state in AGENT_STATES:
                ms = getattr(times, f"{state}_ms")
                if ms:
                    result[(agent, minute, state)] = ms
    return result


changes_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a1", "a2"]),
        st.integers(0, 200_000),  # ms after T0: a few minutes, so edges are crossed
        st.integers(0, 30).map(lambda i: f"c{i}"),
        st.sampled_from(AGENT_STATES),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda c: c[2],
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=changes_strategy, shuffle_tail=st.integers(0, 25), seed=st.integers(0, 99))
def test_state_time_in_any_order_matches_batch(
    changes: list[tuple[str, int, str, str]], shuffle_tail: int, seed: int
) -> None:
    # Mostly in time order (the append path) with a shuffled tail and a duplicate (the
    # recompute path), as real sources deliver.
    ordered = sorted(changes, key=lambda c: (c[1], c[2]))
    cut = max(0, len(ordered) - shuffle_tail)
    tail = ordered[cut:]
    random.Random(seed).shuffle(tail)
    delivery: list[Any] = ordered[:cut] + tail + ordered[: 1 + seed % 2]
    centre = Centre()
    written: dict[SegmentKey, Segment] = {}  # the store: one row per key, last write wins
    for agent, at, event_id, state in delivery:
        ev = event(
            "agent.state_changed", at / 1000, agent_id=agent, team_id="t", state=state,
            event_id=event_id, reason="lunch" if state == "aux" else None,
        )  # fmt: skip
        centre.apply(ev, at_ms(ev))
        if seed % 3 == 0:  # flushed after each event, or only at the end
            written.update(centre.dirty_segments)
            centre.clear_dirty()
    written.update(centre.dirty_segments)
    assert per_minute(written.values()) == expected(changes)
    # The timelines in memory give the same segments as those written.
    in_memory = [s for timeline in centre.timelines.values() for s in timeline.segments()]
    assert {s.key: s for s in in_memory} == {k: s for k, s in written.items()}
    # A window's time from the segments a timeline picks for it equals the batch split's
    # minutes inside that window.
    t0 = int(T0.timestamp() * 1000)
    lo = t0 - t0 % MINUTE + (seed % 4) * MINUTE
    hi = lo + (1 + seed % 3) * MINUTE
    picked = [s for timeline in centre.timelines.values() for s in timeline.segments(lo, hi)]
    want: dict[str, dict[str, int]] = {}
    for (agent, minute, state), ms in expected(changes).items():
        if lo <= minute < hi:
            want.setdefault(agent, {})[state] = want.get(agent, {}).get(state, 0) + ms
    got = {
        agent: {s: getattr(t, f"{s}_ms") for s in AGENT_STATES if getattr(t, f"{s}_ms")}
        for agent, t in time_in_state(picked, lo, hi).items()
    }
    assert got == want
