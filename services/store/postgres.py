"""The distributed store: PostgreSQL (TimescaleDB when present) through psycopg 3.

Reads (`PostgresStore`, synchronous, for the API) name their tenant in every query, set
`callpulse.tenant_id` for the transaction and go through the `api_*` views, so the API role
sees one tenant's rows even where a query forgot to filter (see `pg_schema`). Writes of the
aggregator (`PartitionWriter`: asyncio callers, a writer thread) are absolute upserts of
recomputed values, staged
with COPY into temporary tables and merged with one `INSERT ... ON CONFLICT DO UPDATE` per
table, together with the partition's fencing check, applied offset and the core state the
batch changed, in one transaction. Time columns are `timestamptz` (UTC); `_ms` columns and
every `*_ms` argument are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql

from ..kpi.agents import Segment, Timeline
from ..kpi.centre import AKey, Centre, Checkpoint, QKey, Settings, Stats
from ..kpi.contracts import Contract
from ..kpi.counters import AgentCounters, Counters, StateTime
from ..kpi.gauges import queue_gauges
from ..kpi.leg import Leg, LegKey
from ..kpi.quality import ContactLeg
from . import pg_schema
from .keys import ApiKey
from .links import WallboardLink
from .records import (
    AGENT_FIELDS,
    LEG_COLUMNS,
    SCALAR_COUNTER_FIELDS,
    LegRecord,
    leg_record,
)
from .tenancy import MAX_PAGE, AccessRecord, KeyGrants, QueueRecord, SurveyRecord, TenantRecord

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()
_contract = msgspec.json.Decoder(Contract)
_msgpack = msgspec.msgpack.Encoder()
_leg = msgspec.msgpack.Decoder(Leg)
_timeline = msgspec.msgpack.Decoder(Timeline)
_stats = msgspec.msgpack.Decoder(Stats)
_link = msgspec.json.Decoder(WallboardLink)
_KEY_COLUMNS: Final = (
    "key_id, key_hash, tenant_id, role, label, created_at_ms, expires_at_ms, revoked_at_ms"
)
_ACCESS_COLUMNS: Final = "seq, at_ms, key_id, role, tenant_id, method, path, query, status"

# ms since the epoch -> timestamptz, exactly (integer microseconds, no floating point).
_TS: Final = "(timestamptz '1970-01-01 00:00:00+00' + {} * interval '1 millisecond')"
# timestamptz -> ms since the epoch, exactly (extract returns numeric).
_MS: Final = "(extract(epoch FROM {}) * 1000)::bigint"

_SEGMENT_COLS: Final = (
    f"tenant_id, agent_id, {_MS.format('start_at')}, event_id, state, {_MS.format('end_at')}"
)

_EMBEDDED_TOPIC: Final = ""


class StoreError(Exception):
    """Root of the store's own errors."""


class Fenced(StoreError):
    """Another worker claimed these partitions since this one restored them."""

    def __init__(self, partitions: Sequence[int]) -> None:
        super().__init__(f"partitions {sorted(partitions)} were claimed by another worker")
        self.partitions = list(partitions)


# -- migrations --------------------------------------------------------------------------


def migrate(conninfo: str, options: pg_schema.SchemaOptions | None = None,
            timescale: bool | None = None) -> str:  # fmt: skip
    """Create or update the schema; returns the path taken ("timescaledb" or "postgresql").

    `timescale=None` uses TimescaleDB when the extension is available on the server.
    """
    options = options or pg_schema.SchemaOptions()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        available = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        use_timescale = available is not None if timescale is None else timescale
        columnstore = True
        if use_timescale:
            if available is None:
                raise StoreError("the timescaledb extension is not available on this server")
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            version = tuple(int(p) for p in str(row[0] if row else "0").split("-")[0].split("."))
            columnstore = version >= (2, 18)
        # One lock per database, so that replicas starting together migrate one at a time.
        conn.execute("SELECT pg_advisory_lock(7419001)")
        try:
            for statement in pg_schema.statements(
                options, timescale=use_timescale, columnstore_api=columnstore
            ):
                conn.execute(statement.encode())
        finally:
            conn.execute("SELECT pg_advisory_unlock(7419001)")
    return "timescaledb" if use_timescale else "postgresql"


# -- a small synchronous pool -------------------------------------------------------------


class Pool:
    """Up to `size` connections reused across threads (FastAPI runs sync routes in a
    thread pool). A connection that failed is closed, not returned."""

    def __init__(self, conninfo: str, size: int = 4, connect_timeout_s: int = 5) -> None:
        self.conninfo = conninfo
        self.connect_timeout_s = connect_timeout_s
        self._idle: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._slots.acquire(timeout=30):
            raise StoreError("no database connection free within 30 s")
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = psycopg.connect(self.conninfo, connect_timeout=self.connect_timeout_s)
            yield conn
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            self._idle.put(conn)
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


# -- the synchronous store (API reads, admin writes, tests) -------------------------------

_Q_SUMS = ", ".join(
    f"coalesce({'max' if f.startswith('max_') else 'sum'}({f}), 0)::bigint"
    for f in SCALAR_COUNTER_FIELDS
)


def _counters(
    values: Sequence[Any], hist_a: list[int] | None, hist_b: list[int] | None
) -> Counters:
    c = Counters(**dict(zip(SCALAR_COUNTER_FIELDS, values, strict=True)))
    if hist_a is not None:
        c.hist_answered = list(hist_a)
    if hist_b is not None:
        c.hist_abandoned = list(hist_b)
    return c


