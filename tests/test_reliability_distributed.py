"""Faults in the distributed mode, through the replay oracle harness: `callpulse ingest` →
Kafka (the librdkafka mock broker) → two `callpulse aggregator` Faust workers → PostgreSQL.

Every test compares every stored queue bucket, agent bucket and leg, integer for integer,
with the batch recomputation from the deduplicated events (tests/harness.py `expected`,
one event-time watermark per partition), and records its figures (tests/reliability.py).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from confluent_kafka import Consumer, TopicPartition

from services.store.keys import new_key
from services.store.postgres import PostgresStore
from tests.distributed import Stack, read_topic
from tests.harness import Fault, FaultPlan, assert_exact, simulated_events
from tests.harness_distributed import (
    applied_offsets,
    event_key,
    expected_distributed,
    run_distributed,
)
from tests.kafka import MOCK_PARTITIONS, MockCluster
from tests.pg import throwaway_cluster
from tests.reliability import record
from tests.tcpproxy import KafkaProxy

pytestmark = pytest.mark.reliability

BATCH = 250
STUCK_S = 25  # the workers' watchdog limit (CALLPULSE_STUCK_REBALANCE_S)


def test_worker_sigkills_and_a_sigterm_in_a_rebalance_lose_nothing(
    pg_url: str, kafka: MockCluster, tmp_path: Path
) -> None:
    events = simulated_events(30)
    rng = random.Random(11)
    # Ten SIGKILLs at random points of the replay (the workers in turn, anywhere in a
    # batch's life), and one SIGTERM of a worker while the group rebalances after the
    # other one left.
    kills = tuple(
        Fault("sigkill", rng.uniform(0.05, 0.9), {"delay_s": rng.uniform(0, 0.5)})
        for _ in range(10)
    )
    plan = FaultPlan(
        seed=7, duplicates=0.02,
        faults=(*kills, Fault("sigterm_rebalance", 0.95, {"delay_s": 0.7})),
    )  # fmt: skip
    delivery = plan.deliver(events)
    want = expected_distributed(delivery, BATCH)
    assert delivery.duplicates > 0.015 * len(events)
    assert len(delivery.after_restart) == 1  # one duplicate arrives after the first kill

    run = run_distributed(
        delivery, tmp_path, bootstrap=kafka.bootstrap, database_url=pg_url, batch_size=BATCH,
        pace_s=0.6,
    )  # fmt: skip

    assert_exact(run.stored, want)
    f = run.figures
    assert f["faults_executed"] == {"sigkill": 10, "sigterm_rebalance": 1}
    # Every kill was followed by a restart of the killed worker (exit code -9).
    assert f["supervisor_restarts"] >= 12 and -9 in f["restart_codes"], f
    recovery = f["recovery_s"]
    assert len(recovery["sigkill"]) == 10 and len(recovery["sigterm_rebalance"]) == 2
    print(f"distributed crashes: {f}")
    record(
        "crashes",
        "Faust workers: 10 SIGKILLs during a replay, SIGTERM in a rebalance (2 workers)",
        {
            **delivery.figures(), **want.figures(), "workers": 2,
            "sigkills": 10, "sigterms_in_rebalance": 1,
            "supervisor_restarts": f["supervisor_restarts"],
            "recovery_s_after_sigkill": recovery["sigkill"],
            "recovery_s_after_sigterm": recovery["sigterm_rebalance"],
            "recovery_s_max": max(v for vs in recovery.values() for v in vs),
            "run_s": f["run_s"], "result": "exact",
        },
    )  # fmt: skip


def wait_settled(s: Stack, since: float) -> None:
    """Until both workers ran without a restart for longer than their watchdog's limit: the
    mock broker sometimes answers a SyncGroup of workers joining together with
    INVALID_REQUEST, and the stuck worker then exits for a restart (services/aggregator/
    distributed.py). A fault is to find a settled group, so that a restart during it is the
    fault's doing."""
    calm_since, restarts = since, len(s.restarts)
    while time.monotonic() - calm_since < STUCK_S + 2 or not all(s.alive(n) for n in "ab"):
        if len(s.restarts) != restarts:
            calm_since, restarts = time.monotonic(), len(s.restarts)
        assert time.monotonic() - since < 120, "the group did not settle"
        time.sleep(0.5)


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The consumer group's committed offsets in Kafka (what the workers acknowledged)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = [TopicPartition(topic, p) for p in range(MOCK_PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def heartbeats(bootstrap: str, topic: str, events_topic: str) -> list[dict[str, Any]]:
    """Every partition heartbeat the workers published on the snapshot topic."""
    out = []
    for key, value in read_topic(bootstrap, topic, timeout_s=30):
        if key is not None and key.startswith(b'["partition"'):
            beat = msgspec.json.decode(value)
            if beat["topic"] == events_topic:
                out.append(beat)
    return out


