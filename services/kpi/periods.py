"""Reporting periods in a tenant's zone, business hours and SLA attainment.

Pure: every function receives the instant it needs (`now_ms`); nothing reads the clock.
Bounds are half-open `[start_ms, end_ms)` in UTC milliseconds, as in `windows.py`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from .contracts import Contract, ServiceLevel
from .windows import Span, day_span, from_ms, intervals, local_date, month_span, week_span

PeriodName = Literal["today", "yesterday", "this_week", "last_week", "this_month", "last_month"]
PERIOD_NAMES: Final[tuple[str, ...]] = PeriodName.__args__  # type: ignore[attr-defined]
ReportKind = Literal["daily", "weekly", "monthly"]


def period_span(name: str, now_ms: int, tz: str) -> Span:
    """The whole local period named `name` around `now_ms` (weeks are ISO, Monday first).

    "today" ends at the next local midnight, not at `now_ms`: the caller knows what has
    happened so far from the data and from `now_ms`.
    """
    today = local_date(now_ms, tz)
    match name:
        case "today":
            return day_span(today, tz)
        case "yesterday":
            return day_span(today - timedelta(days=1), tz)
        case "this_week":
            return week_span(today, tz)
        case "last_week":
            return week_span(today - timedelta(days=7), tz)
        case "this_month":
            return month_span(today, tz)
        case "last_month":
            return month_span(today.replace(day=1) - timedelta(days=1), tz)
    raise ValueError(f"period: {name!r} is not one of {PERIOD_NAMES}")


def report_span(kind: str, day: date, tz: str) -> Span:
    """The local day, ISO week or calendar month containing `day`."""
    match kind:
        case "daily":
            return day_span(day, tz)
        case "weekly":
            return week_span(day, tz)
        case "monthly":
            return month_span(day, tz)
    raise ValueError(f"report: {kind!r} is not daily, weekly or monthly")


def local_days(span: Span, tz: str) -> list[date]:
    """The local dates whose days start inside `span` (a span of whole local days)."""
    days = []
    day = local_date(span[0], tz)
    while day_span(day, tz)[0] < span[1]:
        days.append(day)
        day += timedelta(days=1)
    return days


def span_intervals(span: Span, tz: str, length_min: int) -> list[Span]:
    """The local-clock intervals of `length_min` whose start lies in `span`, in order."""
    found: list[Span] = []
    day = local_date(span[0], tz)
    while True:
        day_spans = intervals(day, tz, length_min)
        found += [s for s in day_spans if span[0] <= s[0] < span[1]]
        if day_spans[-1][1] >= span[1]:
            return found
        day += timedelta(days=1)


def in_business_hours(start_ms: int, contract: Contract) -> bool:
    """Whether an interval starting at `start_ms` counts under the contract's business hours
    (judged by the local wall-clock weekday and minute of its start)."""
    if not contract.business_hours:
        return True
    local = from_ms(start_ms).astimezone(ZoneInfo(contract.timezone))
    minute = local.hour * 60 + local.minute
    weekday = local.weekday()
    return any(d == weekday and s <= minute < e for d, s, e in contract.business_hours)


class Attainment(msgspec.Struct, frozen=True):
    """Share of intervals meeting the SL target: `met` of `measured` (intervals whose SL was
    defined, i.e. with a non-zero denominator); `intervals` counts every interval looked at.
    `value_pct` is None when no interval was measured."""

    met: int
    measured: int
    intervals: int
    value_pct: float | None


def attainment(levels: list[ServiceLevel]) -> Attainment:
    """SLA attainment over intervals, each judged under its own contract's target."""
    measured = [s for s in levels if s.met is not None]
    met = sum(1 for s in measured if s.met)
    value = 100.0 * met / len(measured) if measured else None
    return Attainment(met=met, measured=len(measured), intervals=len(levels), value_pct=value)


def local_label(start_ms: int, tz: str) -> str:
    """The local wall-clock start of a span as `YYYY-MM-DDTHH:MM±HH:MM` (for CSV rows)."""
    return datetime.isoformat(from_ms(start_ms).astimezone(ZoneInfo(tz)), timespec="minutes")
