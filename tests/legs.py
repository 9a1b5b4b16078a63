"""Build the wire events of whole queue legs with known waits (for API tests that compare
figures with counts made by hand from the same list)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from tests.factories import event_dict


@dataclass(frozen=True)
class Leg:
    """One visit: queued at `at`, then answered / abandoned / flowed out after `wait_ms`
    (outcome None: still waiting)."""

    tenant: str
    call: str
    queue: str
    at: datetime
    outcome: str | None
    wait_ms: int = 0
    caller: str | None = None

    @property
    def outcome_at(self) -> datetime:
        return self.at + timedelta(milliseconds=self.wait_ms)


def leg_events(leg: Leg) -> list[dict[str, Any]]:
    ids = {"tenant_id": leg.tenant, "call_id": leg.call, "queue_id": leg.queue}
    extra = {} if leg.caller is None else {"caller_key": leg.caller}
    events = [event_dict("call.queued", leg.at, **ids, **extra)]
    if leg.outcome == "answered":
        events.append(event_dict("call.answered", leg.outcome_at, agent_id="agent-1", **ids))
    elif leg.outcome == "abandoned":
        events.append(event_dict("call.abandoned", leg.outcome_at, **ids))
    elif leg.outcome == "flowed_out":
        events.append(event_dict("call.flowed_out", leg.outcome_at, reason="timeout", **ids))
    return events


def body(legs: list[Leg], extra: list[dict[str, Any]] | None = None) -> bytes:
    events = [e for leg in legs for e in leg_events(leg)]
    return msgspec.json.encode(events + (extra or []))


def survey(tenant: str, call: str, at: datetime, score: int, scale_max: int = 5,
           queue: str | None = None) -> dict[str, Any]:  # fmt: skip
    fields: dict[str, Any] = {"tenant_id": tenant, "call_id": call, "score": score,
                              "scale_max": scale_max}  # fmt: skip
    if queue is not None:
        fields["queue_id"] = queue
    return event_dict("survey.completed", at, **fields)
