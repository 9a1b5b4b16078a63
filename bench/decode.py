"""Decode + validate one event: our path (msgspec) vs stdlib json + jsonschema vs
orjson + jsonschema-rs, over the same realistic event bytes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import jsonschema_rs
import orjson
from referencing import Registry, Resource

from services.kpi.events import decode_event

from .core import event_mix
from .table import Row, rate, repeat

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def _validators() -> tuple[dict[str, jsonschema.Draft202012Validator], dict[str, object]]:
    docs = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    registry: Registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in docs.values()
    )
    py = {
        name.removesuffix(".json"): jsonschema.Draft202012Validator(doc, registry=registry)
        for name, doc in docs.items()
        if name != "envelope.json"
    }
    envelope = docs["envelope.json"]
    rs = {
        name.removesuffix(".json"): jsonschema_rs.validator_for(
            doc, registry=jsonschema_rs.Registry([(envelope["$id"], envelope)])
        )
        for name, doc in docs.items()
        if name != "envelope.json"
    }
    return py, rs


def measure(quick: bool) -> list[Row]:
    raw = event_mix(0.2 if quick else 1.0)
    py, rs = _validators()
    times = 1 if quick else 5

    def ours() -> int:
        for b in raw:
            decode_event(b)
        return len(raw)

    def fast() -> int:
        for b in raw:
            doc = orjson.loads(b)
            rs[doc["event_type"]].validate(doc)  # type: ignore[attr-defined]
        return len(raw)

    sub = raw[: max(200, len(raw) // 20)]  # the stdlib path is ~100x slower: sample it

    def stdlib_sample() -> int:
        for b in sub:
            doc = json.loads(b)
            py[doc["event_type"]].validate(doc)
        return len(sub)

    us = {
        "ours": repeat(rate(ours), times),
        "stdlib": repeat(rate(stdlib_sample), times),
        "fast": repeat(rate(fast), times),
    }
    per_event = {k: 1e6 / v.median for k, v in us.items()}

    def spread(name: str) -> tuple[float, float]:
        slowest, fastest = us[name].spread
        return 1e6 / fastest, 1e6 / slowest

    return [
        Row("decode", "decode+validate: ours (msgspec) vs stdlib json+jsonschema", "µs/event",
            per_event["ours"], per_event["stdlib"], "stdlib", target=None, higher_is_better=False,
            spread=spread("ours"), baseline_spread=spread("stdlib")),
        Row("decode", "decode+validate: ours vs orjson+jsonschema-rs", "µs/event",
            per_event["ours"], per_event["fast"], "orjson+jsonschema-rs", target=1.0,
            higher_is_better=False, spread=spread("ours"), baseline_spread=spread("fast")),
    ]  # fmt: skip
