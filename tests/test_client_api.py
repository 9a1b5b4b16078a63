"""The client SLA API over HTTP: contracts and their variants, DST and odd offsets, reports
and attainment, quality figures, keys and roles, rate and body limits, the access log.

Every expected figure is counted by hand (or with zoneinfo) from the legs the test sent,
never read back from the code under test.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.api.limits import RateLimiter
from tests.conftest import Service
from tests.legs import Leg, body, survey

ICMI_DAY = date(2026, 2, 10)


async def post(service: Service, payload: bytes) -> None:
    admin = service.key(None, "admin")
    r = await service.client.post("/v1/events", content=payload, headers=admin)
    assert r.status_code == 202, r.text
    assert not r.json()["rejected"]


def icmi_legs(tenant: str) -> list[Leg]:
    """KPI-DEFINITIONS fixture 1 (A 1000, A_T 860, B 60, B_T 20, S 10) plus 40 flow-outs,
    one leg every 40 s from 06:00 UTC on ICMI_DAY."""
    waits: list[tuple[str, int]] = [("answered", 10_000)] * 860 + [("answered", 30_000)] * 140
    waits += [("abandoned", 3_000)] * 10 + [("abandoned", 15_000)] * 10
    waits += [("abandoned", 60_000)] * 40 + [("flowed_out", 90_000)] * 40
    t0 = datetime(2026, 2, 10, 6, tzinfo=UTC)
    return [
        Leg(tenant, f"c{n}", "support", t0 + timedelta(seconds=40 * n), outcome, wait)
        for n, (outcome, wait) in enumerate(waits)
    ]


# (variant, numerator, denominator, the golden one-decimal figure of KPI-DEFINITIONS.md)
VARIANTS = [
    ("answered", 860, 1000, "86.0"),
    ("offered", 860, 1060, "81.1"),
    ("abandon_within_ignored", 860, 1040, "82.7"),
    ("abandon_within_met", 880, 1060, "83.0"),
    ("short_abandon_excluded", 860, 1050, "81.9"),
    ("short_abandon_met", 870, 1060, "82.1"),
    ("with_flowouts", 860, 1100, None),  # A_T / (A + B + F): 78.2
]


async def test_same_data_under_each_variant_gives_each_client_its_own_formula(
    service: Service,
) -> None:
    """Seven clients, identical legs, one SL variant each (T = 20 s, S_thr = 5 s)."""
    for n, (variant, *_) in enumerate(VARIANTS):
        tenant = f"icmi-{n}"
        service.contract(tenant_id=tenant, version=1, variant=variant, threshold_s=20,
                         short_abandon_s=5, timezone="UTC")  # fmt: skip
        await post(service, body(icmi_legs(tenant)))
    await service.settle()
    figures = {}
    for n, (variant, num, den, golden) in enumerate(VARIANTS):
        key = service.key(f"icmi-{n}", "client")
        params = {"from": "2026-02-10T00:00:00Z", "to": "2026-02-11T00:00:00Z", "interval": "1d"}
        r = await service.client.get("/v1/queues/support/intervals", params=params, headers=key)
        assert r.status_code == 200, r.text
        sl = r.json()["total"]["service_level"]
        assert (sl["variant"], sl["numerator"], sl["denominator"]) == (variant, num, den)
        assert (sl["threshold_s"], sl["contract_version"], sl["inclusive"]) == (20, 1, True)
        assert sl["value_pct"] == pytest.approx(100 * num / den, abs=1e-12)
        if golden is not None:
            assert f"{sl['value_pct']:.1f}" == golden
        figures[variant] = sl["value_pct"]
        # the daily report of the same day agrees, in JSON and in CSV
        report = await service.client.get(
            "/v1/reports/daily", params={"date": "2026-02-10"}, headers=key
        )
        total = report.json()["queues"][0]["figures"]["service_level"]
        assert (total["numerator"], total["denominator"]) == (num, den)
    # The two clients of the issue: answered vs offered differ by A_T/A - A_T/(A + B).
    assert figures["answered"] - figures["offered"] == pytest.approx(
        100 * 860 / 1000 - 100 * 860 / 1060, abs=1e-12
    )
    # Cisco's three treatments of abandons within T order as the definitions predict.
    assert figures["offered"] < figures["abandon_within_ignored"] < figures["abandon_within_met"]


async def test_a_contract_change_applies_from_its_instant_and_can_be_recomputed(
    service: Service,
) -> None:
    """v1 (answered, T = 20 s) from the start; v2 (offered, T = 10 s) from 12:00 UTC."""
    admin = service.key(None, "admin")
    for body_ in (
        {"effective_from": "2026-01-01T00:00:00Z", "variant": "answered", "threshold_s": 20},
        {"effective_from": "2026-02-10T12:00:00Z", "variant": "offered", "threshold_s": 10},
    ):
        r = await service.client.post("/v1/admin/tenants/chg/contracts", json=body_, headers=admin)
        assert r.status_code == 201, r.text
    assert r.json()["version"] == 2
    legs = []
    for hour in (9, 14):  # per hour: waits 5, 15, 25 s answered and one 5 s abandon
        at = datetime(2026, 2, 10, hour, tzinfo=UTC)
        for n, wait in enumerate((5, 15, 25)):
            legs.append(Leg("chg", f"a{hour}-{n}", "q", at, "answered", wait * 1000))
        legs.append(Leg("chg", f"b{hour}", "q", at, "abandoned", 5_000))
    await post(service, body(legs))
    await service.settle()
    key = service.key("chg", "client")
    url = "/v1/queues/q/intervals"
    params = {"from": "2026-02-10T00:00:00Z", "to": "2026-02-11T00:00:00Z", "interval": "60m"}
    r = (await service.client.get(url, params=params, headers=key)).json()
    by_hour = {int(i["start"][11:13]): i["service_level"] for i in r["intervals"]}
    # 09:00 under v1: answered within 20 s = 2 of 3 answered
    assert (by_hour[9]["contract_version"], by_hour[9]["numerator"], by_hour[9]["denominator"]) \
        == (1, 2, 3)  # fmt: skip
    # 14:00 under v2: answered within 10 s = 1 of 3 answered + 1 abandoned
    assert (by_hour[14]["contract_version"], by_hour[14]["numerator"],
            by_hour[14]["denominator"]) == (2, 1, 4)  # fmt: skip
    # The day's total keeps the contract in force at the day's start.
    total = r["total"]["service_level"]
    assert (total["contract_version"], total["numerator"], total["denominator"]) == (1, 4, 6)
    # Recompute the whole day under v2 on request.
    again = await service.client.get(url, params=params | {"contract_version": 2}, headers=key)
    rec = again.json()
    assert {i["service_level"]["contract_version"] for i in rec["intervals"]} == {2}
    assert rec["intervals"][9]["service_level"]["numerator"] == 1
    assert (rec["total"]["service_level"]["numerator"],
            rec["total"]["service_level"]["denominator"]) == (2, 8)  # fmt: skip
    missing = await service.client.get(url, params=params | {"contract_version": 7}, headers=key)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    contracts = (await service.client.get("/v1/contracts", headers=key)).json()["contracts"]
    assert [(c["version"], c["variant"]) for c in contracts] == [(1, "answered"), (2, "offered")]
    # A queue's own contract version can be pinned on the queue's summary.
    own = {"queue_id": "q", "effective_from": "2030-01-01T00:00:00Z", "variant": "with_flowouts"}
    r = await service.client.post("/v1/admin/tenants/chg/contracts", json=own, headers=admin)
    assert r.json()["version"] == 3
    r = await service.client.get(
        "/v1/queues/q/summary", params={"contract_version": 3}, headers=key
    )
    assert r.status_code == 200, r.text
    sl = r.json()["summary"]["figures"]["service_level"]
    assert (sl["contract_version"], sl["variant"]) == (3, "with_flowouts")
    r = await service.client.get("/v1/summary", params={"contract_version": 3}, headers=key)
    assert r.status_code == 404  # not a tenant default: the roll-up cannot use it


def spread(tenant: str, queue: str, start: datetime, hours: int, step_min: int) -> list[Leg]:
    """A leg every `step_min` minutes for `hours`, answered after (n % 40) seconds."""
    return [
        Leg(tenant, f"c{n}", queue, start + timedelta(minutes=step_min * n), "answered",
            (n % 40) * 1000)
        for n in range(hours * 60 // step_min)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("zone", "day", "halves"),
    [
        ("America/New_York", date(2026, 3, 8), 46),
        ("America/New_York", date(2026, 11, 1), 50),
        ("Asia/Kathmandu", date(2026, 3, 8), 48),
    ],
)
async def test_dst_and_odd_offsets_through_the_api(
    service: Service, zone: str, day: date, halves: int
) -> None:
    tz = ZoneInfo(zone)
    tenant = "tz-" + zone.split("/")[1].lower()
    service.contract(tenant_id=tenant, version=1, timezone=zone, interval_min=30)
    local_midnight = datetime.combine(day, datetime.min.time(), tzinfo=tz)
    # From 3 h before the local day to 3 h after it: the edges must be cut right.
    start = local_midnight.astimezone(UTC) - timedelta(hours=3)
    legs = spread(tenant, "q", start, 31, 7)
    await post(service, body(legs))
    await service.settle()
    key = service.key(tenant, "client")
    next_midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    params = {"from": local_midnight.isoformat(), "to": next_midnight.isoformat()}
    # Independent counts: legs whose local queue time falls on the day / in each interval.
    on_day = [g for g in legs if g.at.astimezone(tz).date() == day]
    within = sum(1 for g in on_day if g.wait_ms <= 20_000)
    totals = {}
    for interval, count in (("15m", 2 * halves), ("30m", halves), ("60m", halves // 2)):
        r = await service.client.get(
            "/v1/queues/q/intervals", params=params | {"interval": interval}, headers=key
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert len(out["intervals"]) == count
        assert sum(i["offered"] for i in out["intervals"]) == out["total"]["offered"]
        assert out["total"]["offered"] == len(on_day)
        assert out["total"]["service_level"]["numerator"] == within
        totals[interval] = out["total"]["offered"]
        if interval == "15m":
            for i in out["intervals"]:
                local = datetime.fromisoformat(i["start"]).astimezone(tz)
                assert local.minute % 15 == 0 and local.second == 0
                # (compared in UTC: same-zone comparisons ignore the fold of a DST repeat)
                lo, hi = datetime.fromisoformat(i["start"]), datetime.fromisoformat(i["end"])
                expected = sum(1 for g in on_day if lo <= g.at < hi)
                assert i["offered"] == expected
    daily = await service.client.get(
        "/v1/queues/q/intervals", params=params | {"interval": "1d"}, headers=key
    )
    (the_day,) = daily.json()["intervals"]
    assert the_day["offered"] == len(on_day)
    report = await service.client.get(
        "/v1/reports/daily", params={"date": day.isoformat()}, headers=key
    )
    section = report.json()["queues"][0]
    assert len(section["rows"]) == halves
    assert sum(row["figures"]["offered"] for row in section["rows"]) == len(on_day)
    assert section["figures"]["offered"] == len(on_day)
    assert report.json()["rollup"]["figures"]["offered"] == len(on_day)
    if zone == "Asia/Kathmandu":
        assert section["rows"][0]["label"].endswith("+05:45")
        assert section["start"] == "2026-03-07T18:15:00Z"


async def test_attainment_business_hours_and_csv(service: Service) -> None:
    """Per 30-minute interval: 10 within T (met), 7 of 10 (not met), none, 4 of 5 (met at
    exactly the 80 % target)."""
    service.contract(tenant_id="att", version=1, threshold_s=20, target_pct=80)
    base = datetime(2026, 2, 10, 8, tzinfo=UTC)
    plan = {0: [5] * 10, 1: [5] * 7 + [30] * 3, 3: [5] * 4 + [40]}
    legs = [
        Leg("att", f"i{i}-{n}", "q", base + timedelta(minutes=30 * i, seconds=n), "answered",
            w * 1000)
        for i, waits in plan.items() for n, w in enumerate(waits)
    ]  # fmt: skip
    await post(service, body(legs))
    await service.settle()
    key = service.key("att", "client")
    r = await service.client.get("/v1/reports/daily", params={"date": "2026-02-10"}, headers=key)
    section = r.json()["queues"][0]
    assert section["attainment"] == {"value_pct": 100 * 2 / 3, "met": 2, "measured": 3,
                                     "intervals": 48, "interval_min": 30}  # fmt: skip
    assert section["figures"]["service_level"]["numerator"] == 10 + 7 + 4
    assert section["figures"]["service_level"]["denominator"] == 25
    # Business hours 08:00-09:00 on Tuesdays (2026-02-10 is one): only the first two count.
    admin = service.key(None, "admin")
    hours = {"effective_from": "2026-01-01T00:00:00Z", "threshold_s": 20, "target_pct": 80,
             "business_hours": [{"days": ["tue"], "start": "08:00", "end": "09:00"}]}  # fmt: skip
    r = await service.client.post("/v1/admin/tenants/att/contracts", json=hours, headers=admin)
    assert r.status_code == 201 and r.json()["version"] == 2
    r = await service.client.get("/v1/reports/daily", params={"date": "2026-02-10"}, headers=key)
    section = r.json()["queues"][0]
    assert section["attainment"]["intervals"] == 2
    assert (section["attainment"]["met"], section["attainment"]["measured"]) == (1, 2)
    assert section["figures"]["offered"] == 20
    assert sum(1 for row in section["rows"] if row["in_business_hours"]) == 2
    # CSV carries the same figures, row for row.
    r = await service.client.get(
        "/v1/reports/daily", params={"date": "2026-02-10", "format": "csv"}, headers=key
    )
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    queue_rows = [x for x in rows if x["scope"] == "queue"]
    assert len(queue_rows) == 49  # 48 intervals and the total
    total = next(x for x in queue_rows if x["row"] == "total")
    assert (total["offered"], total["sl_numerator"], total["sl_denominator"]) == ("20", "17", "20")
    assert (total["attainment_met"], total["attainment_measured"]) == ("1", "2")
    assert total["contract_version"] == "2" and total["sl_variant"] == "answered"
    eight = next(x for x in queue_rows if x["label"] == "2026-02-10T08:00+00:00")
    assert (eight["offered"], eight["sl_numerator"], eight["sl_met"]) == ("10", "10", "True")


async def test_csat_and_fcr_by_repeat_contact(service: Service) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    day_start = datetime.combine(now.date() - timedelta(days=5), datetime.min.time(), UTC)
    service.contract(tenant_id="qual", version=1, csat_satisfied_pct=80, fcr_window_h=72)
    t = day_start + timedelta(hours=9)
    legs = [
        Leg("qual", "a1", "q", t, "answered", 1000, caller="+441"),  # repeated 10 h later
        Leg("qual", "a2", "q", t + timedelta(hours=10), "answered", 1000, caller="+441"),
        Leg("qual", "b1", "q", t + timedelta(hours=1), "answered", 1000, caller="+442"),
        Leg("qual", "c1", "q", t + timedelta(hours=2), "answered", 1000, caller="+443"),
        # c calls again 80 h later: outside the 72 h window, both resolved
        Leg("qual", "c2", "q2", t + timedelta(hours=82), "answered", 1000, caller="+443"),
        # the same call visiting a second queue is not a repeat
        Leg("qual", "b1", "q2", t + timedelta(hours=1, minutes=2), "answered", 1000,
            caller="+442"),
        Leg("qual", "n1", "q", t + timedelta(hours=3), "answered", 1000),  # no caller key
    ]  # fmt: skip
    scores = [(5, 5), (4, 5), (3, 5), (2, 5), (8, 10), (7, 10)]
    surveys = [survey("qual", f"s{n}", t + timedelta(hours=4, minutes=n), score, scale, "q")
               for n, (score, scale) in enumerate(scores)]  # fmt: skip
    await post(service, body(legs, surveys))
    await service.settle()
    key = service.key("qual", "client")
    r = await service.client.get(
        "/v1/reports/daily", params={"date": day_start.date().isoformat(), "queue": "q"},
        headers=key,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    quality = r.json()["queues"][0]["quality"]
    # satisfied: 5/5, 4/5, 8/10 -> 3 of 6
    assert quality["csat"] == {"value": 0.5, "numerator": 3, "denominator": 6}
    # contacts started that day in q: a1 (repeated), a2 (final: 72 h passed), b1, c1 -> 3/4
    fcr = quality["fcr"]
    assert (fcr["contacts"], fcr["repeated"], fcr["resolved"], fcr["pending"]) == (4, 1, 3, 0)
    assert (fcr["numerator"], fcr["denominator"], fcr["value"]) == (3, 4, 0.75)
    # A contact of the last hours (today, UTC) is pending: its 72 h have not passed.
    recent = max(now - timedelta(hours=2), datetime.combine(now.date(), datetime.min.time(), UTC))
    await post(service, body([Leg("qual", "r1", "q", recent, "answered", 1000, caller="+449")]))
    await service.settle()
    r = await service.client.get("/v1/queues/q/summary", params={"period": "today"}, headers=key)
    summary = r.json()
    # "today" is the UTC day of the read (it is the next one if midnight came in between)
    read_day = datetime.fromisoformat(summary["as_of"]).astimezone(UTC).date()
    pending = 1 if recent.date() == read_day else 0
    assert summary["summary"]["quality"]["fcr"]["pending"] == pending


async def test_keys_are_shown_once_rotated_expired_and_revoked(service: Service) -> None:
    admin = service.key(None, "admin")
    c = service.client
    r = await c.post("/v1/admin/keys", json={"tenant_id": "k", "role": "client"}, headers=admin)
    assert r.status_code == 201
    token, key_id = r.json()["key"], r.json()["record"]["key_id"]
    assert token.startswith(f"cp_{key_id}_")
    me = {"Authorization": f"Bearer {token}"}
    assert (await c.get("/v1/queues", headers=me)).status_code == 200
    listed = (await c.get("/v1/admin/keys", params={"tenant": "k"}, headers=admin)).text
    assert key_id in listed and token.split("_", 2)[2] not in listed  # never the secret again
    stored = service.embedded.store.get_key(key_id)
    assert stored is not None and token.split("_", 2)[2] not in stored.key_hash
    # rotate with a grace period: both work; then the old one stops
    r = await c.post(f"/v1/admin/keys/{key_id}/rotate", json={"grace_s": 3600}, headers=admin)
    assert r.status_code == 201
    new = {"Authorization": f"Bearer {r.json()['key']}"}
    assert r.json()["record"]["tenant_id"] == "k" and r.json()["record"]["role"] == "client"
    assert (await c.get("/v1/queues", headers=me)).status_code == 200
    assert (await c.get("/v1/queues", headers=new)).status_code == 200
    past = {"expires_at": "2020-01-01T00:00:00Z"}
    assert (await c.patch(f"/v1/admin/keys/{key_id}", json=past, headers=admin)).status_code == 200
    assert (await c.get("/v1/queues", headers=me)).status_code == 401
    new_id = r.json()["record"]["key_id"]
    r = await c.post(f"/v1/admin/keys/{new_id}/revoke", headers=admin)
    assert r.json()["usable"] is False
    assert (await c.get("/v1/queues", headers=new)).status_code == 401
    # nonsense combinations are refused
    for bad in ({"role": "client"}, {"tenant_id": "k", "role": "admin"},
                {"tenant_id": "k", "role": "client", "queues": ["q"]}):  # fmt: skip
        assert (await c.post("/v1/admin/keys", json=bad, headers=admin)).status_code == 422


async def test_roles_and_teamlead_grants(service: Service) -> None:
    admin = service.key(None, "admin")
    t = datetime(2026, 2, 10, 9, tzinfo=UTC)
    await post(service, body([Leg("r", "c1", "sales", t, "answered", 1000),
                              Leg("r", "c2", "care", t, "answered", 1000)]))  # fmt: skip
    await service.settle()
    c = service.client
    r = await c.post("/v1/admin/keys", json={"tenant_id": "r", "role": "teamlead",
                                             "queues": ["sales"]}, headers=admin)  # fmt: skip
    lead = {"Authorization": f"Bearer {r.json()['key']}"}
    queues = (await c.get("/v1/queues", headers=lead)).json()["queues"]
    assert [q["queue_id"] for q in queues] == ["sales"]
    assert (await c.get("/v1/queues/care/live", headers=lead)).status_code == 404
    report = (await c.get("/v1/reports/daily", params={"date": "2026-02-10"}, headers=lead)).json()
    assert [s["queue_id"] for s in report["queues"]] == ["sales"]
    assert report["rollup"]["figures"]["offered"] == 1  # the roll-up of its queues only
    wall = service.key("r", "wallboard")
    assert (await c.get("/v1/queues/sales/live", headers=wall)).status_code == 200
    for url in (
        "/v1/summary",
        "/v1/reports/daily",
        "/v1/contracts",
        "/v1/queues/sales/intervals?from=2026-02-10T00:00Z&to=2026-02-11T00:00Z",
    ):
        assert (await c.get(url, headers=wall)).status_code == 403, url
    ingest = service.key("r", "ingest")
    assert (await c.get("/v1/queues", headers=ingest)).status_code == 403
    client = service.key("r", "client")
    for method, url in (
        ("GET", "/v1/admin/tenants"),
        ("PUT", "/v1/admin/tenants/r"),
        ("POST", "/v1/admin/keys"),
        ("GET", "/v1/floor/summary"),
    ):
        r = await c.request(method, url, headers=client, json={})
        assert r.status_code == 403, (method, url, r.text)


async def test_rate_limit_body_limit_and_access_log(service: Service) -> None:
    c = service.client
    app = service.embedded.app
    app.state.limiter = RateLimiter(rate_per_s=0.5, burst=3)
    one, other = service.key("lim", "client"), service.key("lim", "client")
    statuses = [(await c.get("/v1/queues", headers=one)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    r = await c.get("/v1/queues", headers=one)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) in (1, 2)
    assert (await c.get("/v1/queues", headers=other)).status_code == 200
    app.state.limiter = RateLimiter(rate_per_s=1000, burst=1000)
    admin = service.key(None, "admin")
    big = {"name": "x" * 100_000}
    r = await c.put("/v1/admin/tenants/lim", json=big, headers=admin)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    # The access log: who read what, per tenant, paged.
    r = await c.get("/v1/audit", params={"limit": 2}, headers=other)
    page = r.json()
    assert [x["status"] for x in page["records"]] == [200, 200]
    assert {x["tenant_id"] for x in page["records"]} == {"lim"}
    seen = list(page["records"])
    while page["next_cursor"]:
        page = (await c.get("/v1/audit", params={"limit": 2, "cursor": page["next_cursor"]},
                            headers=other)).json()  # fmt: skip
        seen += page["records"]
    reads = [x for x in seen if x["path"] == "/v1/queues"]
    assert Counter(x["status"] for x in reads) == Counter({200: 4, 429: 2})
    assert {x["path"] for x in seen} <= {"/v1/queues", "/v1/audit"}
    assert len({x["key_id"] for x in reads}) == 2
    assert [x["seq"] for x in seen] == sorted({x["seq"] for x in seen})
    # An admin reads the whole log.
    everything = (await c.get("/v1/admin/audit", params={"limit": 1000}, headers=admin)).json()
    assert {x["seq"] for x in seen} <= {x["seq"] for x in everything["records"]}


def toml_file(tmp: Any, text: str) -> Any:
    path = tmp / "bootstrap.toml"
    path.write_text(text)
    return path


BOOTSTRAP = """
[[tenants]]
id = "boot"
name = "Boot Ltd"
queues = [{ id = "claims", name = "Claims" }, { id = "sales" }]

