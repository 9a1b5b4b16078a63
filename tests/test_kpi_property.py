"""Property: any arrival order and any duplication give counters identical to a batch
recomputation from the deduplicated events (tests/oracle.py, written independently)."""

from __future__ import annotations

import random
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.kpi.centre import Centre, Settings
from services.kpi.events import decode_event
from tests.factories import event_dict
from tests.oracle import batch, ms, nonzero


@st.composite
def leg_events(draw: st.DrawFn, n: int) -> list[dict[str, Any]]:
    """Events of one leg; mostly well-formed, sometimes with the impossible sequences."""
    tenant = draw(st.sampled_from(["t1", "t2"]))
    common = {
        "tenant_id": tenant,
        "call_id": f"call-{n}",
        "queue_id": draw(st.sampled_from(["q1", "q2"])),
    }
    t = draw(st.integers(0, 1800)) + draw(st.integers(0, 999)) / 1000
    out = [event_dict("call.queued", t, **common)]
    outcome = draw(st.sampled_from(["answered", "abandoned", "flowed", "transferred", "open"]))
    t += draw(st.sampled_from([0, 5, 19.999, 20, 20.001, 45, 130, 4000])) + draw(st.integers(0, 3))
    agent = draw(st.sampled_from(["a1", "a2", "a3"]))
    if outcome == "answered":
        out.append(event_dict("call.answered", t, agent_id=agent, **common))
        if draw(st.booleans()):  # a second, conflicting answer
            out.append(
                event_dict("call.answered", t + draw(st.integers(-3, 3)), agent_id="a9", **common)
            )
        if draw(st.integers(0, 4)) == 0:  # an abandon that contradicts the answer
            out.append(event_dict("call.abandoned", t + 1, **common))
        for _ in range(draw(st.integers(0, 2))):
            t += draw(st.integers(1, 90))
            out.append(event_dict("call.hold_started", t, **common))
            t += draw(st.integers(0, 90))
            out.append(event_dict("call.hold_ended", t, **common))
        t += draw(st.integers(0, 600))
        if draw(st.integers(0, 3)) == 0:
            out.append(event_dict("call.transferred", t, to_queue_id="q2", **common))
        else:
            out.append(event_dict("call.ended", t, **common))
        if draw(st.integers(0, 5)):
            out.append(event_dict("call.wrapup_ended", t + draw(st.integers(0, 120)), **common))
    elif outcome == "abandoned":
        out.append(event_dict("call.abandoned", t, **common))
    elif outcome == "flowed":
        out.append(event_dict("call.flowed_out", t, reason="timeout", **common))
    elif outcome == "transferred":
        out.append(event_dict("call.transferred", t, to_queue_id="q3", **common))
    return out


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(deduplicated events, delivered stream with duplicates in any order)."""
    events = [e for n in range(draw(st.integers(1, 25))) for e in draw(leg_events(n))]
    rng = random.Random(draw(st.integers(0, 2**32)))
    delivered = events + [dict(e) for e in events if rng.random() < 0.3]
    rng.shuffle(delivered)
    return events, delivered


def run(delivered: list[dict[str, Any]], checkpoint_every: int = 0) -> Centre:
    centre = Centre(Settings(correction_horizon_ms=10 * 3_600_000))
    for i, body in enumerate(delivered):
        ev = decode_event(msgspec.json.encode(body))
        assert not hasattr(ev, "reason") or hasattr(ev, "event_id")
        centre.apply(ev, ms(body))  # type: ignore[arg-type]
        if checkpoint_every and i % checkpoint_every == 0:
            centre = Centre.restore(centre.checkpoint(), centre.settings)
    return centre


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_any_order_and_duplicates_match_batch(stream: tuple[list[Any], list[Any]]) -> None:
    events, delivered = stream
    queues, agents = batch(events)
    centre = run(delivered)
    assert nonzero(centre.queue_buckets) == nonzero(queues)
    assert nonzero(centre.agent_buckets) == nonzero(agents)
    # The core recomputes only the parts an event can change: all of them agree at the end.
    for leg in centre.legs.values():
        assert leg.contribution == leg.compute_contribution()


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 7))
def test_checkpoint_and_restore_midway_changes_nothing(
    stream: tuple[list[Any], list[Any]], every: int
) -> None:
    events, delivered = stream
    queues, _ = batch(events)
    assert nonzero(run(delivered, checkpoint_every=every).queue_buckets) == nonzero(queues)


def test_batch_recomputation_can_disagree() -> None:
    """The comparison is not vacuous: dropping one event changes the batch figures."""
    evs = [
        event_dict("call.queued", 0, call_id="x", queue_id="q"),
        event_dict("call.answered", 30, call_id="x", queue_id="q", agent_id="a"),
    ]
    assert nonzero(batch(evs)[0]) != nonzero(batch(evs[:1])[0])
    assert nonzero(run(evs).queue_buckets) == nonzero(batch(evs)[0])
