"""librdkafka's mock cluster (inside the confluent-kafka wheel) as a Kafka-protocol broker.

`MockCluster()` starts one mock broker on 127.0.0.1 inside this process and reads its
address from librdkafka's log line "Mock cluster enabled ... replaced with 127.0.0.1:PORT".
The broker lives as long as the object (keep a reference). It auto-creates topics with 4
partitions on first use and cannot create topics through the admin API, so clients must
not rely on declaring topics (Faust: `topic_allow_declare=False`,
`topic_disable_leader=True`). Used by the tests and the benchmark.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

_ADDRESS = re.compile(r"replaced with (127\.0\.0\.1:\d+)")
MOCK_PARTITIONS = 4


class _Catch(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.address: str | None = None
        self.found = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        match = _ADDRESS.search(record.getMessage())
        if match:
            self.address = match.group(1)
            self.found.set()


class MockCluster:
    """One mock broker; `bootstrap` is its address."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._logger = logging.getLogger(f"rdkafka.mock.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        catch = _Catch()
        self._logger.addHandler(catch)
        self._producer = Producer(
            {"test.mock.num.brokers": 1, "bootstrap.servers": "x:1", "logger": self._logger}
        )
        deadline = time.monotonic() + timeout_s
        while not catch.found.is_set():
            self._producer.poll(0.05)
            if time.monotonic() > deadline:
                raise RuntimeError("the librdkafka mock cluster did not report its address")
        assert catch.address is not None
        self.bootstrap: str = catch.address

    def close(self) -> None:
        self._producer.flush(1)
        del self._producer


@pytest.fixture(scope="session")
def kafka() -> Iterator[MockCluster]:
    """One mock broker for the session; tests use topic names of their own."""
    cluster = MockCluster()
    yield cluster
    cluster.close()
