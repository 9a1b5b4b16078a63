"""Figures of the reliability tests (faults injected, events, results, recovery times).

Every reliability test calls `record(...)` with what it did and saw; the figures land in
`artifacts/reliability/<section>.json` and `python -m tests.reliability_report` turns the
files of one run into `docs/reliability.md`. Recording is a side effect for the report only:
the tests assert on their own.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = Path(os.environ.get("CALLPULSE_RELIABILITY_DIR", ROOT / "artifacts" / "reliability"))


def record(section: str, title: str, figures: dict[str, Any]) -> None:
    """Append one result to `<section>.json`: a title (what was run) and its figures
    (plain JSON values: counts, seconds, booleans, short strings)."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{section}.json"
    entries = json.loads(path.read_text()) if path.exists() else []
    entries.append({"title": title, "at": datetime.now(UTC).isoformat(), "figures": figures})
    path.write_text(json.dumps(entries, indent=2, default=str))