class PostgresStore:
    """The same read methods as `SqliteStore`, plus keys and contracts (admin writes)."""

    def __init__(self, conninfo: str, pool_size: int = 4) -> None:
        self.pool = Pool(conninfo, pool_size)

    def close(self) -> None:
        self.pool.close()

    @contextlib.contextmanager
    def _tenant(self, tenant_id: str) -> Iterator[psycopg.Cursor[Any]]:
        """A read-only transaction scoped to one tenant (see the module docstring)."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute("SELECT set_config(%s, %s, true)", (pg_schema.TENANT_SETTING, tenant_id))
            yield cur

    def ping(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("SELECT 1")
            conn.rollback()

    # -- reads (API) ------------------------------------------------------------------

    def queue_buckets(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> dict[int, Counters]:
        """Stored buckets of one queue with start in [start_ms, end_ms), by minute (ms)."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                f"SELECT {_MS.format('bucket')}, {', '.join(SCALAR_COUNTER_FIELDS)},"
                " hist_answered, hist_abandoned FROM api_queue_buckets"
                f" WHERE tenant_id = %s AND queue_id = %s AND bucket >= {_TS.format('%s')}"
                f" AND bucket < {_TS.format('%s')}",
                (tenant_id, queue_id, start_ms, end_ms),
            )
            return {r[0]: _counters(r[1:-2], r[-2], r[-1]) for r in cur.fetchall()}

    def restated_minutes(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> set[int]:
        """Starts (ms) of the queue's buckets in [start_ms, end_ms) flagged restated."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                f"SELECT {_MS.format('bucket')} FROM api_queue_buckets"
                f" WHERE tenant_id = %s AND queue_id = %s AND bucket >= {_TS.format('%s')}"
                f" AND bucket < {_TS.format('%s')} AND restated",
                (tenant_id, queue_id, start_ms, end_ms),
            )
            return {int(r[0]) for r in cur.fetchall()}

    def queue_total(self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int) -> Counters:
        """The sum of a queue's buckets in [start_ms, end_ms), summed in the database."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                f"SELECT {_Q_SUMS}, hist_sum(hist_answered), hist_sum(hist_abandoned)"
                " FROM api_queue_buckets WHERE tenant_id = %s AND queue_id = %s"
                f" AND bucket >= {_TS.format('%s')} AND bucket < {_TS.format('%s')}",
                (tenant_id, queue_id, start_ms, end_ms),
            )
            row = cur.fetchone()
            assert row is not None
            return _counters(row[:-2], row[-2], row[-1])

    def state_segments(self, tenant_id: str, start_ms: int, end_ms: int) -> list[Segment]:
        """The tenant's closed segments overlapping [start_ms, end_ms)."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                f"SELECT {_SEGMENT_COLS} FROM api_state_segments WHERE tenant_id = %s"
                f" AND end_at > {_TS.format('%s')} AND start_at < {_TS.format('%s')}",
                (tenant_id, start_ms, end_ms),
            )
            return [Segment(*r) for r in cur.fetchall()]

    def agent_totals(self, tenant_id: str, start_ms: int, end_ms: int) -> dict[str, AgentCounters]:
        """Per agent, the sum of its handle-time buckets in [start_ms, end_ms) (all shards)."""
        sums = ", ".join(f"sum({f})::bigint" for f in AGENT_FIELDS)
        with self._tenant(tenant_id) as cur:
            cur.execute(
                f"SELECT agent_id, {sums} FROM api_agent_buckets WHERE tenant_id = %s"
                f" AND bucket >= {_TS.format('%s')} AND bucket < {_TS.format('%s')}"
                " GROUP BY agent_id",
                (tenant_id, start_ms, end_ms),
            )
            return {
                r[0]: AgentCounters(**dict(zip(AGENT_FIELDS, r[1:], strict=True)))
                for r in cur.fetchall()
            }

    def state_totals(self, tenant_id: str, start_ms: int, end_ms: int) -> dict[str, StateTime]:
        """Per agent, time in each state inside [start_ms, end_ms) (closed segments)."""
        lo, hi = _TS.format("%(lo)s"), _TS.format("%(hi)s")
        with self._tenant(tenant_id) as cur:
            cur.execute(
                f"SELECT agent_id, state, sum({_MS.format(f'least(end_at, {hi})')}"
                f" - {_MS.format(f'greatest(start_at, {lo})')})::bigint"
                " FROM api_state_segments WHERE tenant_id = %(tenant)s"
                f" AND end_at > {lo} AND start_at < {hi} GROUP BY agent_id, state",
                {"tenant": tenant_id, "lo": start_ms, "hi": end_ms},
            )
            totals: dict[str, StateTime] = {}
            for agent, state, ms in cur.fetchall():
                totals.setdefault(agent, StateTime()).add(state, ms)
            return totals

    def queues(self, tenant_id: str) -> list[str]:
        """Queues of a tenant: those with data or with a contract of their own."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                "SELECT queue_id FROM api_known_queues WHERE tenant_id = %s"
                " UNION SELECT queue_id FROM api_contracts WHERE tenant_id = %s AND queue_id <> ''"
                " UNION SELECT queue_id FROM queues WHERE tenant_id = %s ORDER BY 1",
                (tenant_id, tenant_id, tenant_id),
            )
            return [r[0] for r in cur.fetchall()]

    def contracts(self, tenant_id: str) -> list[Contract]:
        with self._tenant(tenant_id) as cur:
            cur.execute(
                "SELECT body FROM api_contracts WHERE tenant_id = %s ORDER BY queue_id, version",
                (tenant_id,),
            )
            return [_contract.decode(r[0]) for r in cur.fetchall()]

    def get_key(self, key_id: str) -> ApiKey | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT * FROM api_key(%s)", (key_id,)).fetchone()
            conn.rollback()
        return None if row is None else ApiKey(*row)

    # -- admin writes (schema owner) ------------------------------------------------------

    def put_contract(self, contract: Contract) -> None:
        """Store one contract version (written under its tenant's setting, see above)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "SELECT set_config(%s, %s, true)", (pg_schema.TENANT_SETTING, contract.tenant_id)
            )
            conn.execute(
                "INSERT INTO api_contracts (tenant_id, queue_id, version, body)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, queue_id, version)"
                " DO UPDATE SET body = excluded.body",
                (contract.tenant_id, contract.queue_id or "", contract.version,
                 _json.encode(contract).decode()),
            )  # fmt: skip

    def put_key(self, key: ApiKey, grants: KeyGrants | None = None) -> None:
        """Store a key (and, if given, replace its grants) in one transaction."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO api_keys (key_id, key_hash, tenant_id, role, label, created_at_ms,"
                " expires_at_ms, revoked_at_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (key_id) DO UPDATE SET revoked_at_ms = excluded.revoked_at_ms,"
                " expires_at_ms = excluded.expires_at_ms",
                msgspec.structs.astuple(key),
            )
            if grants is not None:
                conn.execute("DELETE FROM api_key_grants WHERE key_id = %s", (key.key_id,))
                rows = [(key.key_id, "queue", q) for q in grants.queues]
                rows += [(key.key_id, "team", t) for t in grants.teams]
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO api_key_grants (key_id, kind, value) VALUES (%s, %s, %s)",
                        rows,
                    )

    def key_grants(self, key_id: str) -> KeyGrants:
        rows = self._read(
            "SELECT kind, value FROM api_key_grants WHERE key_id = %s ORDER BY kind, value",
            (key_id,),
        )
        return KeyGrants(
            queues=tuple(v for k, v in rows if k == "queue"),
            teams=tuple(v for k, v in rows if k == "team"),
        )

    def keys(self, tenant_id: str | None, after: str, limit: int) -> list[ApiKey]:
        """Keys ordered by id after `after`; `tenant_id` None: admin keys (no tenant)."""
        rows = self._read(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id IS NOT DISTINCT FROM %s"
            " AND key_id > %s ORDER BY key_id LIMIT %s",
            (tenant_id, after, min(limit, MAX_PAGE)),
        )
        return [ApiKey(*r) for r in rows]

    # -- the registry: tenants, declared queues, wallboard links, the access log ----------

    def _read(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            rows = conn.execute(query.encode(), params).fetchall()
            conn.rollback()
        return rows

    def _write(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(query.encode(), rows)

    def tenants(self) -> list[TenantRecord]:
        """Declared tenants and those known only from data, contracts or keys, by id."""
        return [
            TenantRecord(tenant_id=r[0], name=r[1], created_at_ms=r[2], declared=r[3])
            for r in self._read("SELECT * FROM api_tenants()")
        ]

    def put_tenant(self, tenant: TenantRecord) -> None:
        """Create or rename a tenant (its creation instant is kept)."""
        self._write(
            "INSERT INTO tenants (tenant_id, name, created_at_ms) VALUES (%s, %s, %s)"
            " ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name",
            [(tenant.tenant_id, tenant.name, tenant.created_at_ms)],
        )

    def declared_queues(self, tenant_id: str) -> list[QueueRecord]:
        rows = self._read(
            "SELECT tenant_id, queue_id, name, created_at_ms FROM queues WHERE tenant_id = %s"
            " ORDER BY queue_id",
            (tenant_id,),
        )
        return [QueueRecord(tenant_id=r[0], queue_id=r[1], name=r[2], created_at_ms=r[3])
                for r in rows]  # fmt: skip

    def put_queue(self, queue: QueueRecord) -> None:
        self._write(
            "INSERT INTO queues (tenant_id, queue_id, name, created_at_ms) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (tenant_id, queue_id) DO UPDATE SET name = excluded.name",
            [(queue.tenant_id, queue.queue_id, queue.name, queue.created_at_ms)],
        )

    def put_link(self, link: WallboardLink) -> None:
        self._write(
            "INSERT INTO wallboard_links (link_id, body, revoked_at_ms) VALUES (%s, %s, %s)"
            " ON CONFLICT (link_id) DO UPDATE SET body = excluded.body,"
            " revoked_at_ms = excluded.revoked_at_ms",
            [(link.link_id, _json.encode(link).decode(), link.revoked_at_ms)],
        )

    def get_link(self, link_id: str) -> WallboardLink | None:
        rows = self._read("SELECT body FROM wallboard_links WHERE link_id = %s", (link_id,))
        return _link.decode(rows[0][0]) if rows else None

    def links(self) -> list[WallboardLink]:
        return [_link.decode(r[0]) for r in self._read(
            "SELECT body FROM wallboard_links ORDER BY link_id")]  # fmt: skip

    def record_access(self, records: Sequence[AccessRecord]) -> None:
        self._write(
            "INSERT INTO access_log (at_ms, key_id, role, tenant_id, method, path, query, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [(r.at_ms, r.key_id, r.role, r.tenant_id, r.method, r.path, r.query, r.status)
             for r in records],
        )  # fmt: skip

    def access_log(
        self, tenant_id: str | None, start_ms: int, end_ms: int, after_seq: int, limit: int,
        every_tenant: bool = False,
    ) -> list[AccessRecord]:  # fmt: skip
        """Access records in [start_ms, end_ms) after `after_seq`, oldest first: those of
        one tenant, or (`every_tenant`, admins only) of all tenants and none."""
        where = "" if every_tenant else " AND tenant_id IS NOT DISTINCT FROM %s"
        params: tuple[Any, ...] = (start_ms, end_ms, after_seq)
        if not every_tenant:
            params += (tenant_id,)
        rows = self._read(
            f"SELECT {_ACCESS_COLUMNS} FROM access_log WHERE at_ms >= %s AND at_ms < %s"
            f" AND seq > %s{where} ORDER BY seq LIMIT %s",
            (*params, min(limit, MAX_PAGE)),
        )
        return [
            AccessRecord(seq=r[0], at_ms=r[1], key_id=r[2], role=r[3], tenant_id=r[4],
                         method=r[5], path=r[6], query=r[7], status=r[8])
            for r in rows
        ]  # fmt: skip

    # -- tenant data the reports need -----------------------------------------------------

    def surveys(self, tenant_id: str, start_ms: int, end_ms: int) -> list[SurveyRecord]:
        """Surveys completed in [start_ms, end_ms)."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                "SELECT tenant_id, event_id, call_id, queue_id, agent_id, at_ms, score, scale_max"
                " FROM api_surveys WHERE tenant_id = %s AND at_ms >= %s AND at_ms < %s",
                (tenant_id, start_ms, end_ms),
            )
            return [
                SurveyRecord(tenant_id=r[0], event_id=r[1], call_id=r[2], queue_id=r[3],
                             agent_id=r[4], at_ms=r[5], score=r[6], scale_max=r[7])
                for r in cur.fetchall()
            ]  # fmt: skip

    def contact_legs(self, tenant_id: str, start_ms: int, end_ms: int) -> list[ContactLeg]:
        """Legs with a caller key that entered a queue in [start_ms, end_ms)."""
        with self._tenant(tenant_id) as cur:
            cur.execute(
                "SELECT call_id, caller_key, queue_id, queued_at_ms FROM api_legs"
                " WHERE tenant_id = %s AND caller_key IS NOT NULL"
                " AND queued_at_ms >= %s AND queued_at_ms < %s",
                (tenant_id, start_ms, end_ms),
            )
            return [ContactLeg(r[0], r[1], r[2], r[3]) for r in cur.fetchall()]

    def write(self, centre: Centre, checkpoint: tuple[int, bytes] | None = None) -> int:
        """Upsert every dirty row of one `centre` (shard 0) and, if given, its checkpoint
        (offset, state) in one transaction, like `SqliteStore.write`. Returns rows."""
        rows = Rows.of(centre, shard=0, legs=centre.dirty_legs, queue_snapshots=False)
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            _create_stages(cur)
            n = _merge_sync(cur, rows)
            if checkpoint is not None:
                cur.execute(
                    "INSERT INTO aggregator_partitions (topic, partition, applied_offset,"
                    " checkpoint) VALUES (%s, 0, %s, %s) ON CONFLICT (topic, partition) DO UPDATE"
                    " SET applied_offset = excluded.applied_offset,"
                    " checkpoint = excluded.checkpoint, updated_at = now()",
                    (_EMBEDDED_TOPIC, checkpoint[0], checkpoint[1]),
                )
        return n

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT applied_offset, checkpoint FROM aggregator_partitions"
                " WHERE topic = %s AND partition = 0",
                (_EMBEDDED_TOPIC,),
            ).fetchone()
            conn.rollback()
        return None if row is None or row[1] is None else (int(row[0]), bytes(row[1]))

    # -- whole-table reads (tests, the replay oracle, operators) ----------------------------

    def _all(self, query: str) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            rows = conn.execute(query.encode()).fetchall()
            conn.rollback()
        return rows

    def all_queue_buckets(self) -> dict[QKey, Counters]:
        rows = self._all(
            f"SELECT tenant_id, queue_id, {_MS.format('bucket')},"
            f" {', '.join(SCALAR_COUNTER_FIELDS)}, hist_answered, hist_abandoned FROM queue_buckets"
        )
        return {(r[0], r[1], r[2]): _counters(r[3:-2], r[-2], r[-1]) for r in rows}

    def all_agent_buckets(self) -> dict[AKey, AgentCounters]:
        sums = ", ".join(f"sum({f})::bigint" for f in AGENT_FIELDS)
        rows = self._all(
            f"SELECT tenant_id, agent_id, {_MS.format('bucket')}, {sums} FROM agent_buckets"
            " GROUP BY tenant_id, agent_id, bucket"
        )
        return {
            (r[0], r[1], r[2]): AgentCounters(**dict(zip(AGENT_FIELDS, r[3:], strict=True)))
            for r in rows
        }

    def all_segments(self) -> list[Segment]:
        return [Segment(*r) for r in self._all(f"SELECT {_SEGMENT_COLS} FROM state_segments")]

    def all_legs(self) -> list[LegRecord]:
        rows = self._all(f"SELECT {', '.join(LEG_COLUMNS)} FROM legs ORDER BY 1, 2, 3, 4")
        return [LegRecord(**dict(zip(LEG_COLUMNS, r, strict=True))) for r in rows]


# -- rows of one write ------------------------------------------------------------------


@dataclass
class Rows:
    """The absolute values to upsert, as plain tuples (built outside the transaction)."""

    queue: list[tuple[Any, ...]] = field(default_factory=list)
    agent: list[tuple[Any, ...]] = field(default_factory=list)
    segments: list[tuple[Any, ...]] = field(default_factory=list)
    legs: list[tuple[Any, ...]] = field(default_factory=list)
    agents: list[tuple[Any, ...]] = field(default_factory=list)
    snapshots: list[tuple[Any, ...]] = field(default_factory=list)
    surveys: list[tuple[Any, ...]] = field(default_factory=list)

    @classmethod
    def of(cls, centre: Centre, shard: int, legs: Iterable[LegKey], queue_snapshots: bool) -> Rows:
        rows = cls()
        rows.add(centre, shard, legs, queue_snapshots)
        return rows

    def add(self, centre: Centre, shard: int, legs: Iterable[LegKey], queue_snapshots: bool,
            snapshot_queues: Iterable[tuple[str, str]] = (),
            written: dict[LegKey, int] | None = None) -> None:  # fmt: skip
        """Rows of `centre`'s dirty buckets, `legs`, agents and (optionally) queue snapshots.
        `written` maps each leg to the `leg_at` of its row in the store, where known, and is
        kept up to date (None: unknown, every leg row is checked for an older copy)."""
        restated = centre.restated
        for k in centre.dirty_queue:
            c = centre.queue_buckets[k]
            self.queue.append((
                *k, *(getattr(c, f) for f in SCALAR_COUNTER_FIELDS),
                "{" + ",".join(map(str, c.hist_answered)) + "}",
                "{" + ",".join(map(str, c.hist_abandoned)) + "}",
                k in restated,
            ))  # fmt: skip
        for k in centre.dirty_agent:
            a = centre.agent_buckets[k]
            self.agent.append((*k, shard, *msgspec.structs.astuple(a)))  # AGENT_FIELDS order
        self.segments += map(msgspec.structs.astuple, centre.dirty_segments.values())
        for key in legs:
            leg = centre.legs.get(key)
            if leg is not None:
                if written is None:
                    moved = True
                else:
                    before = written.get(key)
                    moved = before is not None and before != leg.first_at
                    written[key] = leg.first_at
                record = msgspec.structs.astuple(leg_record(leg))
                self.legs.append((*record, leg.first_at, moved))
        for tenant, agent in centre.dirty_agents:
            current = centre.timelines[(tenant, agent)].current
            if current is not None:
                self.agents.append(
                    (tenant, agent, current.team_id, current.state, current.at,
                     _json.encode(current.queues).decode())
                )  # fmt: skip
        if queue_snapshots:
            now = centre.max_seen_ms
            for tenant, queue_id in snapshot_queues:
                g = queue_gauges(
                    list(centre.waiting_legs(tenant, queue_id)), [], queue_id, now,
                    centre.settings.stale_leg_ms,
                )  # fmt: skip
                second = now - now % 1000
                self.snapshots.append(
                    (tenant, queue_id, second, g.calls_waiting, g.longest_wait_ms,
                     g.oldest_queued_at_ms)
                )  # fmt: skip

    def extend(self, other: Rows) -> None:
        for name in ("queue", "agent", "segments", "legs", "agents", "snapshots", "surveys"):
            getattr(self, name).extend(getattr(other, name))

    def __len__(self) -> int:
        return sum(
            len(x)
            for x in (self.queue, self.agent, self.segments, self.legs, self.agents, self.snapshots,
                      self.surveys)
        )  # fmt: skip


_Q_STAGE_COLS = ["tenant_id", "queue_id", "minute_ms", *SCALAR_COUNTER_FIELDS,
                 "hist_answered", "hist_abandoned", "restated"]  # fmt: skip
_LEG_STAGE_COLS = [*LEG_COLUMNS, "leg_at_ms", "moved"]
_GONE_COLS = ["partition", "tenant_id", "call_id", "queue_id", "visit"]

_STAGE_DDL: Final = [
    f"CREATE TEMP TABLE IF NOT EXISTS stage_queue (tenant_id text, queue_id text,"
    f" minute_ms bigint, {', '.join(f'{f} bigint' for f in SCALAR_COUNTER_FIELDS)},"
    " hist_answered text, hist_abandoned text, restated boolean) ON COMMIT DELETE ROWS",
    f"CREATE TEMP TABLE IF NOT EXISTS stage_agent (tenant_id text, agent_id text,"
    f" minute_ms bigint, shard integer, {', '.join(f'{f} bigint' for f in AGENT_FIELDS)})"
    " ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_segments (tenant_id text, agent_id text,"
    " start_ms bigint, event_id text, state text, end_ms bigint) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_agents (tenant_id text, agent_id text, team_id text,"
    " state text, since_ms bigint, queues text) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_snapshots (tenant_id text, queue_id text,"
    " at_ms bigint, calls_waiting bigint, longest_wait_ms bigint, oldest bigint)"
    " ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_legs (tenant_id text, call_id text, queue_id text,"
    " visit integer, queued_at_ms bigint, priority integer, caller_key text, outcome text,"
    " outcome_at_ms bigint, wait_ms bigint, agent_id text, flow_out_reason text,"
    " transferred_at_ms bigint, handled_at_ms bigint, talk_ms bigint, hold_ms bigint,"
    " wrap_ms bigint, anomalies text, leg_at_ms bigint, moved boolean) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_leg_state (partition integer, tenant_id text,"
    " call_id text, queue_id text, visit integer, state bytea) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_leg_gone (partition integer, tenant_id text,"
    " call_id text, queue_id text, visit integer) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_timeline_state (partition integer, tenant_id text,"
    " agent_id text, state bytea) ON COMMIT DELETE ROWS",
]


def _set(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


_MERGE: Final = {
    "queue": (
        "stage_queue",
        _Q_STAGE_COLS,
        f"INSERT INTO queue_buckets (tenant_id, queue_id, bucket,"
        f" {', '.join(_Q_STAGE_COLS[3:])}) SELECT tenant_id, queue_id, {_TS.format('minute_ms')},"
        f" {', '.join(SCALAR_COUNTER_FIELDS)}, hist_answered::bigint[], hist_abandoned::bigint[],"
        " restated FROM stage_queue"
        # A bucket once restated stays flagged when later (on-time) writes rewrite it.
        f" ON CONFLICT (tenant_id, queue_id, bucket) DO UPDATE SET {_set(_Q_STAGE_COLS[3:-1])},"
        " restated = queue_buckets.restated OR excluded.restated;"
        " INSERT INTO known_queues (tenant_id, queue_id) SELECT DISTINCT tenant_id, queue_id"
        " FROM stage_queue ON CONFLICT DO NOTHING",
    ),
    "agent": (
        "stage_agent",
        ["tenant_id", "agent_id", "minute_ms", "shard", *AGENT_FIELDS],
        f"INSERT INTO agent_buckets (tenant_id, agent_id, bucket, shard, {', '.join(AGENT_FIELDS)})"
        f" SELECT tenant_id, agent_id, {_TS.format('minute_ms')}, shard,"
        f" {', '.join(AGENT_FIELDS)} FROM stage_agent"
        f" ON CONFLICT (tenant_id, agent_id, bucket, shard) DO UPDATE SET {_set(AGENT_FIELDS)}",
    ),
    "segments": (
        "stage_segments",
        list(Segment.__struct_fields__),
        "INSERT INTO state_segments (tenant_id, agent_id, start_at, event_id, state, end_at)"
        f" SELECT tenant_id, agent_id, {_TS.format('start_ms')}, event_id, state,"
        f" {_TS.format('end_ms')} FROM stage_segments"
        " ON CONFLICT (tenant_id, agent_id, start_at, event_id)"
        " DO UPDATE SET state = excluded.state, end_at = excluded.end_at",
    ),
    "legs": (
        "stage_legs",
        _LEG_STAGE_COLS,
        # A leg's earliest event may move earlier: drop its row under the later instant
        # (`moved`: the writer saw it move, or does not know what it wrote before).
        "DELETE FROM legs l USING stage_legs s WHERE s.moved AND l.tenant_id = s.tenant_id"
        " AND l.call_id = s.call_id AND l.queue_id = s.queue_id AND l.visit = s.visit"
        f" AND l.leg_at > {_TS.format('s.leg_at_ms')}"
        f" AND l.leg_at <= {_TS.format('s.leg_at_ms')} + interval '2 days';"
        f" INSERT INTO legs ({', '.join(LEG_COLUMNS)}, leg_at)"
        f" SELECT {', '.join(LEG_COLUMNS)}, {_TS.format('leg_at_ms')} FROM stage_legs"
        " ON CONFLICT (tenant_id, call_id, queue_id, visit, leg_at)"
        f" DO UPDATE SET {_set(LEG_COLUMNS[4:])}",
    ),
    "agents": (
        "stage_agents",
        ["tenant_id", "agent_id", "team_id", "state", "since_ms", "queues"],
        "INSERT INTO agents (tenant_id, agent_id, team_id, state, since_ms, queues)"
        " SELECT tenant_id, agent_id, team_id, state, since_ms, queues FROM stage_agents"
        " ON CONFLICT (tenant_id, agent_id)"
        " DO UPDATE SET team_id = excluded.team_id, state = excluded.state,"
        " since_ms = excluded.since_ms, queues = excluded.queues",
    ),
    "snapshots": (
        "stage_snapshots",
        ["tenant_id", "queue_id", "at_ms", "calls_waiting", "longest_wait_ms", "oldest"],
        "INSERT INTO queue_snapshots (tenant_id, queue_id, at, calls_waiting,"
        f" longest_wait_ms, oldest_queued_at_ms) SELECT tenant_id, queue_id,"
        f" {_TS.format('at_ms')}, calls_waiting, longest_wait_ms, oldest FROM stage_snapshots"
        " ON CONFLICT (tenant_id, queue_id, at) DO UPDATE SET"
        " calls_waiting = excluded.calls_waiting, longest_wait_ms = excluded.longest_wait_ms,"
        " oldest_queued_at_ms = excluded.oldest_queued_at_ms",
    ),
    "surveys": (
        None,
        ["tenant_id", "event_id", "call_id", "queue_id", "agent_id", "at_ms", "score",
         "scale_max"],
        # A re-sent survey (same event id) changes nothing: the first one stays.
        "INSERT INTO surveys (tenant_id, event_id, call_id, queue_id, agent_id, at_ms, score,"
        " scale_max) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (tenant_id, event_id) DO NOTHING",
    ),
}  # fmt: skip


# Column types of the staging tables, for binary COPY (psycopg's C row encoder).
_INT8, _INT4, _TEXT = "int8", "int4", "text"
_COPY_TYPES: Final = {
    "stage_queue": [_TEXT, _TEXT, _INT8, *[_INT8] * len(SCALAR_COUNTER_FIELDS),
                    _TEXT, _TEXT, "bool"],
    "stage_agent": [_TEXT, _TEXT, _INT8, _INT4, *[_INT8] * len(AGENT_FIELDS)],
    "stage_segments": [_TEXT, _TEXT, _INT8, _TEXT, _TEXT, _INT8],
    "stage_agents": [_TEXT, _TEXT, _TEXT, _TEXT, _INT8, _TEXT],
    "stage_snapshots": [_TEXT, _TEXT, _INT8, _INT8, _INT8, _INT8],
    "stage_legs": [_TEXT, _TEXT, _TEXT, _INT4, _INT8, _INT4, _TEXT, _TEXT, _INT8, _INT8, _TEXT,
                   _TEXT, _INT8, _INT8, _INT8, _INT8, _INT8, _TEXT, _INT8, "bool"],
    "stage_leg_state": [_INT4, _TEXT, _TEXT, _TEXT, _INT4, "bytea"],
    "stage_leg_gone": [_INT4, _TEXT, _TEXT, _TEXT, _INT4],
    "stage_timeline_state": [_INT4, _TEXT, _TEXT, "bytea"],
}  # fmt: skip


def _copy_statement(stage: str, columns: Sequence[str]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(stage), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _copy(cur: psycopg.Cursor[Any], stage: str, columns: Sequence[str],
          rows: Sequence[Sequence[Any]]) -> None:  # fmt: skip
    with cur.copy(_copy_statement(stage, columns)) as copy:
        copy.set_types(_COPY_TYPES[stage])
        for row in rows:
            copy.write_row(row)


def _create_stages(cur: psycopg.Cursor[Any]) -> None:
    """The session's staging tables (temporary: each connection has its own)."""
    for ddl in _STAGE_DDL:
        cur.execute(ddl.encode())


def _merge_sync(cur: psycopg.Cursor[Any], rows: Rows) -> int:
    """Upsert `rows` through the staging tables (`_create_stages` made them)."""
    for name, (stage, columns, merge) in _MERGE.items():
        data: list[tuple[Any, ...]] = getattr(rows, name)
        if not data:
            continue
        if stage is None:
            cur.executemany(merge.encode(), data)
            continue
        _copy(cur, stage, columns, data)
        for statement in merge.split("; "):
            cur.execute(statement.encode())
    return len(rows)


# -- the aggregator's transactional writer ------------------------------------------------


@dataclass
class Claim:
    """What a worker gets when it takes a partition over: a fencing generation, the offset
    of the last event the restored state contains (-1: none), and that state."""

    generation: int
    applied_offset: int
    centre: Centre


@dataclass
class PartitionWrite:
    """One partition's share of a write: what changed in its core since the last write."""

    partition: int
    generation: int
    applied_offset: int
    centre: Centre
    legs: set[LegKey]
    timelines: set[tuple[str, str]]
    gone_legs: set[LegKey]
    snapshot_queues: set[tuple[str, str]]
    surveys: list[SurveyRecord] = field(default_factory=list)
    written: dict[LegKey, int] | None = None  # see `Rows.add`


@dataclass
class Prepared:
    """One partition's write as plain values, built at once from its core (which may then
    change while the write is in flight): the result rows, the core state rows and the
    partition's fencing generation, offset and watermark."""

    partition: int
    generation: int
    applied_offset: int
    max_seen_ms: int
    evicted_until_ms: int
    stats: bytes
    rows: Rows
    leg_state: list[tuple[Any, ...]]
    gone: list[tuple[Any, ...]]
    timeline_state: list[tuple[Any, ...]]


def prepare(part: PartitionWrite) -> Prepared:
    """Snapshot one partition's changes (see `Prepared`); pure CPU, no I/O."""
    centre, p = part.centre, part.partition
    rows = Rows()
    rows.add(centre, p, part.legs, True, part.snapshot_queues, part.written)
    rows.surveys = [msgspec.structs.astuple(x) for x in part.surveys]
    legs = centre.legs
    leg_state = [(p, *key, _msgpack.encode(legs[key])) for key in part.legs if key in legs]
    gone = [(p, *key) for key in part.gone_legs if key not in legs]
    timelines = centre.timelines
    timeline_state = [
        (p, *key, _msgpack.encode(timelines[key])) for key in part.timelines if key in timelines
    ]
    return Prepared(
        p, part.generation, part.applied_offset, centre.max_seen_ms, centre.evicted_until_ms,
        _msgpack.encode(centre.stats), rows, leg_state, gone, timeline_state,
    )  # fmt: skip


class PartitionWriter:
    """Writer of one aggregator worker. Writes run one at a time, each one transaction, on
    a thread of their own with a connection of their own: the statements of a write follow
    each other without waiting for the worker's event loop, so PostgreSQL merges one batch
    while the loop applies the next (psycopg waits for the server without the GIL). Claims
    use a second, asyncio connection (they may run while a write is in flight)."""

    def __init__(self, conninfo: str, topic: str, settings: Settings) -> None:
        self.conninfo = conninfo
        self.topic = topic
        self.settings = settings
        self._claims: psycopg.AsyncConnection[Any] | None = None
        self._writes: psycopg.Connection[Any] | None = None  # used by the writer thread only
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="pg-writer")

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._claims
        if conn is None or conn.closed:
            conn = self._claims = await psycopg.AsyncConnection.connect(
                self.conninfo, connect_timeout=5
            )
        return conn

    def _write_connection(self) -> psycopg.Connection[Any]:
        conn = self._writes
        if conn is None or conn.closed:
            conn = self._writes = psycopg.connect(self.conninfo, connect_timeout=5)
            with conn.cursor() as cur:
                _create_stages(cur)
            conn.commit()
        return conn

    def _discard_writes(self) -> None:
        conn, self._writes = self._writes, None
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        """Close both connections; a write still in flight gets 2 s to end first."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(loop.run_in_executor(self._thread, self._discard_writes), 2.0)
        self._thread.shutdown(wait=False)
        await self._discard_on_error()

    async def _discard_on_error(self) -> None:
        """Drop the claims connection after a failure (or a cancellation in the middle of a
        command, when a polite close would wait on the command: then the socket is closed)."""
        conn, self._claims = self._claims, None
        if conn is not None and not conn.closed:
            try:
                await asyncio.wait_for(conn.close(), 1.0)
            except BaseException:
                conn.pgconn.finish()
                raise

    async def claim(self, partition: int) -> Claim:
        """Take a partition over: bump its generation (waiting for a writer that holds the
        row) and load the state of the last committed write."""
        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cur:
                await cur.execute(
                    "INSERT INTO aggregator_partitions (topic, partition) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (self.topic, partition),
                )
                await cur.execute(
                    "UPDATE aggregator_partitions SET generation = generation + 1,"
                    " updated_at = now() WHERE topic = %s AND partition = %s"
                    " RETURNING generation, applied_offset, max_seen_ms, evicted_until_ms, stats",
                    (self.topic, partition),
                )
                row = await cur.fetchone()
                assert row is not None
                generation, offset, max_seen, evicted_until, stats = row
                await cur.execute(
                    "SELECT state FROM aggregator_legs WHERE topic = %s AND partition = %s",
                    (self.topic, partition),
                )
                legs = [_leg.decode(r[0]) for r in await cur.fetchall()]
                await cur.execute(
                    "SELECT state FROM aggregator_timelines WHERE topic = %s AND partition = %s",
                    (self.topic, partition),
                )
                timelines = [_timeline.decode(r[0]) for r in await cur.fetchall()]
        except BaseException:
            await self._discard_on_error()
            raise
        checkpoint = Checkpoint(
            legs=legs, timelines=timelines, max_seen_ms=max_seen, evicted_until_ms=evicted_until,
            stats=Stats() if stats is None else _stats.decode(stats),
        )  # fmt: skip
        centre = Centre.restore(_msgpack.encode(checkpoint), self.settings)
        return Claim(generation, offset, centre)

    async def write(self, parts: Sequence[PartitionWrite]) -> int:
        """`prepare` and `commit` at once."""
        return await self.commit([prepare(part) for part in parts])

    async def commit(self, parts: Sequence[Prepared]) -> int:
        """Upsert prepared partitions in one transaction; returns the rows written. Raises
        `Fenced` (and writes nothing) when another worker claimed one of the partitions.
        Cancelling the caller does not stop a write already started (it commits or fails
        as a whole; re-committing the same values later is harmless)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._commit, list(parts))

    def _commit(self, parts: list[Prepared]) -> int:
        rows = Rows()
        leg_state: list[tuple[Any, ...]] = []
        gone: list[tuple[Any, ...]] = []
        timeline_state: list[tuple[Any, ...]] = []
        for part in parts:
            rows.extend(part.rows)
            leg_state += part.leg_state
            gone += part.gone
            timeline_state += part.timeline_state
        try:
            conn = self._write_connection()
            with conn.transaction(), conn.cursor() as cur:
                # Fencing first: the row lock is held to the commit, so a worker claiming the
                # partition meanwhile waits for this transaction, then sees its result.
                fenced = []
                for part in parts:
                    cur.execute(
                        "UPDATE aggregator_partitions SET applied_offset = %s, max_seen_ms = %s,"
                        " evicted_until_ms = %s, stats = %s, updated_at = now()"
                        " WHERE topic = %s AND partition = %s AND generation = %s",
                        (part.applied_offset, part.max_seen_ms, part.evicted_until_ms,
                         part.stats, self.topic, part.partition, part.generation),
                    )  # fmt: skip
                    if cur.rowcount != 1:
                        fenced.append(part.partition)
                if fenced:
                    raise Fenced(fenced)
                n = _merge_sync(cur, rows)
                self._copy_state(cur, leg_state, gone, timeline_state)
        except BaseException:
            self._discard_writes()
            raise
        return n

    def _copy_state(
        self, cur: psycopg.Cursor[Any], legs: list[tuple[Any, ...]],
        gone: list[tuple[Any, ...]], timelines: list[tuple[Any, ...]],
    ) -> None:  # fmt: skip
        key = "tenant_id, call_id, queue_id, visit"
        # Deletes first: a leg evicted and then begun again under the same key is kept.
        if gone:
            _copy(cur, "stage_leg_gone", _GONE_COLS, gone)
            cur.execute(
                "DELETE FROM aggregator_legs a USING stage_leg_gone g WHERE a.topic = %s"
                " AND a.partition = g.partition AND a.tenant_id = g.tenant_id"
                " AND a.call_id = g.call_id AND a.queue_id = g.queue_id AND a.visit = g.visit",
                (self.topic,),
            )
        if legs:
            _copy(cur, "stage_leg_state", [*_GONE_COLS, "state"], legs)
            cur.execute(
                f"INSERT INTO aggregator_legs (topic, partition, {key}, state)"
                f" SELECT %s, partition, {key}, state FROM stage_leg_state"
                f" ON CONFLICT (topic, partition, {key}) DO UPDATE SET state = excluded.state",
                (self.topic,),
            )
        if timelines:
            columns = ["partition", "tenant_id", "agent_id", "state"]
            _copy(cur, "stage_timeline_state", columns, timelines)
            cur.execute(
                "INSERT INTO aggregator_timelines (topic, partition, tenant_id, agent_id, state)"
                " SELECT %s, partition, tenant_id, agent_id, state FROM stage_timeline_state"
                " ON CONFLICT (topic, partition, tenant_id, agent_id)"
                " DO UPDATE SET state = excluded.state",
                (self.topic,),
            )

    async def applied_offsets(self) -> dict[int, int]:
        """The last applied offset of every partition of the topic (for lag and tests)."""
        try:
            conn = await self._connection()
            async with conn.cursor() as cur:
                await cur.execute(
                    "SELECT partition, applied_offset FROM aggregator_partitions WHERE topic = %s",
                    (self.topic,),
                )
                rows = await cur.fetchall()
            await conn.rollback()
        except BaseException:
            await self._discard_on_error()
            raise
        return {int(p): int(o) for p, o in rows}
