"""The aggregation pipeline without Faust, against a real PostgreSQL: crash and re-delivery
exactness (simulated consumer with committed offsets), acknowledgements only after a
successful write, dead letters, fencing and rewinding after a hole."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from services.aggregator.pipeline import Pipeline, PipelineConfig, PipelineMetrics, Record
from services.bus.kafka import encode_messages
from services.bus.snapshots import Snapshot
from services.kpi.centre import Settings
from services.kpi.events import decode_event
from services.store.postgres import PartitionWriter, PostgresStore, migrate
from tests.distributed import recorded_events, wire
from tests.kafka import MockCluster
from tests.oracle import batch, nonzero
from tests.pg import PgServer

CORE = Settings(correction_horizon_ms=40 * 86_400_000)
PARTITIONS = 4


def topic_log(raw: list[bytes], per_request: int = 200) -> dict[int, list[bytes]]:
    """The events topic as the ingest would write it: per request, one message per key."""
    log: dict[int, list[bytes]] = defaultdict(list)
    for i in range(0, len(raw), per_request):
        events = [decode_event(b) for b in raw[i : i + per_request]]
        for key, value in encode_messages(events, max_events=50):  # type: ignore[arg-type]
            log[zlib.crc32(key) % PARTITIONS].append(value)
    return log


class Consumer:
    """A consumer with committed offsets: acknowledged records are committed; a restart
    re-delivers everything after the committed offset (and sometimes a bit more before)."""

    def __init__(self, log: dict[int, list[bytes]]) -> None:
        self.log = log
        self.committed = dict.fromkeys(log, 0)  # next offset to read after a restart
        self.position = dict.fromkeys(log, 0)
        self.acked: dict[int, set[int]] = defaultdict(set)

    async def ack(self, tokens: list[Any]) -> None:
        for partition, offset in tokens:
            self.acked[partition].add(offset)
        for p in self.log:  # the commit covers contiguous acknowledged offsets only
            while self.committed[p] in self.acked[p]:
                self.committed[p] += 1

    def restart(self, rng: random.Random) -> None:
        self.acked.clear()
        for p in self.log:
            self.position[p] = max(0, self.committed[p] - rng.randrange(3))

    def poll(self, rng: random.Random, n: int) -> list[Record]:
        out = []
        for _ in range(n):
            live = [p for p in self.log if self.position[p] < len(self.log[p])]
            if not live:
                break
            p = rng.choice(live)
            o = self.position[p]
            self.position[p] = o + 1
            out.append(Record(p, o, self.log[p][o], (p, o)))
        return out


def pipeline(url: str, consumer: Consumer | None = None, **config: Any) -> Pipeline:
    writer = PartitionWriter(url, "events", CORE)
    return Pipeline(
        writer, "events", PipelineConfig(core=CORE, flush_interval_s=0, **config),
        PipelineMetrics(CollectorRegistry()), ack=None if consumer is None else consumer.ack,
    )  # fmt: skip


def stored(url: str) -> tuple[Any, Any, Any]:
    store = PostgresStore(url, pool_size=1)
    try:
        legs = sorted(msgspec.structs.astuple(r) for r in store.all_legs())
        return store.all_queue_buckets(), store.all_agent_buckets(), legs
    finally:
        store.close()


# A simulated SIGKILL abandons connections mid-command, as a killed process would; their
# finalizers may warn, here and not in a later test (see the gc.collect() at the end).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_crashes_and_redelivery_give_the_result_of_a_calm_run(
    pg_url: str, pg_server: PgServer
) -> None:
    raw = recorded_events(25)
    log = topic_log(raw)
    with pg_server.database() as calm_url:
        crashy_url = pg_url
        for url in (calm_url, crashy_url):
            migrate(url, timescale=False)
        calm = Consumer(log)
        p = pipeline(calm_url, calm)
        rng = random.Random(1)
        while batch_ := calm.poll(rng, 37):
            await p.handle(batch_)
        assert await p.flush()
        await p.writer.close()

        crashy = Consumer(log)
        rng = random.Random(2)
        crashes = 0
        while True:
            p = pipeline(crashy_url, crashy)
            for _ in range(rng.randrange(1, 8)):
                records = crashy.poll(rng, rng.randrange(5, 60))
                if not records:
                    break
                await p.handle(records)
            if all(crashy.position[q] == len(log[q]) for q in log) and await p.flush():
                await p.writer.close()
                break
            # SIGKILL: whatever was applied but not written is lost, nothing was acked for it
            # (a write in flight may or may not commit).
            if p._writer_task is not None:
                p._writer_task.cancel()
                with contextlib.suppress(BaseException):
                    await p._writer_task
            await p.writer.close()
            crashy.restart(rng)
            crashes += 1
        assert crashes >= 5
        assert stored(crashy_url) == stored(calm_url)
        oracle_q, oracle_a = batch(wire(raw))
        queue, agent, _ = stored(crashy_url)
        assert nonzero(queue) == nonzero(oracle_q)
        assert nonzero(agent) == nonzero(oracle_a)
    gc.collect()


class Recorder:
    """Acks, dead letters and snapshots as they happen; dead letters can be made to fail."""

    def __init__(self) -> None:
        self.acked: list[Any] = []
        self.dead: list[bytes] = []
        self.snapshots: list[Snapshot] = []
        self.fail_dead_letters = False

    async def ack(self, tokens: list[Any]) -> None:
        self.acked += tokens

    async def publish(self, snapshots: Sequence[Snapshot]) -> None:
        self.snapshots += snapshots

    async def dead_letters(self, values: Sequence[bytes]) -> None:
        if self.fail_dead_letters:
            raise ConnectionError("broker down")
        self.dead += values


def _messages(n: int = 3) -> list[bytes]:
    raw = recorded_events(3)[:400]
    return [v for _, v in encode_messages([decode_event(b) for b in raw])][:n]  # type: ignore[misc]


async def test_poison_goes_redacted_to_dead_letters_before_the_ack(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    good = _messages(1)[0]
    bad_event = (b'{"schema_version":"1.0","event_id":"x","event_type":"call.queued",'
                 b'"occurred_at":"2026-11-20T08:00:00+00:00","tenant_id":"acme","source":"s",'
                 b'"call_id":"c+4915112345678","queue_id":"q","caller_key":"+4915112345678",'
                 b'"priority":"high"}')  # fmt: skip
    mixed = good[:-1] + b"," + bad_event + b"]"  # valid events and one poison event
    out = Recorder()
    p = pipeline(pg_url)
    p.ack, p.output = out.ack, out
    out.fail_dead_letters = True
    await p.handle([Record(0, 0, mixed, "m0"), Record(0, 1, b"\x00garbage 4915112345678", "m1")])
    assert not await p.flush()
    assert out.acked == [] and stored(pg_url)[0] == {}  # nothing acknowledged nor written
    out.fail_dead_letters = False
    assert await p.flush()
    assert out.acked == ["m0", "m1"]
    assert len(out.dead) == 2
    assert all(b"4915112345678" not in d for d in out.dead), out.dead
    letters = [msgspec.json.decode(d) for d in out.dead]
    assert letters[0]["body"]["caller_key"] == "<redacted>"
    assert letters[0]["body"]["call_id"] == "c+#############"
    assert letters[0]["path"].endswith(".priority") and letters[1]["body"] == "<redacted>"
    assert nonzero(stored(pg_url)[0]) == nonzero(batch(wire(_split(good)))[0])
    await p.writer.close()


def _split(message: bytes) -> list[bytes]:
    return [bytes(r) for r in msgspec.json.decode(message, type=list[msgspec.Raw])]


async def test_a_failing_store_acknowledges_nothing_until_it_recovers(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    out = Recorder()
    p = pipeline(pg_url)
    p.ack, p.output = out.ack, out
    messages = _messages(3)
    await p.handle([Record(0, 0, messages[0], "m0")])
    assert await p.flush() and out.acked == ["m0"]
    real = p.writer.commit

    async def broken(parts: Any) -> int:
        raise OSError("connection refused")

    p.writer.commit = broken  # type: ignore[method-assign]
    await p.handle([Record(0, 1, messages[1], "m1")])
    assert not await p.flush()
    assert out.acked == ["m0"] and p.store_error is not None
    p.writer.commit = real  # type: ignore[method-assign]
    await p.handle([Record(0, 2, messages[2], "m2")])
    assert await p.flush()
    assert out.acked == ["m0", "m1", "m2"] and p.store_error is None
    want = nonzero(batch(wire([e for m in messages for e in _split(m)]))[0])
    assert nonzero(stored(pg_url)[0]) == want
    await p.writer.close()


async def test_a_fenced_worker_drops_the_partition_and_acknowledges_nothing(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    messages = _messages(2)
    old_out, new_out = Recorder(), Recorder()
    old, new = pipeline(pg_url), pipeline(pg_url)
    old.ack, new.ack = old_out.ack, new_out.ack
    old.config = PipelineConfig(core=CORE, flush_interval_s=3600)
    await old.handle([Record(0, 0, messages[0], "old0")])  # claims, applies, does not write
    await new.handle([Record(0, 0, messages[0], "new0")])  # takes over, writes
    assert await new.flush()
    assert not await old.flush()
    assert old_out.acked == [] and 0 not in old.parts
    await old.handle([Record(0, 1, messages[1], "old1")])  # not its partition any more
    assert old_out.acked == [] and old.pending == []
    assert new_out.acked == ["new0"]
    await old.writer.close()
    await new.writer.close()


async def test_a_hole_rewinds_the_consumer_to_the_first_missing_offset(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    messages = _messages(3)
    seeks: list[tuple[int, int]] = []

    async def seek(partition: int, offset: int) -> None:
        seeks.append((partition, offset))

    p = pipeline(pg_url)
    p.seek = seek
    await p.handle([Record(2, 0, messages[0]), Record(2, 2, messages[2])])
    assert seeks == [(2, 1)] and p.parts[2].applied_offset == 0
    await p.handle([Record(2, 2, messages[2])])  # still waiting for offset 1: ignored
    assert seeks == [(2, 1)]
    await p.handle([Record(2, 1, messages[1]), Record(2, 2, messages[2])])
    assert p.parts[2].applied_offset == 2
    await p.writer.close()
    with pytest.raises(RuntimeError):
        q = pipeline(pg_url)
        await q.handle([Record(3, 0, messages[0]), Record(3, 5, messages[1])])
    await q.writer.close()


async def test_live_snapshots_reach_an_api_replica(pg_url: str, kafka: MockCluster) -> None:
    """Waiting calls and agent states go through the snapshot topic to a replica, whose
    gauges equal those computed from the aggregator's own core at the same instant."""
    from services.aggregator.distributed import KafkaOutput
    from services.distributed.backend import DistributedBackend, LiveSnapshots
    from services.kpi.gauges import queue_gauges
    from tests.distributed import Topics

    migrate(pg_url, timescale=False)
    topics = Topics.fresh()
    raw = recorded_events(12)
    output = KafkaOutput(kafka.bootstrap, topics.snapshots, topics.dlq)
    await output.start()
    p = pipeline(pg_url)
    p.output = output
    log = topic_log(raw)
    for partition, values in log.items():
        await p.handle([Record(partition, o, v) for o, v in enumerate(values)])
    assert await p.flush()
    p._last_heartbeat = 0.0
    await p.tick()  # heartbeats
    await output.producer.flush()  # type: ignore[union-attr]
    live = LiveSnapshots(kafka.bootstrap, topics.snapshots)
    consuming = asyncio.create_task(live.run())
    store = PostgresStore(pg_url, pool_size=1)
    backend = DistributedBackend(store, live, None, "events", 5.0, CORE.stale_leg_ms)
    try:
        beats = sum(len(v) for v in log.values())
        for _ in range(200):
            if sum(b.applied_offset + 1 for b in live.partitions("events")) == beats:
                break
            await asyncio.sleep(0.05)
        health = backend.health()
        assert health.lag_events == 0 and not health.stale, health
        checked = waiting = 0
        for part in p.parts.values():
            centre = part.centre
            now = centre.max_seen_ms
            for tenant, queue in {(t, q) for t, q, _ in centre.queue_buckets}:
                mine = queue_gauges(list(centre.waiting_legs(tenant, queue)), [], queue, now,
                                    CORE.stale_leg_ms)  # fmt: skip
                got = backend.gauges(tenant, queue, now)
                assert (got.calls_waiting, got.longest_wait_ms) == (
                    mine.calls_waiting, mine.longest_wait_ms,
                )  # fmt: skip
                checked += 1
                waiting += mine.calls_waiting
        assert checked > 5 and waiting > 0
        # Agents: the replica's view of each agent is the latest change of its timeline.
        every = {}
        for part in p.parts.values():
            for (t, a), tl in part.centre.timelines.items():
                every[(t, a)] = tl.current
        for tenant in {t for t, _ in every}:
            assert backend.agents(tenant) == {a: c for (t, a), c in every.items() if t == tenant}
    finally:
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consuming
        await output.stop()
        await p.writer.close()
        store.close()
