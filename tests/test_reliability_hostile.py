"""Hostile input on POST /v1/events: malformed, truncated, oversized and deeply nested bodies,
huge numbers, NaN, bad encodings, wrong content types, 10k-event batches, and batches that
mix valid and invalid events.

Every answer is a 4xx with a reason that names the event (index), the field (JSON path) and
what is wrong; rejected events are written nowhere while their valid neighbours are stored
exactly (compared with tests/oracle.py `batch`, never with the product's own figures); the
service stays healthy and its memory bounded across thousands of hostile requests, in
process, as a real `callpulse run` process, and on the distributed ingest (mock Kafka).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.store.keys import new_key
from tests.conftest import ROOT, Process, Service
from tests.harness import read_sqlite
from tests.kafka import MockCluster
from tests.oracle import batch, nonzero
from tests.reliability import record

pytestmark = pytest.mark.reliability

BASE = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MIB = 1024 * 1024
_ids = itertools.count()


def ev(kind: str, at: datetime, tenant: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema_version": "1.0", "event_id": f"h{next(_ids)}", "event_type": kind,
        "occurred_at": at.isoformat(), "tenant_id": tenant, "source": "hostile", **fields,
    }  # fmt: skip


def legs(tenant: str, calls: int, start: datetime = BASE) -> list[dict[str, Any]]:
    """Complete answered or abandoned legs over a few minutes, with caller numbers."""
    out: list[dict[str, Any]] = []
    for n in range(calls):
        at = start + timedelta(seconds=7 * n)
        c = {"call_id": f"c{n}", "queue_id": f"q{n % 3}"}
        out.append(ev("call.queued", at, tenant, caller_key=f"+3361234{n:04d}", **c))
        if n % 4 == 3:
            out.append(ev("call.abandoned", at + timedelta(seconds=n % 50), tenant, **c))
            continue
        t_ans = at + timedelta(seconds=n % 40)
        out.append(ev("call.answered", t_ans, tenant, agent_id=f"a{n % 5}", **c))
        out.append(ev("call.ended", t_ans + timedelta(seconds=60 + n % 90), tenant, **c))
        out.append(ev("call.wrapup_ended", t_ans + timedelta(seconds=200), tenant, **c))
    return out


def array(events: list[Any]) -> bytes:
    return msgspec.json.encode(events)


# -- invalid events: each mutation of a valid event, and the field a rejection must name ----


def _replace(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw, (old, raw)
    return raw.replace(old, new, 1)


def _with(**fields: Any) -> Callable[[dict[str, Any]], bytes]:
    return lambda e: msgspec.json.encode({**e, **fields})


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    # name: (valid event -> invalid bytes, the path after `$[i]` the rejection must name)
    "missing field": (lambda e: msgspec.json.encode({k: v for k, v in e.items()
                                                     if k != "call_id"}), ".call_id"),
    "wrong type": (_with(call_id=12), ".call_id"),
    "huge integer": (lambda e: _replace(_with(visit=1)(e), b'"visit":1', b'"visit":'
                                        + str(2**200).encode()), ".visit"),
    "1e400": (lambda e: _replace(_with(visit=1)(e), b'"visit":1', b'"visit":1e400'), ".visit"),
    "negative": (_with(visit=-1), ".visit"),
    "unknown type": (_with(event_type="call.teleported"), ".event_type"),
    "naive time": (_with(occurred_at="2026-11-23T09:00:00"), ".occurred_at"),
    "not a time": (_with(occurred_at="yesterday"), ".occurred_at"),
    "NUL character": (_with(call_id="c\x00x"), ".call_id"),
    "too long": (_with(call_id="c" * 129), ".call_id"),
    "other tenant": (_with(tenant_id="someone-else"), ".tenant_id"),
    "schema version": (_with(schema_version="9.9"), ".schema_version"),
    "empty id": (_with(event_id=""), ".event_id"),
    "invalid UTF-8": (lambda e: _replace(msgspec.json.encode(e), b'"source":"hostile"',
                                         b'"source":"ho\xff\xfestile"'), ""),
    "not an object": (lambda e: b'"' + e["event_id"].encode() + b'"', ""),
    "nested": (lambda e: msgspec.json.encode({**e, "extra": [[[[[[{"a": [1]}]]]]]],
                                              "visit": "x"}), ".visit"),
}  # fmt: skip


def invalid(event: dict[str, Any], mutation: str) -> tuple[bytes, str]:
    """An invalid variant of `event` (new id, a minute earlier: were it accepted, the leg's
    figures would change and the oracle comparison would fail)."""
    moved = {**event, "event_id": f"bad{next(_ids)}",
             "occurred_at": (datetime.fromisoformat(event["occurred_at"])
                             - timedelta(minutes=1)).isoformat()}  # fmt: skip
    make, path = MUTATIONS[mutation]
    return make(moved), path


# -- whole-body hostile cases ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    body: Callable[[], bytes]
    status: int
    says: tuple[str, ...]  # all in the error message or the first rejection's path + reason
    content_type: str | None = "application/json"


def _one(tenant: str) -> dict[str, Any]:
    return ev("call.queued", BASE, tenant, call_id="c", queue_id="q")


def _field(tenant: str, field: str, literal: bytes) -> bytes:
    tag = f'"{field}":'.encode()
    return _replace(array([_one(tenant) | {field: 1}]), tag + b"1", tag + literal)


def hostile_cases(tenant: str, limit: int) -> list[Case]:
    """Bodies no event of which may be stored; `limit` is the service's body limit."""
    one = array([_one(tenant)])
    many = array(legs(tenant, 3000))  # 10,500 events
    return [
        Case("malformed JSON", lambda: b"[{not json", 422, ("$", "not a JSON array")),
        Case("truncated array", lambda: one[:-25], 422, ("not a JSON array", "truncated")),
        Case("truncated line", lambda: one[1:-25], 422, ("$[0]", "truncated"),
             "application/x-ndjson"),
        Case("empty body", lambda: b"", 422, ("no events",)),
        Case("whitespace only", lambda: b" \n\t\r\n" * 1000, 422, ("no events",)),
        Case("JSON null", lambda: b"null", 422, ("$[0]", "object")),
        Case("JSON number", lambda: b"12", 422, ("$[0]", "object")),
        Case("empty object", lambda: b"{}", 422, ("$[0]", "event_type")),
        Case("over the body limit", lambda: b"[" + b" " * limit + b"]", 413,
             ("payload_too_large", str(limit))),
        Case("100k nested arrays", lambda: b"[" * 100_000 + b"]" * 100_000, 422,
             ("nested too deeply",)),
        Case("100k nested objects in an event", lambda: _replace(
            msgspec.json.encode(_one(tenant) | {"x": 1}), b'"x":1',
            b'"x":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000), 422,
             ("$[0]", "nested too deeply"), "application/x-ndjson"),
        Case("1e400 in an integer field", lambda: _field(tenant, "priority", b"1e400"), 422,
             ("$[0].priority", "out of range")),
        Case("2**200 in an integer field",
             lambda: _field(tenant, "priority", str(2**200).encode()), 422,
             ("$[0].priority", "<= 9")),
        Case("-2**200 in an integer field",
             lambda: _field(tenant, "visit", str(-(2**200)).encode()), 422, ("$[0].visit",)),
        Case("NaN", lambda: _field(tenant, "priority", b"NaN"), 422, ("NaN",)),
        Case("Infinity", lambda: _field(tenant, "priority", b"Infinity"), 422, ("Infinity",)),
        Case("NaN on a line", lambda: _field(tenant, "priority", b"NaN")[1:-1], 422,
             ("$[0]", "malformed"), "application/x-ndjson"),
        Case("invalid UTF-8", lambda: _replace(one, b'"source":"hostile"', b'"source":"\xc3("'),
             422, ("$[0]", "UTF-8")),
        Case("UTF-16 with BOM", lambda: "\ufeff".encode("utf-16-le") + one.decode()
             .encode("utf-16-le"), 422, ("UTF-16",)),
        Case("UTF-16 without BOM", lambda: one.decode().encode("utf-16-be"), 422,
             ("NUL bytes",)),
        Case("UTF-32", lambda: one.decode().encode("utf-32"), 422, ("UTF-32",)),
        Case("NUL byte", lambda: one[:40] + b"\x00" + one[40:], 422, ("NUL bytes",)),
        Case("NUL character in an id", lambda: array([_one(tenant) | {"queue_id": "q\x00"}]),
             422, ("$[0].queue_id", "NUL")),
        Case("lone surrogate", lambda: _replace(one, b'"source":"hostile"',
                                                b'"source":"\\udc00"'), 422, ("$",)),
        Case("HTML form", lambda: b"a=1&b=2", 415, ("application/x-www-form-urlencoded",),
             "application/x-www-form-urlencoded"),
        Case("multipart upload", lambda: one, 415, ("multipart/form-data",),
             "multipart/form-data; boundary=x"),
        Case("XML", lambda: b"<events/>", 415, ("application/xml",), "application/xml"),
        Case("JSON in UTF-16 charset", lambda: one, 415, ("UTF-8",),
             "application/json; charset=utf-16"),
        Case("10,500 events", lambda: many, 422, ("too many events", "10000")),
        Case("limit-sized body of zeros", lambda: b"[" + b"0," * (limit // 2 - 2) + b"0]",
             422, ("too many events",)),
        Case("limit-sized body of short strings",
             lambda: b"[" + b'"ab",' * (limit // 5 - 2) + b'"a"]', 422, ("too many events",)),
        Case("limit-sized body of empty objects",
             lambda: b"[" + b"{}," * (limit // 3 - 2) + b"{}]", 422, ("too many events",)),
        Case("limit-sized body of lines", lambda: b"{}\n" * (limit // 3 - 1), 422,
             ("too many events",), "application/x-ndjson"),
        Case("arrays in a large batch", lambda: b"[" + b"[]," * 20_000 + b"[]]", 422,
             ("$[0]", "array")),
        Case("unknown event type", lambda: array([_one(tenant) | {"event_type": "x.y"}]), 422,
             ("$[0].event_type", "unknown event_type")),
        Case("another tenant", lambda: array([_one("not-" + tenant)]), 422,
             ("$[0].tenant_id", "tenant")),
    ]  # fmt: skip


def message_of(response: httpx.Response) -> str:
    """The error message, or every rejection as `path: reason`."""
    out = response.json()
    if "error" in out:
        return f"{out['error']['code']}: {out['error']['message']}"
    return "; ".join(f"{r['path']}: {r['reason']}" for r in out["rejected"])


def check_rejected(case: Case, response: httpx.Response) -> None:
    assert response.status_code == case.status, (case.name, response.status_code, response.text)
    text = message_of(response)
    assert all(word in text for word in case.says), (case.name, text[:300])
    out = response.json()
    if "rejected" in out:
        assert out["accepted"] == 0 and out["duplicates"] == 0, (case.name, out)
        for r in out["rejected"]:
            assert r["reason"] and r["path"].startswith("$"), (case.name, r)
            assert r["index"] == -1 or r["path"].startswith(f"$[{r['index']}]"), (case.name, r)


def headers_for(case: Case, key: dict[str, str]) -> dict[str, str]:
    return key | ({"Content-Type": case.content_type} if case.content_type else {})


def assert_store_equals_oracle(
    queue: dict[Any, Any], agent: dict[Any, Any], events: list[dict[str, Any]], tenant: str
) -> int:
    """The tenant's stored buckets equal the batch recomputation of `events`; returns the
    number of buckets compared."""
    want_q, want_a = (nonzero(m) for m in batch(events))
    got_q = nonzero({k: v for k, v in queue.items() if k[0] == tenant})
    got_a = nonzero({k: v for k, v in agent.items() if k[0] == tenant})
    assert got_q == want_q
    assert got_a == want_a
    return len(want_q) + len(want_a)


# -- in process: every case, then the exact 10k batch -----------------------------------------


async def test_hostile_bodies_get_a_4xx_naming_the_problem_and_write_nothing(
    service: Service,
) -> None:
    tenant = "hostile"
    key = service.key(tenant, "ingest")
    limit = service.embedded.settings.max_body_bytes
    cases = hostile_cases(tenant, limit)
    for case in cases:
        r = await service.client.post("/v1/events", content=case.body(),
                                      headers=headers_for(case, key))  # fmt: skip
        check_rejected(case, r)
    # A body over the limit without a Content-Length (chunked) is cut off as well.

    async def chunks() -> Any:
        for _ in range(limit // MIB + 2):
            yield b" " * MIB

    r = await service.client.post("/v1/events", content=chunks(), headers=key)
    assert r.status_code == 413, r.text
    assert service.embedded.log.end_offset() == 0  # nothing was written
    assert (await service.client.get("/healthz")).status_code == 200

    # The largest batch allowed, exactly 10,000 events, is stored exactly.
    events = legs(tenant, 3000)[:10_000]
    r = await service.client.post("/v1/events", content=array(events), headers=key)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 10_000, "duplicates": 0, "rejected": []}
    await service.settle()
    store = service.embedded.store
    compared = assert_store_equals_oracle(
        store.all_queue_buckets(), store.all_agent_buckets(), events, tenant
    )
    record("hostile", "in-process ingest: hand-made hostile bodies", {
        "cases": len(cases) + 1, "all_4xx": True, "events_written_by_hostile_bodies": 0,
        "largest_batch_events": len(events), "buckets_equal_to_oracle": compared,
    })  # fmt: skip


# -- in process, hypothesis: mixed batches of valid and invalid events -----------------------


@pytest.fixture(scope="module")
def embedded_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Embedded, str]]:
    data: Path = tmp_path_factory.mktemp("hostile") / "data"
    embedded = Embedded(EmbeddedSettings(data_dir=data, correction_horizon_s=40 * 86_400))
    yield embedded, "per-example keys"
    if embedded.alerts is not None:
        embedded.alerts.close()
    embedded.store.close()
    embedded.log.close()


_tenants = itertools.count()
MIXED: list[dict[str, Any]] = []


async def post_in_process(embedded: Embedded, body: bytes, headers: dict[str, str]) -> Any:
    transport = httpx.ASGITransport(app=embedded.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/v1/events", content=body, headers=headers)


Mixed = tuple[str, list[dict[str, Any]], list[bytes], dict[int, str], bool]


@st.composite
def mixed_batches(draw: st.DrawFn) -> Mixed:
    """(tenant, valid events, the body's items in order, {index: path of the rejection}, ndjson)."""
    tenant = f"mix{next(_tenants)}"
    valid = legs(
        tenant, draw(st.integers(1, 12)), BASE + timedelta(minutes=draw(st.integers(0, 50)))
    )
    plan = draw(st.lists(st.tuples(st.integers(0, len(valid) - 1),
                                   st.sampled_from(sorted(MUTATIONS))), max_size=12))  # fmt: skip
    items: list[bytes | tuple[bytes, str]] = [msgspec.json.encode(e) for e in valid]
    for source, mutation in plan:
        items.insert(draw(st.integers(0, len(items))), invalid(valid[source], mutation))
    ndjson = draw(st.booleans())
    body: list[bytes] = []
    bad: dict[int, str] = {}
    for index, item in enumerate(items):
        if isinstance(item, tuple):
            bad[index] = f"$[{index}]{item[1]}"
            body.append(item[0])
        else:
            body.append(item)
    return tenant, valid, body, bad, ndjson


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(case=mixed_batches())
def test_mixed_batches_store_the_valid_events_exactly(
    embedded_app: tuple[Embedded, str],
    case: Mixed,
) -> None:
    embedded, _ = embedded_app
    tenant, valid, items, bad, ndjson = case
    token, key = new_key(tenant, "ingest", "hostile", int(time.time() * 1000))
    embedded.store.put_key(key)
    body = b"\n".join(items) if ndjson else b"[" + b",".join(items) + b"]"
    ctype = "application/x-ndjson" if ndjson else "application/json"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": ctype}
    r = asyncio.run(post_in_process(embedded, body, auth))
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["accepted"] == len(valid) and out["duplicates"] == 0, out
    got = {x["index"]: x["path"] for x in out["rejected"]}
    assert got.keys() == bad.keys(), (got, bad)
    for index, path in bad.items():
        assert got[index] == path, (index, got[index], path, items[index][:200])
    assert all(x["reason"] for x in out["rejected"])
    while embedded.aggregator.lag():
        embedded.aggregator.step()
    embedded.aggregator.flush()
    store = embedded.store
    assert_store_equals_oracle(store.all_queue_buckets(), store.all_agent_buckets(), valid, tenant)
    MIXED.append({"items": len(items), "invalid": len(bad), "ndjson": ndjson})


def test_mixed_batches_figures() -> None:
    """Records what the hypothesis test above sent (runs after it, in file order)."""
    assert MIXED, "run together with test_mixed_batches_store_the_valid_events_exactly"
    record("hostile", "in-process ingest: hypothesis mixed batches, stored vs oracle", {
        "batches": len(MIXED), "items": sum(m["items"] for m in MIXED),
        "invalid_events": sum(m["invalid"] for m in MIXED),
        "ndjson_batches": sum(m["ndjson"] for m in MIXED),
        "mutations": sorted(MUTATIONS), "all_valid_stored_exactly": True,
    })  # fmt: skip


# -- a real `callpulse run` process: thousands of hostile requests, RSS bounded --------------


def status_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def random_hostile(rng: random.Random, tenant: str, pool: list[dict[str, Any]]) -> bytes:
    """A body none of whose events is valid: random bytes, mutated events, deep nesting,
    truncation."""
    kind = rng.randrange(5)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 4096))
    if kind == 1:
        items = [invalid(rng.choice(pool), rng.choice(sorted(MUTATIONS)))[0]
                 for _ in range(rng.randrange(1, 50))]  # fmt: skip
        return b"[" + b",".join(items) + b"]" if rng.random() < 0.5 else b"\n".join(items)
    if kind == 2:
        depth = rng.randrange(500, 200_000)
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        return b"[" + opener * depth + b"1" + closer * depth + b"]"
    if kind == 3:
        body = array(rng.sample(pool, 20))
        return body[: rng.randrange(1, len(body) - 2)]
    return rng.choice([b"[1e400]", b"[NaN]", b"[-Infinity]", b'[{"visit":' + b"9" * 5000 + b"}]",
                       b"\xff\xfe" + rng.randbytes(64), b"[" + b"\x00" * 100 + b"]"])  # fmt: skip


def test_real_process_survives_thousands_of_hostile_requests(
    process: Callable[[str], Process], tmp_path: Path
) -> None:
    p = process("run")
    tenant = "proc"
    p.data_dir.mkdir(parents=True)
    token = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", "--role", "ingest",
         "--tenant", tenant, "--data-dir", str(p.data_dir)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    p.start()
    assert p.proc is not None
    pid = p.proc.pid
    auth = {"Authorization": f"Bearer {token}"}
    limit = 8 * MIB  # `callpulse run`'s default body limit
    cases = hostile_cases(tenant, limit)
    rng = random.Random(11)
    pool = legs(tenant, 40)
    statuses: dict[int, int] = {}
    samples: list[int] = []
    sent = 0
    with httpx.Client(base_url=p.url, timeout=60) as client:

        def send(body: bytes, headers: dict[str, str]) -> httpx.Response:
            nonlocal sent
            r = client.post("/v1/events", content=body, headers=headers)
            sent += 1
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            assert 400 <= r.status_code < 500, (r.status_code, r.text[:300], body[:100])
            return r

        rounds = []
        for _ in range(2):
            for case in cases:  # every hand-made case, the 8 MiB ones included
                check_rejected(case, send(case.body(), headers_for(case, auth)))
            for _ in range(1500):
                send(random_hostile(rng, tenant, pool), auth)
                if sent % 100 == 0:
                    samples.append(status_kb(pid)["VmRSS"])
            rounds.append(status_kb(pid))
            assert client.get("/healthz").status_code == 200
        # After all that, a valid batch is accepted and stored exactly, and nothing else is.
        valid = legs(tenant, 300)
        r = client.post("/v1/events", content=array(valid), headers=auth)
        assert r.status_code == 202 and r.json()["accepted"] == len(valid), r.text
        p.wait_caught_up()
    final = status_kb(pid)
    p.kill(15)  # SIGTERM: the aggregator checkpoints and flushes on the way out
    stored = read_sqlite(p.data_dir)
    compared = assert_store_equals_oracle(stored.queue, stored.agent, valid, tenant)
    assert {k[0] for k in stored.legs} == {tenant}
    assert len(stored.legs) == 300
    first, second = rounds
    figures = {
        "requests": sent, "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "hand_cases_per_round": len(cases), "random_bodies_per_round": 1500,
        "rss_after_round1_mib": round(first["VmRSS"] / 1024, 1),
        "rss_after_round2_mib": round(second["VmRSS"] / 1024, 1),
        "rss_final_mib": round(final["VmRSS"] / 1024, 1),
        "rss_peak_mib": round(final["VmHWM"] / 1024, 1),
        "rss_sample_max_mib": round(max(samples) / 1024, 1),
        "valid_events_after": len(valid), "buckets_equal_to_oracle": compared,
    }  # fmt: skip
    record("hostile", "callpulse run process: hostile requests, memory", figures)
    print(figures)
    # Bounded: the second round (same kinds of request) does not grow the process much
    # more, and no request made it balloon (an 8 MiB body of tiny items used to take
    # over 500 MiB while being split).
    assert second["VmRSS"] - first["VmRSS"] < 40 * 1024, figures
    assert final["VmHWM"] < 400 * 1024, figures


# -- the distributed ingest: `callpulse ingest`'s app over the mock broker --------------------


async def test_distributed_ingest_rejects_hostile_bodies(pg_url: str, kafka: MockCluster) -> None:
    from tests.distributed import Topics, read_topic
    from tests.test_distributed_ingest import ingest_app

    topic = Topics.fresh().events
    tenant = "t-ingest"  # the tenant of ingest_app's key
    cases = [c for c in hostile_cases(tenant, 8 * MIB) if "limit-sized" not in c.name]
    rng = random.Random(3)
    valid = legs(tenant, 30)
    marked = [(msgspec.json.encode(e), False) for e in valid]
    for mutation in sorted(MUTATIONS):
        marked.insert(
            rng.randrange(len(marked) + 1), (invalid(rng.choice(valid), mutation)[0], True)
        )
    items = [raw for raw, _ in marked]
    bad = [index for index, (_, is_bad) in enumerate(marked) if is_bad]
    async with ingest_app(pg_url, kafka.bootstrap, topic) as (client, key):
        for case in cases:
            r = await client.post("/v1/events", content=case.body(), headers=headers_for(case, key))
            check_rejected(case, r)
        r = await client.post("/v1/events", content=b"[" + b",".join(items) + b"]", headers=key)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == len(valid)
        assert sorted(x["index"] for x in r.json()["rejected"]) == sorted(bad)
        assert (await client.get("/healthz")).status_code == 200
    records = read_topic(kafka.bootstrap, topic)
    on_topic = [e for _, value in records for e in msgspec.json.decode(value)]
    assert sorted(e["event_id"] for e in on_topic) == sorted(e["event_id"] for e in valid)
    raw_topic = b"".join(value for _, value in records)
    assert b"+3361234" not in raw_topic
    record("hostile", "distributed ingest (mock Kafka): hostile bodies", {
        "cases": len(cases), "all_4xx": True, "mixed_batch_items": len(items),
        "invalid_in_mixed_batch": len(bad), "events_on_topic": len(on_topic),
        "only_valid_events_on_topic": True,
    })  # fmt: skip