def test_a_minute_without_postgresql_loses_nothing_and_the_api_says_stale(
    kafka: MockCluster, tmp_path: Path
) -> None:
    events = simulated_events(20)
    first = msgspec.json.decode(next(e for e in events if b'"call.queued"' in e))
    tenant, queue = first["tenant_id"], first["queue_id"]
    outage_s = 60.0
    plan = FaultPlan(seed=3, faults=(Fault("stop_postgres", 0.25, {"duration_s": outage_s}),))
    delivery = plan.deliver(events)
    want = expected_distributed(delivery, BATCH)
    params = {"tenant": tenant, "from": "2026-11-20T08:00:00+00:00",
              "to": "2026-11-20T09:00:00+00:00", "interval": "15m"}  # fmt: skip

    token: dict[str, str] = {}
    ready_at: list[float] = []

    def probe(fault: Fault, s: Stack, phase: str) -> dict[str, Any]:
        api = s.url("api")
        headers = {"Authorization": f"Bearer {token['key']}"}
        if phase == "before":
            wait_settled(s, ready_at[0])
        seen: dict[str, Any] = {"phase": phase, "at": time.monotonic()}
        seen["workers_alive"] = all(s.alive(n) for n in ("a", "b"))
        seen["restarts"] = len(s.restarts)
        deadline = time.monotonic() + 30
        while True:
            started = time.monotonic()
            live = httpx.get(f"{api}/v1/queues/{queue}/live", params={"tenant": tenant},
                             headers=headers, timeout=30)  # fmt: skip
            seen["live_s"] = round(time.monotonic() - started, 3)
            # Before the outage: until the workers have written the queue's first buckets.
            if phase != "before" or live.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        seen["live_status"] = live.status_code
        if live.status_code == 200:
            view = live.json()
            seen["stale"] = view["stale"]
            seen["windows_behind_s"] = (
                datetime.fromisoformat(view["as_of"])
                - datetime.fromisoformat(view["windows_as_of"])
            ).total_seconds()
        started = time.monotonic()
        hist = httpx.get(f"{api}/v1/queues/{queue}/intervals", params=params, headers=headers,
                         timeout=30)  # fmt: skip
        seen["history_s"] = round(time.monotonic() - started, 3)
        seen["history_status"] = hist.status_code
        seen["history_retry_after"] = hist.headers.get("Retry-After")
        seen["history_code"] = hist.json().get("error", {}).get("code")
        seen["committed"] = committed_offsets(kafka.bootstrap, s.topics.group, s.topics.events)
        if phase == "after":
            seen["applied"] = applied_offsets(s.database_url, s.topics.events)
        return seen

    with throwaway_cluster() as server, server.database() as url:

        def ready(s: Stack) -> None:
            # The API's own key: made as the operator would, before the outage.
            key, rec = new_key(None, "admin", "probe", int(time.time() * 1000))
            owner = PostgresStore(url, pool_size=1)
            owner.put_key(rec)
            owner.close()
            token["key"] = key
            ready_at.append(time.monotonic())

        run = run_distributed(
            delivery, tmp_path, bootstrap=kafka.bootstrap, database_url=url, pg=server,
            batch_size=BATCH, pace_s=2.0, api=True, probe=probe, probe_every_s=4.0,
            on_ready=ready, env={"CALLPULSE_STUCK_REBALANCE_S": str(STUCK_S)},
        )  # fmt: skip
        stored = run.stored
        f = run.figures
        beats = heartbeats(kafka.bootstrap, f["snapshots_topic"], f["topic"])

    assert_exact(stored, want)
    probes = f["probes"]["stop_postgres"]
    before, during, after = probes[0], probes[1:-1], probes[-1]
    assert before["phase"] == "before" and after["phase"] == "after" and len(during) >= 10
    assert before["live_status"] == 200 and before["history_status"] == 200, before
    # No crash loop: both workers stayed up through the outage, none was restarted. (A
    # restart before it, the mock broker's SyncGroup quirk and the watchdog, is not the
    # outage's doing: the count must only not grow from the "before" probe to "after".)
    assert all(p["workers_alive"] and p["restarts"] == before["restarts"] for p in probes), probes
    # The API answers at once: live figures with the last-known windows, marked stale;
    # history 503 with Retry-After and a clear error code.
    late = during[2:]  # the API notices within a request or its 1 s store watch
    assert all(p["live_status"] == 200 and p["stale"] for p in late), late
    assert all(p["windows_behind_s"] > 0 for p in late), late
    assert all(p["history_status"] == 503 for p in late), late
    assert {p["history_retry_after"] for p in late} == {"5"}
    assert {p["history_code"] for p in late} == {"store_unavailable"}
    assert max(p["live_s"] for p in during) < 10 and max(p["history_s"] for p in during) < 10
    # Ingest kept accepting: every request of the replay was acknowledged first time.
    assert f["responses"] == {"202": f["requests"]}
    # Nothing acknowledged before it was written: the committed offsets did not move while
    # the store was down (after the first seconds), and never passed the store's offsets.
    settled = [p["committed"] for p in during[3:]]
    assert all(c == settled[0] for c in settled), settled
    applied = after["applied"]
    assert applied is not None
    assert all(c <= applied.get(p, -1) + 1 for p, c in during[-1]["committed"].items())
    # ... while the workers kept consuming into their state (in-memory offsets beyond the
    # acknowledged ones, reported with the store error in the heartbeats).
    failing = [b for b in beats if b.get("store_error")]
    assert failing
    ahead = {b["partition"]: b["applied_offset"] for b in failing}
    assert any(ahead[p] + 1 > settled[-1].get(p, 0) for p in ahead), (ahead, settled[-1])
    # After the restart the backlog drained and every figure is exact again.
    assert after["history_status"] in (200, 503)
    drained_s = f["recovery_s"]["stop_postgres"][0]
    print(f"store outage: {outage_s} s, backlog drained {drained_s} s after the restart, "
          f"{len(during)} probes, figures {f}")  # fmt: skip
    record(
        "store_outage",
        f"PostgreSQL stopped for {outage_s:.0f} s during a replay (2 Faust workers, API)",
        {
            **delivery.figures(), **want.figures(), "outage_s": outage_s,
            "worker_restarts": f["supervisor_restarts"],
            "ingest_requests": f["requests"],
            "ingest_non_202": f["requests"] - f["responses"]["202"],
            "api_live_stale_answers": sum(1 for p in during if p.get("stale")),
            "api_history_503_answers": sum(1 for p in during if p["history_status"] == 503),
            "api_answer_s_max": max(max(p["live_s"], p["history_s"]) for p in during),
            "heartbeats_with_store_error": len(failing),
            "backlog_drained_s_after_restart": drained_s, "run_s": f["run_s"],
            "result": "exact",
        },
    )  # fmt: skip


