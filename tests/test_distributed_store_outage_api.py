"""The distributed API while PostgreSQL cannot be reached: live figures keep coming with the
last-known windows, marked stale; history answers 503 with Retry-After and a clear error;
a key seen before still authenticates, an unknown one gets 503 (not 401); once the store is
back, figures are fresh again. (The whole outage, with processes, is in
tests/test_reliability_distributed.py.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client import CollectorRegistry

from services.api.app import create_app
from services.api.deps import ApiConfig
from services.distributed.backend import DistributedBackend
from services.kpi.centre import Centre, Settings
from services.store.keys import new_key
from services.store.postgres import PostgresStore, migrate
from tests.factories import event

TENANT, QUEUE = "t-outage", "q1"
UNREACHABLE = "host=127.0.0.1 port=9 user=nobody dbname=none connect_timeout=2"


def seed(url: str, now: datetime) -> None:
    """A few answered calls of the last minutes, written as the aggregator would."""
    centre = Centre(Settings())
    for n in range(5):
        at = now - timedelta(minutes=3, seconds=-10 * n)
        common = {"tenant_id": TENANT, "call_id": f"c{n}", "queue_id": QUEUE}
        for kind, delay, extra in (("call.queued", 0, {}),
                                   ("call.answered", 5, {"agent_id": "a1"})):  # fmt: skip
            e = event(kind, at + timedelta(seconds=delay), **common, **extra)
            centre.apply(e, int(e.occurred_at.timestamp() * 1000))
    store = PostgresStore(url, pool_size=1)
    try:
        store.write(centre)
    finally:
        store.close()


async def test_live_serves_last_known_values_marked_stale_and_history_503(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    seeded = datetime.now(UTC)
    seed(pg_url, seeded)
    owner = PostgresStore(pg_url, pool_size=1)
    known, record = new_key(TENANT, "client", "seen", int(time.time() * 1000))
    unseen, other = new_key(TENANT, "client", "unseen", int(time.time() * 1000))
    owner.put_key(record)
    owner.put_key(other)
    owner.close()
    store = PostgresStore(pg_url, pool_size=2)
    backend = DistributedBackend(store, None, None, "events", 5.0, 3_600_000, cache_ttl_s=0.0)
    app = create_app(backend, ApiConfig(caller_key_secret=b"s"), CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    auth = {"Authorization": f"Bearer {known}"}
    # From the start of the hour before: the seeded calls (the last minutes) may lie in the
    # previous clock hour, and an interval counts when its start lies in [from, to).
    start = (seeded - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    params = {"from": start.isoformat(), "to": (seeded + timedelta(hours=1)).isoformat(),
              "interval": "60m"}  # fmt: skip
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            fresh = (await client.get(f"/v1/queues/{QUEUE}/live", headers=auth)).json()
            assert fresh["stale"] is False and fresh["windows_as_of"] == fresh["as_of"]
            rolling = {w["name"]: w["answered"] for w in fresh["windows"]}
            assert rolling["rolling_15m"] == 5, fresh

            backend.store = PostgresStore(UNREACHABLE, pool_size=2)  # the database goes away
            started = time.monotonic()
            r = await client.get(f"/v1/queues/{QUEUE}/live", headers=auth)
            assert r.status_code == 200, r.text
            down = r.json()
            assert down["stale"] is True
            assert down["windows_as_of"] == fresh["as_of"] and down["as_of"] > fresh["as_of"]
            assert {w["name"]: w["answered"] for w in down["windows"]} == rolling
            r = await client.get(f"/v1/queues/{QUEUE}/intervals", headers=auth, params=params)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "5"
            error = r.json()["error"]
            assert error["code"] == "store_unavailable" and "unreachable" in error["message"]
            # A key never seen cannot be checked: 503, not a misleading 401.
            r = await client.get(
                f"/v1/queues/{QUEUE}/live", headers={"Authorization": f"Bearer {unseen}"}
            )
            assert r.status_code == 503 and "Retry-After" in r.headers, r.text
            assert time.monotonic() - started < 20  # no hanging on the dead store
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["stale"] is True

            backend.store.close()
            backend.store = store  # the database is back
            again = (await client.get(f"/v1/queues/{QUEUE}/live", headers=auth)).json()
            assert again["stale"] is False and again["windows_as_of"] == again["as_of"]
            r = await client.get(f"/v1/queues/{QUEUE}/intervals", headers=auth, params=params)
            assert r.status_code == 200 and r.json()["total"]["answered"] == 5, r.text
    finally:
        store.close()
