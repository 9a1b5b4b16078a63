"""Windows aligned to the tenant's zone, checked against hand-computed UTC instants."""

from datetime import UTC, date, datetime
from itertools import pairwise

import pytest

from services.kpi.centre import Centre
from services.kpi.counters import merged
from services.kpi.leg import at_ms
from services.kpi.windows import (
    day_span,
    interval_at,
    intervals,
    minutes_in,
    month_span,
    rolling,
    to_ms,
    today,
    week_span,
)
from tests.factories import event


def utc(*args: int) -> int:
    return to_ms(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


@pytest.mark.parametrize(
    ("day", "tz", "length", "count"),
    [
        (date(2026, 3, 8), "America/New_York", 30, 46),
        (date(2026, 11, 1), "America/New_York", 30, 50),
        (date(2026, 11, 2), "America/New_York", 30, 48),
        (date(2026, 3, 8), "America/New_York", 15, 92),
        (date(2026, 11, 1), "America/New_York", 60, 25),
        (date(2026, 3, 29), "Europe/London", 60, 23),
        (date(2026, 6, 1), "Asia/Kathmandu", 15, 96),
        (date(2026, 6, 1), "Asia/Kolkata", 30, 48),
    ],
)
def test_interval_counts(day: date, tz: str, length: int, count: int) -> None:
    spans = intervals(day, tz, length)
    assert len(spans) == count
    start, end = day_span(day, tz)
    assert spans[0][0] == start and spans[-1][1] == end
    assert all(a[1] == b[0] for a, b in pairwise(spans))


def test_new_york_spring_forward_skips_two_oclock() -> None:
    spans = intervals(date(2026, 3, 8), "America/New_York", 30)
    # Local midnight EST = 05:00 UTC; 01:30 EST = 06:30 UTC; next is 03:00 EDT = 07:00 UTC.
    assert spans[0][0] == utc(2026, 3, 8, 5, 0)
    assert spans[3] == (utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 0))
    assert spans[4][0] == utc(2026, 3, 8, 7, 0)


def test_new_york_fall_back_repeats_one_oclock() -> None:
    starts = [s for s, _ in intervals(date(2026, 11, 1), "America/New_York", 30)]
    # 01:00 EDT = 05:00 UTC and 01:00 EST = 06:00 UTC are both interval starts.
    assert utc(2026, 11, 1, 5, 0) in starts and utc(2026, 11, 1, 6, 0) in starts
    assert utc(2026, 11, 1, 5, 30) in starts and utc(2026, 11, 1, 6, 30) in starts


def test_kathmandu_quarter_hours_are_local() -> None:
    spans = intervals(date(2026, 6, 1), "Asia/Kathmandu", 15)
    # Local midnight +05:45 = 18:15 UTC the day before; every start is :00/:15/:30/:45 local,
    # i.e. :15/:30/:45/:00 UTC.
    assert spans[0][0] == utc(2026, 5, 31, 18, 15)
    assert {(s // 60_000) % 15 for s, _ in spans} == {0}
    assert interval_at(utc(2026, 6, 1, 4, 20), "Asia/Kathmandu", 15) == (
        utc(2026, 6, 1, 4, 15),
        utc(2026, 6, 1, 4, 30),
    )


@pytest.mark.parametrize(
    ("day", "tz"),
    [
        (date(2026, 3, 8), "America/New_York"),
        (date(2026, 11, 1), "America/New_York"),
        (date(2026, 6, 1), "Asia/Kathmandu"),
    ],
)
def test_interval_totals_add_up_to_the_day(day: date, tz: str) -> None:
    start, end = day_span(day, tz)
    centre = Centre()
    step = (end - start) // 997
    for n in range(997):
        t = (start + n * step) / 1000
        common = {"tenant_id": "dst", "call_id": f"c{n}", "queue_id": "q"}
        for ev in (
            event("call.queued", datetime.fromtimestamp(t, UTC), **common),
            event("call.answered", datetime.fromtimestamp(t + 7, UTC), agent_id="a", **common),
        ):
            centre.apply(ev, at_ms(ev))
    buckets = centre.queue_buckets

    def total(span: tuple[int, int]) -> tuple[int, int]:
        c = merged(
            [buckets[("dst", "q", m)] for m in minutes_in(span) if ("dst", "q", m) in buckets]
        )
        return c.offered, c.answered

    for length in (15, 30, 60):
        parts = [total(s) for s in intervals(day, tz, length)]
        assert tuple(map(sum, zip(*parts, strict=True))) == total((start, end))
    assert total((start, end))[0] == 997


def test_rolling_today_week_month() -> None:
    now = utc(2026, 11, 23, 9, 30) + 12_345
    assert rolling(now, 5) == (utc(2026, 11, 23, 9, 26), utc(2026, 11, 23, 9, 31))
    # 09:30 UTC is 04:30 in New York (EST): today started 05:00 UTC.
    assert today(now, "America/New_York") == (utc(2026, 11, 23, 5, 0), utc(2026, 11, 23, 9, 31))
    assert week_span(date(2026, 11, 25), "UTC") == (utc(2026, 11, 23), utc(2026, 11, 30))
    assert month_span(date(2026, 2, 14), "Asia/Kathmandu") == (
        utc(2026, 1, 31, 18, 15),
        utc(2026, 2, 28, 18, 15),
    )
