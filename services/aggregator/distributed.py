"""`callpulse aggregator`: a Faust worker driving the core, one `Centre` per partition.

Topics and keys (see `services/bus/kafka.py`): call events are keyed by tenant + queue, so
each queue (its legs, buckets and waiting calls) is owned by exactly one partition and its
buckets are exact without any cross-partition merge; agent state changes are keyed by
tenant (all of a tenant's agent timelines in one partition). An agent's handle-time
buckets take contributions from legs of queues in several partitions, so each partition
upserts its own row (`agent_buckets.shard` = the partition) and readers sum the shards.
The partition count of the events topic is therefore part of the deployment: changing it
needs a replay into a fresh store.

State, recovery and exactness. The issue suggests changelog-backed Faust tables. They are
not used, because they cannot make the results exact under SIGKILL: Faust commits source
offsets on its own schedule, changelog writes and store writes are separate, asynchronous
side effects, and neither is atomic with the other. A crash between them leaves the store,
the changelog and the committed offset describing different prefixes of the stream. Instead
the minimal state (legs and agent timelines, the same content a changelog would carry, one
row per key) lives in PostgreSQL and is written in the same transaction as the result rows
and the partition's applied offset (`services/aggregator/pipeline.py`). On assignment a
worker claims the partition (a fencing generation that makes a former owner's late write
fail), restores the `Centre` from that state and skips records at or below the stored
offset; derived indexes (buckets in memory, waiting sets) are rebuilt by `Centre.restore`.
Faust's committed offset only decides where re-reading starts; it can never be ahead of
the store because a record is acknowledged only after the write that contains it.

Event time: the core's own watermark (max event time seen per partition, minus the allowed
lateness) and correction horizon decide lateness, restatement and quarantine; Faust's
windows and their wall-clock expiry are not used. Batching: `stream.noack_take` hands the
pipeline up to `batch_max_messages` messages, each carrying many events of one key.
Poison events go, redacted, to the dead-letter topic (`poison.py`). Faust's web server is
off unless `web_port` is set, and then bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from faust.streams import Stream
from faust.types import TP, EventT
from prometheus_client import CollectorRegistry, start_http_server

from ..bus.snapshots import Snapshot, encode_snapshot, snapshot_key
from ..distributed.settings import AggregatorSettings
from ..kpi.centre import Settings as CoreSettings
from ..store.postgres import PartitionWriter
from .pipeline import Pipeline, PipelineConfig, PipelineMetrics, Record

log = logging.getLogger(__name__)

EXIT_STUCK = 75  # EX_TEMPFAIL: restart me


class KafkaOutput:
    """Snapshots (best effort: the next publish heals a lost one) and dead letters
    (awaited: a poison record is acknowledged only once its dead letter is durable)."""

    def __init__(self, bootstrap: str, snapshots_topic: str, dlq_topic: str) -> None:
        self.bootstrap = bootstrap
        self.snapshots_topic = snapshots_topic
        self.dlq_topic = dlq_topic
        self.producer: AIOKafkaProducer | None = None  # made inside the worker's loop

    async def start(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap.split(","), enable_idempotence=True,
                acks="all", linger_ms=20,
            )  # fmt: skip
            await producer.start()
            self.producer = producer
        return self.producer

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def publish(self, snapshots: Sequence[Snapshot]) -> None:
        if self.producer is None:
            return
        for snapshot in snapshots:
            await self.producer.send(
                self.snapshots_topic, encode_snapshot(snapshot), key=snapshot_key(snapshot)
            )

    async def dead_letters(self, values: Sequence[bytes]) -> None:
        producer = await self.start()
        sent = [await producer.send(self.dlq_topic, value) for value in values]
        await asyncio.gather(*sent)


class Watchdog(threading.Thread):
    """Exits the process (code 75) when the worker has been without an assignment, or its
    event loop's timers have not run, for longer than `limit_s` seconds."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.limit_s = limit_s
        now = time.monotonic()
        self._unassigned_since: float | None = now
        self._alive_at = now

    def alive(self) -> None:
        self._alive_at = time.monotonic()

    def unassigned(self) -> None:
        self._unassigned_since = time.monotonic()

    def assigned(self) -> None:
        self._unassigned_since = None

    def run(self) -> None:
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            since = self._unassigned_since
            if since is not None and now - since > self.limit_s:
                reason = f"no partition assignment for {now - since:.0f} s"
            elif now - self._alive_at > self.limit_s:
                reason = f"event loop timers silent for {now - self._alive_at:.0f} s"
            else:
                continue
            log.critical("%s (stuck in the consumer group); exiting for a restart", reason)
            logging.shutdown()
            os._exit(EXIT_STUCK)


def core_settings(settings: AggregatorSettings) -> CoreSettings:
    return CoreSettings(
        allowed_lateness_ms=settings.allowed_lateness_s * 1000,
        correction_horizon_ms=settings.correction_horizon_s * 1000,
        stale_leg_ms=settings.stale_leg_s * 1000,
    )


