"""The embedded service over HTTP: ingest errors, authentication, live and interval figures
checked against figures computed by hand from the events sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from tests.conftest import Service
from tests.factories import event_dict
from tests.legs import Leg, leg_events

NOW = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)


def body(events: list[dict[str, Any]]) -> bytes:
    return msgspec.json.encode(events)


async def test_ingest_reports_each_bad_event_and_keeps_the_good(service: Service) -> None:
    key = service.key("t-ingest", "ingest")
    good = event_dict("call.queued", NOW, tenant_id="t-ingest", call_id="c1", queue_id="q")
    events: list[Any] = [
        good,
        {**good, "event_id": "x1", "priority": "urgent"},
        {k: v for k, v in good.items() if k != "queue_id"} | {"event_id": "x2"},
        {**good, "event_id": "x3", "event_type": "call.teleported"},
        {**good, "event_id": "x4", "tenant_id": "someone-else"},
        "not an object",
    ]
    r = await service.client.post("/v1/events", content=body(events), headers=key)
    assert r.status_code == 202, r.text
    out = r.json()
    assert out["accepted"] == 1 and out["duplicates"] == 0
    assert [(x["index"], x["path"]) for x in out["rejected"]] == [
        (1, "$[1].priority"), (2, "$[2].queue_id"), (3, "$[3].event_type"),
        (4, "$[4].tenant_id"), (5, "$[5]"),
    ]  # fmt: skip
    again = await service.client.post("/v1/events", content=body([good]), headers=key)
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}


async def test_ingest_whole_body_errors(service: Service) -> None:
    key = service.key(None, "admin")
    post = service.client.post
    r = await post("/v1/events", content=b"[{not json", headers=key)
    assert r.status_code == 422 and "not a JSON array" in r.json()["rejected"][0]["reason"]
    r = await post("/v1/events", content=b"", headers=key)
    assert r.status_code == 422 and r.json()["rejected"][0]["reason"] == "no events in the body"
    big = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    r = await post("/v1/events", content=big, headers=key)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    r = await post("/v1/events", content=b"[]", headers={"Authorization": "Bearer cp_x_y"})
    assert r.status_code == 401
    reader = service.key("t1", "client")
    r = await post("/v1/events", content=b"[]", headers=reader)
    assert r.status_code == 403
    health = await service.client.get("/healthz")
    assert health.status_code == 200


async def test_ten_thousand_events_in_one_request(service: Service) -> None:
    key = service.key(None, "admin")
    events = []
    for n in range(5000):
        c = {"tenant_id": "bulk", "call_id": f"c{n}", "queue_id": f"q{n % 4}"}
        events.append(event_dict("call.queued", NOW + timedelta(seconds=n % 600), **c))
        events.append(event_dict("call.abandoned", NOW + timedelta(seconds=n % 600 + 3), **c))
    events[777]["occurred_at"] = "yesterday"  # the abandon of call 388
    r = await service.client.post("/v1/events", content=body(events), headers=key)
    assert r.status_code == 202
    assert r.json()["accepted"] == 9999 and len(r.json()["rejected"]) == 1
    await service.settle()
    stored = service.embedded.store.all_queue_buckets()
    assert sum(c.offered for c in stored.values()) == 5000
    assert sum(c.abandoned for c in stored.values()) == 4999


async def test_tenant_comes_from_the_key(service: Service) -> None:
    admin = service.key(None, "admin")
    for tenant in ("alpha", "beta"):
        e = event_dict("call.queued", NOW, tenant_id=tenant, call_id="c", queue_id=f"{tenant}-q")
        await service.client.post("/v1/events", content=body([e]), headers=admin)
    await service.settle()
    alpha = service.key("alpha", "client")
    r = await service.client.get("/v1/queues", headers=alpha)
    assert [q["queue_id"] for q in r.json()["queues"]] == ["alpha-q"]
    assert (await service.client.get("/v1/queues/beta-q/live", headers=alpha)).status_code == 404
    r = await service.client.get("/v1/queues?tenant=beta", headers=alpha)
    assert r.status_code == 403
    r = await service.client.get("/v1/queues?tenant=beta", headers=admin)
    assert [q["queue_id"] for q in r.json()["queues"]] == ["beta-q"]
    r = await service.client.get("/v1/queues", headers=admin)
    assert r.status_code == 422


async def test_live_figures_match_a_hand_computation(service: Service) -> None:
    """Ten legs with known waits; SL, ASA, abandon rate and gauges computed by hand."""
    service.contract(tenant_id="live", queue_id="sales", threshold_s=20, target_pct=80,
                     variant="offered", timezone="Europe/Paris", version=3)  # fmt: skip
    admin = service.key(None, "admin")
    now = datetime.now(UTC)
    # Three whole minutes back: the calls stay in rolling_5m (the current minute and the four
    # before it) even if the minute turns before the read.
    base = now.replace(second=0, microsecond=0) - timedelta(minutes=3)
    waits = [5, 10, 20, 21, 40, 3, 30]  # answered; then 2 abandons and 1 still waiting
    events = []
    for n, wait in enumerate(waits):
        c = {"tenant_id": "live", "call_id": f"a{n}", "queue_id": "sales"}
        events.append(event_dict("call.queued", base, **c))
        events.append(
            event_dict("call.answered", base + timedelta(seconds=wait), agent_id="ag", **c)
        )
    for n, wait in enumerate([4, 60]):
        c = {"tenant_id": "live", "call_id": f"b{n}", "queue_id": "sales"}
        events.append(event_dict("call.queued", base, **c))
        events.append(event_dict("call.abandoned", base + timedelta(seconds=wait), **c))
    events.append(event_dict("call.queued", base, tenant_id="live", call_id="w", queue_id="sales"))
    await service.client.post("/v1/events", content=body(events), headers=admin)
    await service.settle()
    client = service.key("live", "client")
    r = await service.client.get("/v1/queues/sales/live", headers=client)
    after = datetime.now(UTC)
    assert r.status_code == 200, r.text
    live = r.json()
    windows = {w["name"]: w for w in live["windows"]}
    w5 = windows["rolling_5m"]
    assert (w5["offered"], w5["answered"], w5["abandoned"]) == (10, 7, 2)
    # offered variant: answered within 20 s (5, 10, 20, 3 -> 4) over answered + abandoned (9)
    sl = w5["service_level"]
    assert (sl["numerator"], sl["denominator"], sl["contract_version"]) == (4, 9, 3)
    assert abs(sl["value_pct"] - 400 / 9) < 1e-9 and sl["met"] is False
    assert w5["asa_ms"] == {"value": sum(waits) * 1000 / 7, "numerator": sum(waits) * 1000,
                            "denominator": 7}  # fmt: skip
    assert w5["abandon_rate"]["value"] == 2 / 10
    assert w5["max_wait_answered_ms"] == 40_000
    assert live["timezone"] == "Europe/Paris"
    gauges = live["gauges"]
    assert gauges["calls_waiting"] == 1
    ms = timedelta(milliseconds=1)
    assert (now - base) // ms <= gauges["longest_wait_ms"] <= (after - base) // ms
    # Today is the Paris day of the read: it holds the calls unless Paris midnight came between.
    paris = ZoneInfo("Europe/Paris")
    read_day = datetime.fromisoformat(live["as_of"]).astimezone(paris).date()
    assert windows["today"]["offered"] == (10 if base.astimezone(paris).date() == read_day else 0)


async def test_intervals_add_up_to_the_day_across_dst(service: Service) -> None:
    service.contract(tenant_id="ny", queue_id="q", timezone="America/New_York", version=1)
    admin = service.key(None, "admin")
    day_start = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # local midnight EDT
    events = []
    for n in range(250):
        at = day_start + timedelta(minutes=6 * n)  # 25 hours: the whole fall-back day
        c = {"tenant_id": "ny", "call_id": f"c{n}", "queue_id": "q"}
        events.append(event_dict("call.queued", at, **c))
        events.append(
            event_dict("call.answered", at + timedelta(seconds=n % 40), agent_id="a", **c)
        )
    r = await service.client.post("/v1/events", content=body(events), headers=admin)
    assert r.json()["accepted"] == 500
    await service.settle()
    reader = service.key("ny", "client")
    params = {"from": "2026-11-01T00:00:00-04:00", "to": "2026-11-02T00:00:00-05:00"}
    r = await service.client.get("/v1/queues/q/intervals", params=params | {"interval": "30m"},
                                 headers=reader)  # fmt: skip
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["intervals"]) == 50
    assert sum(i["offered"] for i in out["intervals"]) == out["total"]["offered"] == 250
    within = sum(1 for n in range(250) if n % 40 <= 20)
    assert out["total"]["service_level"]["numerator"] == within
    url = "/v1/queues/q/intervals"
    hourly = await service.client.get(url, params=params | {"interval": "60m"}, headers=reader)
    assert len(hourly.json()["intervals"]) == 25
    naive = {"from": "2026-11-01T00:00:00", "to": "x"}
    bad = await service.client.get(url, params=naive, headers=reader)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert json.loads(bad.text)["error"]["details"]


async def test_intervals_mark_the_ones_a_late_event_restated(service: Service) -> None:
    """A leg arriving after the allowed lateness (2 min), inside the correction horizon,
    changes its past interval: that interval, and only that one, says it was restated."""
    service.contract(tenant_id="late", queue_id="q", timezone="UTC", version=1)
    admin = service.key(None, "admin")
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    on_time = [
        Leg("late", f"c{n}", "q", start + timedelta(minutes=10 * n), "answered", 5_000)
        for n in range(6)  # 09:00 ... 09:50, delivered in order
    ]
    r = await service.client.post("/v1/events", content=body(_events(on_time)), headers=admin)
    assert r.json()["accepted"] == 12
    await service.settle()
    late = Leg("late", "c-late", "q", start + timedelta(minutes=17), "answered", 5_000)
    r = await service.client.post("/v1/events", content=body(_events([late])), headers=admin)
    assert r.json()["accepted"] == 2
    await service.settle()
    params = {"from": "2026-11-23T09:00:00Z", "to": "2026-11-23T10:00:00Z", "interval": "15m"}
    r = await service.client.get(
        "/v1/queues/q/intervals", params=params, headers=service.key("late", "client")
    )
    assert r.status_code == 200, r.text
    intervals = r.json()["intervals"]
    # 09:15-09:30 holds c2 (09:20) and the late leg (09:17), 33 minutes behind the newest.
    assert [i["offered"] for i in intervals] == [2, 2, 2, 1]
    assert [i["restated"] for i in intervals] == [False, True, False, False]


def _events(legs: list[Leg]) -> list[dict[str, Any]]:
    return [e for leg in legs for e in leg_events(leg)]
