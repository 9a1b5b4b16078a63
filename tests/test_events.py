import msgspec
import pytest

from services.kpi.events import EventError, decode_batch
from tests.factories import event_dict


def body(*events: object) -> bytes:
    return msgspec.json.encode(list(events))


def test_valid_neighbours_survive_a_bad_event() -> None:
    good = event_dict("call.queued", 0, call_id="c1", queue_id="q1")
    bad = event_dict("call.answered", 1, call_id="c1", queue_id="q1")  # no agent_id
    events, errors = decode_batch(body(good, bad, good))
    assert [e.event_id for e in events] == [good["event_id"]] * 2
    assert errors == [EventError(1, "$[1].agent_id", "required field is missing")]


@pytest.mark.parametrize(
    ("change", "path", "reason_part"),
    [
        ({"priority": "high"}, "$[0].priority", "Expected `int`, got `str`"),
        ({"occurred_at": "2026-11-23T09:00:00"}, "$[0].occurred_at", "timezone"),
        ({"event_type": "call.teleported"}, "$[0].event_type", "unknown event_type"),
        ({"schema_version": "9.9"}, "$[0].schema_version", "unsupported schema_version '9.9'"),
        ({"tenant_id": ""}, "$[0].tenant_id", "length >= 1"),
        ({"priority": 12}, "$[0].priority", "<= 9"),
    ],
)
def test_rejections_name_index_path_and_reason(
    change: dict[str, object], path: str, reason_part: str
) -> None:
    ev = event_dict("call.queued", 0, call_id="c1", queue_id="q1") | change
    events, errors = decode_batch(body(ev))
    assert events == []
    assert len(errors) == 1
    assert errors[0].path == path
    assert reason_part in errors[0].reason


def test_ndjson_and_broken_lines() -> None:
    good = msgspec.json.encode(event_dict("call.queued", 0, call_id="c", queue_id="q"))
    events, errors = decode_batch(good + b"\n{not json\n\n" + good + b"\n")
    assert len(events) == 2
    assert [(e.index, e.path) for e in errors] == [(1, "$[1]")]


def test_unknown_version_without_other_fields_is_a_clear_rejection() -> None:
    _, errors = decode_batch(b'[{"schema_version": "2.0"}]')
    assert errors[0].path == "$[0].schema_version"
    assert "unsupported" in errors[0].reason


def test_body_that_is_not_an_array_or_ndjson() -> None:
    events, errors = decode_batch(b"[1, 2")
    assert events == [] and errors[0].index == -1
