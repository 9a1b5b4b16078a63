"""Event model decoded from the wire; mirrors `schemas/*.json` (a test checks for drift)."""

from __future__ import annotations

import re
from contextvars import ContextVar
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


TOO_DEEP: Final = "nested too deeply"


def decode_event(raw: bytes, index: int = 0) -> Event | EventError:
    """Decode and validate one JSON event; a rejection names the index, path and reason."""
    try:
        event: Event = _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _error(index, exc, raw)
    except RecursionError:  # thousands of nested arrays or objects somewhere in the event
        return EventError(index=index, path=f"$[{index}]", reason=f"the event is {TOO_DEEP}")
    except UnicodeDecodeError as exc:  # msgspec checks UTF-8 only in the strings it keeps
        return EventError(index=index, path=f"$[{index}]", reason=f"not valid UTF-8: {exc}")
    if event.schema_version != SCHEMA_VERSION:
        return EventError(
            index=index,
            path=f"$[{index}].schema_version",
            reason=f"unsupported schema_version {event.schema_version!r}; "
            f"supported: {SCHEMA_VERSION!r}",
        )
    # Rare: only then look for the field that holds it. `find(92)` (a backslash) is a memchr,
    # several times cheaper than searching for the escape itself in every event.
    if raw.find(92) != -1 and b"\\u0000" in raw:
        field = _nul_field(event)
        if field is not None:
            return EventError(
                index=index, path=f"$[{index}].{field}", reason="NUL characters are not allowed"
            )
    return event


def _nul_field(event: Event) -> str | None:
    """The first field holding a NUL character (which PostgreSQL text cannot store)."""
    for name in event.__struct_fields__:
        value = getattr(event, name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and "\x00" in v for v in values):
            return name
    return None


# Counting the items of a large JSON array before splitting it: an 8 MiB body of `0,0,...`
# holds four million items, and splitting it into `Raw` parts would take about 60 bytes of
# memory per body byte. `_Counted` matches any object without decoding its fields, and the
# budget stops the count at the first item past the limit.
_budget: ContextVar[list[int]] = ContextVar("callpulse_batch_budget")


class _Counted(msgspec.Struct, gc=False):
    def __post_init__(self) -> None:
        left = _budget.get()
        left[0] -= 1
        if left[0] < 0:
            raise ValueError("over budget")


_items: Final = msgspec.json.Decoder(list[_Counted | str | int | float | bool | None])
_BOMS: Final = {  # the UTF-32 marks first: little-endian UTF-32 starts like UTF-16
    b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16",
}  # fmt: skip
_LINE: Final = re.compile(rb"\S[^\n]*")
_AT_BYTE: Final = re.compile(r"\(byte (\d+)\)")


def _too_many(max_events: int) -> EventError:
    return EventError(
        index=-1, path="$", reason=f"too many events in one request: more than {max_events}"
    )


def _count_items(body: bytes, max_events: int) -> EventError | None:
    """None if the JSON array `body` holds at most `max_events` items, else why not."""
    token = _budget.set([max_events])
    try:
        items = _items.decode(body)
    except msgspec.ValidationError as exc:
        if _budget.get()[0] < 0:
            return _too_many(max_events)
        return EventError(index=-1, path="$", reason=f"body is not a batch of events: {exc}")
    except msgspec.DecodeError as exc:
        return EventError(-1, "$", f"body is not a JSON array: {_malformed(exc, body)}")
    except UnicodeDecodeError as exc:
        return EventError(index=-1, path="$", reason=f"body is not valid UTF-8: {exc}")
    except RecursionError:
        return EventError(index=-1, path="$", reason=f"body is {TOO_DEEP}")
    finally:
        _budget.reset(token)
    return _too_many(max_events) if len(items) > max_events else None


def _malformed(exc: Exception, body: bytes) -> str:
    """msgspec's message, and what stands at the byte it names (`NaN`, a stray quote...)."""
    message = str(exc)
    at = _AT_BYTE.search(message)
    if at is not None:
        near = body[int(at.group(1)) : int(at.group(1)) + 12].decode("utf-8", "replace")
        message += f" at {near!r}"
        if near.startswith(("NaN", "Infinity", "-Infinity")):
            message += " (NaN and Infinity are not JSON numbers)"
    return message


def _encoding_error(body: bytes) -> EventError | None:
    for bom, name in _BOMS.items():
        if body.startswith(bom):
            return EventError(-1, "$", f"body must be UTF-8 JSON, not {name} (byte-order mark)")
    if b"\x00" in body:  # never valid in JSON text: most likely UTF-16 or UTF-32
        return EventError(-1, "$", "body must be UTF-8 JSON: it contains NUL bytes")
    return None


def split_batch(body: bytes, max_events: int | None = None) -> list[bytes] | EventError:
    """Split a JSON array or NDJSON body into the raw bytes of each event; with `max_events`,
    a body of more items is rejected as a whole before it is split (memory stays bounded).
    A UTF-8 byte-order mark is ignored (RFC 8259 allows it); other encodings are rejected."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    wrong_encoding = _encoding_error(body)
    if wrong_encoding is not None:
        return wrong_encoding
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        # Every item but the last is followed by a comma: few commas, few items.
        if max_events is not None and body.count(b",") >= max_events:
            too_many = _count_items(body, max_events)
            if too_many is not None:
                return too_many
        try:
            return [bytes(raw) for raw in _raw_list.decode(body)]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return EventError(-1, "$", f"body is not a JSON array: {_malformed(exc, body)}")
        except RecursionError:
            return EventError(index=-1, path="$", reason=f"body is {TOO_DEEP}")
    lines: list[bytes] = []
    for match in _LINE.finditer(body):  # non-blank lines, found without a Python loop
        lines.append(match.group().strip())
        if max_events is not None and len(lines) > max_events:
            return _too_many(max_events)
    return lines


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
