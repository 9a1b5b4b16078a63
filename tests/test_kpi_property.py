"""Property: any arrival order and any duplication give counters identical to a batch
recomputation from the deduplicated events. The batch code below is written on its own
from KPI-DEFINITIONS.md and the rules in services/kpi/leg.py; it calls nothing of the core
but the histogram edge list (a constant)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.kpi.centre import Centre, Settings
from services.kpi.counters import WAIT_EDGES_S, AgentCounters, Counters
from services.kpi.events import decode_event
from tests.factories import event_dict

MIN = 60_000


def ms(body: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(body["occurred_at"]).timestamp() * 1000)


def hist_bin(wait: int) -> int:
    for k, edge in enumerate(WAIT_EDGES_S):
        if wait < edge * 1000:
            return 2 * k
        if wait == edge * 1000:
            return 2 * k + 1
    return 2 * len(WAIT_EDGES_S)


def batch(events: list[dict[str, Any]]) -> tuple[dict[Any, Counters], dict[Any, AgentCounters]]:
    """Bucket counters from scratch: dedupe by event id, group by leg, resolve each leg."""
    unique = {e["event_id"]: e for e in events}.values()
    legs: dict[tuple[str, str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for e in unique:
        if e["event_type"].startswith("call."):
            legs[(e["tenant_id"], e["call_id"], e["queue_id"], e.get("visit", 1))].append(e)
    queues: dict[Any, Counters] = defaultdict(Counters)
    agents: dict[Any, AgentCounters] = defaultdict(AgentCounters)
    for (tenant, _, queue, _), evs in legs.items():

        def first(kind: str, evs: list[dict[str, Any]] = evs) -> dict[str, Any] | None:
            found = [e for e in evs if e["event_type"] == kind]
            return min(found, key=lambda e: (ms(e), e["event_id"])) if found else None

        queued, answered = first("call.queued"), first("call.answered")
        abandoned, flowed, transferred = (
            first("call.abandoned"),
            first("call.flowed_out"),
            first("call.transferred"),
        )
        ended, wrapped = first("call.ended"), first("call.wrapup_ended")
        if queued is not None:
            queues[(tenant, queue, ms(queued) // MIN * MIN)].offered += 1
            ending = None
            if answered is not None:
                ending = ("answered", answered)
            else:
                ranked = [
                    (ms(e), rank, kind, e)
                    for rank, kind, e in (
                        (0, "abandoned", abandoned),
                        (1, "flowed", flowed),
                        (2, "flowed", transferred),
                    )
                    if e is not None
                ]
                if ranked:
                    _, _, kind, e = min(ranked, key=lambda r: (r[0], r[1]))
                    ending = (kind, e)
            if ending is not None:
                kind, e = ending
                wait = max(0, ms(e) - ms(queued))
                c = queues[(tenant, queue, ms(e) // MIN * MIN)]
                if kind == "answered":
                    c.answered += 1
                    c.wait_answered_ms += wait
                    c.max_wait_answered_ms = max(c.max_wait_answered_ms, wait)
                    c.hist_answered[hist_bin(wait)] += 1
                    agents[(tenant, e["agent_id"], ms(e) // MIN * MIN)].answered += 1
                elif kind == "abandoned":
                    c.abandoned += 1
                    c.wait_abandoned_ms += wait
                    c.max_wait_abandoned_ms = max(c.max_wait_abandoned_ms, wait)
                    c.hist_abandoned[hist_bin(wait)] += 1
                else:
                    c.flowed_out += 1
        if answered is None:
            continue
        agent, t_ans = answered["agent_id"], ms(answered)
        if transferred is not None:
            minute = ms(transferred) // MIN * MIN
            queues[(tenant, queue, minute)].transferred += 1
            agents[(tenant, agent, minute)].transferred += 1
        if wrapped is not None:
            stop = ms(ended) if ended else ms(transferred) if transferred else ms(wrapped)
            stop = max(stop, t_ans)
            marks = sorted(
                [(ms(e), 0) for e in evs if e["event_type"] == "call.hold_started"]
                + [(ms(e), 1) for e in evs if e["event_type"] == "call.hold_ended"]
            )
            hold, since = 0, None
            for t, kind in marks:
                if kind == 0 and since is None:
                    since = t
                elif kind == 1 and since is not None:
                    hold += max(0, min(t, stop) - max(since, t_ans))
                    since = None
            if since is not None:
                hold += max(0, stop - max(since, t_ans))
            talk, wrap = stop - t_ans - hold, max(0, ms(wrapped) - stop)
            minute = ms(wrapped) // MIN * MIN
            for c in (queues[(tenant, queue, minute)], agents[(tenant, agent, minute)]):
                c.handled += 1
                c.talk_ms += talk
                c.hold_ms += hold
                c.wrap_ms += wrap
    return dict(queues), dict(agents)


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


def nonzero(mapping: dict[Any, Any]) -> dict[Any, Any]:
    empty = {Counters: Counters(), AgentCounters: AgentCounters()}
    return {k: v for k, v in mapping.items() if v != empty[type(v)]}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_any_order_and_duplicates_match_batch(stream: tuple[list[Any], list[Any]]) -> None:
    events, delivered = stream
    queues, agents = batch(events)
    centre = run(delivered)
    assert nonzero(centre.queue_buckets) == nonzero(queues)
    assert nonzero(centre.agent_buckets) == nonzero(agents)


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
