"""The distributed runner of the replay oracle harness (tests/harness.py).

`run_distributed(delivery, ...)` sends a `Delivery` over HTTP to a real `callpulse ingest`
(batches re-sent until acknowledged, at a steady pace, as a source would), which produces
to Kafka (the librdkafka mock broker, optionally behind `tests/tcpproxy.py`); two (or more)
`callpulse aggregator` Faust workers aggregate into PostgreSQL. It executes the delivery's
faults when the delivery reaches their position, waits until every partition is applied,
and reads the store into the harness's `Stored` shape. Aggregators that exit are started
again at once by the `Stack`'s supervisor, as systemd or Kubernetes would.

Fault kinds:
- "sigkill" / "sigkill_worker": SIGKILL an aggregator worker (`worker`, default: the
  workers in turn) `delay_s` into the POST of the batch at the position. The recovery time
  is measured from the kill (the restart follows within 0.25 s) until every partition's
  applied offset, committed in PostgreSQL, reaches the end the topic had at the kill.
- "sigterm_rebalance": SIGTERM worker b (it leaves the group: a rebalance starts) and,
  `delay_s` later, while that rebalance runs, SIGTERM worker a; both are restarted.
- "stop_postgres": stop the PostgreSQL server (`pg`, a `LocalPgServer`) for `duration_s`
  while the delivery goes on, then start it again (same port and data).
- "pause_broker": blackhole the path between the services and the broker (`proxy`) for
  `duration_s` while the delivery goes on.
- "poison": produce `values` (bytes) with `key` straight to the events topic, behind the
  ingest's back (`config`: extra librdkafka producer settings).
Around a "stop_postgres" or "pause_broker" fault, `probe(fault, stack, phase)` (if given) is
called: once just before it, holding the delivery back until it returns ("before"), about
every `probe_every_s` while it lasts ("during") and once right after it ended ("after");
what it returns is kept, in that order, in `figures["probes"][kind]`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from aiokafka.partitioner import murmur2
from confluent_kafka import Producer

from services.store.keys import new_key
from services.store.postgres import PostgresStore, migrate
from tests.distributed import Stack, Topics, end_offsets
from tests.harness import LEG_FIELDS, Delivery, Expected, RunResult, Stored, batches, expected
from tests.kafka import MOCK_PARTITIONS
from tests.oracle import nonzero
from tests.pg import LocalPgServer
from tests.tcpproxy import KafkaProxy

KNOWN = frozenset(
    {"sigkill", "sigkill_worker", "sigterm_rebalance", "stop_postgres", "pause_broker", "poison"}
)
_decode = msgspec.json.Decoder()
_key = msgspec.json.Encoder()

Probe = Callable[[Any, Stack, str], dict[str, Any]]


def event_key(e: dict[str, Any]) -> bytes:
    """The events-topic key of a wire event (DESIGN: a queue's legs, a tenant's agents)."""
    if e["event_type"].startswith("call."):
        return _key.encode([e["tenant_id"], "q", e["queue_id"]])
    if e["event_type"] in ("agent.state_changed", "qa.evaluated"):
        return _key.encode([e["tenant_id"], "a"])
    return _key.encode([e["tenant_id"], "c", e.get("call_id")])


def partition_of(e: dict[str, Any]) -> int:
    """The partition the ingest's producer (murmur2 of the key) sends an event to."""
    return (murmur2(event_key(e)) & 0x7FFFFFFF) % MOCK_PARTITIONS


def topic_order(wire: Sequence[bytes], batch_size: int) -> list[bytes]:
    """The delivery as the partitions see it: the ingest groups each request's events by
    key (first appearance first), so within a partition a request's events may move."""
    out: list[bytes] = []
    for _, chunk in batches(wire, batch_size):
        groups: dict[bytes, list[bytes]] = defaultdict(list)
        for raw in chunk:
            groups[event_key(_decode.decode(raw))].append(raw)
        for members in groups.values():
            out += members
    return out


def expected_distributed(
    delivery: Delivery, batch_size: int, lateness_ms: int = 120_000, horizon_ms: int = 7_200_000
) -> Expected:
    """`expected(...)` with one event-time watermark per partition, in topic order."""
    return expected(topic_order(delivery.wire, batch_size), lateness_ms, horizon_ms, partition_of)


def read_postgres(database_url: str) -> Stored:
    """Everything the PostgreSQL store holds for the comparison (agent shards summed)."""
    store = PostgresStore(database_url, pool_size=1)
    try:
        legs = {
            (r.tenant_id, r.call_id, r.queue_id, r.visit): {f: getattr(r, f) for f in LEG_FIELDS}
            for r in store.all_legs()
        }
        queue, agent = store.all_queue_buckets(), store.all_agent_buckets()
        restated = store._all(
            "SELECT tenant_id, queue_id, (extract(epoch FROM bucket) * 1000)::bigint"
            " FROM queue_buckets WHERE restated"
        )
    finally:
        store.close()
    return Stored(nonzero(queue), nonzero(agent), legs, {(r[0], r[1], r[2]) for r in restated})


