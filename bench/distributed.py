"""The distributed aggregator's throughput next to its baselines, in one run.

Run: .venv/bin/python -m bench.distributed [--events N] [--naive-events M] [--workers W]

Everything runs on this machine: librdkafka's mock broker (in this process), a throwaway
PostgreSQL 15 (or DATABASE_URL), and the workers as separate processes. One event stream
(the simulator's large centre, time-ordered) is written to Kafka twice:

- ingest-shaped: as `callpulse ingest` writes it, requests of 500 events, one message per
  key per request (several events per message);
- one event per message (the classic layout the naive agent is written for).
Both gzip-compressed: the mock broker keeps only the newest 5 MB of each partition.

Measured, each as events/s from its first record to its last:
- raw aiokafka consumption of each topic (the ceiling: fetch only, no decoding);
- the naive Faust agent counting events per key in a table (the peer baseline);
- `callpulse aggregator` (Faust) on each topic, until every offset is committed in
  PostgreSQL together with its bucket, leg, agent and state rows (the whole pipeline).
It is a benchmark, not a test: figures vary with the load of this shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.aggregator.distributed import EXIT_STUCK
from services.bus.kafka import encode_messages, event_key
from services.kpi.centre import Stats
from services.kpi.events import Event, decode_event, encode_event
from services.store.postgres import migrate
from tests.kafka import MOCK_PARTITIONS, MockCluster
from tests.pg import PgServer, throwaway_cluster

from .core import event_mix

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def postgres() -> Iterator[PgServer]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield PgServer(url, True)
    else:
        with throwaway_cluster() as server:
            yield server


def stream(n: int) -> list[Event]:
    hours = 6.0
    while True:
        raw = event_mix(hours)
        if len(raw) >= n:
            return [decode_event(b) for b in raw[:n]]  # type: ignore[misc]
        hours *= 2


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    # gzip: the mock broker keeps only the newest 5 MB of each partition, which the
    # uncompressed stream would exceed (and compression is what a real deployment uses).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5,
        max_request_size=4 * 1024 * 1024, compression_type="gzip", max_batch_size=256 * 1024,
    )  # fmt: skip
    await producer.start()
    started = time.perf_counter()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def raw_consume(bootstrap: str, topic: str, count: int) -> float:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(MOCK_PARTITIONS)])
        await consumer.seek_to_beginning()
        seen, started = 0, None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if started is None and batches:
                started = time.perf_counter()
            seen += sum(len(records) for records in batches.values())
        assert started is not None
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def naive(bootstrap: str, topic: str, count: int) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "bench.naive_faust", bootstrap, topic, str(count)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    for line in done.stderr.splitlines():
        if line.startswith("elapsed "):
            return float(line.split()[1])
    raise RuntimeError(f"the naive agent failed:\n{done.stderr[-3000:]}")


def aggregate(
    bootstrap: str, url: str, topic: str, ends: dict[int, int], workers: int
) -> tuple[float, float]:
    """(seconds from the first claim to every offset committed with its rows, events/s
    between the first and the last commit: the steady rate, startup excluded)."""
    env = {
        **os.environ, "CALLPULSE_KAFKA_BOOTSTRAP": bootstrap, "CALLPULSE_DATABASE_URL": url,
        "CALLPULSE_EVENTS_TOPIC": topic, "CALLPULSE_SNAPSHOTS_TOPIC": f"{topic}-snap",
        "CALLPULSE_DLQ_TOPIC": f"{topic}-dlq", "CALLPULSE_GROUP_ID": f"{topic}-agg",
        "CALLPULSE_BATCH_MAX_MESSAGES": "5000", "CALLPULSE_FLUSH_INTERVAL_S": "0.5",
        "CALLPULSE_STUCK_REBALANCE_S": "20",
    }  # fmt: skip
    # CALLPULSE_BENCH_PROFILE=DIR runs each worker under py-spy, writing collapsed stacks.
    profile = os.environ.get("CALLPULSE_BENCH_PROFILE")
    worker = [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "aggregator"]

    def command(i: int) -> list[str]:
        if not profile:
            return worker
        out = f"{profile}/{topic}-{i}.txt"
        return ["py-spy", "record", "--idle", "-r", "250", "-f", "raw", "-o", out, "--", *worker]

    def start(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command(i), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    procs = [start(i) for i in range(workers)]
    stats = msgspec.msgpack.Decoder(Stats)
    try:
        started = first = None
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                rows = conn.execute(
                    "SELECT partition, applied_offset, stats FROM aggregator_partitions"
                    " WHERE topic = %s",
                    (topic,),
                ).fetchall()
                now = time.perf_counter()
                if started is None and rows:
                    started = now
                done = 0
                for _, _, blob in rows:
                    if blob is not None:
                        st = stats.decode(blob)
                        done += st.applied + st.duplicates + st.ignored + st.quarantined
                if first is None and done:
                    first = (now, done)
                applied = {int(p): int(o) for p, o, _ in rows}
                if all(applied.get(p, -1) == end - 1 for p, end in ends.items() if end):
                    assert started is not None and first is not None
                    steady = (done - first[1]) / (now - first[0]) if now > first[0] else 0.0
                    return now - started, steady
                for i, proc in enumerate(procs):
                    code = proc.poll()
                    if code == EXIT_STUCK:  # stuck in the mock broker's group protocol
                        step(f"worker {i} exited to be restarted (code {code}); restarting it")
                        procs[i] = start(i)  # as a supervisor would; the time counts
                    elif code is not None:
                        raise RuntimeError(f"an aggregator worker exited with code {code}")
                time.sleep(0.02)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)  # py-spy: SIGINT
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(MOCK_PARTITIONS)]
        return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def step(what: str) -> None:
    print(f"... {what}", file=sys.stderr, flush=True)


@dataclass
class Pipeline:
    """Seconds measured by `measure_pipeline` for one event stream (see the module doc)."""

    events: int
    messages: int  # ingest-shaped
    produce_s: float  # ingest-shaped, acks=all
    raw_shaped_s: float
    raw_single_s: float | None
    naive_events: int
    naive_s: float
    ours_shaped: tuple[float, float]  # (seconds to every offset committed, steady events/s)
    single_events: int
    ours_single: tuple[float, float] | None
    rows: int  # result rows in PostgreSQL afterwards


def measure_pipeline(
    bootstrap: str, url: str, events: list[Event], naive_events: int, workers: int,
    single_events: int | None = None,
) -> Pipeline:  # fmt: skip
    """Produce `events` (fresh topics), then measure raw consumption, the naive agent on
    the first `naive_events` and the aggregator on the ingest-shaped topic and, unless
    `single_events` is 0, on the first `single_events` (default all) one per message.
    `url` is a migrated database; each call uses topics (and partition rows) of its own."""
    shaped: list[tuple[bytes, bytes]] = []
    for i in range(0, len(events), 500):
        shaped += encode_messages(events[i : i + 500])
    n, naive_n = len(events), min(naive_events, len(events))
    single_n = n if single_events is None else min(single_events, n)
    single = [(event_key(e), encode_event(e)) for e in events[: max(single_n, naive_n)]]
    tag = uuid.uuid4().hex[:8]
    t_shaped, t_single, t_naive_topic = f"b-shaped-{tag}", f"b-single-{tag}", f"b-naive-{tag}"
    step("producing")
    produce_s = asyncio.run(produce(bootstrap, t_shaped, shaped))
    if single_n:
        asyncio.run(produce(bootstrap, t_single, single[:single_n]))
    asyncio.run(produce(bootstrap, t_naive_topic, single[:naive_n]))
    step("raw consumption")
    raw_shaped = asyncio.run(raw_consume(bootstrap, t_shaped, len(shaped)))
    raw_single = asyncio.run(raw_consume(bootstrap, t_single, single_n)) if single_n else None
    step("naive Faust agent")
    naive_s = naive(bootstrap, t_naive_topic, naive_n)
    step("callpulse aggregator, ingest-shaped")
    ends = asyncio.run(end_offsets(bootstrap, t_shaped))
    ours_shaped = aggregate(bootstrap, url, t_shaped, ends, workers)
    ours_single = None
    if single_n:
        step("callpulse aggregator, 1 event/message")
        ends = asyncio.run(end_offsets(bootstrap, t_single))
        ours_single = aggregate(bootstrap, url, t_single, ends, workers)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT (SELECT count(*) FROM queue_buckets) + (SELECT count(*) FROM legs)"
            " + (SELECT count(*) FROM agent_buckets) + (SELECT count(*) FROM state_segments)"
        ).fetchone()
    return Pipeline(
        n, len(shaped), produce_s, raw_shaped, raw_single, naive_n, naive_s, ours_shaped,
        single_n, ours_single, int(rows[0]) if rows else 0,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--naive-events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    events = stream(args.events)
    cluster = MockCluster()
    with postgres() as server, server.database() as url:
        migrate(url, timescale=False)
        f = measure_pipeline(cluster.bootstrap, url, events, args.naive_events, args.workers)
    cluster.close()
    assert f.raw_single_s is not None and f.ours_single is not None

    n, messages = f.events, f.messages
    (ours_shaped, steady_shaped), (ours_single, steady_single) = f.ours_shaped, f.ours_single
    naive_rate = f.naive_events / f.naive_s
    table = [
        ("raw aiokafka consume, ingest-shaped", n / f.raw_shaped_s, messages / f.raw_shaped_s),
        ("raw aiokafka consume, 1 event/message", n / f.raw_single_s, n / f.raw_single_s),
        ("naive Faust agent + table, 1 event/msg", naive_rate, naive_rate),
        ("callpulse aggregator -> PG, ingest-shaped", n / ours_shaped, messages / ours_shaped),
        ("  same, steady (first to last commit)", steady_shaped, steady_shaped * messages / n),
        ("callpulse aggregator -> PG, 1 event/msg", n / ours_single, n / ours_single),
        ("  same, steady (first to last commit)", steady_single, steady_single),
    ]
    print(f"stream: {n} events of the large centre; ingest-shaped {messages} messages"
          f" ({n / messages:.1f} events/message); naive agent on the first {f.naive_events};"
          f" {args.workers} aggregator worker(s); produce (ingest-shaped, acks=all)"
          f" {n / f.produce_s:,.0f} events/s;"
          f" rows in PostgreSQL afterwards: {f.rows}")  # fmt: skip
    print(f"{'path':44} {'events/s':>12} {'messages/s':>12} {'x naive':>9} {'/ raw same':>11}")
    raw_rate = n / f.raw_shaped_s
    for name, rate, msgs in table:
        if "1 event" in name or name.startswith("naive"):
            raw_rate = n / f.raw_single_s
        elif "ingest-shaped" in name:
            raw_rate = n / f.raw_shaped_s
        same = raw_rate
        print(f"{name:44} {rate:12,.0f} {msgs:12,.0f} {rate / naive_rate:9.1f} {rate / same:11.1%}")
    print(
        "targets: aggregator >= 10x the naive agent, >= 25% of raw consumption of the same stream"
    )


if __name__ == "__main__":
    main()
