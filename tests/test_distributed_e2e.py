"""The distributed pipeline end to end, as an operator runs it: `callpulse ingest` (HTTP) →
Kafka (librdkafka's mock broker) → two `callpulse aggregator` Faust workers → PostgreSQL.

During the replay one worker is SIGKILLed several times and restarted, a third worker joins
and later leaves (rebalances), events are re-sent (duplicates) and poison records are put
on the topic behind the ingest's back. Afterwards every stored queue bucket, agent bucket,
agent state segment and leg equals, integer for integer, what the embedded mode stores for
the same input, and the buckets equal an independent batch recomputation
(`tests/oracle.py`). The distributed API then answers an intervals query exactly as the
embedded API does.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from confluent_kafka import Producer

from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.ingest.edge import prepare
from services.store.keys import new_key
from services.store.postgres import PostgresStore, migrate
from tests.distributed import (
    CALLER_SECRET,
    START,
    Stack,
    end_offsets,
    post,
    read_topic,
    recorded_events,
    stack,
    wait_caught_up,
    wire,
)
from tests.kafka import MOCK_PARTITIONS, MockCluster
from tests.oracle import batch, nonzero

BATCH = 200


def embedded_result(tmp_path: Path, bodies: list[bytes]) -> dict[str, Any]:
    """The embedded mode on the same request bodies: same edge, log, core and store."""
    settings = EmbeddedSettings(
        data_dir=tmp_path / "embedded",
        caller_key_secret=CALLER_SECRET,  # type: ignore[arg-type]
    )
    embedded = Embedded(settings)
    try:
        for body in bodies:
            events, errors = prepare(body, None, CALLER_SECRET.encode(), 10_000)
            assert not errors
            asyncio.run(embedded.backend.ingest(events))
        aggregator = embedded.aggregator
        while aggregator.step():
            pass
        aggregator.flush(force_checkpoint=True)
        store = embedded.store
        tenants = sorted({k[0] for k in store.all_queue_buckets()})
        states = {}
        for tenant in tenants:
            states.update((s.key, s) for s in store.state_segments(tenant, 0, 2**62))
        return {
            "queue": store.all_queue_buckets(),
            "agent": store.all_agent_buckets(),
            "state": states,
            "legs": sorted(msgspec.structs.astuple(r) for r in store.all_legs()),
            "embedded": embedded,
        }
    finally:
        embedded.store.close()
        embedded.log.close()


def distributed_result(database_url: str) -> dict[str, Any]:
    store = PostgresStore(database_url, pool_size=1)
    try:
        return {
            "queue": store.all_queue_buckets(),
            "agent": store.all_agent_buckets(),
            "state": {s.key: s for s in store.all_segments()},
            "legs": sorted(msgspec.structs.astuple(r) for r in store.all_legs()),
        }
    finally:
        store.close()


def poison(kafka: MockCluster, topic: str) -> None:
    """Two records no ingest would let through, carrying a caller number in clear."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=b'["acme","q","general"]', value=b"not json +4915112345678")
    bad = {"schema_version": "1.0", "event_id": "p1", "event_type": "call.queued",
           "occurred_at": START.isoformat(), "tenant_id": "acme", "source": "x",
           "call_id": "c-4915112345678", "queue_id": "general", "priority": "urgent",
           "caller_key": "+4915112345678"}  # fmt: skip
    producer.produce(topic, key=b'["acme","q","general"]', value=msgspec.json.encode([bad]))
    assert producer.flush(10) == 0


def send_all(s: Stack, bodies: list[bytes], token: str, resent: list[int]) -> None:
    for n, body in enumerate(bodies):
        post(s.url("ingest"), body, token)
        if n in resent:
            post(s.url("ingest"), body, token)
        time.sleep(0.5)


