"""The distributed mode's surroundings for one `bench.run`: one PostgreSQL 15 (a throwaway
cluster, or `DATABASE_URL`) and one librdkafka mock broker, started on first use, shared by
the distributed benchmarks (each with a database and topics of its own) and stopped by
`close()`. `stack()` starts `callpulse ingest | aggregator | api` processes against them
(the same helpers as the end-to-end tests, `tests/distributed.py`)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from services.store.keys import new_key
from services.store.postgres import PostgresStore, migrate
from tests.distributed import Stack
from tests.distributed import stack as test_stack
from tests.kafka import MockCluster
from tests.pg import PgServer

from .distributed import postgres

_open = contextlib.ExitStack()
_shared: dict[str, object] = {}

# Benchmarks measure the product, not its rate limiter: admit every request (the limiter is
# still consulted and paid for). Everything else keeps the settings' defaults, which the
# end-to-end tests' helpers shorten for quick failover.
UNLIMITED = {"CALLPULSE_RATE_LIMIT_PER_S": "1e9", "CALLPULSE_RATE_LIMIT_BURST": "1000000000"}
DEFAULTS = {
    "CALLPULSE_SESSION_TIMEOUT_S": "30", "CALLPULSE_BROKER_HEARTBEAT_S": "3",
    "CALLPULSE_FLUSH_INTERVAL_S": "0.5", "CALLPULSE_COMMIT_INTERVAL_S": "2.8",
    "CALLPULSE_STUCK_REBALANCE_S": "120",
}  # fmt: skip


def pg() -> PgServer:
    if "pg" not in _shared:
        _shared["pg"] = _open.enter_context(postgres())
    server = _shared["pg"]
    assert isinstance(server, PgServer)
    return server


def kafka() -> MockCluster:
    if "kafka" not in _shared:
        started = MockCluster()
        _open.callback(started.close)
        _shared["kafka"] = started
    cluster = _shared["kafka"]
    assert isinstance(cluster, MockCluster)
    return cluster


def close() -> None:
    """Stop what was started (PostgreSQL, the broker); the next use starts them again."""
    _shared.clear()
    _open.close()


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh migrated database (plain PostgreSQL schema), dropped afterwards."""
    with pg().database() as url:
        migrate(url, timescale=False)
        yield url


@contextlib.contextmanager
def stack(*commands: str, **env: str) -> Iterator[tuple[Stack, str]]:
    """`callpulse <command>` processes (each named after its command), started in order on a
    fresh database and fresh topics; yields the stack and an admin key."""
    cluster = kafka()
    with database() as url, tempfile.TemporaryDirectory() as logs:
        token, record = new_key(None, "admin", "bench", int(time.time() * 1000))
        store = PostgresStore(url, pool_size=1)
        try:
            store.put_key(record)
        finally:
            store.close()
        with test_stack(cluster.bootstrap, url, Path(logs), **UNLIMITED, **DEFAULTS, **env) as s:
            for command in commands:
                s.start(command, command)
            yield s, token


def wait_assigned(s: Stack, timeout_s: float = 60) -> None:
    """Until the aggregators claimed every partition of the events topic (in PostgreSQL)."""
    from tests.kafka import MOCK_PARTITIONS

    store = PostgresStore(s.database_url, pool_size=1)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            rows = store._read(
                "SELECT count(*) FROM aggregator_partitions WHERE topic = %s AND generation > 0",
                (s.topics.events,),
            )
            if rows and int(rows[0][0]) >= MOCK_PARTITIONS:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("the aggregator did not claim every partition")
            time.sleep(0.2)
    finally:
        store.close()
