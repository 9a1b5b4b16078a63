"""`callpulse ingest`'s app over the mock Kafka broker: 202 only after the broker acknowledged,
keys that keep a leg's events in one partition and in order, caller numbers never in clear,
and 503 with Retry-After within the acknowledgement timeout when the broker is gone."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
from prometheus_client import CollectorRegistry

from services.api.app import create_app
from services.api.deps import ApiConfig
from services.api.routes import ingest, operations
from services.distributed.backend import DistributedBackend
from services.ingest.kafka import KafkaSink
from services.store.keys import new_key
from services.store.postgres import PostgresStore, migrate
from tests.distributed import Topics, read_topic, with_user
from tests.factories import event_dict
from tests.kafka import MockCluster


@asynccontextmanager
async def ingest_app(
    pg_url: str, bootstrap: str, topic: str, ack_timeout_s: float = 5.0, reachable: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    migrate(pg_url, timescale=False)
    owner = PostgresStore(pg_url, pool_size=1)
    token, key = new_key("t-ingest", "ingest", "test", int(time.time() * 1000))
    owner.put_key(key)
    owner.close()
    sink = KafkaSink(bootstrap, topic, ack_timeout_s=ack_timeout_s, retry_after_s=3)
    store = PostgresStore(with_user(pg_url, "callpulse_api"), pool_size=2)
    backend = DistributedBackend(store, None, sink, topic, 5.0, 3_600_000)
    app = create_app(backend, ApiConfig(caller_key_secret=b"s"), CollectorRegistry(),
                     (ingest.router, operations.router))  # fmt: skip
    await sink.start()
    for _ in range(200 if reachable else 0):
        if sink.connected:
            break
        await asyncio.sleep(0.05)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, {"Authorization": f"Bearer {token}"}
    finally:
        await sink.stop()
        store.close()


def leg_events(calls: int) -> list[dict[str, Any]]:
    out = []
    for n in range(calls):
        common = {"tenant_id": "t-ingest", "call_id": f"c{n}", "queue_id": f"q{n % 3}"}
        out += [
            event_dict("call.queued", n, caller_key=f"+4930{n:07d}", **common),
            event_dict("call.answered", n + 5, agent_id=f"a{n % 4}", **common),
            event_dict("call.ended", n + 50, **common),
            event_dict("call.wrapup_ended", n + 60, **common),
        ]
    out += [event_dict("agent.state_changed", 1, tenant_id="t-ingest", agent_id="a1",
                       team_id="t", state="available")]  # fmt: skip
    return out


async def test_accepted_events_are_on_the_topic_keyed_by_queue(
    pg_url: str, kafka: MockCluster
) -> None:
    topic = Topics.fresh().events
    events = leg_events(30)
    async with ingest_app(pg_url, kafka.bootstrap, topic) as (client, key):
        r = await client.post("/v1/events", content=msgspec.json.encode(events), headers=key)
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": len(events), "duplicates": 0, "rejected": []}
        health = await client.get("/healthz")
        assert health.status_code == 200, health.text
    records = await asyncio.to_thread(read_topic, kafka.bootstrap, topic)
    seen: list[dict[str, Any]] = []
    partition_of: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    for record_key, value in records:
        batch = msgspec.json.decode(value)
        assert record_key is not None
        for e in batch:
            expected = ["t-ingest", "q", e["queue_id"]] if "queue_id" in e else ["t-ingest", "a"]
            assert msgspec.json.decode(record_key) == expected
            partition_of[(e["tenant_id"], e.get("call_id", ""))].add(record_key)
        seen += batch
    assert sorted(e["event_id"] for e in seen) == sorted(e["event_id"] for e in events)
    # Within a call leg, the events keep the order they were sent in.
    sent_order = {e["event_id"]: i for i, e in enumerate(events)}
    by_call: dict[str, list[int]] = defaultdict(list)
    for e in seen:
        if "call_id" in e:
            by_call[e["call_id"]].append(sent_order[e["event_id"]])
    assert all(order == sorted(order) for order in by_call.values())
    assert all(len(keys) == 1 for keys in partition_of.values())
    raw = b"".join(v for _, v in records)
    assert b"+4930" not in raw  # caller numbers were replaced by their HMAC


async def test_no_broker_means_503_with_retry_after_in_bounded_time(pg_url: str) -> None:
    cluster = MockCluster()
    topic = Topics.fresh().events
    async with ingest_app(pg_url, cluster.bootstrap, topic, ack_timeout_s=1.5) as (client, key):
        body = msgspec.json.encode(leg_events(2))
        assert (await client.post("/v1/events", content=body, headers=key)).status_code == 202
        cluster.close()  # the broker is gone
        started = time.monotonic()
        r = await client.post("/v1/events", content=body, headers=key)
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "3"
        assert elapsed < 1.5 + 1.0, elapsed
        assert r.json()["error"]["code"] == "unavailable"


async def test_an_unreachable_broker_is_503_at_once(pg_url: str) -> None:
    async with ingest_app(
        pg_url, "127.0.0.1:9", Topics.fresh().events, ack_timeout_s=1, reachable=False
    ) as (
        client, key,
    ):  # fmt: skip
        started = time.monotonic()
        r = await client.post("/v1/events", content=msgspec.json.encode(leg_events(1)),
                              headers=key)  # fmt: skip
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert time.monotonic() - started < 1.0
        health = await client.get("/healthz")
        assert health.status_code == 503 and "kafka" in health.json()["detail"]
