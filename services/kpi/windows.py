"""Time windows over 1-minute UTC buckets, aligned to a tenant's IANA zone.

All bounds are half-open `[start_ms, end_ms)` in UTC milliseconds and fall on minute
boundaries (every real zone offset is a whole number of minutes). Intervals are aligned
to the local wall clock, so a DST day has 46 or 50 half-hours and a +05:45 zone's
quarter-hours start at :00/:15/:30/:45 local time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo

from .leg import MINUTE_MS

Span = tuple[int, int]
INTERVAL_LENGTHS: Final = (15, 30, 60)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def rolling(now_ms: int, minutes: int) -> Span:
    """The last `minutes` buckets: the current (partial) minute and the minutes-1 before it."""
    end = now_ms - now_ms % MINUTE_MS + MINUTE_MS
    return end - minutes * MINUTE_MS, end


def local_date(at_ms: int, tz: str) -> date:
    return from_ms(at_ms).astimezone(ZoneInfo(tz)).date()


def _local_instant(day: date, minute_of_day: int, tz: ZoneInfo, fold: int) -> datetime | None:
    """The UTC instant of a local wall time, or None if the wall time does not exist."""
    naive = datetime.combine(day, time()) + timedelta(minutes=minute_of_day)
    utc = naive.replace(tzinfo=tz, fold=fold).astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != naive:
        return None  # skipped by a spring-forward gap
    return utc


def day_span(day: date, tz: str) -> Span:
    """Local midnight to the next local midnight, in UTC ms."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return to_ms(start), to_ms(end)


@lru_cache(maxsize=4096)
def intervals(day: date, tz: str, length_min: int) -> tuple[Span, ...]:
    """The local-clock-aligned intervals of one local day, in order; they tile the day."""
    if length_min not in INTERVAL_LENGTHS:
        raise ValueError(f"interval length must be one of {INTERVAL_LENGTHS}, got {length_min}")
    zone = ZoneInfo(tz)
    start, end = day_span(day, tz)
    marks = {start, end}
    # Wall times past 24:00 are harmless: candidates outside the day are filtered out.
    for minute in range(0, 25 * 60, length_min):
        for fold in (0, 1):
            instant = _local_instant(day, minute, zone, fold)
            if instant is not None:
                ms = to_ms(instant)
                if start <= ms <= end:
                    marks.add(ms)
    bounds = sorted(marks)
    return tuple(pairwise(bounds))


def interval_at(at_ms: int, tz: str, length_min: int) -> Span:
    """The local interval containing an instant."""
    day = local_date(at_ms, tz)
    for span in intervals(day, tz, length_min):
        if span[0] <= at_ms < span[1]:
            return span
    raise AssertionError("intervals tile the day")  # pragma: no cover


def today(now_ms: int, tz: str) -> Span:
    """Local midnight until the end of the current minute."""
    start, _ = day_span(local_date(now_ms, tz), tz)
    return start, now_ms - now_ms % MINUTE_MS + MINUTE_MS


def week_span(day: date, tz: str) -> Span:
    """The ISO week (Monday to Monday, local) containing a local date."""
    monday = day - timedelta(days=day.weekday())
    return day_span(monday, tz)[0], day_span(monday + timedelta(days=6), tz)[1]


def month_span(day: date, tz: str) -> Span:
    """The local calendar month containing a local date."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return day_span(first, tz)[0], day_span(following, tz)[0]


def minutes_in(span: Span) -> range:
    """Bucket starts (ms) inside a span."""
    return range(span[0], span[1], MINUTE_MS)