def test_a_blackholed_broker_path_gives_503_in_time_and_loses_nothing(
    pg_url: str, kafka: MockCluster, tmp_path: Path
) -> None:
    events = simulated_events(20)
    pause_s, ack_timeout_s = 20.0, 2.0
    plan = FaultPlan(seed=5, faults=(Fault("pause_broker", 0.3, {"duration_s": pause_s}),))
    delivery = plan.deliver(events)
    want = expected_distributed(delivery, BATCH)

    def probe(fault: Fault, s: Stack, phase: str) -> dict[str, Any]:
        started = time.monotonic()
        health = httpx.get(f"{s.url('ingest')}/healthz", timeout=30)
        return {
            "phase": phase, "healthz": health.status_code,
            "healthz_s": round(time.monotonic() - started, 3),
            "workers_alive": all(s.alive(n) for n in ("a", "b")), "restarts": len(s.restarts),
        }  # fmt: skip

    proxy = KafkaProxy(kafka.bootstrap)
    proxy.start()
    try:
        run = run_distributed(
            delivery, tmp_path, bootstrap=kafka.bootstrap, database_url=pg_url, proxy=proxy,
            batch_size=BATCH, pace_s=1.0, probe=probe, probe_every_s=2.0,
            env={"CALLPULSE_ACK_TIMEOUT_S": str(ack_timeout_s)},
        )  # fmt: skip
    finally:
        proxy.close()

    # Everything acknowledged (every batch was re-sent until it was) is in the results.
    assert_exact(run.stored, want)
    f = run.figures
    # The services really went through the proxy (broker addresses rewritten).
    assert proxy.rewritten > 0 and proxy.connections >= 4
    # While the path was cut, the ingest answered 503 with Retry-After (the runner checks
    # the header), each within its acknowledgement budget, instead of hanging.
    assert f["responses"].get("503", 0) >= 3, f["responses"]
    assert f["responses_503_seconds_max"] < ack_timeout_s + 3, f
    during = [p for p in f["probes"]["pause_broker"] if p["phase"] == "during"]
    assert all(p["healthz_s"] < 10 for p in during), during
    # Workers resumed by themselves: caught up, exact. A worker the mock broker leaves stuck
    # in the group after the cut exits through its watchdog and is restarted (counted).
    resumed_s = f["recovery_s"]["pause_broker"][0]
    restarts = f["supervisor_restarts"] - f["probes"]["pause_broker"][0]["restarts"]
    print(f"broker path cut {pause_s} s: 503s {f['responses'].get('503')}, resumed and caught "
          f"up {resumed_s} s after, worker restarts {restarts}, figures {f}")  # fmt: skip
    record(
        "broker_trouble",
        f"Path to the broker blackholed for {pause_s:.0f} s during a replay (TCP proxy)",
        {
            **delivery.figures(), **want.figures(), "pause_s": pause_s,
            "ingest_ack_timeout_s": ack_timeout_s,
            "ingest_202": f["responses"].get("202", 0),
            "ingest_503_with_retry_after": f["responses"].get("503", 0),
            "ingest_503_seconds_max": round(f["responses_503_seconds_max"], 2),
            "worker_restarts_from_the_cut_on": restarts,
            "worker_restart_codes": f["restart_codes"],
            "caught_up_s_after_resume": resumed_s, "run_s": f["run_s"], "result": "exact",
        },
    )  # fmt: skip


