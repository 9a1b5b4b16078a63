"""The Kafka wire format of the events topic: keys, batched values, decoding.

Keys decide ownership. Every event of a call leg carries the key `[tenant, "q", queue]`, so
all legs of a queue (and so every queue bucket of it, and the queue's waiting calls) belong
to one partition, and a leg's events keep their order. Agent state changes carry
`[tenant, "a"]`: all agent timelines of a tenant (and their state segments) belong to one
partition, which keeps each agent's changes in order and lets one message carry the state
changes of many agents (a tenant's agents change state a few times a minute each, far
below what one partition takes). Quality inputs go by tenant and call (QA: with the agents).

A message value is a JSON array of events that share the key, in the order they arrived,
so the per-message cost of the consumer is paid once per batch, not once per event.
Messages stay under `max_events` events and about `max_bytes` bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from ..kpi.events import (
    SCHEMA_VERSION,
    AgentStateChanged,
    CallLegEvent,
    Event,
    EventError,
    QaEvaluated,
    decode_event,
    encode_event,
    split_batch,
)

DEFAULT_EVENTS_TOPIC: Final = "callpulse.events"
DEFAULT_SNAPSHOTS_TOPIC: Final = "callpulse.snapshots"
DEFAULT_DLQ_TOPIC: Final = "callpulse.events.dlq"

_key = msgspec.json.Encoder()
_batch = msgspec.json.Decoder(list[Event])


def event_key(event: Event) -> bytes:
    """The partitioning key of an event (see the module docstring)."""
    if isinstance(event, CallLegEvent):
        return _key.encode([event.tenant_id, "q", event.queue_id])
    if isinstance(event, AgentStateChanged | QaEvaluated):
        return _key.encode([event.tenant_id, "a"])
    return _key.encode([event.tenant_id, "c", event.call_id])


def encode_messages(
    events: Iterable[Event], max_events: int = 500, max_bytes: int = 512 * 1024
) -> list[tuple[bytes, bytes]]:
    """(key, value) messages for `events`: grouped by key, order kept within a key."""
    groups: dict[bytes, list[bytes]] = {}
    for event in events:
        groups.setdefault(event_key(event), []).append(encode_event(event))
    out: list[tuple[bytes, bytes]] = []
    for key, bodies in groups.items():
        chunk: list[bytes] = []
        size = 2
        for body in bodies:
            if chunk and (len(chunk) >= max_events or size + len(body) + 1 > max_bytes):
                out.append((key, b"[" + b",".join(chunk) + b"]"))
                chunk, size = [], 2
            chunk.append(body)
            size += len(body) + 1
        out.append((key, b"[" + b",".join(chunk) + b"]"))
    return out


def decode_message(value: bytes) -> tuple[list[Event], list[tuple[int, bytes, EventError]]]:
    """The events of one message; events that do not decode are returned with their index
    and raw bytes (for the dead-letter topic), and their valid neighbours are kept."""
    try:
        events = _batch.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        pass
    else:
        if all(e.schema_version == SCHEMA_VERSION for e in events):
            return events, []
    parts = split_batch(value)
    if isinstance(parts, EventError):
        return [], [(-1, value, parts)]
    events = []
    bad: list[tuple[int, bytes, EventError]] = []
    for index, raw in enumerate(parts):
        event = decode_event(raw, index)
        if isinstance(event, EventError):
            bad.append((index, raw, event))
        else:
            events.append(event)
    return events, bad
