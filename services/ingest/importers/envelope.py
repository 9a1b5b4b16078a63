"""Envelope helpers shared by the importers: stable event ids and schema validation.

Event ids are derived from the source record's identity (never random), so importing the
same source twice yields the same ids and the aggregator's de-duplication absorbs the
second run. Every event an importer builds is checked against the wire schema (encoded and
decoded again) before it is yielded: msgspec does not enforce length limits on construction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from services.kpi.events import (
    SCHEMA_VERSION,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallFlowedOut,
    CallHoldEnded,
    CallHoldStarted,
    CallQueued,
    CallTransferred,
    CallWrapupEnded,
    Event,
    EventError,
    decode_event,
    encode_event,
)

from .summary import ImportSummary

#: The schema's limit on every identifier (event, tenant, call, queue, agent ids).
MAX_ID_LENGTH: Final = 128


def stable_id(*parts: str) -> str:
    """`parts` joined by "/"; longer than the schema allows, a readable prefix plus a hash."""
    joined = "/".join(parts)
    if len(joined) <= MAX_ID_LENGTH:
        return joined
    digest = hashlib.sha256(joined.encode()).hexdigest()[:32]
    return f"{joined[: MAX_ID_LENGTH - 33]}~{digest}"


def validated(events: Sequence[Event], summary: ImportSummary, index: int) -> Sequence[Event]:
    """The events of one record if all are valid on the wire, else none (record skipped)."""
    for event in events:
        decoded = decode_event(encode_event(event))
        if isinstance(decoded, EventError):
            summary.skip("invalid_event", index, f"{decoded.path}: {decoded.reason}")
            return ()
    summary.events += len(events)
    return events


LegEventT = TypeVar(
    "LegEventT",
    CallQueued,
    CallAnswered,
    CallAbandoned,
    CallFlowedOut,
    CallTransferred,
    CallHoldStarted,
    CallHoldEnded,
    CallEnded,
    CallWrapupEnded,
)


def leg_event(
    kind: type[LegEventT],
    *,
    event_id: str,
    occurred_at: datetime,
    tenant_id: str,
    source: str,
    call_id: str,
    queue_id: str,
    visit: int = 1,
    **fields: Any,
) -> LegEventT:
    """A call-leg event of type `kind` with the current schema version."""
    return kind(
        schema_version=SCHEMA_VERSION,
        event_id=event_id,
        occurred_at=occurred_at,
        tenant_id=tenant_id,
        source=source,
        call_id=call_id,
        queue_id=queue_id,
        visit=visit,
        **fields,
    )
