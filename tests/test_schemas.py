"""The published JSON Schemas (`schemas/*.json`) against the msgspec model: no drift.

The schema files are the contract; `services/kpi/events.py` is what the code decodes with.
These tests check that both describe the same events (same fields, types, bounds, enums,
required sets) and that both accept and reject the same inputs.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from referencing import Registry, Resource

from services.kpi.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    CallLegEvent,
    Envelope,
    Event,
    EventError,
    decode_event,
    encode_event,
)

Schema = dict[str, Any]
Facets = dict[str, Any]

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
BASE_URI = "https://callpulse.example/schemas/"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

DOCS: dict[str, Schema] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in SCHEMAS.glob("*.json")
}
ENVELOPE = DOCS.get("envelope.json", {})
TYPE_DOCS: dict[str, Schema] = {
    name.removesuffix(".json"): doc for name, doc in DOCS.items() if name != "envelope.json"
}
REGISTRY: Registry[Any] = Registry().with_resources(
    (doc["$id"], Resource.from_contents(doc)) for doc in DOCS.values() if "$id" in doc
)
EXAMPLES = [
    pytest.param(event_type, example, id=f"{event_type}[{index}]")
    for event_type, doc in sorted(TYPE_DOCS.items())
    for index, example in enumerate(doc.get("examples", []))
]

# jsonschema checks "date-time" only when the optional rfc3339-validator package is
# installed, and silently passes otherwise; this checker makes the check unconditional.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
FORMATS = jsonschema.FormatChecker()


def _is_rfc3339(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    if _RFC3339.fullmatch(instance) is None:
        return False
    # fromisoformat checks the calendar (no 30 February, no second 60, like msgspec does).
    datetime.fromisoformat(instance.upper())
    return True


FORMATS.checks("date-time", raises=ValueError)(_is_rfc3339)


@cache
def validator(event_type: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        TYPE_DOCS[event_type], registry=REGISTRY, format_checker=FORMATS
    )


def schema_errors(event_type: str, instance: object) -> list[str]:
    """jsonschema's complaints about `instance` under `<event_type>.json` ([] = valid)."""
    return [
        f"{error.json_path}: {error.message}"
        for error in validator(event_type).iter_errors(instance)
    ]


def decoded(instance: object) -> Event | EventError:
    """What the code's decoder makes of `instance` sent as JSON."""
    return decode_event(msgspec.json.encode(instance))


# --- the structural comparison ---------------------------------------------------------

_KEPT = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "format",
    "default",
)
_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
}
_NAIVE = "2026-11-23T09:00:00"
_WITH_OFFSETS = ("2026-11-23T09:00:00Z", "2026-11-23T09:00:00+05:45", "2026-11-23T09:00:00-03:30")


def facets(prop: Schema) -> Facets:
    """The comparable meaning of one property's schema: JSON types, allowed values, bounds.

    `T | None` is `"type": [T, "null"]` in the files and `anyOf: [T, null]` in msgspec's
    generated schema; both reduce to the same facets.
    """
    out: Facets = {"types": set()}
    for part in [prop, *prop.get("anyOf", [])]:
        declared = part.get("type")
        if declared is not None:
            out["types"] |= {declared} if isinstance(declared, str) else set(declared)
        values = [part["const"]] if "const" in part else part.get("enum")
        if values is not None:
            out["enum"] = frozenset(values)
            if declared is None:
                out["types"] |= {_JSON_TYPES[type(value)] for value in values}
        out.update((key, part[key]) for key in _KEPT if key in part)
        if "items" in part:
            out["items"] = facets(part["items"])
        if "pattern" in part:
            out["tz"] = _pattern_tz(part["pattern"])
    return out


def _pattern_tz(pattern: str) -> bool | str:
    """True if `pattern` demands an offset on a date-time, as msgspec's `tz=True` does."""
    naive = re.search(pattern, _NAIVE) is not None
    aware = all(re.search(pattern, value) for value in _WITH_OFFSETS)
    if aware and not naive:
        return True
    if naive and not aware:
        return False
    return f"pattern {pattern!r} neither requires nor forbids an offset"


def _intersect(left: Facets, right: Facets) -> Facets:
    """Facets of a property constrained by two parts of an allOf."""
    out = {**left, **right}
    if left["types"] and right["types"]:
        out["types"] = left["types"] & right["types"]
    if "enum" in left and "enum" in right:
        out["enum"] = left["enum"] & right["enum"]
    for key, tighter in (("minimum", max), ("maximum", min)):
        if key in left and key in right:
            out[key] = tighter(left[key], right[key])
    for key, tighter in (("minLength", max), ("maxLength", min), ("maxItems", min)):
        if key in left and key in right:
            out[key] = tighter(left[key], right[key])
    return out


