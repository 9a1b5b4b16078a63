"""The embedded store: buckets, legs, agents, checkpoints, contracts and keys in SQLite (WAL).

Every bucket write is an absolute upsert of recomputed values, never an increment, so
writing the same bucket twice (e.g. after a crash and a replay) is harmless.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import msgspec
from msgspec.structs import astuple

from ..kpi.agents import Segment
from ..kpi.centre import AKey, Centre, QKey
from ..kpi.contracts import Contract
from ..kpi.counters import AgentCounters, Counters
from .keys import ApiKey
from .links import WallboardLink
from .records import (
    AGENT_FIELDS,
    LEG_COLUMNS,
    SCALAR_COUNTER_FIELDS,
    LegRecord,
    counters_from_row,
    counters_row,
    leg_record,
)
from .sqlite_tenancy import TenancyTables

_json = msgspec.json.Encoder()
_hist = msgspec.json.Decoder(list[int])
_contract = msgspec.json.Decoder(Contract)
_link = msgspec.json.Decoder(WallboardLink)


def _schema() -> str:
    scalar = ", ".join(f"{f} INTEGER NOT NULL" for f in SCALAR_COUNTER_FIELDS)
    agent = ", ".join(f"{f} INTEGER NOT NULL" for f in AGENT_FIELDS)
    legs = ", ".join(f"{c}" for c in LEG_COLUMNS)
    return f"""
    CREATE TABLE IF NOT EXISTS queue_buckets (
        tenant_id TEXT NOT NULL, queue_id TEXT NOT NULL, minute_ms INTEGER NOT NULL,
        {scalar}, hist_answered TEXT NOT NULL, hist_abandoned TEXT NOT NULL,
        restated INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant_id, queue_id, minute_ms)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS agent_buckets (
        tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, minute_ms INTEGER NOT NULL, {agent},
        PRIMARY KEY (tenant_id, agent_id, minute_ms)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS state_segments (
        tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, start_ms INTEGER NOT NULL,
        event_id TEXT NOT NULL, state TEXT NOT NULL, end_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, agent_id, start_ms, event_id)) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS state_segments_by_end ON state_segments (tenant_id, end_ms);
    CREATE TABLE IF NOT EXISTS legs ({legs},
        PRIMARY KEY (tenant_id, call_id, queue_id, visit)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS agents (
        tenant_id TEXT NOT NULL, agent_id TEXT NOT NULL, team_id TEXT NOT NULL,
        state TEXT NOT NULL, since_ms INTEGER NOT NULL, queues TEXT NOT NULL,
        PRIMARY KEY (tenant_id, agent_id)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS checkpoint (
        id INTEGER PRIMARY KEY CHECK (id = 1), log_offset INTEGER NOT NULL, state BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS contracts (
        tenant_id TEXT NOT NULL, queue_id TEXT NOT NULL, version INTEGER NOT NULL,
        body TEXT NOT NULL, PRIMARY KEY (tenant_id, queue_id, version));
    CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, tenant_id TEXT, role TEXT NOT NULL,
        label TEXT NOT NULL, created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER,
        revoked_at_ms INTEGER);
    CREATE TABLE IF NOT EXISTS wallboard_links (
        link_id TEXT PRIMARY KEY, body TEXT NOT NULL, revoked_at_ms INTEGER);
    """


class SqliteStore:
    """The embedded store. One writer (the aggregator); reads may come from the API."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_schema())
        self.tenancy = TenancyTables(self._db)  # tenants, queues, grants, surveys, audit

    def close(self) -> None:
        self._db.close()

    # -- aggregator writes ------------------------------------------------------------

    def write(self, centre: Centre, checkpoint: tuple[int, bytes] | None) -> int:
        """Upsert every dirty bucket, leg and agent of `centre` (absolute values) and,
        if given, the checkpoint (log offset, state) in one transaction. Returns rows."""
        qrows = [
            [*k, *counters_row(centre.queue_buckets[k]), int(k in centre.restated)]
            for k in centre.dirty_queue
        ]
        for row in qrows:
            row[-3] = _json.encode(row[-3])
            row[-2] = _json.encode(row[-2])
        arows = [(*k, *astuple(centre.agent_buckets[k])) for k in centre.dirty_agent]
        srows = [astuple(s) for s in centre.dirty_segments.values()]
        lrows = [
            tuple(msgspec.structs.astuple(leg_record(centre.legs[key])))
            for key in centre.dirty_legs
            if key in centre.legs
        ]
        agents = []
        for tenant, agent in centre.dirty_agents:
            current = centre.timelines[(tenant, agent)].current
            if current is not None:
                agents.append(
                    (tenant, agent, current.team_id, current.state, current.at,
                     _json.encode(current.queues).decode())
                )  # fmt: skip
        with self._db:
            self._db.execute("BEGIN")
            # A bucket once restated stays flagged when later (on-time) writes rewrite it.
            self._upsert("queue_buckets", 3, [*_QCOLS, "restated"], qrows, sticky=("restated",))
            self._upsert(
                "agent_buckets", 3, ["tenant_id", "agent_id", "minute_ms", *AGENT_FIELDS], arows
            )
            self._upsert("state_segments", 4, list(Segment.__struct_fields__), srows)
            self._upsert("legs", 4, list(LEG_COLUMNS), lrows)
            self._upsert(
                "agents",
                2,
                ["tenant_id", "agent_id", "team_id", "state", "since_ms", "queues"],
                agents,
            )
            if checkpoint is not None:
                self._db.execute(
                    "INSERT INTO checkpoint (id, log_offset, state) VALUES (1, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET log_offset = excluded.log_offset,"
                    " state = excluded.state",
                    checkpoint,
                )
        return len(qrows) + len(arows) + len(srows) + len(lrows)

    def _upsert(
        self, table: str, key_len: int, columns: list[str], rows: Iterable[object],
        sticky: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        """Insert or overwrite rows; a `sticky` column keeps the larger of old and new."""
        rows = list(rows)
        if not rows:
            return
        keys = ", ".join(columns[:key_len])
        sets = ", ".join(
            f"{c} = MAX({table}.{c}, excluded.{c})" if c in sticky else f"{c} = excluded.{c}"
            for c in columns[key_len:]
        )
        marks = ", ".join("?" * len(columns))
        self._db.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
            f" ON CONFLICT ({keys}) DO UPDATE SET {sets}",
            rows,  # type: ignore[arg-type]
        )

    def load_checkpoint(self) -> tuple[int, bytes] | None:
        row = self._db.execute("SELECT log_offset, state FROM checkpoint WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    # -- reads ------------------------------------------------------------------------

    def queue_buckets(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> dict[int, Counters]:
        """Stored buckets of one queue with start in [start_ms, end_ms), by minute."""
        rows = self._db.execute(
            f"SELECT minute_ms, {', '.join(SCALAR_COUNTER_FIELDS)}, hist_answered, hist_abandoned"  # noqa: S608
            " FROM queue_buckets WHERE tenant_id = ? AND queue_id = ?"
            " AND minute_ms >= ? AND minute_ms < ?",
            (tenant_id, queue_id, start_ms, end_ms),
        ).fetchall()
        return {
            row[0]: counters_from_row(row[1:-2], _hist.decode(row[-2]), _hist.decode(row[-1]))
            for row in rows
        }

    def restated_minutes(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> set[int]:
        """Starts (ms) of the queue's buckets in [start_ms, end_ms) flagged restated."""
        rows = self._db.execute(
            "SELECT minute_ms FROM queue_buckets WHERE tenant_id = ? AND queue_id = ?"
            " AND minute_ms >= ? AND minute_ms < ? AND restated",
            (tenant_id, queue_id, start_ms, end_ms),
        ).fetchall()
        return {int(r[0]) for r in rows}

    def all_queue_buckets(self) -> dict[QKey, Counters]:
        """Every stored queue bucket (for tests and the replay oracle)."""
        rows = self._db.execute(
            f"SELECT tenant_id, queue_id, minute_ms, {', '.join(SCALAR_COUNTER_FIELDS)},"  # noqa: S608
            " hist_answered, hist_abandoned FROM queue_buckets"
        ).fetchall()
        return {
            (r[0], r[1], r[2]): counters_from_row(r[3:-2], _hist.decode(r[-2]), _hist.decode(r[-1]))
            for r in rows
        }

    def all_agent_buckets(self) -> dict[AKey, AgentCounters]:
        rows = self._db.execute(
            f"SELECT tenant_id, agent_id, minute_ms, {', '.join(AGENT_FIELDS)} FROM agent_buckets"  # noqa: S608
        ).fetchall()
        return {
            (r[0], r[1], r[2]): AgentCounters(**dict(zip(AGENT_FIELDS, r[3:], strict=True)))
            for r in rows
        }

    def all_legs(self) -> list[LegRecord]:
        rows = self._db.execute(f"SELECT {', '.join(LEG_COLUMNS)} FROM legs").fetchall()  # noqa: S608
        return [LegRecord(**dict(zip(LEG_COLUMNS, r, strict=True))) for r in rows]

    def agent_buckets(
        self, tenant_id: str, start_ms: int, end_ms: int
    ) -> dict[AKey, AgentCounters]:
        rows = self._db.execute(
            f"SELECT tenant_id, agent_id, minute_ms, {', '.join(AGENT_FIELDS)} FROM agent_buckets"  # noqa: S608
            " WHERE tenant_id = ? AND minute_ms >= ? AND minute_ms < ?",
            (tenant_id, start_ms, end_ms),
        ).fetchall()
        return {
            (r[0], r[1], r[2]): AgentCounters(**dict(zip(AGENT_FIELDS, r[3:], strict=True)))
            for r in rows
        }

    def state_segments(self, tenant_id: str, start_ms: int, end_ms: int) -> list[Segment]:
        """The tenant's closed segments overlapping [start_ms, end_ms)."""
        rows = self._db.execute(
            "SELECT tenant_id, agent_id, start_ms, event_id, state, end_ms FROM state_segments"
            " WHERE tenant_id = ? AND end_ms > ? AND start_ms < ?",
            (tenant_id, start_ms, end_ms),
        ).fetchall()
        return [Segment(*r) for r in rows]

    def queues(self, tenant_id: str) -> list[str]:
        """Queues of a tenant: those with data or with a contract of their own."""
        # A skip scan of the primary key (one seek per queue), not a scan of every bucket.
        rows = self._db.execute(
            "WITH RECURSIVE q(id) AS ("
            " SELECT MIN(queue_id) FROM queue_buckets WHERE tenant_id = ?1"
            " UNION ALL SELECT (SELECT MIN(queue_id) FROM queue_buckets"
            "  WHERE tenant_id = ?1 AND queue_id > q.id) FROM q WHERE q.id IS NOT NULL)"
            " SELECT id FROM q WHERE id IS NOT NULL"
            " UNION SELECT queue_id FROM contracts WHERE tenant_id = ?1 AND queue_id != ''"
            " ORDER BY 1",
            (tenant_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def tenants(self) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT tenant_id FROM queue_buckets UNION SELECT tenant_id FROM contracts"
            " UNION SELECT tenant_id FROM api_keys WHERE tenant_id IS NOT NULL ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    # -- contracts ----------------------------------------------------------------------

    def contracts(self, tenant_id: str) -> list[Contract]:
        rows = self._db.execute(
            "SELECT body FROM contracts WHERE tenant_id = ? ORDER BY queue_id, version",
            (tenant_id,),
        ).fetchall()
        return [_contract.decode(r[0]) for r in rows]

    def put_contract(self, contract: Contract) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO contracts (tenant_id, queue_id, version, body) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, queue_id, version) DO UPDATE SET body = excluded.body",
                (contract.tenant_id, contract.queue_id or "", contract.version,
                 _json.encode(contract).decode()),
            )  # fmt: skip

    # -- keys ---------------------------------------------------------------------------

    def put_key(self, key: ApiKey) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO api_keys (key_id, key_hash, tenant_id, role, label, created_at_ms,"
                " expires_at_ms, revoked_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key_id) DO UPDATE SET revoked_at_ms = excluded.revoked_at_ms,"
                " expires_at_ms = excluded.expires_at_ms",
                msgspec.structs.astuple(key),
            )

    def get_key(self, key_id: str) -> ApiKey | None:
        row = self._db.execute(
            "SELECT key_id, key_hash, tenant_id, role, label, created_at_ms, expires_at_ms,"
            " revoked_at_ms FROM api_keys WHERE key_id = ?",
            (key_id,),
        ).fetchone()
        return None if row is None else ApiKey(*row)

    # -- wallboard links ------------------------------------------------------------------

    def put_link(self, link: WallboardLink) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO wallboard_links (link_id, body, revoked_at_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (link_id) DO UPDATE SET body = excluded.body,"
                " revoked_at_ms = excluded.revoked_at_ms",
                (link.link_id, _json.encode(link).decode(), link.revoked_at_ms),
            )

    def get_link(self, link_id: str) -> WallboardLink | None:
        row = self._db.execute(
            "SELECT body FROM wallboard_links WHERE link_id = ?", (link_id,)
        ).fetchone()
        return None if row is None else _link.decode(row[0])

    def links(self) -> list[WallboardLink]:
        rows = self._db.execute("SELECT body FROM wallboard_links ORDER BY link_id").fetchall()
        return [_link.decode(r[0]) for r in rows]


_QCOLS = [
    "tenant_id",
    "queue_id",
    "minute_ms",
    *SCALAR_COUNTER_FIELDS,
    "hist_answered",
    "hist_abandoned",
]
