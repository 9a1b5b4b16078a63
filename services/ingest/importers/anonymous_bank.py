"""Importer for the Technion "Anonymous Bank" per-call TSV (one row per call).

Input: the tab-separated file with a header naming the 17 fields `vru+line, call_id,
customer_id, priority, type, date, vru_entry, vru_exit, vru_time, q_start, q_exit, q_time,
outcome, ser_start, ser_exit, ser_time, server` (any column order; CRLF or LF).

Identity. The file's `call_id` is a counter per VRU line (8,559 ids repeat across lines in
February 1999), so a call is `<vru+line>-<call_id>`; it visits one queue, `type` (the
service type, e.g. PS), once (`visit` 1). The agent is `server`. Event ids are
`anonymous-bank/<call>/<kind>` (kind: queued, answered, abandoned, ended, wrapup_ended),
so re-importing the file is idempotent downstream. The generator follows the file's row
order (by VRU line and call id, not by time); `callpulse import` sorts the events by time.

Time. Times are `H:MM:SS` wall clock in Asia/Jerusalem on the row's `date` (yymmdd, the
day of `vru_entry`). The stages are walked in order vru_entry, vru_exit, q_start, q_exit,
ser_start, ser_exit; each is placed at the instant nearest to the previous stage, so a stage
more than 12 hours *earlier* on the clock crossed midnight (next day), while a stage a few
seconds or minutes earlier is a clock skew on the same day (see the rules below). A stage is
absent when its start, end and duration are all zero; `q_start = 0:00:00` therefore means
"never queued" unless the queue stage has an end or a duration (a queue entered at
midnight). Ends are start + the file's duration in elapsed seconds, so every leg reproduces
`q_time` (wait) and `ser_time` (talk) exactly; a row whose clock times disagree with its
durations is not used. Instants are emitted with their Israel offset.

Mapping of a row:

- queued (queue stage present): `call.queued` at q_start (priority = `priority`;
  `caller_key` = HMAC of `customer_id` when a secret is given, see `pseudonym`).
- outcome AGENT, queued: `call.answered` at q_exit (the end of the wait, so wait = q_time);
  with a service stage, `call.ended` at q_exit + ser_time and `call.wrapup_ended` at the
  same instant (the file has no after-call work: wrap-up is 0, handle time = ser_time).
- outcome AGENT, never queued: the call went from the voice menu straight to an agent: no
  queue figures (not offered, no wait), only handle time: `call.answered` at ser_start,
  `call.ended` and `call.wrapup_ended` at ser_exit.
- outcome HANG, queued: an abandon: `call.abandoned` at q_exit.
- outcome HANG, never queued: the caller hung up in the voice menu: not an abandon, no
  event (skipped `hang_in_vru`).
- outcome PHANTOM: a virtual record, ignored (skipped `phantom`).

Dirty rows (each counted in the summary; `rules` for rows used, `skipped` for rows not used):

- `negative_vru_time` (rule): vru_exit before vru_entry on the clock; a skew of the VRU's
  clock, not a midnight crossing. The VRU stage emits nothing; the row is used as is.
- `service_start_skew_1s` / `_2s` / `_over_2s` (rules): a queued, served row whose
  ser_start differs from q_exit (mostly 1 s earlier: two systems' clocks). The answer is
  at q_exit (wait = q_time exactly) and the service interval is moved to start there,
  keeping its length (talk = ser_time exactly); only `call.ended` moves, by the skew.
- `agent_no_server` (rule): an AGENT row whose server is NO_SERVER: served, but by no
  identified agent; used with agent id `unidentified`.
- `agent_without_service` (rule): a queued AGENT row without a service stage: the queue
  outcome is known (answered at q_exit, wait = q_time), the handle time is not: no
  `call.ended` / `call.wrapup_ended`, so the leg adds no handle time.
- `agent_without_service_or_queue` (skipped): an AGENT row with neither a queue nor a
  service stage: nothing to measure.
- `hang_with_service_start` (rule): a queued HANG row that also has a service stage (always
  NO_SERVER): the caller's hang-up decides, the leg is abandoned at q_exit and the service
  stage is ignored.
- `queue_start_at_midnight` (rule): q_start 0:00:00 with a queue end or duration, a real
  queue entry at midnight rather than "never queued".
- `crossed_midnight` (rule): a used stage falls on another day than `date`.
- `q_time_mismatch` / `ser_time_mismatch` (skipped): clock times disagree with the
  duration field (never in 1999-02).
- `malformed_row`, `unknown_outcome`, `invalid_event` (skipped): unreadable values, an
  outcome other than AGENT/HANG/PHANTOM, or an id longer than the schema allows.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from services.kpi.events import (
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallQueued,
    CallWrapupEnded,
    Event,
)

from ..pseudonym import caller_key
from .envelope import LegEventT, leg_event, stable_id, validated
from .summary import ImporterError, ImportSummary

logger = logging.getLogger(__name__)

SOURCE: Final = "anonymous-bank"
DEFAULT_TENANT: Final = "anonymous-bank"
ZONE: Final = ZoneInfo("Asia/Jerusalem")
UNIDENTIFIED_AGENT: Final = "unidentified"
NO_SERVER: Final = "NO_SERVER"
COLUMNS: Final = (
    "vru+line",
    "call_id",
    "customer_id",
    "priority",
    "type",
    "date",
    "vru_entry",
    "vru_exit",
    "vru_time",
    "q_start",
    "q_exit",
    "q_time",
    "outcome",
    "ser_start",
    "ser_exit",
    "ser_time",
    "server",
)
DAY_S: Final = 86_400
HALF_DAY_S: Final = 43_200
MIDNIGHT: Final = "0:00:00"


def parse_clock(text: str) -> int:
    """Seconds after midnight of an `H:MM:SS` wall-clock time."""
    hours, minutes, seconds = text.strip().split(":")
    value = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    if not (0 <= int(minutes) < 60 and 0 <= int(seconds) < 60 and 0 <= value < DAY_S):
        raise ValueError(f"not a time of day: {text!r}")
    return value


def parse_date(text: str) -> date:
    """The date of a `yymmdd` field (years 70-99 are 19xx, 00-69 are 20xx)."""
    text = text.strip()
    if len(text) != 6 or not text.isdigit():
        raise ValueError(f"not a yymmdd date: {text!r}")
    yy = int(text[:2])
    return date(1900 + yy if yy >= 70 else 2000 + yy, int(text[2:4]), int(text[4:]))


def local_instant(day: date, seconds: int) -> datetime:
    """The Asia/Jerusalem wall-clock instant `seconds` after the local midnight of `day`
    (may be negative or past 24 h: the day is shifted accordingly)."""
    days, clock = divmod(seconds, DAY_S)
    d = day + timedelta(days=days)
    return datetime(
        d.year, d.month, d.day, clock // 3600, clock % 3600 // 60, clock % 60, tzinfo=ZONE
    )


def after(instant: datetime, seconds: int) -> datetime:
    """`instant` plus elapsed `seconds` (UTC arithmetic), expressed in Israel time."""
    return (instant.astimezone(UTC) + timedelta(seconds=seconds)).astimezone(ZONE)


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """One parsed TSV row; clock fields are seconds after midnight, durations seconds."""

    call_id: str
    customer_id: str
    priority: int
    queue_id: str
    day: date
    clocks: dict[str, int]
    vru_time: int
    q_time: int
    ser_time: int
    outcome: str
    server: str

    @property
    def queued(self) -> bool:
        return bool(self.clocks["q_start"] or self.clocks["q_exit"] or self.q_time)

    @property
    def served(self) -> bool:
        return bool(self.clocks["ser_start"] or self.clocks["ser_exit"] or self.ser_time)


def parse_row(fields: dict[str, str]) -> Row:
    """Parse one row's fields (by column name); ValueError when a value is unreadable."""
    priority = int(fields["priority"])
    if not 0 <= priority <= 9:
        raise ValueError(f"priority out of range: {priority}")
    line, call = fields["vru+line"].strip(), fields["call_id"].strip()
    queue = fields["type"].strip()
    if not (line and call and queue):
        raise ValueError("empty vru+line, call_id or type")
    return Row(
        call_id=f"{line}-{call}",
        customer_id=fields["customer_id"].strip(),
        priority=priority,
        queue_id=queue,
        day=parse_date(fields["date"]),
        clocks={
            name: parse_clock(fields[name])
            for name in ("vru_entry", "vru_exit", "q_start", "q_exit", "ser_start", "ser_exit")
        },
        vru_time=int(fields["vru_time"]),
        q_time=int(fields["q_time"]),
        ser_time=int(fields["ser_time"]),
        outcome=fields["outcome"].strip().upper(),
        server=fields["server"].strip(),
    )


