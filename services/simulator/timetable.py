"""Local wall-clock times of a tenant turned into simulation time.

Simulation time is integer milliseconds since the run's start instant (arrival instants are
kept as float milliseconds until they are emitted). Local times are resolved in the tenant's
IANA zone with `fold=0`: an ambiguous time (clocks going back) is its first occurrence and a
time that does not exist (clocks going forward) lands after the gap, which is where a wall
clock would show it once it jumped.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from .scenario import WEEKDAYS, Break, Queue, Shift, minute_of_day

MS: Final = timedelta(milliseconds=1)
DAY: Final = timedelta(days=1)
HOUR_MS: Final = 3_600_000

Segment = tuple[int, int, float]
"""(start ms, end ms, arrival rate in calls per ms) of a piece of constant rate."""


class LocalClock:
    """Converts a tenant's local (date, minute of day) into ms since the run's start."""

    def __init__(self, zone: ZoneInfo, start: datetime) -> None:
        if start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self.zone = zone
        self.start = start
        self._cache: dict[tuple[date, int], int] = {}

    def at(self, day: date, minute: int) -> int:
        """Milliseconds from the start to local `day` at `minute` minutes past midnight."""
        key = (day, minute)
        found = self._cache.get(key)
        if found is None:
            local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self.zone)
            found = self._cache[key] = (local - self.start) // MS
            if len(self._cache) > 4096:  # old days are never asked again
                self._cache.clear()
        return found

    def day_of(self, t_ms: int) -> date:
        """The local date at `t_ms` ms after the start."""
        return (self.start + t_ms * MS).astimezone(self.zone).date()


def rate_segments(queue: Queue, clock: LocalClock, first_day: date) -> Iterator[Segment]:
    """The queue's piecewise-constant arrival rate, day after day from local `first_day`.

    Each profile period runs from its local start to the next period's start (the last one
    to the first period of the next day); the rate is `rate_per_hour * multiplier`. Never
    ends: the caller stops asking.
    """
    periods = queue.multiplier_periods()
    per_ms = queue.rate_per_hour / HOUR_MS
    day = first_day
    while True:
        for n, (minute, multiplier) in enumerate(periods):
            start = clock.at(day, minute)
            if n + 1 < len(periods):
                end = clock.at(day, periods[n + 1][0])
            else:
                end = clock.at(day + DAY, periods[0][0])
            if end > start:  # a period swallowed by a DST gap has no length
                yield start, end, per_ms * multiplier
        day += DAY


class Arrivals:
    """A non-homogeneous Poisson process with a piecewise-constant rate, sampled exactly.

    Within a segment the gaps are exponential with that segment's rate; at a segment
    boundary the pending gap is discarded and drawn afresh with the next rate, which is exact
    because the exponential distribution is memoryless.
    """

    def __init__(self, segments: Iterator[Segment]) -> None:
        self._segments = segments
        self._current = next(segments)

    def next_after(self, rng: random.Random, t: float, end: float) -> float | None:
        """The first arrival after `t` (ms), or None if there is none before `end` (ms)."""
        while True:
            start, stop, rate = self._current
            t = max(t, start)
            if t >= end:
                return None
            if t < stop:
                if rate > 0:
                    candidate = t + rng.expovariate(rate)
                    if candidate < stop:
                        return candidate
                t = stop
            self._current = next(self._segments)


def has_arrivals(queue: Queue) -> bool:
    """Whether the queue ever receives calls (a positive rate in some period)."""
    return queue.rate_per_hour > 0 and any(m > 0 for _, m in queue.multiplier_periods())


def shift_span(shift: Shift, clock: LocalClock, day: date) -> tuple[int, int] | None:
    """(log on, log off) in ms of the shift that starts on local `day`, or None that day."""
    if WEEKDAYS[day.weekday()] not in shift.days:
        return None
    start, end = minute_of_day(shift.start), minute_of_day(shift.end)
    return clock.at(day, start), clock.at(day + DAY if end <= start else day, end)


def break_start(item: Break, shift: Shift, clock: LocalClock, day: date, rng: random.Random) -> int:
    """When (ms) an agent whose shift starts on local `day` is due to take `item`.

    A break time earlier than the shift's start belongs to the next day (overnight shifts).
    The jitter is uniform in [0, jitter_minutes].
    """
    minute = minute_of_day(item.start)
    on_day = day + DAY if minute < minute_of_day(shift.start) else day
    jitter = rng.random() * item.jitter_minutes * 60_000 if item.jitter_minutes else 0.0
    return clock.at(on_day, minute) + math.floor(jitter)
