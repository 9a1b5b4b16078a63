"""Row shapes shared by the embedded and the PostgreSQL stores (columns follow the structs)."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ..kpi.counters import AgentCounters, Counters
from ..kpi.leg import ABANDONED, ANSWERED, Leg

COUNTER_FIELDS: Final = tuple(Counters.__struct_fields__)
assert COUNTER_FIELDS[-2:] == ("hist_answered", "hist_abandoned")
SCALAR_COUNTER_FIELDS: Final = tuple(f for f in COUNTER_FIELDS if not f.startswith("hist_"))
AGENT_FIELDS: Final = tuple(AgentCounters.__struct_fields__)

LEG_COLUMNS: Final = (
    "tenant_id", "call_id", "queue_id", "visit", "queued_at_ms", "priority", "caller_key",
    "outcome", "outcome_at_ms", "wait_ms", "agent_id", "flow_out_reason", "transferred_at_ms",
    "handled_at_ms", "talk_ms", "hold_ms", "wrap_ms", "anomalies",
)  # fmt: skip

_OUTCOME_NAMES: Final = {ANSWERED: "answered", ABANDONED: "abandoned"}


class LegRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A leg as stored: its resolved outcome and durations (ms), for audit and the oracle."""

    tenant_id: str
    call_id: str
    queue_id: str
    visit: int
    queued_at_ms: int | None
    priority: int
    caller_key: str | None
    outcome: str | None
    outcome_at_ms: int | None
    wait_ms: int | None
    agent_id: str | None
    flow_out_reason: str | None
    transferred_at_ms: int | None
    handled_at_ms: int | None
    talk_ms: int | None
    hold_ms: int | None
    wrap_ms: int | None
    anomalies: str


def leg_record(leg: Leg) -> LegRecord:
    """The stored form of a leg, from its facts."""
    ending = leg.queue_ending()
    _, outcome, handle, _ = leg.contribution
    return LegRecord(
        tenant_id=leg.tenant_id,
        call_id=leg.call_id,
        queue_id=leg.queue_id,
        visit=leg.visit,
        queued_at_ms=None if leg.queued is None else leg.queued.at,
        priority=leg.priority,
        caller_key=leg.caller_key,
        outcome=None if ending is None else _OUTCOME_NAMES.get(ending[0], "flowed_out"),
        outcome_at_ms=None if ending is None else ending[1].at,
        wait_ms=None if outcome is None else outcome[2],
        agent_id=None if leg.answered is None else leg.answered.detail,
        flow_out_reason=leg.flow_out_reason(),
        transferred_at_ms=None if leg.transferred is None else leg.transferred.at,
        handled_at_ms=None if leg.wrapup_ended is None or handle is None else leg.wrapup_ended.at,
        talk_ms=None if handle is None else handle[2],
        hold_ms=None if handle is None else handle[3],
        wrap_ms=None if handle is None else handle[4],
        anomalies=msgspec.json.encode(leg.anomalies()).decode(),
    )


def counters_row(c: Counters) -> list[Any]:
    """Scalar counter values followed by the two histograms (as given, lists): the struct's
    own field order, which puts the histograms last."""
    return list(msgspec.structs.astuple(c))


def counters_from_row(row: tuple[Any, ...] | list[Any], hist_answered: list[int],
                      hist_abandoned: list[int]) -> Counters:  # fmt: skip
    values = dict(zip(SCALAR_COUNTER_FIELDS, row, strict=True))
    return Counters(**values, hist_answered=hist_answered, hist_abandoned=hist_abandoned)
