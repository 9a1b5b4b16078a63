"""Store writes in PostgreSQL: rows/s of the aggregator's batched absolute upserts of queue
buckets next to a plain COPY of the same rows into the same table (target >= 50 %).

The rows are what the store builds from the core's state (`Rows.of` on a `Centre` fed the
simulator's large centre), repeated under more tenant ids to reach a bulk size. Ours is
`PartitionWriter.commit`, exactly as the aggregator calls it: one transaction with the
partition's fencing check, a binary COPY into the staging table and one
`INSERT ... ON CONFLICT DO UPDATE` (plus the known-queues upsert). It is measured into the
empty table (inserts) and again with the same rows present (every row an update, as when a
bucket is restated). Two baselines, each into the truncated table, committed: one binary
COPY of the same values already converted to the table's types (psycopg encodes them, as
ours encodes its staging rows), and a text COPY of a payload encoded before the clock
starts (the server's own ceiling: no client-side encoding at all).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from services.kpi.centre import Centre, Settings, Stats
from services.kpi.events import decode_event
from services.kpi.leg import at_ms
from services.store.postgres import PartitionWriter, Prepared, Rows
from services.store.records import SCALAR_COUNTER_FIELDS

from .core import event_mix
from .infra import database
from .table import Row, Samples

COLUMNS = ["tenant_id", "queue_id", "bucket", *SCALAR_COUNTER_FIELDS, "hist_answered",
           "hist_abandoned", "restated"]  # fmt: skip
TYPES = ["text", "text", "timestamptz", *["int8"] * len(SCALAR_COUNTER_FIELDS), "int8[]",
         "int8[]", "bool"]  # fmt: skip


def bucket_rows(hours: float, count: int) -> list[tuple[Any, ...]]:
    """`count` queue-bucket rows as the store stages them (tenant, queue, minute_ms, ...)."""
    centre = Centre(Settings(correction_horizon_ms=10**12))
    for b in event_mix(hours):
        e = decode_event(b)
        centre.apply(e, at_ms(e))  # type: ignore[arg-type]
    real = Rows.of(centre, shard=0, legs=(), queue_snapshots=False).queue
    return [
        (f"{row[0]}~{i // len(real)}", *row[1:])
        for i, row in zip(range(count), real * (count // len(real) + 1), strict=False)
    ]


def plain_values(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same rows in the table's own types (timestamptz, bigint[]), for COPY."""
    return [
        (r[0], r[1], datetime.fromtimestamp(r[2] / 1000, UTC), *r[3:-3],
         [int(x) for x in r[-3][1:-1].split(",")], [int(x) for x in r[-2][1:-1].split(",")],
         r[-1])
        for r in rows
    ]  # fmt: skip


def text_payload(values: list[tuple[Any, ...]]) -> bytes:
    """The rows in COPY's text format (ids here contain no tab, newline or backslash)."""

    def field(x: Any) -> str:
        if isinstance(x, bool):
            return "t" if x else "f"
        if isinstance(x, list):
            return "{" + ",".join(map(str, x)) + "}"
        return x.isoformat() if isinstance(x, datetime) else str(x)

    return "".join("\t".join(map(field, v)) + "\n" for v in values).encode()


def copy_rate(url: str, values: list[tuple[Any, ...]] | bytes, count: int) -> float:
    """Rows/s of one COPY (binary from typed values, or text from a ready payload)."""
    binary = not isinstance(values, bytes)
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE queue_buckets")
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur:
            statement = sql.SQL("COPY queue_buckets ({}) FROM STDIN {}").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                sql.SQL("(FORMAT BINARY)" if binary else ""),
            )
            with cur.copy(statement) as copy:
                if isinstance(values, bytes):
                    copy.write(values)
                else:
                    copy.set_types(TYPES)
                    for row in values:
                        copy.write_row(row)
        conn.commit()
        return count / (time.perf_counter() - started)


async def upsert_rates(url: str, rows: list[tuple[Any, ...]]) -> tuple[float, float]:
    """(rows/s into the truncated table, rows/s again over the same rows)."""
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE queue_buckets")
        conn.commit()
    writer = PartitionWriter(url, "bench-store", Settings())
    try:
        claim = await writer.claim(0)
        rates = []
        for offset in (0, 1):
            part = Prepared(
                partition=0, generation=claim.generation, applied_offset=offset, max_seen_ms=0,
                evicted_until_ms=0, stats=msgspec.msgpack.encode(Stats()),
                rows=Rows(queue=list(rows)), leg_state=[], gone=[], timeline_state=[],
            )  # fmt: skip
            started = time.perf_counter()
            written = await writer.commit([part])
            rates.append(written / (time.perf_counter() - started))
        return rates[0], rates[1]
    finally:
        await writer.close()


def measure(quick: bool) -> list[Row]:
    rows = bucket_rows(0.3 if quick else 3.0, 3_000 if quick else 40_000)
    values = plain_values(rows)
    payload = text_payload(values)
    times = 1 if quick else 3
    ours, again, plain, ceiling = Samples(), Samples(), Samples(), Samples()
    with database() as url:
        for _ in range(times):
            plain.values.append(copy_rate(url, values, len(rows)))
            ceiling.values.append(copy_rate(url, payload, len(rows)))
            inserted, updated = asyncio.run(upsert_rates(url, rows))
            ours.values.append(inserted)
            again.values.append(updated)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM queue_buckets").fetchone()
    assert stored is not None and stored[0] == len(rows), (stored, len(rows))
    note = f"{len(rows):,} queue-bucket rows in one transaction"
    return [
        Row("store", "PG batched upserts (PartitionWriter) vs COPY", "rows/s", ours.median,
            plain.median, "plain binary COPY, same rows and table", target=0.5,
            spread=ours.spread, baseline_spread=plain.spread, note=note + ", empty table"),
        Row("store", "  same rows again: every row an update", "rows/s", again.median,
            plain.median, "plain binary COPY", target=0.5, spread=again.spread,
            baseline_spread=plain.spread, note=note),
        Row("store", "PG batched upserts vs pre-encoded COPY", "rows/s", ours.median,
            ceiling.median, "text COPY, payload encoded beforehand", target=0.5,
            spread=ours.spread, baseline_spread=ceiling.spread, note=note + ", empty table"),
    ]  # fmt: skip
