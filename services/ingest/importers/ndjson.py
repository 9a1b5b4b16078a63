"""Importer for CallPulse's own events as NDJSON (one wire-format event per line).

Each non-blank line is decoded and validated with `services.kpi.events.decode_batch`
exactly as the ingest API would; a bad line is not used (skipped `invalid_event`) and is
reported with its 1-based line number, the JSON path and the reason. Events are passed on
unchanged (their own tenant, ids and `occurred_at`); blank lines are not records.

Replay timing (`replay`): as fast as possible by default; with a speed factor X, event i
is released (occurred_at_i - occurred_at_0) / X after the first one on the monotonic
clock, so X = 1 replays with the original spacing and X = 60 plays an hour in a minute.
An event older than an earlier one (out of order in the file) is released at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from services.kpi.events import Event, decode_batch

from .summary import ImportSummary

logger = logging.getLogger(__name__)


class NdjsonImporter:
    """NDJSON lines → events; `summary` is complete once `events()` is exhausted."""

    def __init__(self) -> None:
        self.summary = ImportSummary()

    def events(self, lines: Iterable[str | bytes]) -> Iterator[Event]:
        """The valid events of the lines, in file order."""
        for line_no, line in enumerate(lines, start=1):
            raw = line.encode() if isinstance(line, str) else line
            if not raw.strip():
                continue
            self.summary.records += 1
            if raw.lstrip().startswith(b"["):
                # decode_batch would read a JSON array as a batch: one line is one event.
                self.summary.skip("invalid_event", line_no, "$: a line must hold one object")
                continue
            events, errors = decode_batch(raw)
            if errors:
                error = errors[0]
                path = error.path.replace("$[0]", "$", 1)
                self.summary.skip("invalid_event", line_no, f"{path}: {error.reason}")
                continue
            self.summary.events += len(events)
            yield from events


def replay(
    events: Iterable[Event],
    speed: float | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """Release `events` with their original spacing divided by `speed` (None: no waiting)."""
    if speed is None:
        yield from events
        return
    if not speed > 0:
        raise ValueError(f"speed must be positive, got {speed}")
    first_at: float | None = None
    started = 0.0
    for event in events:
        at = event.occurred_at.timestamp()
        if first_at is None:
            first_at, started = at, clock()
        else:
            delay = started + (at - first_at) / speed - clock()
            if delay > 0:
                sleep(delay)
        yield event
