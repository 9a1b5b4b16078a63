"""Factories for events used across the tests (every test makes its own tenant and ids)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from services.kpi.events import SCHEMA_VERSION, Event, decode_event

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_ids = itertools.count()


def event_dict(event_type: str, at: datetime | float, **fields: Any) -> dict[str, Any]:
    """A wire-format event; `at` is a datetime or seconds after T0."""
    when = at if isinstance(at, datetime) else T0 + timedelta(seconds=at)
    body: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": fields.pop("event_id", f"ev-{next(_ids)}"),
        "event_type": event_type,
        "occurred_at": when.isoformat(),
        "tenant_id": fields.pop("tenant_id", "acme"),
        "source": fields.pop("source", "test"),
    }
    body.update(fields)
    return body


def event(event_type: str, at: datetime | float, **fields: Any) -> Event:
    """A decoded, validated event."""
    decoded = decode_event(msgspec.json.encode(event_dict(event_type, at, **fields)))
    assert not isinstance(decoded, Exception) and hasattr(decoded, "event_id"), decoded
    return decoded  # type: ignore[return-value]