def applied_offsets(database_url: str, topic: str) -> dict[int, int] | None:
    """Applied offsets committed in PostgreSQL (None while the database is unreachable)."""
    try:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            rows = conn.execute(
                "SELECT partition, applied_offset FROM aggregator_partitions WHERE topic = %s",
                (topic,),
            ).fetchall()
    except psycopg.OperationalError:
        return None
    return {int(p): int(o) for p, o in rows}


def caught_up(applied: dict[int, int] | None, ends: dict[int, int]) -> bool:
    return applied is not None and all(applied.get(p, -1) >= e - 1 for p, e in ends.items() if e)


class Recoveries:
    """Measures, in a thread, each fault's time until the partitions caught up with the end
    of the topic as it was when the fault struck."""

    def __init__(self, bootstrap: str, database_url: str, topic: str) -> None:
        self.bootstrap, self.database_url, self.topic = bootstrap, database_url, topic
        self.open: list[tuple[str, float, dict[int, int]]] = []
        self.done: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def start(self, kind: str, at: float | None = None) -> None:
        ends = end_offsets(self.bootstrap, self.topic)
        with self._lock:
            self.open.append((kind, time.monotonic() if at is None else at, ends))

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                waiting = list(self.open)
            if not waiting:
                continue
            applied = applied_offsets(self.database_url, self.topic)
            now = time.monotonic()
            with self._lock:
                for item in waiting:
                    kind, at, ends = item
                    if caught_up(applied, ends):
                        self.done[kind].append(round(now - at, 2))
                        self.open.remove(item)

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.open and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.open, f"no recovery within {timeout_s} s: {self.open}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_applied(bootstrap: str, database_url: str, topic: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        ends = end_offsets(bootstrap, topic)
        applied = applied_offsets(database_url, topic)
        if caught_up(applied, ends):
            return
        assert time.monotonic() < deadline, f"not caught up: applied {applied}, ends {ends}"
        time.sleep(0.25)