def _parts(doc: Schema, registry: Registry[Any]) -> Iterator[Schema]:
    """`doc` and every schema it includes through allOf (refs resolved like jsonschema does)."""
    for sub in doc.get("allOf", []):
        if "$ref" in sub:
            resolved = registry.resolver(base_uri=doc.get("$id", "")).lookup(sub["$ref"])
            yield from _parts(resolved.contents, registry)
        else:
            yield from _parts(sub, registry)
    yield doc


def schema_side(
    doc: Schema, registry: Registry[Any] = REGISTRY
) -> tuple[dict[str, Facets], set[str]]:
    """Properties (as facets) and required names of a schema file, envelope merged in."""
    props: dict[str, Facets] = {}
    required: set[str] = set()
    for part in _parts(doc, registry):
        required |= set(part.get("required", []))
        for name, prop in part.get("properties", {}).items():
            own = facets(prop)
            props[name] = _intersect(props[name], own) if name in props else own
    return props, required


def _datetime_tz(info: msgspec.inspect.Type) -> bool | None:
    if isinstance(info, msgspec.inspect.DateTimeType):
        return info.tz
    if isinstance(info, msgspec.inspect.UnionType):
        return next((_datetime_tz(t) for t in info.types if _datetime_tz(t) is not None), None)
    return None


def model_side(cls: type[Envelope]) -> tuple[dict[str, Facets], set[str]]:
    """Properties (as facets) and required names of a msgspec event class."""
    generated = msgspec.json.schema(cls)
    body = generated["$defs"][generated["$ref"].rsplit("/", 1)[1]]
    props = {name: facets(prop) for name, prop in body["properties"].items()}
    # msgspec declares schema_version a plain str; decode_event then rejects any other value.
    props["schema_version"]["enum"] = frozenset({SCHEMA_VERSION})
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        tz = _datetime_tz(field.type)
        if tz is not None:
            props[field.encode_name]["tz"] = tz
    return props, set(body["required"])


def _show(value: object) -> str:
    if isinstance(value, set | frozenset):
        return repr(sorted(value, key=repr))
    return repr(value)


def drift(
    event_type: str, doc: Schema | None, cls: type[Envelope], registry: Registry[Any] = REGISTRY
) -> list[str]:
    """Every difference between a schema file and a model class, as `<type>.<field>: ...`."""
    if doc is None:
        return [f"{event_type}: no schemas/{event_type}.json for model {cls.__name__}"]
    schema_props, schema_required = schema_side(doc, registry)
    model_props, model_required = model_side(cls)
    problems: list[str] = []
    for name in sorted(schema_props.keys() | model_props.keys()):
        where = f"{event_type}.{name}"
        if name not in model_props:
            problems.append(f"{where}: in the schema but not in model {cls.__name__}")
            continue
        if name not in schema_props:
            problems.append(f"{where}: in model {cls.__name__} but not in the schema")
            continue
        schema, model = schema_props[name], model_props[name]
        for key in sorted(schema.keys() | model.keys()):
            if schema.get(key, ...) != model.get(key, ...):
                problems.append(
                    f"{where}: {key} is {_show(schema.get(key, '(unset)'))} in the schema, "
                    f"{_show(model.get(key, '(unset)'))} in the model"
                )
        if (name in schema_required) != (name in model_required):
            side = "schema" if name in schema_required else "model"
            problems.append(f"{where}: required only in the {side}")
    return problems


# --- a. the files are valid schemas, one per event type ----------------------------------


def test_one_schema_file_per_event_type() -> None:
    assert "envelope.json" in DOCS
    assert set(TYPE_DOCS) == set(EVENT_TYPES)
    assert set(ENVELOPE["properties"]["event_type"]["enum"]) == set(EVENT_TYPES)


@pytest.mark.parametrize("name", sorted(DOCS))
def test_file_is_a_valid_2020_12_schema(name: str) -> None:
    doc = DOCS[name]
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == DRAFT_2020_12
    assert doc["$id"] == BASE_URI + name
    assert doc.get("description"), f"{name}: no description"
    undocumented = [
        f"{name}: {prop}"
        for prop, sub in doc.get("properties", {}).items()
        if not sub.get("description")
    ]
    assert undocumented == []
    if name != "envelope.json":
        assert {"$ref": "envelope.json"} in doc["allOf"]
        assert doc["properties"]["event_type"]["const"] == name.removesuffix(".json")
        assert doc.get("examples"), f"{name}: no examples"


def test_date_time_format_is_really_checked() -> None:
    good, naive, impossible = "2026-11-23T09:00:00.5+05:30", _NAIVE, "2026-02-30T09:00:00Z"
    assert FORMATS.conforms(good, "date-time")
    assert not FORMATS.conforms(naive, "date-time")
    assert not FORMATS.conforms(impossible, "date-time")


