"""Helpers for the distributed-mode tests: the CLI processes, Kafka offsets, the oracle.

Every test names its own topics, consumer group and database, so tests share the session's
mock broker and PostgreSQL server without seeing each other's data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
from confluent_kafka import Consumer, TopicPartition
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.kpi.events import encode_event
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario
from services.store.postgres import PostgresStore
from tests.conftest import ROOT, free_port
from tests.kafka import MOCK_PARTITIONS

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
CALLER_SECRET = "test-caller-secret"


def recorded_events(minutes: int, seed: int = 11) -> list[bytes]:
    """`minutes` of the large centre (450 agents, 15 queues), as wire bytes."""
    scenario = load_scenario(ROOT / "scenarios" / "large.toml")
    return [encode_event(e) for e in simulate(scenario, seed, START, timedelta(minutes=minutes))]


def with_user(conninfo: str, user: str) -> str:
    params = conninfo_to_dict(conninfo)
    params["user"] = user
    params.pop("password", None)
    return make_conninfo("", **params)  # type: ignore[arg-type]


@dataclass
class Topics:
    events: str
    snapshots: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"ev-{tag}", f"snap-{tag}", f"dlq-{tag}", f"agg-{tag}")


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The next offset of every partition (what a caught-up consumer has read up to)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(MOCK_PARTITIONS)
        }
    finally:
        consumer.close()


def read_topic(
    bootstrap: str, topic: str, timeout_s: float = 10
) -> list[tuple[bytes | None, bytes]]:
    """Every record of a topic from the beginning, as (key, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}",
                         "enable.auto.commit": False})  # fmt: skip
    ends = end_offsets(bootstrap, topic)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(MOCK_PARTITIONS)])
    out: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return out


@dataclass
class Stack:
    """`callpulse ingest`, `aggregator` and `api` processes for one test."""

    bootstrap: str
    database_url: str
    topics: Topics
    logs: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    log_level: str = os.environ.get("CALLPULSE_TEST_LOG_LEVEL", "WARNING")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    # Like systemd or Kubernetes: aggregators that exit on their own are started again.
    restarts: list[tuple[str, int]] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watching: threading.Event = field(default_factory=threading.Event)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CALLPULSE_KAFKA_BOOTSTRAP": self.bootstrap,
            "CALLPULSE_DATABASE_URL": self.database_url,
            "CALLPULSE_API_DATABASE_URL": with_user(self.database_url, "callpulse_api"),
            "CALLPULSE_CALLER_KEY_SECRET": CALLER_SECRET,
            "CALLPULSE_EVENTS_TOPIC": self.topics.events,
            "CALLPULSE_SNAPSHOTS_TOPIC": self.topics.snapshots,
            "CALLPULSE_DLQ_TOPIC": self.topics.dlq,
            "CALLPULSE_GROUP_ID": self.topics.group,
            # Quick failure detection, so that a SIGKILLed worker's partitions move on fast.
            "CALLPULSE_SESSION_TIMEOUT_S": "6",
            "CALLPULSE_BROKER_HEARTBEAT_S": "1",
            "CALLPULSE_FLUSH_INTERVAL_S": "0.2",
            "CALLPULSE_COMMIT_INTERVAL_S": "1",
            "CALLPULSE_STUCK_REBALANCE_S": "25",
            **self.env_extra,
        }

    def start(self, name: str, command: str, *args: str) -> None:
        with self._lock:
            self._start(name, command, *args)
        if command in ("ingest", "api"):
            self.wait_http(name)
        if command == "aggregator" and not self._watching.is_set():
            self._watching.set()
            threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        while self._watching.is_set():
            time.sleep(0.25)
            with self._lock:
                for name, proc in list(self.procs.items()):
                    code = proc.poll()
                    if code is not None and self.commands.get(name) == "aggregator":
                        self.restarts.append((name, code))
                        self._start(name, "aggregator")

    def _start(self, name: str, command: str, *args: str) -> None:
        self.commands[name] = command
        port = free_port()
        self.ports[name] = port
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--log-level", self.log_level, command,
             *(("--port", str(port)) if command in ("ingest", "api") else ()), *args],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def wait_http(self, name: str, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited: {(self.logs / f'{name}.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url(name)}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{name} did not become healthy")

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        with self._lock:
            proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        self._watching.clear()
        for name in list(self.procs):
            self.stop(name)


@contextlib.contextmanager
def stack(bootstrap: str, database_url: str, logs: Path, **env: str) -> Iterator[Stack]:
    s = Stack(bootstrap, database_url, Topics.fresh(), logs, dict(env))
    try:
        yield s
    finally:
        s.close()


def wait_caught_up(s: Stack, timeout_s: float = 90) -> dict[int, int]:
    """Until every partition's applied offset, committed in PostgreSQL with its results,
    reaches the end of the events topic. Returns the end offsets."""
    deadline = time.monotonic() + timeout_s
    store = PostgresStore(s.database_url, pool_size=1)
    try:
        while True:
            ends = end_offsets(s.bootstrap, s.topics.events)
            rows = store._read(
                "SELECT partition, applied_offset FROM aggregator_partitions WHERE topic = %s",
                (s.topics.events,),
            )
            applied = {int(p): int(o) for p, o in rows}
            if all(applied.get(p, -1) == end - 1 for p, end in ends.items() if end > 0):
                return ends
            if time.monotonic() > deadline:
                raise AssertionError(f"not caught up: applied {applied}, ends {ends}")
            time.sleep(0.2)
    finally:
        store.close()


def post(url: str, body: bytes, token: str, timeout_s: float = 60) -> dict[str, Any]:
    """POST until acknowledged (at-least-once, as a real source would): 503 and 429 wait."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.post(f"{url}/v1/events", content=body, timeout=15,
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
            if r.status_code == 202:
                return dict(r.json())
            if r.status_code not in (429, 503):
                raise AssertionError(f"{r.status_code}: {r.text}")
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("the ingest did not accept the batch in time")
        time.sleep(0.1)


def wire(events: list[bytes]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(e) for e in events]