def build_app(
    settings: AggregatorSettings, registry: CollectorRegistry, log_level: str = "WARNING"
) -> tuple[faust.App, Pipeline, KafkaOutput]:
    """The Faust app with its one agent, wired to a `Pipeline` (nothing starts yet)."""
    app = faust.App(
        settings.group_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        autodiscover=False,
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        # The mock broker (and locked-down clusters) cannot create topics on request;
        # topics are created by the operator (or auto-created by the broker).
        topic_allow_declare=False,
        topic_disable_leader=True,
        # Records are acknowledged after our own store write; Faust must not block a
        # rebalance waiting for acknowledgements of work the next owner will redo.
        stream_wait_empty=False,
        stream_recovery_delay=0.5,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_s,
        broker_commit_interval=settings.commit_interval_s,
        broker_max_poll_records=settings.batch_max_messages,
        stream_buffer_maxsize=max(4096, settings.batch_max_messages * 2),
        web_enabled=settings.web_port is not None,
        web_bind="127.0.0.1",
        web_port=settings.web_port or 6066,
    )
    topic = app.topic(settings.events_topic, key_serializer="raw", value_serializer="raw")
    metrics = PipelineMetrics(registry)
    output = KafkaOutput(settings.kafka_bootstrap, settings.snapshots_topic, settings.dlq_topic)
    writer = PartitionWriter(
        settings.database_url.get_secret_value(), settings.events_topic, core_settings(settings)
    )
    acker: dict[str, Any] = {}

    async def ack(tokens: list[Any]) -> None:
        stream = acker.get("stream")
        if stream is not None:
            for event in tokens:
                await stream.ack(event)

    async def seek(partition: int, offset: int) -> None:
        await app.consumer.seek(TP(settings.events_topic, partition), offset)

    def end_offset(partition: int) -> int | None:
        try:
            value = app.consumer.highwater(TP(settings.events_topic, partition))
        except Exception:  # not assigned or not fetched yet
            return None
        return None if value is None else int(value)

    pipeline = Pipeline(
        writer, settings.events_topic,
        PipelineConfig(
            core=core_settings(settings), flush_interval_s=settings.flush_interval_s,
            evict_interval_s=settings.evict_interval_s,
            heartbeat_interval_s=settings.heartbeat_interval_s,
            max_pending=settings.max_pending_records,
        ),
        metrics, ack=ack, output=output, seek=seek, end_offset=end_offset,
    )  # fmt: skip

    @app.agent(topic, name="aggregate")
    async def aggregate(stream: faust.StreamT[bytes]) -> None:
        # Faust leaves the root logger at DEBUG whatever the worker's level: every
        # message then pays for building log records nobody emits.
        logging.getLogger().setLevel(log_level)
        acker["stream"] = stream
        await output.start()
        async for batch in cast(Stream[bytes], stream).noack_take(
            settings.batch_max_messages, within=settings.batch_within_s
        ):
            events = cast(list[EventT[Any]], batch)
            await pipeline.handle(
                [
                    Record(e.message.partition, e.message.offset, e.message.value or b"", e)
                    for e in events
                ]
            )

    # A worker stuck in the group protocol exits for its supervisor to restart it: seen
    # with the mock broker, which answers a late SyncGroup with INVALID_REQUEST, after
    # which aiokafka keeps the member alive without consuming and Faust's services stop,
    # holding the member's partitions hostage. Nothing is lost: nothing unwritten was
    # acknowledged. The watchdog is a thread, independent of the (possibly dead) loop.
    watchdog = Watchdog(settings.stuck_rebalance_s)

    @app.timer(interval=0.25, name="tick")  # type: ignore[untyped-decorator]
    async def tick() -> None:
        await pipeline.tick()

    @app.timer(interval=1.0, name="alive")  # type: ignore[untyped-decorator]
    async def alive() -> None:
        watchdog.alive()

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        revoked: set[TP] = args[0]
        watchdog.unassigned()
        pipeline.revoke({tp.partition for tp in revoked if tp.topic == settings.events_topic})

    async def on_assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        assigned: set[TP] = args[0]
        watchdog.assigned()
        mine = {tp.partition for tp in assigned if tp.topic == settings.events_topic}
        log.info("assigned partitions %s of %s", sorted(mine), settings.events_topic)
        pipeline.assign(mine)

    async def on_shutdown(sender: Any, *args: Any, **kwargs: Any) -> None:
        # Best effort: what is not written here is redone by the next owner.
        try:
            await pipeline.flush()
        finally:
            await output.stop()
            await writer.close()

    watchdog.start()
    # mode's signal typing wants receivers of one exact shape; these take (sender, *args).
    app.on_partitions_revoked.connect(cast(Any, on_revoked))
    app.on_partitions_assigned.connect(cast(Any, on_assigned))
    app.on_before_shutdown.connect(cast(Any, on_shutdown))
    return app, pipeline, output


def run(settings: AggregatorSettings, log_level: str) -> int:
    """Run one worker until SIGTERM/SIGINT (Faust handles the signals)."""
    from faust.worker import Worker

    registry = CollectorRegistry()
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    app, _, _ = build_app(settings, registry, log_level.upper())
    worker = Worker(app, loglevel=log_level.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