# --- b. the examples are valid on both sides --------------------------------------------


@pytest.mark.parametrize(("event_type", "example"), EXAMPLES)
def test_example_is_valid_for_schema_and_decoder(event_type: str, example: Schema) -> None:
    assert schema_errors(event_type, example) == []
    event = decoded(example)
    assert isinstance(event, EVENT_TYPES[event_type]), event
    for name, value in example.items():
        if name == "occurred_at":
            assert event.occurred_at == datetime.fromisoformat(value)
        elif name != "event_type":
            assert getattr(event, name) == value, name
    # What the code emits for the event conforms to the published schema too.
    assert schema_errors(event_type, msgspec.json.decode(encode_event(event))) == []


# --- c. no drift between schema files and model -------------------------------------------


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_schema_and_model_describe_the_same_event(event_type: str) -> None:
    problems = drift(event_type, TYPE_DOCS.get(event_type), EVENT_TYPES[event_type])
    assert problems == [], "\n".join(problems)


def _drop_property(doc: Schema) -> None:
    del doc["properties"]["priority"]


def _retype_property(doc: Schema) -> None:
    doc["properties"]["priority"]["type"] = "number"


def _make_nullable(doc: Schema) -> None:
    doc["properties"]["priority"]["type"] = ["integer", "null"]


def _loosen_bound(doc: Schema) -> None:
    doc["properties"]["visit"]["maximum"] = 999


def _drop_required(doc: Schema) -> None:
    doc["required"].remove("queue_id")


def _add_property(doc: Schema) -> None:
    doc["properties"]["skill"] = {"type": "string", "description": "a skill"}


def _narrow_enum(doc: Schema) -> None:
    doc["properties"]["event_type"]["const"] = "call.answered"


def _drop_offset_pattern(doc: Schema) -> None:
    doc["properties"]["occurred_at"] = {"type": "string", "format": "date-time"}


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_drop_property, "priority"),
        (_retype_property, "priority"),
        (_make_nullable, "priority"),
        (_loosen_bound, "visit"),
        (_drop_required, "queue_id"),
        (_add_property, "skill"),
        (_narrow_enum, "event_type"),
        (_drop_offset_pattern, "occurred_at"),
    ],
)
def test_drift_check_catches_a_changed_schema(mutate: Callable[[Schema], None], field: str) -> None:
    doc = copy.deepcopy(TYPE_DOCS["call.queued"])
    if field == "occurred_at":
        # occurred_at lives in the envelope: change a copy of it and resolve against that.
        envelope = copy.deepcopy(ENVELOPE)
        mutate(envelope)
        registry = REGISTRY.with_resource(envelope["$id"], Resource.from_contents(envelope))
    else:
        mutate(doc)
        registry = REGISTRY
    problems = drift("call.queued", doc, EVENT_TYPES["call.queued"], registry)
    assert any(p.startswith(f"call.queued.{field}:") for p in problems), problems


class _RenamedField(CallLegEvent, frozen=True, kw_only=True, tag="call.queued"):
    """call.queued with `priority` renamed, as a careless edit of the model would do."""

    caller_key: str | None = None
    urgency: int = 0


def test_drift_check_catches_a_changed_model() -> None:
    problems = drift("call.queued", TYPE_DOCS["call.queued"], _RenamedField)
    assert any(p.startswith("call.queued.priority: in the schema") for p in problems)
    assert any(p.startswith("call.queued.urgency: in model") for p in problems)
    assert any(p.startswith("call.queued.caller_key: maxLength") for p in problems)


# --- d. both sides reject the same bad events --------------------------------------------


def _rejected_by_decoder(instance: object, path: str) -> str | None:
    """None if the decoder rejects `instance` at `path`, else what it did instead."""
    result = decoded(instance)
    if not isinstance(result, EventError):
        return f"decoder accepted it as {type(result).__name__}"
    if result.path != path:
        return f"decoder rejected it at {result.path} ({result.reason}), not at {path}"
    return None


@pytest.mark.parametrize(("event_type", "example"), EXAMPLES)
def test_missing_required_field_is_rejected_by_both(event_type: str, example: Schema) -> None:
    _, required = schema_side(TYPE_DOCS[event_type])
    problems = []
    for name in sorted(required):
        without = {key: value for key, value in example.items() if key != name}
        if not any(repr(name) in error for error in schema_errors(event_type, without)):
            problems.append(f"{event_type}.{name} missing: schema accepted it")
        if (wrong := _rejected_by_decoder(without, f"$[0].{name}")) is not None:
            problems.append(f"{event_type}.{name} missing: {wrong}")
    assert problems == [], "\n".join(problems)