CALLER = "+4915112345678"


def poison_records(first: dict[str, Any]) -> dict[str, bytes]:
    """One record of each kind no ingest lets through, each carrying a caller number."""
    good = {k: first[k] for k in ("schema_version", "event_type", "occurred_at", "tenant_id",
                                  "source", "call_id", "queue_id")}  # fmt: skip
    huge = {**good, "event_id": "poison-huge", "caller_key": CALLER,
            "source": os.urandom(1_200_000).hex()}  # fmt: skip
    return {
        "bad_json": f"not json {CALLER}".encode(),
        "wrong_types": msgspec.json.encode(
            [{**good, "event_id": "poison-types", "priority": "urgent", "caller_key": CALLER}]
        ),
        "unknown_version": msgspec.json.encode(
            [
                {
                    **good,
                    "event_id": "poison-version",
                    "schema_version": "9.0",
                    "caller_key": CALLER,
                }
            ]
        ),
        # 2.4 MB, incompressible: more than a fetch of one partition (1 MB) takes.
        "huge": msgspec.json.encode([huge]),
    }


def test_poison_records_are_dead_lettered_redacted_and_the_partition_moves_on(
    pg_url: str, kafka: MockCluster, tmp_path: Path
) -> None:
    events = simulated_events(20)
    first = msgspec.json.decode(next(e for e in events if b'"call.queued"' in e))
    key = event_key(first)
    poison = poison_records(first)
    config = {"message.max.bytes": 8_000_000, "compression.type": "none"}
    plan = FaultPlan(
        seed=9,
        faults=(
            Fault("poison", 0.3, {"key": key, "values": [poison["bad_json"], poison["huge"]],
                                  "config": config}),
            Fault("poison", 0.6, {"key": key, "values": [poison["wrong_types"],
                                                         poison["unknown_version"]]}),
        ),
    )  # fmt: skip
    delivery = plan.deliver(events)
    want = expected_distributed(delivery, BATCH)

    run = run_distributed(
        delivery, tmp_path, bootstrap=kafka.bootstrap, database_url=pg_url, batch_size=BATCH,
        pace_s=0.3,
    )  # fmt: skip

    # The good records around the poison: exact; the poison's partition was applied to its
    # end (the runner waited for every partition to be caught up).
    assert_exact(run.stored, want)
    f = run.figures
    dead = [msgspec.json.decode(v) for _, v in read_topic(kafka.bootstrap, f["dlq_topic"])]
    assert len(dead) == 4, dead
    raw = msgspec.json.encode(dead)
    assert CALLER.encode() not in raw and CALLER[1:].encode() not in raw
    sizes = sorted(d["body_bytes"] for d in dead)
    assert sizes[-1] == len(poison["huge"]) - 2 and len(raw) < 20_000  # the event, not "[...]"
    reasons = {d["body_sha256"]: d["reason"] for d in dead}
    for name, value in poison.items():
        digest = hashlib.sha256(
            value if name == "bad_json" else msgspec.json.encode(msgspec.json.decode(value)[0])
        ).hexdigest()
        assert digest in reasons, (name, reasons)
    assert all(d["topic"] == f["topic"] and d["reason"] for d in dead)
    print(f"poison: {[(d['reason'], d['path'], d['body_bytes']) for d in dead]}")
    record(
        "poison",
        "Poison records on the events topic (distributed): bad JSON, wrong types, unknown "
        "schema version, a 2.4 MB record",
        {
            **delivery.figures(), **want.figures(), "poison_records": len(poison),
            "dead_letters": len(dead), "caller_number_in_dead_letters": False,
            "dead_letter_reasons": sorted({d["reason"] for d in dead}),
            "partition_caught_up": True, "run_s": f["run_s"], "result": "exact",
        },
    )  # fmt: skip