[[tenants.contracts]]
effective_from = 2026-01-01T00:00:00Z
timezone = "Asia/Kathmandu"
variant = "abandon_within_ignored"
threshold_s = 30

[[tenants.contracts]]
queue_id = "claims"
effective_from = 2026-03-01T00:00:00+05:45
interval_min = 15
timezone = "Asia/Kathmandu"

[[tenants.contracts.business_hours]]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:30"
"""


async def test_bootstrap_file_is_idempotent(service: Service, tmp_path: Any) -> None:
    from services.tenancy.bootstrap import BootstrapError, apply, load

    store = service.embedded.store
    spec = load(toml_file(tmp_path, BOOTSTRAP))
    done = apply(spec, store.tenancy.put_tenant, store.tenancy.put_queue, store)
    assert (done.tenants, done.queues, done.contracts_added) == (1, 2, 2)
    again = apply(spec, store.tenancy.put_tenant, store.tenancy.put_queue, store)
    assert (again.contracts_added, again.contracts_unchanged) == (0, 2)
    admin = service.key(None, "admin")
    r = await service.client.get("/v1/admin/tenants/boot/contracts", headers=admin)
    contracts = r.json()["contracts"]
    assert [(c["queue_id"], c["version"]) for c in contracts] == [(None, 1), ("claims", 2)]
    assert contracts[1]["business_hours"][0] == {"days": ["mon"], "start": "09:00",
                                                 "end": "17:30"}  # fmt: skip
    queues = (await service.client.get("/v1/admin/tenants/boot/queues", headers=admin)).json()
    assert [(q["queue_id"], q["name"]) for q in queues["queues"]] == [("claims", "Claims"),
                                                                     ("sales", "")]  # fmt: skip
    bad = toml_file(tmp_path, BOOTSTRAP.replace("threshold_s = 30", "threshold_s = 7"))
    with pytest.raises(BootstrapError, match="threshold_s"):
        apply(load(bad), store.tenancy.put_tenant, store.tenancy.put_queue, store)


def test_cli_tenants_contracts_and_keys(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from services.cli import main
    from services.embedded.runtime import open_store
    from services.embedded.settings import EmbeddedSettings

    d = ["--data-dir", str(tmp_path / "data")]
    assert main(["tenants", "apply", str(toml_file(tmp_path, BOOTSTRAP)), *d]) == 0
    assert "contracts: 2 added, 0 unchanged" in capsys.readouterr().out
    add = ["contracts", "add", "--tenant", "boot", "--queue", "sales", "--effective-from",
           "2026-05-01T00:00:00+05:45", "--variant", "with_flowouts",
           "--hours", "mon-fri=09:00-17:00", "--timezone", "Asia/Kathmandu"]  # fmt: skip
    assert main([*add, *d]) == 0
    assert "contract v3 of boot added" in capsys.readouterr().out
    assert main(["contracts", "add", "--tenant", "boot", "--effective-from", "2026-05-01",
                 *d]) == 2  # no offset  # fmt: skip
    assert main(["keys", "create", "--tenant", "boot", "--role", "teamlead", *d]) == 0
    token = capsys.readouterr().out.strip()
    key_id = token.split("_")[1]
    assert main(["keys", "grant", key_id, "--queue", "claims", *d]) == 0
    assert main(["keys", "rotate", key_id, *d]) == 0
    new_token = capsys.readouterr().out.strip().splitlines()[-1]
    store = open_store(EmbeddedSettings(data_dir=tmp_path / "data"))
    try:
        old, new = store.get_key(key_id), store.get_key(new_token.split("_")[1])
        assert old is not None and new is not None
        assert not old.usable(int(datetime.now(UTC).timestamp() * 1000) + 1)
        assert new.role == "teamlead" and new.tenant_id == "boot"
        assert store.tenancy.grants(new.key_id).queues == ("claims",)
        sales = [c for c in store.contracts("boot") if c.queue_id == "sales"]
        assert sales[0].business_hours == tuple((d, 540, 1020) for d in range(5))
    finally:
        store.close()
