"""Alert tables in the embedded store: rules, recipients, alerts, history, evaluation state
and the delivery outbox.

The evaluation state of every (rule, target), the alert rows, their history and the
notifications to deliver are written in one transaction (`commit`), so after a crash the
process resumes exactly where the last committed evaluation left it: a notice is in the
outbox if and only if the state says it was sent. The dispatcher marks each outbox row
delivered (or failed) after trying it. Instants are UTC milliseconds.

It opens its own connection to the store's SQLite file (WAL: readers never block the
aggregator's writer; writers wait for each other up to the busy timeout).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from ..kpi.alerts import Recipient, Rule

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id TEXT PRIMARY KEY, tenant_id TEXT, source TEXT NOT NULL, body TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alert_recipients (
    recipient_id TEXT PRIMARY KEY, tenant_id TEXT, source TEXT NOT NULL, body TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY, rule_id TEXT NOT NULL, target TEXT NOT NULL, tenant_id TEXT,
    queue_id TEXT, team_id TEXT, severity TEXT NOT NULL, state TEXT NOT NULL,
    summary TEXT NOT NULL, value REAL, threshold REAL, started_at_ms INTEGER NOT NULL,
    fired_at_ms INTEGER, resolved_at_ms INTEGER, acknowledged_by TEXT,
    acknowledged_at_ms INTEGER, updated_at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_by_tenant ON alerts (tenant_id, state, started_at_ms);
CREATE TABLE IF NOT EXISTS alert_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL, value REAL, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS alert_history_by_alert ON alert_history (alert_id, seq);
CREATE TABLE IF NOT EXISTS alert_states (
    rule_id TEXT NOT NULL, target TEXT NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (rule_id, target)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_outbox (
    delivery_id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL,
    kind TEXT NOT NULL, due_ms INTEGER NOT NULL, recipient_id TEXT NOT NULL,
    channel TEXT NOT NULL, address TEXT NOT NULL, payload TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL, delivered_at_ms INTEGER, failed_at_ms INTEGER,
    last_error TEXT, UNIQUE (alert_id, kind, due_ms, recipient_id));
CREATE INDEX IF NOT EXISTS alert_outbox_open ON alert_outbox (delivered_at_ms, failed_at_ms);
"""

_rule = msgspec.json.Decoder(Rule)
_recipient = msgspec.json.Decoder(Recipient)
_json = msgspec.json.Encoder()

OPEN_STATES: Final = ("pending", "firing")


class AlertRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One alert: a breach of one rule on one target, from its start to its resolution."""

    alert_id: str
    rule_id: str
    target: str
    tenant_id: str | None
    queue_id: str | None
    team_id: str | None
    severity: str
    state: str  # pending | firing | resolved
    summary: str
    value: float | None
    threshold: float | None
    started_at_ms: int
    fired_at_ms: int | None = None
    resolved_at_ms: int | None = None
    acknowledged_by: str | None = None
    acknowledged_at_ms: int | None = None
    updated_at_ms: int = 0


_ALERT_COLUMNS: Final = tuple(AlertRecord.__struct_fields__)


class HistoryRecord(msgspec.Struct, frozen=True):
    alert_id: str
    kind: str  # pending | firing | resolved | cancelled | acknowledged
    at_ms: int
    value: float | None
    detail: str = ""


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One notice to one recipient (a row of the outbox). `payload` is JSON text."""

    delivery_id: int = 0
    alert_id: str
    kind: str  # firing | resolved | repeat
    due_ms: int
    recipient_id: str
    channel: str
    address: str
    payload: str
    created_at_ms: int
    attempts: int = 0
    next_attempt_ms: int = 0
    delivered_at_ms: int | None = None
    failed_at_ms: int | None = None
    last_error: str | None = None

    @property
    def state(self) -> str:
        if self.delivered_at_ms is not None:
            return "delivered"
        return "failed" if self.failed_at_ms is not None else "pending"


_DELIVERY_COLUMNS: Final = tuple(Delivery.__struct_fields__)


