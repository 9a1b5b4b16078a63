"""Embedded aggregation and store writes.

- events/s from a filled log through the core into committed SQLite rows (the whole
  aggregator: decode, apply, batched upsert, checkpoints);
- store writes: rows/s of our batched absolute upserts (rows built from the core's state)
  vs a plain executemany INSERT of the same, already built rows into the same empty tables.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.aggregator.embedded import AggregatorConfig, EmbeddedAggregator
from services.aggregator.metrics import AggregatorMetrics
from services.bus.sqlite_log import EventLog
from services.kpi.centre import Centre, Settings
from services.kpi.events import decode_event
from services.kpi.leg import at_ms
from services.store.sqlite import SqliteStore

from .core import event_mix
from .table import Row, Samples


def _drain(raw: list[bytes]) -> float:
    """Events/s through a fresh embedded aggregator, from the log to committed rows."""
    with tempfile.TemporaryDirectory() as d:
        log = EventLog(Path(d) / "log.db")
        log.append([(f"t{i}", f"e{i}", b) for i, b in enumerate(raw)])
        store = SqliteStore(Path(d) / "store.db")
        aggregator = EmbeddedAggregator(
            log, store, AggregatorConfig(core=Settings()), AggregatorMetrics(CollectorRegistry())
        )
        started = time.perf_counter()
        while aggregator.step():
            aggregator.flush()
        aggregator.flush(force_checkpoint=True)
        elapsed = time.perf_counter() - started
        store.close()
        log.close()
    return len(raw) / elapsed


def _store_writes(raw: list[bytes]) -> tuple[float, float, int]:
    """(our upsert rows/s, plain INSERT rows/s, rows) for the same dirty state."""
    centre = Centre(Settings(correction_horizon_ms=10**12))
    for b in raw:
        e = decode_event(b)
        centre.apply(e, at_ms(e))  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "store.db")
        started = time.perf_counter()
        rows = store.write(centre, None)
        ours = rows / (time.perf_counter() - started)
        store.close()
        # The baseline: the very rows, plainly inserted into the same (empty) tables of a
        # second store, with their primary keys but without the upsert.
        db = sqlite3.connect(Path(d) / "store.db")
        tables = ("queue_buckets", "agent_buckets", "state_segments", "legs")
        dump = {t: db.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
        db.close()
        SqliteStore(Path(d) / "plain.db").close()
        plain_db = sqlite3.connect(Path(d) / "plain.db", isolation_level=None)
        plain_db.execute("PRAGMA synchronous=NORMAL")
        started = time.perf_counter()
        plain_db.execute("BEGIN")
        for t, values in dump.items():
            if values:
                marks = ",".join("?" * len(values[0]))
                plain_db.executemany(f"INSERT INTO {t} VALUES ({marks})", values)
        plain_db.execute("COMMIT")
        plain = sum(len(v) for v in dump.values()) / (time.perf_counter() - started)
        plain_db.close()
    return ours, plain, rows


def measure(quick: bool) -> list[Row]:
    raw = event_mix(0.3 if quick else 3.0)
    times = 1 if quick else 3
    drain = Samples([_drain(raw) for _ in range(times)])
    writes = [_store_writes(raw) for _ in range(times)]
    ours = Samples([w[0] for w in writes])
    plain = Samples([w[1] for w in writes])
    return [
        Row("aggregate", "embedded: log -> core -> committed SQLite rows", "events/s",
            drain.median, spread=drain.spread, note=f"{len(raw)} events"),
        Row("store", "SQLite batched absolute upserts vs plain INSERT", "rows/s", ours.median,
            plain.median, "plain executemany INSERT", target=0.5, spread=ours.spread,
            baseline_spread=plain.spread,
            note=f"{writes[0][2]} rows"),
    ]  # fmt: skip
