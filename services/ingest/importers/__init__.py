"""Importers: call-centre logs and recordings → CallPulse events (`callpulse import`).

Each importer is a generator over source lines that yields validated wire events
(`services.kpi.events`) and fills an `ImportSummary` with what it could not use, per
reason, and what it used under a documented rule. Mapping rules live in each module's
docstring: `anonymous_bank` (Technion per-call TSV), `asterisk` (queue_log, pipe or CSV
export), `ndjson` (our own events, with replay timing). `tail` follows a live file across
rotation, `sink` writes NDJSON or posts to the ingest API, `..pseudonym` keys caller numbers.
"""

from __future__ import annotations

from .anonymous_bank import AnonymousBankImporter
from .asterisk import QueueLogImporter
from .ndjson import NdjsonImporter, replay
from .summary import ImporterError, ImportSummary
from .tail import FileTail

__all__ = [
    "AnonymousBankImporter",
    "FileTail",
    "ImportSummary",
    "ImporterError",
    "NdjsonImporter",
    "QueueLogImporter",
    "replay",
]