def stage_positions(row: Row) -> dict[str, int]:
    """Seconds after local midnight of `row.day` of every present stage (see the module
    docstring: each stage is placed nearest to the previous one)."""
    names = ["vru_exit"]
    if row.queued:
        names += ["q_start", "q_exit"]
    if row.served:
        names += ["ser_start", "ser_exit"]
    previous = row.clocks["vru_entry"]
    position = previous
    positions = {"vru_entry": position}
    for name in names:
        clock = row.clocks[name]
        position += (clock - previous + HALF_DAY_S) % DAY_S - HALF_DAY_S
        previous = clock
        positions[name] = position
    return positions


class AnonymousBankImporter:
    """TSV lines → events; `summary` is complete once `events()` is exhausted."""

    def __init__(self, tenant_id: str = DEFAULT_TENANT, caller_secret: bytes | None = None) -> None:
        self.tenant_id = tenant_id
        self.caller_secret = caller_secret
        self.summary = ImportSummary()

    def events(self, lines: Iterable[str]) -> Iterator[Event]:
        """Events of every usable row, row by row (rows are not in time order)."""
        reader = csv.reader(lines, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise ImporterError("empty input: expected a header line")
        names = [name.strip() for name in header]
        missing = [name for name in COLUMNS if name not in names]
        if missing:
            raise ImporterError(f"not an Anonymous Bank TSV: missing columns {', '.join(missing)}")
        for line_no, values in enumerate(reader, start=2):
            if not any(value.strip() for value in values):
                continue
            self.summary.records += 1
            if len(values) != len(names):
                self.summary.skip(
                    "malformed_row", line_no, f"{len(values)} fields, expected {len(names)}"
                )
                continue
            yield from validated(
                self._row(dict(zip(names, values, strict=True)), line_no),
                self.summary,
                line_no,
            )
        logger.info("anonymous-bank: %d rows, %d events", self.summary.records, self.summary.events)

    def _row(self, fields: dict[str, str], line_no: int) -> list[Event]:
        summary = self.summary
        try:
            row = parse_row(fields)
        except (ValueError, KeyError) as exc:
            summary.skip("malformed_row", line_no, str(exc))
            return []
        if row.outcome == "PHANTOM":
            summary.skip("phantom")
            return []
        if row.outcome not in ("AGENT", "HANG"):
            summary.skip("unknown_outcome", line_no, f"outcome {row.outcome!r}")
            return []
        if row.outcome == "HANG" and not row.queued:
            summary.skip("hang_in_vru")
            return []
        if row.outcome == "AGENT" and not row.queued and not row.served:
            summary.skip("agent_without_service_or_queue")
            return []
        at = stage_positions(row)
        if row.queued and at["q_exit"] - at["q_start"] != row.q_time:
            summary.skip("q_time_mismatch", line_no, f"q_time {row.q_time}")
            return []
        if row.served and at["ser_exit"] - at["ser_start"] != row.ser_time:
            summary.skip("ser_time_mismatch", line_no, f"ser_time {row.ser_time}")
            return []
        return self._events(row, at)

    def _events(self, row: Row, at: dict[str, int]) -> list[Event]:
        summary = self.summary
        if row.vru_time < 0:
            summary.rule("negative_vru_time")

        def leg(kind: type[LegEventT], name: str, when: datetime, **fields: Any) -> LegEventT:
            return leg_event(
                kind,
                event_id=stable_id(SOURCE, row.call_id, name),
                occurred_at=when,
                tenant_id=self.tenant_id,
                source=SOURCE,
                call_id=row.call_id,
                queue_id=row.queue_id,
                **fields,
            )

        events: list[Event] = []
        used = ["vru_entry"]
        answered_at: datetime | None = None
        if row.queued:
            used += ["q_start", "q_exit"]
            if row.clocks["q_start"] == 0:
                summary.rule("queue_start_at_midnight")
            queued_at = local_instant(row.day, at["q_start"])
            left_at = after(queued_at, row.q_time)
            key = caller_key(self.caller_secret, row.customer_id)
            events.append(
                leg(CallQueued, "queued", queued_at, priority=row.priority, caller_key=key)
            )
            if row.outcome == "HANG":
                if row.served:
                    summary.rule("hang_with_service_start")
                events.append(leg(CallAbandoned, "abandoned", left_at))
            else:
                answered_at = left_at
                if not row.served:
                    summary.rule("agent_without_service")
                elif skew := abs(at["ser_start"] - at["q_exit"]):
                    summary.rule(
                        f"service_start_skew_{skew}s" if skew <= 2 else "service_start_skew_over_2s"
                    )
        else:  # an AGENT row served straight from the voice menu (others were skipped)
            answered_at = local_instant(row.day, at["ser_start"])
        if answered_at is not None:
            agent = row.server
            if not agent or agent == NO_SERVER:
                summary.rule("agent_no_server")
                agent = UNIDENTIFIED_AGENT
            events.append(leg(CallAnswered, "answered", answered_at, agent_id=agent))
            if row.served:
                used += ["ser_start", "ser_exit"]
                ended_at = after(answered_at, row.ser_time)
                events.append(leg(CallEnded, "ended", ended_at))
                events.append(leg(CallWrapupEnded, "wrapup_ended", ended_at))
        if any(not 0 <= at[name] < DAY_S for name in used):
            summary.rule("crossed_midnight")
        return events
