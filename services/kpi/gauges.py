"""Live gauges at a given `now`: calls waiting, longest wait, agents by state."""

from __future__ import annotations

import msgspec

from .agents import Timeline
from .counters import AGENT_STATES
from .leg import Leg


class QueueGauges(msgspec.Struct, kw_only=True):
    """Gauges of one queue at `as_of_ms`. `longest_wait_ms` is 0 when nobody waits."""

    as_of_ms: int
    calls_waiting: int
    longest_wait_ms: int
    oldest_queued_at_ms: int | None
    agents: dict[str, int]


def queue_gauges(
    waiting: list[Leg],
    timelines: list[Timeline],
    queue_id: str,
    now_ms: int,
    stale_leg_ms: int,
) -> QueueGauges:
    """Gauges of one queue from its open legs and its tenant's agent timelines.

    A leg queued after `now` is not waiting yet; one queued more than `stale_leg_ms`
    before `now` is treated as lost (its ending never arrived) and not shown.
    """
    oldest: int | None = None
    count = 0
    for leg in waiting:
        if leg.queued is None:
            continue
        queued_at = leg.queued.at
        if queued_at > now_ms or now_ms - queued_at > stale_leg_ms:
            continue
        count += 1
        if oldest is None or queued_at < oldest:
            oldest = queued_at
    return QueueGauges(
        as_of_ms=now_ms,
        calls_waiting=count,
        longest_wait_ms=0 if oldest is None else now_ms - oldest,
        oldest_queued_at_ms=oldest,
        agents=agents_by_state(timelines, now_ms, queue_id=queue_id),
    )


def agents_by_state(
    timelines: list[Timeline],
    now_ms: int,
    *,
    queue_id: str | None = None,
    team_id: str | None = None,
) -> dict[str, int]:
    """Agents per state at `now` (each agent's latest change at or before `now`),
    restricted to those serving `queue_id` and/or belonging to `team_id`."""
    counts = dict.fromkeys(AGENT_STATES, 0)
    for timeline in timelines:
        change = timeline.state_at(now_ms)
        if change is None:
            continue
        if queue_id is not None and queue_id not in change.queues:
            continue
        if team_id is not None and change.team_id != team_id:
            continue
        counts[change.state] += 1
    return counts
