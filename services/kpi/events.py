"""Event model decoded from the wire; mirrors `schemas/*.json` (a test checks for drift)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

SCHEMA_VERSION: Final = "1.0"

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Instant = Annotated[datetime, msgspec.Meta(tz=True)]
FlowOutReason = Literal["timeout", "key", "empty", "overflow", "callback"]
AgentStateName = Literal["available", "on_call", "wrapup", "aux", "offline"]


class Envelope(msgspec.Struct, kw_only=True, frozen=True, tag_field="event_type"):
    """Fields every event carries. `occurred_at` is the source clock, with offset."""

    schema_version: str
    event_id: Id
    occurred_at: Instant
    tenant_id: Id
    source: Id


class CallLegEvent(Envelope, frozen=True, kw_only=True):
    """An event of one call leg: a visit of `call_id` to `queue_id` (`visit` counts repeats)."""

    call_id: Id
    queue_id: Id
    visit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1


class CallQueued(CallLegEvent, frozen=True, kw_only=True, tag="call.queued"):
    caller_key: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] = 0


class CallAnswered(CallLegEvent, frozen=True, kw_only=True, tag="call.answered"):
    agent_id: Id


class CallAbandoned(CallLegEvent, frozen=True, kw_only=True, tag="call.abandoned"):
    pass


class CallFlowedOut(CallLegEvent, frozen=True, kw_only=True, tag="call.flowed_out"):
    reason: FlowOutReason


class CallTransferred(CallLegEvent, frozen=True, kw_only=True, tag="call.transferred"):
    to_queue_id: Id | None = None
    to_agent_id: Id | None = None


class CallHoldStarted(CallLegEvent, frozen=True, kw_only=True, tag="call.hold_started"):
    pass


class CallHoldEnded(CallLegEvent, frozen=True, kw_only=True, tag="call.hold_ended"):
    pass


class CallEnded(CallLegEvent, frozen=True, kw_only=True, tag="call.ended"):
    pass


class CallWrapupEnded(CallLegEvent, frozen=True, kw_only=True, tag="call.wrapup_ended"):
    pass


class AgentStateChanged(Envelope, frozen=True, kw_only=True, tag="agent.state_changed"):
    agent_id: Id
    team_id: Id
    state: AgentStateName
    reason: Reason | None = None
    queues: Annotated[list[Id], msgspec.Meta(max_length=200)] = []


class SurveyCompleted(Envelope, frozen=True, kw_only=True, tag="survey.completed"):
    call_id: Id
    score: Annotated[int, msgspec.Meta(ge=0, le=10)]
    scale_max: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    queue_id: Id | None = None
    agent_id: Id | None = None


class QaEvaluated(Envelope, frozen=True, kw_only=True, tag="qa.evaluated"):
    agent_id: Id
    score: Annotated[float, msgspec.Meta(ge=0, le=100)]
    call_id: Id | None = None


Event = (
    CallQueued
    | CallAnswered
    | CallAbandoned
    | CallFlowedOut
    | CallTransferred
    | CallHoldStarted
    | CallHoldEnded
    | CallEnded
    | CallWrapupEnded
    | AgentStateChanged
    | SurveyCompleted
    | QaEvaluated
)

EVENT_TYPES: Final[dict[str, type[Envelope]]] = {
    t.__struct_config__.tag: t  # type: ignore[misc]
    for t in (
        CallQueued,
        CallAnswered,
        CallAbandoned,
        CallFlowedOut,
        CallTransferred,
        CallHoldStarted,
        CallHoldEnded,
        CallEnded,
        CallWrapupEnded,
        AgentStateChanged,
        SurveyCompleted,
        QaEvaluated,
    )
}


class EventError(msgspec.Struct, frozen=True):
    """Why the event at `index` of a batch was rejected; `path` is a JSON path into it."""

    index: int
    path: str
    reason: str


_decoder: Final = msgspec.json.Decoder(Event)
_raw_list: Final = msgspec.json.Decoder(list[msgspec.Raw])
_probe: Final = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encoder: Final = msgspec.json.Encoder()


def _error(
    index: int, exc: msgspec.DecodeError | msgspec.ValidationError, raw: bytes
) -> EventError:
    message = str(exc)
    path = "$"
    if " - at `" in message:
        message, _, at = message.rpartition(" - at `")
        path = at.rstrip("`")
    if path == "$.event_type" and "Invalid value" in message:
        message = f"unknown event_type; known: {', '.join(sorted(EVENT_TYPES))}"
    if path == "$" and "Object missing required field" in message:
        field = message.split("`")[1]
        path, message = f"$.{field}", "required field is missing"
    version = _schema_version(raw)
    if version is not None and version != SCHEMA_VERSION:
        # An event of another version is judged by its version first: its other fields
        # may be perfectly valid under a schema this build does not know.
        path, message = (
            "$.schema_version",
            (f"unsupported schema_version {version!r}; supported: {SCHEMA_VERSION!r}"),
        )
    return EventError(index=index, path=path.replace("$", f"$[{index}]", 1), reason=message)


def _schema_version(raw: bytes) -> object:
    try:
        fields = _probe.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    version = fields.get("schema_version")
    return None if version is None else msgspec.json.decode(version)


def decode_event(raw: bytes, index: int = 0) -> Event | EventError:
    """Decode and validate one JSON event; a rejection names the index, path and reason."""
    try:
        event: Event = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _error(index, exc, raw)
    if event.schema_version != SCHEMA_VERSION:
        return EventError(
            index=index,
            path=f"$[{index}].schema_version",
            reason=f"unsupported schema_version {event.schema_version!r}; "
            f"supported: {SCHEMA_VERSION!r}",
        )
    return event


def split_batch(body: bytes) -> list[bytes] | EventError:
    """Split a JSON array or NDJSON body into the raw bytes of each event."""
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            return [bytes(raw) for raw in _raw_list.decode(body)]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return EventError(index=-1, path="$", reason=f"body is not a JSON array: {exc}")
    return [line for line in (part.strip() for part in body.split(b"\n")) if line]


def decode_batch(body: bytes) -> tuple[list[Event], list[EventError]]:
    """Decode a JSON array or NDJSON body; valid events are kept whatever their neighbours."""
    parts = split_batch(body)
    if isinstance(parts, EventError):
        return [], [parts]
    events: list[Event] = []
    errors: list[EventError] = []
    for index, raw in enumerate(parts):
        result = decode_event(raw, index)
        if isinstance(result, EventError):
            errors.append(result)
        else:
            events.append(result)
    return events, errors


def encode_event(event: Event) -> bytes:
    """Canonical JSON bytes of an event (unknown input fields are not carried)."""
    return _encoder.encode(event)
