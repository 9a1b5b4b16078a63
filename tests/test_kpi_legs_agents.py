"""Leg rules for impossible sequences, live gauges, agent occupancy and team averages,
each checked against figures computed by hand in the test."""

from __future__ import annotations

import random

from services.kpi.agents import team_figures, time_in_state
from services.kpi.centre import QUARANTINED, Centre, Settings
from services.kpi.counters import AgentCounters, StateTime
from services.kpi.events import Event
from services.kpi.gauges import queue_gauges
from services.kpi.leg import at_ms
from tests.factories import event

S = 1000


def apply_all(centre: Centre, events: list[Event]) -> None:
    for ev in events:
        centre.apply(ev, at_ms(ev))


def leg_of(centre: Centre, call: str):  # type: ignore[no-untyped-def]
    return next(leg for leg in centre.legs.values() if leg.call_id == call)


def test_answered_twice_keeps_the_earliest_and_counts_it() -> None:
    c = {"call_id": "c", "queue_id": "q"}
    evs = [
        event("call.queued", 0, **c),
        event("call.answered", 12, agent_id="late", **c),
        event("call.answered", 10, agent_id="early", **c),
        event("call.abandoned", 11, **c),
    ]
    for order in (evs, evs[::-1]):
        centre = Centre()
        apply_all(centre, order)
        leg = leg_of(centre, "c")
        assert leg.answered is not None and leg.answered.detail == "early"
        assert leg.anomalies() == {"repeated_fact": 1, "ending_after_answer": 1}
        (bucket,) = [b for b in centre.queue_buckets.values() if b.answered]
        assert (bucket.answered, bucket.abandoned, bucket.wait_answered_ms) == (1, 0, 10 * S)


def test_negative_durations_are_clamped_and_counted() -> None:
    c = {"call_id": "n", "queue_id": "q"}
    centre = Centre()
    apply_all(
        centre,
        [
            event("call.queued", 10, **c),
            event("call.answered", 8, agent_id="a", **c),
            event("call.ended", 5, **c),
            event("call.wrapup_ended", 20, **c),
        ],
    )
    leg = leg_of(centre, "n")
    assert leg.anomalies() == {"negative_wait": 1, "negative_talk": 1}
    _, outcome, handle, _ = leg.contribution
    assert outcome is not None and outcome[2] == 0
    assert handle is not None and handle[2:] == (0, 0, 12 * S)


def test_hold_pairs_talk_and_wrap() -> None:
    c = {"call_id": "h", "queue_id": "q"}
    evs = [
        event("call.queued", 0, **c),
        event("call.answered", 30, agent_id="a", **c),
        event("call.hold_started", 60, **c),
        event("call.hold_ended", 90, **c),
        event("call.hold_ended", 95, **c),  # stray end: ignored
        event("call.hold_started", 200, **c),  # never ended: closes at the end of talk
        event("call.ended", 230, **c),
        event("call.wrapup_ended", 260, **c),
    ]
    random.Random(7).shuffle(evs)
    centre = Centre()
    apply_all(centre, evs)
    _, _, handle, _ = leg_of(centre, "h").contribution
    # talk 30 -> 230 = 200 s minus hold 30 + 30 = 60 s; wrap 30 s.
    assert handle is not None and handle[2:] == (140 * S, 60 * S, 30 * S)


def test_late_beyond_horizon_is_quarantined_and_counted() -> None:
    centre = Centre(Settings(allowed_lateness_ms=60 * S, correction_horizon_ms=3600 * S))
    apply_all(centre, [event("call.queued", 7200, call_id="new", queue_id="q")])
    late = event("call.queued", 3000, call_id="old", queue_id="q")
    assert centre.apply(late, at_ms(late)) == QUARANTINED
    inside = event("call.queued", 4000, call_id="restate", queue_id="q")
    centre.apply(inside, at_ms(inside))
    assert centre.stats.quarantined == 1 and centre.stats.late == 1
    assert {k[2] for k in centre.restated} == {at_ms(inside) - at_ms(inside) % 60_000}


