"""Zero cross-tenant reads or writes: generated requests over every route of the OpenAPI
document, with the keys of four tenants (client, teamlead, wallboard, ingest) and an admin
naming a tenant, guessed queue/tenant/key ids, query parameters, CSV and pagination.

Every tenant's data carries a fingerprint no other tenant's can produce: all its waits end
in the same milliseconds (alpha ...101 ms, beta ...202, gamma ...303), so the maximum wait
of any window ends in them and the sum of n waits is n times them modulo 1000. Tenants
share a queue name ("sales"), so a lookup by queue id alone would mix them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.python.asgi import ASGIClient, get_client

from services.api.limits import RateLimiter
from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.kpi.contracts import Contract
from services.store.keys import new_key
from services.store.tenancy import KeyGrants, QueueRecord, TenantRecord
from tests.legs import Leg, leg_events, survey

SUFFIX = {"t-alpha": 101, "t-beta": 202, "t-gamma": 303}
QUEUES = {
    "t-alpha": ["alpha-care", "sales"],
    "t-beta": ["beta-claims", "sales"],
    "t-gamma": ["gamma-vip", "sales"],
    "t-delta": ["delta-new"],  # declared, no data
}
SURVEYS = {"t-alpha": 3, "t-beta": 5, "t-gamma": 7}
ZONES = {"t-alpha": "Europe/London", "t-beta": "America/New_York", "t-gamma": "Asia/Kathmandu"}
VARIANTS = {"t-alpha": "answered", "t-beta": "offered", "t-gamma": "abandon_within_met"}
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
# Routes never called here, and why.
NOT_GENERATED = {
    # (/v1/stream is generated too: the client cuts an event stream after 3 events)
    ("GET", "/metrics"): "no key, no tenant data (bounded labels only)",
    ("GET", "/healthz"): "no key, no tenant data",
}


@dataclass
class Who:
    """A key and what it may see: `tenant` (None: an admin naming a tenant)."""

    headers: dict[str, str]
    key_id: str
    tenant: str | None
    role: str
    queues: list[str] | None = None  # teamlead grants


@dataclass
class World:
    client: ASGIClient  # in-process, sync; cuts event streams after a few events
    embedded: Embedded
    keys: list[Who] = field(default_factory=list)
    admin: Who | None = None
    key_ids: dict[str | None, set[str]] = field(default_factory=dict)
    legs: dict[str, int] = field(default_factory=dict)


def tenant_legs(tenant: str) -> list[Leg]:
    """Legs every 7 minutes over the last 50 hours, waits ending in the tenant's suffix."""
    suffix = SUFFIX[tenant]
    # Each tenant on its own minutes: a read that mixed tenants would find data to mix.
    start = NOW - timedelta(hours=50, minutes=2 * list(SUFFIX).index(tenant))
    legs = []
    for n in range(50 * 60 // 7):
        queue = QUEUES[tenant][n % 2]
        outcome = "abandoned" if n % 9 == 0 else "answered"
        wait = (n % 45) * 1000 + suffix
        legs.append(
            Leg(tenant, f"{tenant}-c{n}", queue, start + timedelta(minutes=7 * n), outcome,
                wait, caller=f"+44{n % 17}")
        )  # fmt: skip
    return legs


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("tenancy") / "data"
    embedded = Embedded(EmbeddedSettings(data_dir=data))
    embedded.app.state.limiter = RateLimiter(1e9, 10**9)
    store = embedded.store
    now_ms = int(time.time() * 1000)
    for tenant in SUFFIX:
        store.put_contract(
            Contract(tenant_id=tenant, version=1, timezone=ZONES[tenant],
                     variant=VARIANTS[tenant], threshold_s=20)
        )  # fmt: skip
        store.put_contract(
            Contract(tenant_id=tenant, queue_id="sales", version=2, timezone=ZONES[tenant],
                     variant="with_flowouts", threshold_s=30, interval_min=15,
                     effective_from_ms=now_ms - 20 * 3_600_000)
        )  # fmt: skip
    store.tenancy.put_tenant(TenantRecord(tenant_id="t-delta", name="Delta", created_at_ms=1))
    store.tenancy.put_queue(QueueRecord(tenant_id="t-delta", queue_id="delta-new"))
    w = World(client=get_client(embedded.app, max_stream_events=3), embedded=embedded)
    token, record = new_key(None, "admin", "test", now_ms)
    store.put_key(record)
    w.admin = Who({"Authorization": f"Bearer {token}"}, record.key_id, None, "admin")
    w.key_ids[None] = {record.key_id}
    for tenant in QUEUES:
        for role in ("client", "teamlead", "wallboard", "ingest"):
            token, record = new_key(tenant, role, "test", now_ms)
            grants = KeyGrants(queues=(QUEUES[tenant][-1],)) if role == "teamlead" else None
            store.put_key(record)
            if grants is not None:
                store.tenancy.put_grants(record.key_id, grants)
            w.keys.append(
                Who({"Authorization": f"Bearer {token}"}, record.key_id, tenant, role,
                    None if grants is None else list(grants.queues))
            )  # fmt: skip
            w.key_ids.setdefault(tenant, set()).add(record.key_id)
    events = []
    for tenant in SUFFIX:
        legs = tenant_legs(tenant)
        events += [e for leg in legs for e in leg_events(leg)]
        events += [
            survey(tenant, f"{tenant}-s{n}", NOW - timedelta(hours=n + 1), 3 + n % 3, 5,
                   QUEUES[tenant][n % 2])
            for n in range(SURVEYS[tenant])
        ]  # fmt: skip
        w.legs[tenant] = len(legs)
    # In time order, so that with the default 2 h correction horizon nothing is quarantined
    # and all but the last two hours are evicted to SQLite: reads cover store and memory.
    events.sort(key=lambda e: e["occurred_at"])
    for i in range(0, len(events), 5000):
        r = w.client.post(
            "/v1/events", data=msgspec.json.encode(events[i : i + 5000]), headers=w.admin.headers
        )
        assert r.status_code == 202 and not r.json()["rejected"], r.text
    aggregator = embedded.aggregator
    while aggregator.lag():
        aggregator.step()
        aggregator.flush(force_checkpoint=True)
    assert aggregator.centre.stats.quarantined == 0
    assert aggregator.centre.evicted_until_ms > int((NOW - timedelta(hours=3)).timestamp() * 1000)
    yield w
    w.client.close()
    embedded.store.close()
    embedded.log.close()


# -- what a response may contain -------------------------------------------------------------


def forbidden_strings(w: World, tenant: str, request_text: str) -> list[str]:
    """Other tenants' ids, their own queue names and key ids, unless the request named them."""
    out = []
    for other, queues in QUEUES.items():
        if other == tenant:
            continue
        out.append(other)
        out += [q for q in queues if q not in QUEUES[tenant]]
        out += list(w.key_ids[other])
    return [s for s in out if s not in request_text]


def check_json(node: Any, tenant: str, queues: set[str], path: str = "$") -> None:
    if isinstance(node, list):
        for n, item in enumerate(node):
            check_json(item, tenant, queues, f"{path}[{n}]")
        return
    if not isinstance(node, dict):
        return
    if node.get("tenant_id") is not None:
        assert node["tenant_id"] == tenant, path
    if node.get("queue_id") is not None:
        assert node["queue_id"] in queues, (path, node["queue_id"])
    suffix = SUFFIX.get(tenant, 0)
    for name in ("max_wait_answered_ms", "max_wait_abandoned_ms"):
        if name in node:
            assert node[name] % 1000 in (0, suffix), (path, name, node[name])
    if isinstance(node.get("asa_ms"), dict):
        asa = node["asa_ms"]
        assert (asa["numerator"] - asa["denominator"] * suffix) % 1000 == 0, (path, asa)
    if isinstance(node.get("csat"), dict):
        assert node["csat"]["denominator"] <= SURVEYS.get(tenant, 0), path
    if isinstance(node.get("fcr"), dict):
        assert node["fcr"]["contacts"] <= 2 * 50 * 60 // 7, path
    for key, value in node.items():
        check_json(value, tenant, queues, f"{path}.{key}")


def check_csv(text: str, tenant: str, queues: set[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        if row["queue_id"]:
            assert row["queue_id"] in queues
        if row["csat_denominator"]:
            assert int(row["csat_denominator"]) <= SURVEYS.get(tenant, 0)


def check_response(w: World, who: Who, tenant: str, url: str, r: Any) -> None:
    """No other tenant's data in a response to a request for `tenant`."""
    assert r.status_code < 500, (url, r.status_code, r.text)
    visible = set(QUEUES[tenant]) if who.queues is None else set(who.queues)
    if r.status_code >= 400:
        assert r.json()["error"]["code"], r.text
    is_audit = url.startswith("/v1/audit")
    if not is_audit:
        for s in forbidden_strings(w, tenant, url):
            assert s not in r.text, (url, s)
    if r.headers.get("content-type", "").startswith("text/csv"):
        check_csv(r.text, tenant, visible)
        return
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:"):
                check_json(json.loads(line[5:]), tenant, visible)
        return
    if r.status_code != 200 or not r.headers.get("content-type", "").startswith("application/json"):
        return
    body = r.json()
    if is_audit:
        mine = w.key_ids[tenant] | w.key_ids[None]
        for record in body["records"]:
            assert record["tenant_id"] == tenant and record["key_id"] in mine, record
        return
    check_json(body, tenant, visible)


# -- generated requests ------------------------------------------------------------------------


def operations(w: World) -> list[tuple[str, str, dict[str, Any]]]:
    spec = w.client.get("/openapi.json").json()
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if (method.upper(), path) not in NOT_GENERATED:
                ops.append((method.upper(), path, op))
    return ops


def value_for(name: str, schema: dict[str, Any], w: World, tenant: str) -> st.SearchStrategy[Any]:
    every_queue = sorted({q for qs in QUEUES.values() for q in qs} | {"nope"})
    tenants = [*QUEUES, "t-nobody"]
    key_ids = sorted(k for ks in w.key_ids.values() for k in ks)
    times = [NOW - timedelta(hours=h) for h in (72, 49, 30, 24, 6, 1, 0)]
    iso = st.sampled_from(times).map(lambda t: t.isoformat())
    pools: dict[str, st.SearchStrategy[Any]] = {
        # mostly the tenant's own queues (to get figures back), often anyone's
        "queue_id": st.one_of(st.sampled_from(QUEUES[tenant]), st.sampled_from(every_queue)),
        "queue": st.one_of(st.sampled_from(QUEUES[tenant]), st.sampled_from(every_queue)),
        "tenant_id": st.sampled_from(tenants),
        "tenant": st.sampled_from(tenants),
        "key_id": st.sampled_from(key_ids),
        "team_id": st.sampled_from(["team-1", "nope"]),
        "link_id": st.sampled_from(["nope", "abc"]),
        "from": iso,
        "to": iso,
        "limit": st.integers(1, 3),
        "cursor": st.one_of(
            st.sampled_from([*every_queue, *tenants, *key_ids, "0", "5", "999999"]),
            st.text(min_size=1, max_size=5),
        ),
        "contract_version": st.integers(0, 3),
        "date": st.sampled_from([(NOW - timedelta(days=d)).date().isoformat() for d in (0, 1, 2)]),
        "tz": st.sampled_from(["UTC", "Asia/Kathmandu", "Nope/Zone"]),
        "queues": st.sampled_from(every_queue),
        "token": st.just("nope"),
    }
    if name in pools:
        return pools[name]
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    return st.none()


@st.composite
def requests(draw: st.DrawFn, w: World, ops: list[tuple[str, str, dict[str, Any]]]) -> Any:
    method, path, op = draw(st.sampled_from(ops))
    # Admin writes (revoking the test's own keys, say) are out of scope: the writes sent
    # here are those of keys that must not be able to write anything of another tenant.
    readers = [k for k in w.keys if k.role in ("client", "teamlead")]
    keys = [*w.keys, *readers, *readers, w.admin, w.admin]  # more of those who read figures
    who = draw(st.sampled_from(keys if method == "GET" else w.keys))
    assert who is not None
    tenant = who.tenant or draw(st.sampled_from(list(QUEUES)))
    url = path
    query: dict[str, Any] = {}
    for param in op.get("parameters", []):
        name, schema = param["name"], param.get("schema", {})
        schema = schema.get("anyOf", [schema])[0]
        if param["in"] == "path":
            url = url.replace("{" + name + "}", str(draw(value_for(name, schema, w, tenant))))
        elif param["in"] == "query" and name == "tenant" and who.tenant is None:
            query["tenant"] = tenant  # an admin names the tenant it asks about
        elif param["in"] == "query" and name == "tenant":
            # now and then a key names a tenant: its own, or another (403)
            named = draw(st.sampled_from([*[None] * 6, tenant, *QUEUES, "t-nobody"]))
            if named is not None:
                query["tenant"] = named
        elif param["in"] == "query" and (param.get("required") or draw(st.booleans())):
            value = draw(value_for(name, schema, w, tenant))
            if value is not None:
                query[name] = value
    return method, url, query, who, tenant, op


def send(w: World, method: str, url: str, query: dict[str, Any], who: Who, op: Any) -> Any:
    content = None
    if "requestBody" in op:
        content = json.dumps({"name": "x", "role": "client", "tenant_id": "t-beta",
                              "effective_from": "2026-01-01T00:00:00Z"})  # fmt: skip
    return w.client.request(
        method, url, params=query, headers={**who.headers, "content-type": "application/json"},
        data=content, timeout=10,
    )  # fmt: skip


def snapshot(w: World) -> Any:
    store = w.embedded.store
    return (
        sorted(store.all_queue_buckets().items()),
        {t: sorted(msgspec.json.encode(c) for c in store.contracts(t)) for t in QUEUES},
        [t.tenant_id for t in store.tenancy.tenants()],
        {t: sorted(k.key_id for k in store.tenancy.keys(t, "", 1000)) for t in [*QUEUES, None]},
        w.embedded.log.end_offset(),
    )


def test_every_route_is_generated(world: World) -> None:
    """A new route joins the generated requests, or this list says why it cannot."""
    ops = operations(world)
    assert len(ops) >= 25
    spec = world.client.get("/openapi.json").json()
    listed = {(m.upper(), p) for p, ms in spec["paths"].items() for m in ms}
    assert set(NOT_GENERATED) <= listed


def test_generated_requests_never_cross_tenants(world: World) -> None:
    before = snapshot(world)
    ops = operations(world)
    seen: set[tuple[str, str]] = set()

    @settings(
        max_examples=1500,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests(world, ops))
    def one(req: Any) -> None:
        method, url, query, who, tenant, op = req
        seen.add((method, op.get("operationId", url)))
        r = send(world, method, url, query, who, op)
        full = url + "?" + "&".join(f"{k}={v}" for k, v in query.items())
        if method != "GET" and who.role != "admin":
            if url == "/v1/events":
                assert r.status_code in (403, 422), (url, who.role, r.text)
            elif r.status_code < 300:  # a write inside its own tenant (e.g. a wallboard link)
                check_response(world, who, tenant, full, r)
            else:
                assert r.status_code in (403, 404, 405, 409, 422), (method, full, r.text)
            return
        if url.startswith(("/v1/admin", "/v1/floor")):
            if who.role != "admin":
                assert r.status_code in (403, 404, 422), (full, r.status_code)
            return
        scoped = any(p["name"] == "tenant" for p in op.get("parameters", []))
        if method != "GET" or (who.role == "admin" and not scoped):
            assert r.status_code < 500, (method, full, r.text)
            return  # an admin's unscoped reads and writes may span tenants
        check_response(world, who, tenant, full, r)
        pages = 0
        while r.status_code == 200 and pages < 5:
            cursor = (r.json().get("next_cursor") if r.headers["content-type"].startswith(
                "application/json") else r.headers.get("x-next-cursor"))  # fmt: skip
            if not cursor:
                break
            r = send(world, method, url, {**query, "cursor": cursor}, who, op)
            check_response(world, who, tenant, full + f"&cursor={cursor}", r)
            pages += 1

    one()
    assert len(seen) >= len(ops) * 0.8, sorted(seen)
    after = snapshot(world)
    # Non-admin writes changed nothing (only the access log grew).
    assert before[0] == after[0] and before[1] == after[1] and before[4] == after[4]


def test_guessed_queue_ids_look_like_missing_ones(world: World) -> None:
    alpha = next(k for k in world.keys if k.tenant == "t-alpha" and k.role == "client")
    c = world.client
    guessed = c.get("/v1/queues/beta-claims/live", headers=alpha.headers)
    missing = c.get("/v1/queues/never-was/live", headers=alpha.headers)
    assert guessed.status_code == missing.status_code == 404
    assert guessed.json()["error"]["code"] == missing.json()["error"]["code"]
    # The shared name answers with alpha's own figures only. (Yesterday, in London: always
    # inside the 50 hours of data; this month may have begun minutes ago.)
    own = c.get("/v1/queues/sales/summary?period=yesterday", headers=alpha.headers)
    assert own.status_code == 200
    figures = own.json()["summary"]["figures"]
    assert figures["max_wait_answered_ms"] % 1000 == 101
    with contextlib.suppress(KeyError):
        assert own.json()["tenant_id"] == "t-alpha"


def test_ingest_keys_cannot_write_other_tenants(world: World) -> None:
    ingest = next(k for k in world.keys if k.tenant == "t-alpha" and k.role == "ingest")
    before = snapshot(world)
    evil = leg_events(Leg("t-beta", "evil", "sales", NOW, "answered", 202))
    r = world.client.post("/v1/events", data=msgspec.json.encode(evil), headers=ingest.headers)
    assert r.status_code == 422
    assert {x["path"] for x in r.json()["rejected"]} == {"$[0].tenant_id", "$[1].tenant_id"}
    assert snapshot(world)[4] == before[4]  # nothing reached the log


def test_module_data_is_what_was_sent(world: World) -> None:
    """The fingerprints hold in the store itself (so the checks above can fail)."""
    stored = world.embedded.store.all_queue_buckets()
    for tenant, n in world.legs.items():
        mine = [c for (t, _, _), c in stored.items() if t == tenant]
        assert sum(c.offered for c in mine) == n
        assert all(c.max_wait_answered_ms % 1000 in (0, SUFFIX[tenant]) for c in mine)
    assert Path(world.embedded.settings.data_dir).exists()