class Claims:
    """Partition claims (fencing generations) and progress, as committed in PostgreSQL."""

    def __init__(self, database_url: str, bootstrap: str, topic: str) -> None:
        self.database_url = database_url
        self.bootstrap = bootstrap
        self.topic = topic

    def _rows(self) -> list[tuple[int, int, int]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(
                "SELECT partition, generation, applied_offset FROM aggregator_partitions"
                " WHERE topic = %s",
                (self.topic,),
            ).fetchall()

    def total(self) -> int:
        return sum(g for _, g, _ in self._rows())

    def applied(self) -> int:
        return sum(o + 1 for _, _, o in self._rows())

    def wait_for(self, claims: int, progress_after: int, timeout_s: float = 150) -> None:
        """Until `claims` claims were made and records were applied past `progress_after`
        (or nothing is left to apply). The bound allows for the mock broker's group quirk
        (a SyncGroup answered INVALID_REQUEST leaves members stuck until the watchdog, 25 s
        here, exits them and they are restarted), seen twice in a row at worst."""
        deadline = time.monotonic() + timeout_s
        while True:
            applied = self.applied()
            ends = sum(end_offsets(self.bootstrap, self.topic).values())
            if self.total() >= claims and (applied > progress_after or applied == ends):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no new claim/progress: {self._rows()}")
            time.sleep(0.2)


def assignment(s: Stack, name: str) -> list[int] | None:
    """The partitions worker `name`'s current process last logged as assigned to it (None
    before its first assignment)."""
    pid = s.procs[name].pid
    text = (s.logs / f"{name}.log").read_text(errors="replace")
    found = re.findall(rf"\[{pid}\] \[INFO\] assigned partitions \[([^\]]*)\]", text)
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else None


def wait_settled(s: Stack, workers: list[str], claims: Claims, progress_after: int) -> None:
    """Until the live workers' latest assignments cover every partition exactly once and
    records were applied past `progress_after` (or none are left). The bound allows for the
    mock broker's stuck-group quirk (see `Claims.wait_for`)."""
    deadline = time.monotonic() + 150
    while True:
        held = [assignment(s, w) for w in workers]
        owned = sorted(p for h in held if h is not None for p in h)
        applied = claims.applied()
        ends = sum(end_offsets(claims.bootstrap, claims.topic).values())
        if (
            None not in held
            and owned == list(range(MOCK_PARTITIONS))
            and (applied > progress_after or applied == ends)
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {dict(zip(workers, held, strict=True))}")
        time.sleep(0.2)


def test_replay_with_kills_and_rebalance_is_exact(
    pg_url: str, kafka: MockCluster, tmp_path: Path
) -> None:
    events = recorded_events(40)
    assert len(events) > 10000
    bodies = [b"[" + b",".join(events[i : i + BATCH]) + b"]" for i in range(0, len(events), BATCH)]
    rng = random.Random(5)
    # A source re-sends some batches (lost acknowledgements): duplicates reach the topic.
    resent = sorted(rng.sample(range(len(bodies)), 6))

    migrate(pg_url)
    token, record = new_key(None, "admin", "e2e", int(time.time() * 1000))
    admin = PostgresStore(pg_url, pool_size=1)
    admin.put_key(record)
    admin.close()

    with stack(kafka.bootstrap, pg_url, tmp_path) as s:
        s.log_level = "INFO"  # the workers log their assignments (see `wait_holding`)
        s.start("ingest", "ingest")
        s.start("a", "aggregator")
        s.start("b", "aggregator")
        poison(kafka, s.topics.events)
        # The source sends at a steady pace in the background while workers come and go.
        sender = threading.Thread(target=send_all, args=(s, bodies, token, resent), daemon=True)
        sender.start()
        claims = Claims(pg_url, kafka.bootstrap, s.topics.events)
        claims.wait_for(4, progress_after=0)  # both workers hold partitions and apply
        workers, moved = ["a", "b"], 0
        for action in ("kill a", "join c", "kill b", "leave c", "kill a"):
            verb, name = action.split()
            # A stopped worker's partitions must be claimed again (by another worker or its
            # restarted process, which starts empty). A worker may hold none: Faust's
            # assignor can leave a joiner without partitions until the next rebalance.
            if verb != "join" and assignment(s, name):
                moved += 1
            progress = claims.applied()
            if verb == "kill":
                time.sleep(rng.random() * 0.3)  # anywhere in the worker's cycle
                s.stop(name, signal.SIGKILL)
                s.start(name, "aggregator")
            elif verb == "join":
                s.start(name, "aggregator")
                workers.append(name)
            else:
                s.stop(name, signal.SIGTERM)
                workers.remove(name)
            # The group settled on the change and the owners make progress before the next
            # blow.
            wait_settled(s, workers, claims, progress)
        sender.join(timeout=120)
        assert not sender.is_alive()
        ends = wait_caught_up(s, timeout_s=120)
        assert sum(ends.values()) >= len(bodies)
        assert moved >= 1 and claims.total() >= 4 + moved
        print(
            f"{len(events)} events, {sum(ends.values())} messages, {claims.total()} claims"
            f" ({moved} stops of workers holding partitions),"
            f" supervisor restarts: {s.restarts}"
        )

        got = distributed_result(pg_url)
        want = embedded_result(tmp_path, bodies)
        assert got["queue"] == want["queue"]
        assert got["agent"] == want["agent"]
        assert got["state"] == want["state"]
        assert got["legs"] == want["legs"]
        oracle_q, oracle_a = batch(wire(events))
        assert nonzero(got["queue"]) == nonzero(oracle_q)
        assert nonzero(got["agent"]) == nonzero(oracle_a)

        dead = read_topic(kafka.bootstrap, s.topics.dlq)
        assert len(dead) == 2
        assert all(b"4915112345678" not in value for _, value in dead), dead
        assert {msgspec.json.decode(v)["body_bytes"] > 0 for _, v in dead} == {True}

        # The distributed API answers like the embedded one (same routes, same numbers).
        s.start("api", "api")
        tenant, queue = next(iter(sorted(k[:2] for k in want["queue"])))
        params = {"tenant": tenant, "from": START.isoformat(),
                  "to": "2026-11-20T09:00:00+00:00", "interval": "15m"}  # fmt: skip
        r = httpx.get(f"{s.url('api')}/v1/queues/{queue}/intervals", params=params,
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip
        assert r.status_code == 200, r.text
        distributed_view = r.json()
        embedded_view = asyncio.run(_embedded_intervals(tmp_path, queue, params))
        assert distributed_view["total"]["offered"] > 0
        assert distributed_view == embedded_view


async def _embedded_intervals(tmp_path: Path, queue: str, params: dict[str, str]) -> Any:
    settings = EmbeddedSettings(
        data_dir=tmp_path / "embedded",
        caller_key_secret=CALLER_SECRET,  # type: ignore[arg-type]
    )
    embedded = Embedded(settings)
    try:
        token, record = new_key(None, "admin", "e2e", int(time.time() * 1000))
        embedded.store.put_key(record)
        transport = httpx.ASGITransport(app=embedded.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.get(f"/v1/queues/{queue}/intervals", params=params,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()
    finally:
        embedded.store.close()
        embedded.log.close()