def test_eviction_keeps_memory_bounded_and_late_restatement_exact() -> None:
    centre = Centre(Settings(allowed_lateness_ms=60 * S, correction_horizon_ms=600 * S))
    for n in range(300):
        c = {"call_id": f"e{n}", "queue_id": "q"}
        apply_all(
            centre,
            [
                event("call.queued", n * 60, **c),
                event("call.abandoned", n * 60 + 5, **c),
            ],
        )
        centre.evict()
    assert len(centre.legs) <= 12  # the horizon holds ten minutes of one call a minute
    assert len(centre.queue_buckets) <= 12
    # An event for a bucket that was already evicted is refused, not half-applied.
    old = event("call.queued", 100 * 60 + 10, call_id="e100b", queue_id="q")
    assert centre.apply(old, at_ms(old)) == QUARANTINED


def test_gauges_tick_between_events() -> None:
    centre = Centre()
    apply_all(
        centre,
        [
            event(
                "agent.state_changed",
                0,
                agent_id="a1",
                team_id="t",
                state="available",
                queues=["q"],
            ),
            event("agent.state_changed", 0, agent_id="a2", team_id="t", state="aux", queues=["q"]),
            event(
                "agent.state_changed",
                0,
                agent_id="a3",
                team_id="t",
                state="available",
                queues=["other"],
            ),
            event("call.queued", 10, call_id="w1", queue_id="q"),
            event("call.queued", 25, call_id="w2", queue_id="q"),
            event("call.queued", 26, call_id="gone", queue_id="q"),
            event("call.abandoned", 28, call_id="gone", queue_id="q"),
        ],
    )
    legs = list(centre.waiting_legs("acme", "q"))
    timelines = [t for t in centre.timelines.values()]
    base = at_ms(event("call.queued", 0, call_id="x", queue_id="q"))
    for seconds_later in (30, 31, 95):
        now = base + seconds_later * S
        g = queue_gauges(legs, timelines, "q", now, stale_leg_ms=3_600_000)
        assert (g.calls_waiting, g.longest_wait_ms) == (2, (seconds_later - 10) * S)
        assert (g.agents["available"], g.agents["aux"]) == (1, 1)


def test_occupancy_and_team_average_by_hand() -> None:
    centre = Centre()
    script = [
        # agent a: available 0-60, on_call 60-180, wrapup 180-240, available 240-300, aux 300-
        ("a", 0, "available"),
        ("a", 60, "on_call"),
        ("a", 180, "wrapup"),
        ("a", 240, "available"),
        ("a", 300, "aux"),
        # agent b: available 0-240, on_call 240-300, offline 300-
        ("b", 0, "available"),
        ("b", 240, "on_call"),
        ("b", 300, "offline"),
    ]
    evs = [
        event("agent.state_changed", t, agent_id=a, team_id="blue", state=s, queues=["q"])
        for a, t, s in script
    ]
    random.Random(3).shuffle(evs)
    apply_all(centre, evs)
    per_agent = time_in_state(centre.dirty_segments.values(), 0, 2**62)
    assert per_agent["a"] == StateTime(available_ms=120 * S, on_call_ms=120 * S, wrapup_ms=60 * S)
    assert per_agent["b"] == StateTime(available_ms=240 * S, on_call_ms=60 * S)
    counters = {
        "a": AgentCounters(handled=2, talk_ms=200 * S, hold_ms=20 * S, wrap_ms=40 * S),
        "b": AgentCounters(handled=1, talk_ms=90 * S, hold_ms=0, wrap_ms=10 * S),
    }
    figures = {
        f.agent_id: f
        for f in team_figures(
            {
                a: ("blue", centre.timelines[("acme", a)].current, counters[a], per_agent[a])
                for a in "ab"
            }
        )
    }
    assert figures["a"].aht_ms.value == 130 * S
    assert figures["a"].team_aht_ms.value == 360 * S / 3
    assert figures["a"].occupancy.value == 180 / 300
    assert figures["b"].occupancy.value == 60 / 300
    assert figures["b"].team_occupancy.value == 240 / 600
    assert figures["b"].state == "offline"
