"""The Kafka side of `callpulse ingest`: produce validated events, answer after the acks.

The producer is idempotent with `acks=all`, so a message the broker acknowledged is on every
in-sync replica and a retried send is not written twice; events are keyed so that all
events of a call leg land, in order, in one partition (`services/bus/kafka.py`). A request
is answered 2xx only once every one of its messages is acknowledged; if that does not
happen within `ack_timeout_s` (broker down, partition leaderless, producer not connected
yet) the request fails with 503 and `Retry-After`. Messages that were acknowledged anyway
are harmless: the client re-sends the same event ids and the aggregator drops duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from ..api.backend import Unavailable
from ..bus.kafka import encode_messages
from ..kpi.events import Event

log = logging.getLogger(__name__)


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float) -> None:
    """Stop, flushing what can still be delivered within `timeout_s`; batches that cannot
    (the broker is gone; the idempotent producer would retry for ever) are failed."""
    stopping = asyncio.ensure_future(producer.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    if not done:
        # aiokafka has no bounded close: stop its sender, then fail the stuck batches, so
        # that stop() can finish (their requests were answered 503 long ago).
        sender_task = producer._sender.sender_task
        if sender_task is not None:
            sender_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender_task
        producer._message_accumulator.fail_all(KafkaConnectionError("producer stopped"))
        await stopping


class KafkaSink:
    """Produces event batches; `send` returns only after the broker acknowledged them."""

    def __init__(
        self, bootstrap: str, topic: str, ack_timeout_s: float = 5.0, retry_after_s: int = 2,
        message_max_events: int = 500, linger_ms: int = 2,
    ) -> None:  # fmt: skip
        self.bootstrap = bootstrap
        self.topic = topic
        self.ack_timeout_s = ack_timeout_s
        self.retry_after_s = retry_after_s
        self.message_max_events = message_max_events
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self.last_ack_ms = 0
        self.last_error: str | None = None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap.split(","),
            enable_idempotence=True,
            acks="all",
            linger_ms=self.linger_ms,
            request_timeout_ms=max(1000, int(self.ack_timeout_s * 1000)),
            max_request_size=4 * 1024 * 1024,
        )

    async def start(self) -> None:
        """Begin connecting in the background; requests get 503 until connected."""
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect(), name="kafka-connect")

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            producer = self._new_producer()
            try:
                await producer.start()
            except Exception as exc:  # broker unreachable: keep trying
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("Kafka producer cannot connect (retry in %.1f s): %s", delay, exc)
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self._producer = producer
            self.last_error = None
            return

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
        if self._producer is not None:
            await stop_producer(self._producer, self.ack_timeout_s)
            self._producer = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def send(self, events: list[Event]) -> int:
        """Produce `events`; returns how many, once all are acknowledged. Raises
        `Unavailable` when that does not happen within `ack_timeout_s`."""
        producer = self._producer
        if producer is None:
            raise Unavailable(
                f"not connected to Kafka yet: {self.last_error or 'connecting'}",
                self.retry_after_s,
            )
        messages = encode_messages(events, max_events=self.message_max_events)
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                pending = [
                    await producer.send(self.topic, value, key=key) for key, value in messages
                ]
                await asyncio.gather(*pending)
        except TimeoutError:
            self.last_error = f"no broker acknowledgement within {self.ack_timeout_s} s"
            raise Unavailable(self.last_error, self.retry_after_s) from None
        except Exception as exc:  # KafkaError and friends: nothing is known to be durable
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise Unavailable(
                f"Kafka did not accept the events: {exc}", self.retry_after_s
            ) from exc
        self.last_ack_ms = int(time.time() * 1000)
        self.last_error = None
        return len(events)
