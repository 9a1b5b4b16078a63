"""The tenancy registry in the embedded SQLite store: tenants, queues, key grants, surveys,
the access log, and the leg reads FCR needs. Shares the `SqliteStore` connection.

Every query names the tenant it reads (the access log may be read across tenants by an
admin only, which the API enforces before calling).
"""

from __future__ import annotations

import sqlite3

from ..kpi.quality import ContactLeg
from .keys import ApiKey
from .tenancy import MAX_PAGE, AccessRecord, KeyGrants, QueueRecord, SurveyRecord, TenantRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS queues (
    tenant_id TEXT NOT NULL, queue_id TEXT NOT NULL, name TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, PRIMARY KEY (tenant_id, queue_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_key_grants (
    key_id TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('queue', 'team')),
    value TEXT NOT NULL, PRIMARY KEY (key_id, kind, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS surveys (
    tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, call_id TEXT NOT NULL, queue_id TEXT,
    agent_id TEXT, at_ms INTEGER NOT NULL, score INTEGER NOT NULL, scale_max INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, event_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS surveys_by_time ON surveys (tenant_id, at_ms);
CREATE TABLE IF NOT EXISTS access_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at_ms INTEGER NOT NULL, key_id TEXT NOT NULL,
    role TEXT NOT NULL, tenant_id TEXT, method TEXT NOT NULL, path TEXT NOT NULL,
    query TEXT NOT NULL, status INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS access_log_by_tenant ON access_log (tenant_id, seq);
CREATE INDEX IF NOT EXISTS legs_by_caller ON legs (tenant_id, queued_at_ms)
    WHERE caller_key IS NOT NULL;
"""

_KEY_COLUMNS = (
    "key_id, key_hash, tenant_id, role, label, created_at_ms, expires_at_ms, revoked_at_ms"
)
_ACCESS_COLUMNS = "seq, at_ms, key_id, role, tenant_id, method, path, query, status"


class TenancyTables:
    """Reads and writes of the registry tables (the schema is created on construction)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.executescript(SCHEMA)

    # -- tenants and queues --------------------------------------------------------------

    def tenants(self) -> list[TenantRecord]:
        """Declared tenants and those known only from data, contracts or keys, by id."""
        rows = self._db.execute(
            "SELECT tenant_id, name, created_at_ms, 1 FROM tenants"
            " UNION ALL SELECT t, '', 0, 0 FROM ("
            "  SELECT DISTINCT tenant_id AS t FROM queue_buckets"
            "  UNION SELECT tenant_id FROM contracts"
            "  UNION SELECT tenant_id FROM api_keys WHERE tenant_id IS NOT NULL)"
            " WHERE t NOT IN (SELECT tenant_id FROM tenants) ORDER BY 1"
        ).fetchall()
        return [
            TenantRecord(tenant_id=r[0], name=r[1], created_at_ms=r[2], declared=bool(r[3]))
            for r in rows
        ]

    def put_tenant(self, tenant: TenantRecord) -> None:
        """Create or rename a tenant (its creation instant is kept)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO tenants (tenant_id, name, created_at_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id) DO UPDATE SET name = excluded.name",
                (tenant.tenant_id, tenant.name, tenant.created_at_ms),
            )

    def queues(self, tenant_id: str) -> list[QueueRecord]:
        rows = self._db.execute(
            "SELECT tenant_id, queue_id, name, created_at_ms FROM queues WHERE tenant_id = ?"
            " ORDER BY queue_id",
            (tenant_id,),
        ).fetchall()
        return [
            QueueRecord(tenant_id=r[0], queue_id=r[1], name=r[2], created_at_ms=r[3]) for r in rows
        ]

    def put_queue(self, queue: QueueRecord) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO queues (tenant_id, queue_id, name, created_at_ms) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, queue_id) DO UPDATE SET name = excluded.name",
                (queue.tenant_id, queue.queue_id, queue.name, queue.created_at_ms),
            )

    # -- keys ------------------------------------------------------------------------------

    def put_grants(self, key_id: str, grants: KeyGrants) -> None:
        rows = [(key_id, "queue", q) for q in grants.queues]
        rows += [(key_id, "team", t) for t in grants.teams]
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM api_key_grants WHERE key_id = ?", (key_id,))
            self._db.executemany(
                "INSERT INTO api_key_grants (key_id, kind, value) VALUES (?, ?, ?)", rows
            )

    def grants(self, key_id: str) -> KeyGrants:
        rows = self._db.execute(
            "SELECT kind, value FROM api_key_grants WHERE key_id = ? ORDER BY kind, value",
            (key_id,),
        ).fetchall()
        return KeyGrants(
            queues=tuple(v for k, v in rows if k == "queue"),
            teams=tuple(v for k, v in rows if k == "team"),
        )

    def keys(self, tenant_id: str | None, after: str, limit: int) -> list[ApiKey]:
        """Keys ordered by id after `after`; `tenant_id` None: admin keys (no tenant)."""
        rows = self._db.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id IS ? AND key_id > ?"  # noqa: S608
            " ORDER BY key_id LIMIT ?",
            (tenant_id, after, min(limit, MAX_PAGE)),
        ).fetchall()
        return [ApiKey(*r) for r in rows]

    # -- surveys and contacts -------------------------------------------------------------

    def put_surveys(self, surveys: list[SurveyRecord]) -> None:
        """Store surveys; a re-sent event id is ignored (the first one stays)."""
        if not surveys:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO surveys (tenant_id, event_id, call_id, queue_id, agent_id, at_ms,"
                " score, scale_max) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant_id, event_id) DO NOTHING",
                [
                    (s.tenant_id, s.event_id, s.call_id, s.queue_id, s.agent_id, s.at_ms,
                     s.score, s.scale_max)
                    for s in surveys
                ],
            )  # fmt: skip

    def surveys(self, tenant_id: str, start_ms: int, end_ms: int) -> list[SurveyRecord]:
        rows = self._db.execute(
            "SELECT tenant_id, event_id, call_id, queue_id, agent_id, at_ms, score, scale_max"
            " FROM surveys WHERE tenant_id = ? AND at_ms >= ? AND at_ms < ?",
            (tenant_id, start_ms, end_ms),
        ).fetchall()
        return [
            SurveyRecord(
                tenant_id=r[0], event_id=r[1], call_id=r[2], queue_id=r[3], agent_id=r[4],
                at_ms=r[5], score=r[6], scale_max=r[7],
            )
            for r in rows
        ]  # fmt: skip

    def contact_legs(self, tenant_id: str, start_ms: int, end_ms: int) -> list[ContactLeg]:
        """Legs with a caller key that entered a queue in [start_ms, end_ms)."""
        rows = self._db.execute(
            "SELECT call_id, caller_key, queue_id, queued_at_ms FROM legs"
            " WHERE tenant_id = ? AND caller_key IS NOT NULL"
            " AND queued_at_ms >= ? AND queued_at_ms < ?",
            (tenant_id, start_ms, end_ms),
        ).fetchall()
        return [ContactLeg(r[0], r[1], r[2], r[3]) for r in rows]

    # -- the access log ---------------------------------------------------------------------

    def append_access(self, records: list[AccessRecord]) -> None:
        if not records:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO access_log (at_ms, key_id, role, tenant_id, method, path, query,"
                " status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.at_ms, r.key_id, r.role, r.tenant_id, r.method, r.path, r.query, r.status)
                    for r in records
                ],
            )

    def access_log(
        self, tenant_id: str | None, start_ms: int, end_ms: int, after_seq: int, limit: int,
        every_tenant: bool = False,
    ) -> list[AccessRecord]:  # fmt: skip
        """Access records in [start_ms, end_ms) after `after_seq`, oldest first: those of
        one tenant, or (`every_tenant`, admins only) of all tenants and none."""
        where = "" if every_tenant else " AND tenant_id IS ?"
        params: tuple[object, ...] = (start_ms, end_ms, after_seq)
        if not every_tenant:
            params += (tenant_id,)
        rows = self._db.execute(
            f"SELECT {_ACCESS_COLUMNS} FROM access_log"  # noqa: S608
            f" WHERE at_ms >= ? AND at_ms < ? AND seq > ?{where} ORDER BY seq LIMIT ?",
            (*params, min(limit, MAX_PAGE)),
        ).fetchall()
        return [
            AccessRecord(
                seq=r[0], at_ms=r[1], key_id=r[2], role=r[3], tenant_id=r[4], method=r[5],
                path=r[6], query=r[7], status=r[8],
            )
            for r in rows
        ]  # fmt: skip