@dataclass
class Batch:
    """What one evaluation changed; written in one transaction by `AlertStore.commit`."""

    states: dict[tuple[str, str], bytes | None] = field(default_factory=dict)  # None: delete
    alerts: dict[str, AlertRecord | None] = field(default_factory=dict)  # None: delete
    history: list[HistoryRecord] = field(default_factory=list)
    outbox: list[Delivery] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.states or self.alerts or self.history or self.outbox)


class AlertStore:
    """The alert tables; one instance per process, used from the event loop's thread."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- rules and recipients ---------------------------------------------------------

    def rules(self, tenant_id: str | None = None, every_tenant: bool = True) -> list[Rule]:
        """Rules of one tenant (`every_tenant` False; None: floor rules), or all."""
        if every_tenant:
            rows = self._db.execute("SELECT body FROM alert_rules ORDER BY rule_id").fetchall()
        else:
            rows = self._db.execute(
                "SELECT body FROM alert_rules WHERE tenant_id IS ? ORDER BY rule_id", (tenant_id,)
            ).fetchall()
        return [_rule.decode(r[0]) for r in rows]

    def rule(self, rule_id: str) -> tuple[Rule, str] | None:
        """(rule, source) where source is "api" or "file"."""
        row = self._db.execute(
            "SELECT body, source FROM alert_rules WHERE rule_id = ?", (rule_id,)
        ).fetchone()
        return None if row is None else (_rule.decode(row[0]), row[1])

    def put_rule(self, rule: Rule, source: str, now_ms: int) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._put("alert_rules", "rule_id", rule.rule_id, rule.tenant_id, rule, source, now_ms)

    def delete_rule(self, rule_id: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM alert_rules WHERE rule_id = ?", (rule_id,))

    def replace_file_rules(
        self, rules: list[Rule], recipients: list[Recipient], now_ms: int
    ) -> list[Rule]:
        """Make the file-managed rules and recipients exactly these (API-managed ones with
        the same ids are taken over). Returns the file rules that were removed."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            keep = {r.rule_id for r in rules}
            removed = [
                _rule.decode(body)
                for rule_id, body in self._db.execute(
                    "SELECT rule_id, body FROM alert_rules WHERE source = 'file'"
                ).fetchall()
                if rule_id not in keep
            ]
            self._db.execute("DELETE FROM alert_rules WHERE source = 'file'")
            self._db.execute("DELETE FROM alert_recipients WHERE source = 'file'")
            for rule in rules:
                self._put("alert_rules", "rule_id", rule.rule_id, rule.tenant_id, rule, "file",
                          now_ms)  # fmt: skip
            for r in recipients:
                self._put("alert_recipients", "recipient_id", r.recipient_id, r.tenant_id, r,
                          "file", now_ms)  # fmt: skip
        return removed

    def recipients(
        self, tenant_id: str | None = None, every_tenant: bool = True
    ) -> list[Recipient]:
        if every_tenant:
            rows = self._db.execute(
                "SELECT body FROM alert_recipients ORDER BY recipient_id"
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT body FROM alert_recipients WHERE tenant_id IS ? ORDER BY recipient_id",
                (tenant_id,),
            ).fetchall()
        return [_recipient.decode(r[0]) for r in rows]

    def recipient(self, recipient_id: str) -> tuple[Recipient, str] | None:
        row = self._db.execute(
            "SELECT body, source FROM alert_recipients WHERE recipient_id = ?", (recipient_id,)
        ).fetchone()
        return None if row is None else (_recipient.decode(row[0]), row[1])

    def put_recipient(self, recipient: Recipient, source: str, now_ms: int) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._put("alert_recipients", "recipient_id", recipient.recipient_id,
                      recipient.tenant_id, recipient, source, now_ms)  # fmt: skip

    def delete_recipient(self, recipient_id: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM alert_recipients WHERE recipient_id = ?", (recipient_id,))

    def _put(
        self, table: str, key: str, key_value: str, tenant_id: str | None, body: msgspec.Struct,
        source: str, now_ms: int,
    ) -> None:  # fmt: skip
        self._db.execute(
            f"INSERT INTO {table} ({key}, tenant_id, source, body, updated_at_ms)"  # noqa: S608
            f" VALUES (?, ?, ?, ?, ?) ON CONFLICT ({key}) DO UPDATE SET"
            " tenant_id = excluded.tenant_id, source = excluded.source, body = excluded.body,"
            " updated_at_ms = excluded.updated_at_ms",
            (key_value, tenant_id, source, _json.encode(body).decode(), now_ms),
        )

    # -- evaluation state, alerts, history, outbox: one transaction ---------------------

    def load_states(self) -> dict[tuple[str, str], bytes]:
        rows = self._db.execute("SELECT rule_id, target, state FROM alert_states").fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}

    def commit(self, batch: Batch) -> None:
        """Write one evaluation's changes atomically (outbox rows are idempotent)."""
        if not batch:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for (rule_id, target), state in batch.states.items():
                if state is None:
                    self._db.execute(
                        "DELETE FROM alert_states WHERE rule_id = ? AND target = ?",
                        (rule_id, target),
                    )
                else:
                    self._db.execute(
                        "INSERT INTO alert_states (rule_id, target, state) VALUES (?, ?, ?)"
                        " ON CONFLICT (rule_id, target) DO UPDATE SET state = excluded.state",
                        (rule_id, target, state),
                    )
            cols = ", ".join(_ALERT_COLUMNS)
            marks = ", ".join("?" * len(_ALERT_COLUMNS))
            sets = ", ".join(f"{c} = excluded.{c}" for c in _ALERT_COLUMNS[1:])
            for alert_id, record in batch.alerts.items():
                if record is None:
                    self._db.execute("DELETE FROM alerts WHERE alert_id = ?", (alert_id,))
                else:
                    self._db.execute(
                        f"INSERT INTO alerts ({cols}) VALUES ({marks})"  # noqa: S608
                        f" ON CONFLICT (alert_id) DO UPDATE SET {sets}",
                        msgspec.structs.astuple(record),
                    )
            self._db.executemany(
                "INSERT INTO alert_history (alert_id, kind, at_ms, value, detail)"
                " VALUES (?, ?, ?, ?, ?)",
                [msgspec.structs.astuple(h) for h in batch.history],
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO alert_outbox (alert_id, kind, due_ms, recipient_id,"
                " channel, address, payload, created_at_ms, attempts, next_attempt_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                [
                    (d.alert_id, d.kind, d.due_ms, d.recipient_id, d.channel, d.address,
                     d.payload, d.created_at_ms, d.next_attempt_ms)
                    for d in batch.outbox
                ],
            )  # fmt: skip

    # -- alerts ------------------------------------------------------------------------

    def alerts(
        self, tenant_id: str | None, open_only: bool, limit: int = 1000, every_tenant: bool = False
    ) -> list[AlertRecord]:
        """Alerts of one tenant (None: floor alerts; `every_tenant`: all), newest first."""
        where, args = [], []
        if not every_tenant:
            where.append("tenant_id IS ?")
            args.append(tenant_id)
        if open_only:
            where.append("state IN ('pending', 'firing')")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts{clause}"  # noqa: S608
            " ORDER BY started_at_ms DESC, alert_id LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [AlertRecord(**dict(zip(_ALERT_COLUMNS, r, strict=True))) for r in rows]

    def alert(self, alert_id: str) -> AlertRecord | None:
        row = self._db.execute(
            f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts WHERE alert_id = ?",  # noqa: S608
            (alert_id,),
        ).fetchone()
        return None if row is None else AlertRecord(**dict(zip(_ALERT_COLUMNS, row, strict=True)))

    def history(self, alert_id: str) -> list[HistoryRecord]:
        rows = self._db.execute(
            "SELECT alert_id, kind, at_ms, value, detail FROM alert_history"
            " WHERE alert_id = ? ORDER BY seq",
            (alert_id,),
        ).fetchall()
        return [HistoryRecord(*r) for r in rows]

    def firing_recipients(self, alert_id: str) -> list[tuple[str, str, str]]:
        """(recipient id, channel, address) the alert's firing notice went to."""
        rows = self._db.execute(
            "SELECT DISTINCT recipient_id, channel, address FROM alert_outbox"
            " WHERE alert_id = ? AND kind = 'firing' ORDER BY recipient_id",
            (alert_id,),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- the outbox --------------------------------------------------------------------

    def undelivered(self, limit: int = 500) -> list[Delivery]:
        """Rows neither delivered nor given up, oldest first."""
        rows = self._db.execute(
            f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM alert_outbox"  # noqa: S608
            " WHERE delivered_at_ms IS NULL AND failed_at_ms IS NULL"
            " ORDER BY delivery_id LIMIT ?",
            (limit,),
        ).fetchall()
        return [Delivery(**dict(zip(_DELIVERY_COLUMNS, r, strict=True))) for r in rows]

    def deliveries(
        self, tenant_id: str | None, state: str, limit: int, every_tenant: bool = False
    ) -> list[Delivery]:
        """Outbox rows of one tenant's alerts (or all), newest first; `state` is pending,
        delivered, failed or all."""
        where = {
            "pending": " AND o.delivered_at_ms IS NULL AND o.failed_at_ms IS NULL",
            "delivered": " AND o.delivered_at_ms IS NOT NULL",
            "failed": " AND o.failed_at_ms IS NOT NULL",
            "all": "",
        }[state]
        tenant = "" if every_tenant else " AND a.tenant_id IS ?"
        args: tuple[object, ...] = (limit,) if every_tenant else (tenant_id, limit)
        rows = self._db.execute(
            f"SELECT {', '.join('o.' + c for c in _DELIVERY_COLUMNS)} FROM alert_outbox o"  # noqa: S608
            f" JOIN alerts a ON a.alert_id = o.alert_id WHERE 1 = 1{tenant}{where}"
            " ORDER BY o.delivery_id DESC LIMIT ?",
            args,
        ).fetchall()
        return [Delivery(**dict(zip(_DELIVERY_COLUMNS, r, strict=True))) for r in rows]

    def mark_delivered(self, delivery_id: int, attempts: int, now_ms: int) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE alert_outbox SET delivered_at_ms = ?, attempts = ?, last_error = NULL"
                " WHERE delivery_id = ?",
                (now_ms, attempts, delivery_id),
            )

    def mark_retry(self, delivery_id: int, attempts: int, next_ms: int, error: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE alert_outbox SET attempts = ?, next_attempt_ms = ?, last_error = ?"
                " WHERE delivery_id = ?",
                (attempts, next_ms, error[:500], delivery_id),
            )

    def mark_failed(self, delivery_id: int, attempts: int, now_ms: int, error: str) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "UPDATE alert_outbox SET attempts = ?, failed_at_ms = ?, last_error = ?"
                " WHERE delivery_id = ?",
                (attempts, now_ms, error[:500], delivery_id),
            )

    def alertmanager_firing(self) -> list[tuple[str, dict[str, Any], int]]:
        """(address, payload, delivery id) of delivered Alertmanager firing notices whose
        alert still fires, for the keep-alive re-sends."""
        rows = self._db.execute(
            "SELECT o.address, o.payload, o.delivery_id FROM alert_outbox o"
            " JOIN alerts a ON a.alert_id = o.alert_id WHERE o.channel = 'alertmanager'"
            " AND o.kind = 'firing' AND o.delivered_at_ms IS NOT NULL AND a.state = 'firing'"
        ).fetchall()
        return [(r[0], json.loads(r[1]), int(r[2])) for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        """Rows by state: pending (not yet delivered, still tried) and failed (given up)."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(delivered_at_ms IS NULL AND failed_at_ms IS NULL), 0),"
            " COALESCE(SUM(failed_at_ms IS NOT NULL), 0) FROM alert_outbox"
        ).fetchone()
        return {"pending": int(row[0]), "failed": int(row[1])}

    def open_counts(self) -> list[tuple[str, str, int]]:
        """(state, severity, count) of open alerts, for metrics."""
        rows = self._db.execute(
            "SELECT state, severity, COUNT(*) FROM alerts WHERE state IN ('pending', 'firing')"
            " GROUP BY state, severity"
        ).fetchall()
        return [(r[0], r[1], int(r[2])) for r in rows]