def _string_paths(value: object, path: str) -> Iterator[str]:
    """JSON paths (as the decoder writes them) of every string inside `value`."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _string_paths(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _string_paths(item, f"{path}[{index}]")


def _replaced(instance: Any, path: str, value: object) -> Any:
    """A deep copy of `instance` with the element at JSON path `path` set to `value`."""
    out = copy.deepcopy(instance)
    steps = re.findall(r"\.([^.\[]+)|\[(\d+)\]", path.removeprefix("$[0]"))
    target = out
    for key, index in steps[:-1]:
        target = target[key] if key else target[int(index)]
    key, index = steps[-1]
    target[key if key else int(index)] = value
    return out


@pytest.mark.parametrize(("event_type", "example"), EXAMPLES)
def test_integer_in_place_of_a_string_is_rejected_by_both(event_type: str, example: Schema) -> None:
    problems = []
    for path in _string_paths(example, "$[0]"):
        bad = _replaced(example, path, 7)
        if not schema_errors(event_type, bad):
            problems.append(f"{event_type} {path} = 7: schema accepted it")
        if (wrong := _rejected_by_decoder(bad, path)) is not None:
            problems.append(f"{event_type} {path} = 7: {wrong}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("event_type", "example"), EXAMPLES)
def test_unknown_schema_version_is_rejected_by_both(event_type: str, example: Schema) -> None:
    future = example | {"schema_version": "2.0"}
    assert any("schema_version" in error for error in schema_errors(event_type, future))
    result = decoded(future)
    assert isinstance(result, EventError), result
    assert result.path == "$[0].schema_version"
    assert "unsupported schema_version '2.0'" in result.reason


def _boundary_values(name: str, prop: Facets) -> Iterator[tuple[object, bool]]:
    """(value, valid?) pairs on and just past every bound and enum of one property."""
    types = prop["types"]
    step = 1 if "integer" in types else 0.5
    if "minimum" in prop:
        yield prop["minimum"], True
        yield prop["minimum"] - step, False
    if "maximum" in prop:
        yield prop["maximum"], True
        yield prop["maximum"] + step, False
    if "minLength" in prop:
        yield "k" * prop["minLength"], True
        if prop["minLength"] > 0:
            yield "k" * (prop["minLength"] - 1), False
    if "maxLength" in prop:
        yield "k" * prop["maxLength"], True
        yield "k" * (prop["maxLength"] + 1), False
    if "maxItems" in prop:
        yield ["q"] * prop["maxItems"], True
        yield ["q"] * (prop["maxItems"] + 1), False
    if "enum" in prop:
        yield from ((value, True) for value in sorted(prop["enum"]))
        yield f"not-a-{name}", False
    if "null" in types:
        yield None, True
    if "boolean" not in types:
        yield True, False


@pytest.mark.parametrize(("event_type", "example"), EXAMPLES)
def test_bounds_and_enums_agree(event_type: str, example: Schema) -> None:
    props, _ = schema_side(TYPE_DOCS[event_type])
    problems = []
    for name, prop in sorted(props.items()):
        for value, valid in _boundary_values(name, prop):
            candidate = example | {name: value}
            by_schema = not schema_errors(event_type, candidate)
            by_decoder = not isinstance(decoded(candidate), EventError)
            if by_schema != valid or by_decoder != valid:
                problems.append(
                    f"{event_type}.{name} = {value!r:.40}: expected valid={valid}, "
                    f"schema says {by_schema}, decoder says {by_decoder}"
                )
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("occurred_at", "valid"),
    [
        ("2026-11-23T09:00:00Z", True),
        ("2026-11-23t09:00:00z", True),
        ("2026-11-23T09:00:00.123456+05:45", True),
        ("2026-11-23T09:00:00-00:00", True),
        (_NAIVE, False),
        ("2026-11-23T09:00:00.123", False),
        ("2026-11-23", False),
        ("2026-02-30T09:00:00Z", False),
        ("2026-11-23T24:00:00Z", False),
        ("2026-11-23T09:00:00+05", False),
        ("yesterday", False),
    ],
)
def test_occurred_at_agrees(occurred_at: str, valid: bool) -> None:
    example = TYPE_DOCS["call.abandoned"]["examples"][0] | {"occurred_at": occurred_at}
    assert (not schema_errors("call.abandoned", example)) == valid
    assert (not isinstance(decoded(example), EventError)) == valid


@pytest.mark.parametrize(("event_type", "example"), EXAMPLES)
def test_unknown_extra_fields_are_accepted_by_both(event_type: str, example: Schema) -> None:
    extended = example | {"vendor_extension": {"skill": "claims", "wrap_code": 12}}
    assert schema_errors(event_type, extended) == []
    assert isinstance(decoded(extended), EVENT_TYPES[event_type])
