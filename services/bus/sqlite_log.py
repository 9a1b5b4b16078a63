"""The embedded event log: an append-only SQLite table (WAL) playing the Kafka topic's part.

Appends are durable when `append` returns (synchronous=FULL commits). Offsets are the
rowids, strictly increasing; a consumer keeps its own offset (see the aggregator's
checkpoint). `(tenant_id, event_id)` is unique: a re-sent event is a no-op and is counted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path


class EventLog:
    """Append-only log of validated event bytes."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS log ("
            " offset INTEGER PRIMARY KEY AUTOINCREMENT,"
            " tenant_id TEXT NOT NULL, event_id TEXT NOT NULL, body BLOB NOT NULL,"
            " UNIQUE (tenant_id, event_id))"
        )

    def append(self, records: Sequence[tuple[str, str, bytes]]) -> int:
        """Durably append (tenant_id, event_id, body) records; returns how many were new
        (the rest were duplicates of events already in the log)."""
        if not records:
            return 0
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO log (tenant_id, event_id, body) VALUES (?, ?, ?)",
                records,
            )
            return self._db.total_changes - before

    def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (offset, body) records with offset > `after`, in order."""
        return self._db.execute(
            "SELECT offset, body FROM log WHERE offset > ? ORDER BY offset LIMIT ?",
            (after, limit),
        ).fetchall()

    def end_offset(self) -> int:
        """The offset of the newest record (0 when empty)."""
        row = self._db.execute("SELECT COALESCE(MAX(offset), 0) FROM log").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()
