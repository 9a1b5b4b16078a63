"""The ingest edge: turn a request body into valid events and per-event rejections.

Shared by the embedded and the Kafka ingest. Rules: an event of another tenant than the
key's is rejected (admin keys may send any tenant); a `caller_key` never passes in clear,
it is replaced by HMAC-SHA256 under a per-tenant key derived from the caller-key secret
(see `pseudonym`; an importer may already have keyed it, and keying a key is harmless).
"""

from __future__ import annotations

import hashlib
import hmac

import msgspec

from ..kpi.events import CallQueued, Event, EventError, decode_event, split_batch
from .pseudonym import caller_key


def tenant_caller_key(secret: bytes, tenant_id: str) -> bytes:
    """The per-tenant HMAC key (derived, so one secret serves every tenant)."""
    return hmac.new(secret, b"caller-key:" + tenant_id.encode(), hashlib.sha256).digest()


def hash_caller(secret: bytes, tenant_id: str, caller: str) -> str:
    """HMAC-SHA256 hex of a caller number under the tenant's key."""
    return hmac.new(
        tenant_caller_key(secret, tenant_id), caller.encode(), hashlib.sha256
    ).hexdigest()


def prepare(
    body: bytes, tenant_id: str | None, caller_secret: bytes, max_events: int
) -> tuple[list[Event], list[EventError]]:
    """Decode a JSON array or NDJSON body for a key scoped to `tenant_id` (None: any)."""
    parts = split_batch(body, max_events)
    if isinstance(parts, EventError):
        return [], [parts]
    if len(parts) > max_events:
        return [], [
            EventError(-1, "$", f"too many events in one request: {len(parts)} > {max_events}")
        ]
    if not parts:
        return [], [EventError(-1, "$", "no events in the body")]
    events: list[Event] = []
    errors: list[EventError] = []
    for index, raw in enumerate(parts):
        event = decode_event(raw, index)
        if isinstance(event, EventError):
            errors.append(event)
        elif tenant_id is not None and event.tenant_id != tenant_id:
            errors.append(
                EventError(index, f"$[{index}].tenant_id", "not the tenant of the API key")
            )
        else:
            if isinstance(event, CallQueued) and event.caller_key is not None:
                tenant_secret = tenant_caller_key(caller_secret, event.tenant_id)
                event = msgspec.structs.replace(
                    event, caller_key=caller_key(tenant_secret, event.caller_key)
                )
            events.append(event)
    return events, errors