def run_distributed(
    delivery: Delivery, workdir: Path, *, bootstrap: str, database_url: str,
    pg: LocalPgServer | None = None, proxy: KafkaProxy | None = None, workers: int = 2,
    lateness_s: int = 120, horizon_s: int = 7200, batch_size: int = 250, pace_s: float = 0.0,
    env: dict[str, str] | None = None, api: bool = False, probe: Probe | None = None,
    probe_every_s: float = 2.0, caught_up_timeout_s: float = 120,
    on_ready: Callable[[Stack], None] | None = None,
) -> RunResult:  # fmt: skip
    """See the module docstring. `bootstrap` is the broker itself (the test's own reads go
    there); the services use `proxy` when given. `pace_s`: a pause between batches, so
    that the faults fall at different moments of the workers' lives. The database at
    `database_url` must be empty (it is migrated here)."""
    unknown = sorted({f.kind for f in delivery.faults} - KNOWN)
    assert not unknown, f"the distributed runner cannot execute {unknown}"
    assert pg is not None or all(f.kind != "stop_postgres" for f in delivery.faults)
    assert proxy is not None or all(f.kind != "pause_broker" for f in delivery.faults)
    migrate(database_url, timescale=False)
    token, record = new_key(None, "admin", "harness", int(time.time() * 1000))
    owner = PostgresStore(database_url, pool_size=1)
    owner.put_key(record)
    owner.close()

    service_env = {
        "CALLPULSE_ALLOWED_LATENESS_S": str(lateness_s),
        "CALLPULSE_CORRECTION_HORIZON_S": str(horizon_s),
        "CALLPULSE_RATE_LIMIT_PER_S": "100000",
        "CALLPULSE_RATE_LIMIT_BURST": "100000",
        **(env or {}),
    }
    s = Stack(proxy.bootstrap if proxy else bootstrap, database_url, Topics.fresh(), workdir,
              service_env)  # fmt: skip
    names = [chr(ord("a") + i) for i in range(workers)]
    wire = delivery.wire
    pending = sorted(((f.index(len(wire)), n, f) for n, f in enumerate(delivery.faults)),
                     key=lambda x: (x[0], x[1]))  # fmt: skip
    figures: dict[str, Any] = {
        "events": delivery.unique_events(), "deliveries": len(wire), "requests": 0,
        "workers": workers, "faults_executed": defaultdict(int), "probes": defaultdict(list),
        "responses": defaultdict(int), "post_seconds_max": 0.0,
    }  # fmt: skip
    background: list[threading.Thread] = []
    recoveries = Recoveries(bootstrap, database_url, s.topics.events)
    turn = [0]
    started = time.monotonic()
    try:
        s.start("ingest", "ingest")
        for name in names:
            s.start(name, "aggregator")
        if api:
            s.start("api", "api")
        if on_ready is not None:
            on_ready(s)

        def kill(name: str, sig: int, kind: str) -> None:
            deadline = time.monotonic() + 10
            while True:  # a worker that just exited is back within the supervisor's 0.25 s
                proc = s.procs.get(name)
                if proc is not None and proc.poll() is None:
                    break
                assert time.monotonic() < deadline, f"worker {name} is not running"
                time.sleep(0.05)
            at = time.monotonic()
            proc.send_signal(sig)  # the supervisor starts it again
            recoveries.start(kind, at=at)

        def lasting(fault: Any, begin: Callable[[], None], end: Callable[[], None]) -> None:
            duration = float(fault.params.get("duration_s", 30))
            probes = figures["probes"][fault.kind]
            began = time.monotonic()
            begin()
            try:
                while time.monotonic() - began < duration:
                    if probe is not None:
                        probes.append(probe(fault, s, "during"))
                    time.sleep(max(0.0, min(probe_every_s, duration - (time.monotonic() - began))))
            finally:
                end()
                recoveries.start(fault.kind, at=time.monotonic())
            if probe is not None:
                probes.append(probe(fault, s, "after"))

        def execute(fault: Any) -> threading.Timer | None:
            figures["faults_executed"][fault.kind] += 1
            kind = fault.kind
            if probe is not None and kind in ("stop_postgres", "pause_broker"):
                # In the delivery's thread: a probe may wait (e.g. for a settled group)
                # and the rest of the delivery still flows during the fault.
                figures["probes"][kind].append(probe(fault, s, "before"))
            if kind in ("sigkill", "sigkill_worker"):
                name = fault.params.get("worker") or names[turn[0] % len(names)]
                turn[0] += 1
                delay = float(fault.params.get("delay_s", 0))
                timer = threading.Timer(delay, kill, (name, signal.SIGKILL, kind))
                timer.start()
                return timer
            if kind == "sigterm_rebalance":
                kill(names[1], signal.SIGTERM, kind)
                time.sleep(float(fault.params.get("delay_s", 1.0)))
                kill(names[0], signal.SIGTERM, kind)
            elif kind == "stop_postgres":
                assert pg is not None
                thread = threading.Thread(target=lasting, args=(fault, pg.stop, pg.start))
                thread.start()
                background.append(thread)
            elif kind == "pause_broker":
                assert proxy is not None
                thread = threading.Thread(target=lasting, args=(fault, proxy.pause, proxy.resume))
                thread.start()
                background.append(thread)
            elif kind == "poison":
                producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                     **fault.params.get("config", {})})  # fmt: skip
                for value in fault.params["values"]:
                    producer.produce(s.topics.events, key=fault.params["key"], value=value)
                assert producer.flush(30) == 0
            return None

        with httpx.Client(timeout=60) as client:
            headers = {"Authorization": f"Bearer {token}"}
            for begin, chunk in batches(wire, batch_size):
                timers = []
                while pending and pending[0][0] < begin + len(chunk):
                    timer = execute(pending.pop(0)[2])
                    if timer is not None:
                        timers.append(timer)
                body = b"[" + b",".join(chunk) + b"]"
                while True:  # at-least-once: re-send until acknowledged
                    figures["requests"] += 1
                    sent = time.monotonic()
                    try:
                        r = client.post(f"{s.url('ingest')}/v1/events", content=body,
                                        headers=headers)  # fmt: skip
                    except httpx.HTTPError as exc:
                        figures["responses"][type(exc).__name__] += 1
                        time.sleep(0.2)
                        continue
                    took = time.monotonic() - sent
                    figures["post_seconds_max"] = max(figures["post_seconds_max"], took)
                    figures["responses"][str(r.status_code)] += 1
                    if r.status_code == 202:
                        break
                    assert r.status_code in (429, 503), (r.status_code, r.text)
                    assert "Retry-After" in r.headers, r.headers
                    figures["responses_503_seconds_max"] = max(
                        figures.get("responses_503_seconds_max", 0.0), took
                    )
                    time.sleep(0.2)
                for timer in timers:
                    timer.join()
                if pace_s:
                    time.sleep(pace_s)
            for _, _, fault in pending:  # faults at the very end
                timer = execute(fault)
                if timer is not None:
                    timer.join()
            for thread in background:
                thread.join()
        recoveries.wait(caught_up_timeout_s)
        wait_applied(bootstrap, database_url, s.topics.events, caught_up_timeout_s)
        figures["recovery_s"] = dict(recoveries.done)
        figures["supervisor_restarts"] = len(s.restarts)
        figures["restart_codes"] = sorted({code for _, code in s.restarts})
        figures["run_s"] = round(time.monotonic() - started, 1)
        figures["topic"] = s.topics.events
        figures["dlq_topic"] = s.topics.dlq
        figures["snapshots_topic"] = s.topics.snapshots
        figures["faults_executed"] = dict(figures["faults_executed"])
        figures["probes"] = dict(figures["probes"])
        figures["responses"] = dict(figures["responses"])
    finally:
        recoveries.close()
        s.close()
    return RunResult(read_postgres(database_url), figures)
