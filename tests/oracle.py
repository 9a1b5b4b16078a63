"""An independent batch recomputation of bucket counters from deduplicated wire events.

Written on its own from KPI-DEFINITIONS.md and the rules documented in services/kpi/leg.py;
it calls nothing of the core except the histogram edge list (a constant) and the counter
structs (plain containers), so a test comparing the core with it can fail.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from services.kpi.counters import WAIT_EDGES_S, AgentCounters, Counters

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
            marks = [(ms(e), 0) for e in evs if e["event_type"] == "call.hold_started"] + [
                (ms(e), 1) for e in evs if e["event_type"] == "call.hold_ended"
            ]
            hold = hold_between(marks, t_ans, stop)
            talk, wrap = stop - t_ans - hold, max(0, ms(wrapped) - stop)
            minute = ms(wrapped) // MIN * MIN
            for c in (queues[(tenant, queue, minute)], agents[(tenant, agent, minute)]):
                c.handled += 1
                c.talk_ms += talk
                c.hold_ms += hold
                c.wrap_ms += wrap
    return dict(queues), dict(agents)


def hold_between(marks: list[tuple[int, int]], start: int, stop: int) -> int:
    """Time on hold inside [start, stop] from (instant, 0 = hold started | 1 = ended)
    marks, pairing each start with the next end in time order (an open hold runs to stop)."""
    hold, since = 0, None
    for t, kind in sorted(marks):
        if kind == 0 and since is None:
            since = t
        elif kind == 1 and since is not None:
            hold += max(0, min(t, stop) - max(since, start))
            since = None
    if since is not None:
        hold += max(0, stop - max(since, start))
    return hold


def nonzero(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """Drop all-zero buckets (a bucket emptied by a restatement is stored as zeros)."""
    empty = {Counters: Counters(), AgentCounters: AgentCounters()}
    return {k: v for k, v in mapping.items() if v != empty[type(v)]}
