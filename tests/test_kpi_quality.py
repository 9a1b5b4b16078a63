"""Pure core: CSAT, FCR by repeat contact, reporting periods, business hours, attainment.

FCR is compared with a brute-force reading of its definition in KPI-DEFINITIONS.md; periods
with spans written out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import pairwise

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.contracts import Contract, ServiceLevel
from services.kpi.counters import HIST_BINS, Counters, merged
from services.kpi.periods import (
    attainment,
    in_business_hours,
    local_days,
    period_span,
    report_span,
    span_intervals,
)
from services.kpi.quality import Contact, ContactLeg, SurveyScore, contacts, csat, fcr, is_satisfied
from services.kpi.windows import to_ms

H = 3_600_000


@pytest.mark.parametrize(
    ("score", "scale", "pct", "satisfied"),
    [(4, 5, 80, True), (3, 5, 80, False), (5, 5, 100, True), (8, 10, 80, True),
     (7, 10, 80, False), (0, 5, 1, False), (6, 7, 80, True), (5, 7, 80, False)],
)  # fmt: skip
def test_satisfied_is_score_at_least_the_share_of_the_scale(
    score: int, scale: int, pct: float, satisfied: bool
) -> None:
    assert is_satisfied(score, scale, pct) is satisfied


def test_csat_counts_satisfied_over_all_and_is_null_when_empty() -> None:
    scores = [SurveyScore(s, 5) for s in (5, 4, 3, 1)] + [SurveyScore(9, 10)]
    r = csat(scores, 80)
    assert (r.numerator, r.denominator, r.value) == (3, 5, 0.6)
    assert csat([], 80).value is None


def test_a_call_is_one_contact_at_its_first_leg() -> None:
    legs = [ContactLeg("c1", "k", "b", 50), ContactLeg("c1", "k", "a", 10),
            ContactLeg("c2", "k", "a", 20)]  # fmt: skip
    assert contacts(legs) == [Contact(10, "c1", "k", "a"), Contact(20, "c2", "k", "a")]


def oracle(all_contacts: list[Contact], start: int, end: int, window_ms: int, now: int,
           queue: str | None = None) -> tuple[int, int, int]:  # fmt: skip
    """(resolved, repeated, pending) straight from the definition; a repeat may be in any
    queue, the contacts judged are those of `queue` (if given)."""
    resolved = repeated = pending = 0
    for c in all_contacts:
        if not start <= c.at_ms < end or (queue is not None and c.queue_id != queue):
            continue
        later = [
            d for d in all_contacts
            if d.caller_key == c.caller_key and (d.at_ms, d.call_id) > (c.at_ms, c.call_id)
            and d.at_ms <= c.at_ms + window_ms
        ]  # fmt: skip
        if later:
            repeated += 1
        elif now >= c.at_ms + window_ms:
            resolved += 1
        else:
            pending += 1
    return resolved, repeated, pending


@settings(max_examples=300, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 10 * H), st.sampled_from("qr")),
        max_size=25,
    ),
    window_h=st.integers(1, 4),
    now=st.integers(0, 14 * H),
    start=st.integers(0, 6 * H),
    length=st.integers(1, 6 * H),
)
def test_fcr_matches_its_definition(
    calls: list[tuple[str, int, str]], window_h: int, now: int, start: int, length: int
) -> None:
    legs = [ContactLeg(f"call{n}", caller, queue, at) for n, (caller, at, queue) in
            enumerate(calls)]  # fmt: skip
    every = contacts(legs)
    got = fcr(every, start, start + length, window_h, now)
    resolved, repeated, pending = oracle(every, start, start + length, window_h * H, now)
    assert (got.resolved, got.repeated, got.pending) == (resolved, repeated, pending)
    assert (got.value.numerator, got.value.denominator) == (resolved, resolved + repeated)
    only_q = fcr(every, start, start + length, window_h, now, {"q"})
    expected_q = oracle(every, start, start + length, window_h * H, now, "q")
    assert (only_q.resolved, only_q.repeated, only_q.pending) == expected_q


def test_fcr_example_by_hand() -> None:
    # a: at 0 and 10 h (repeat within 72 h); b: once; c: at 0 and 80 h (outside the window)
    every = [Contact(0, "a1", "a", "q"), Contact(10 * H, "a2", "a", "q"),
             Contact(H, "b1", "b", "q"), Contact(2 * H, "c1", "c", "q"),
             Contact(82 * H, "c2", "c", "q")]  # fmt: skip
    day = fcr(every, 0, 24 * H, 72, now_ms=200 * H)
    assert (day.resolved, day.repeated, day.pending, day.value.value) == (3, 1, 0, 0.75)
    early = fcr(every, 0, 24 * H, 72, now_ms=30 * H)  # a1 is already a repeat; others pending
    assert (early.resolved, early.repeated, early.pending) == (0, 1, 3)
    assert early.value.value == 0.0


def ms(text: str) -> int:
    return to_ms(datetime.fromisoformat(text))


NOON_NY = ms("2026-03-08T12:00:00+00:00")  # a Sunday, the spring-forward day


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("today", "2026-03-08T05:00:00+00:00", "2026-03-09T04:00:00+00:00"),
        ("yesterday", "2026-03-07T05:00:00+00:00", "2026-03-08T05:00:00+00:00"),
        ("this_week", "2026-03-02T05:00:00+00:00", "2026-03-09T04:00:00+00:00"),
        ("last_week", "2026-02-23T05:00:00+00:00", "2026-03-02T05:00:00+00:00"),
        ("this_month", "2026-03-01T05:00:00+00:00", "2026-04-01T04:00:00+00:00"),
        ("last_month", "2026-02-01T05:00:00+00:00", "2026-03-01T05:00:00+00:00"),
    ],
)
def test_periods_in_new_york(name: str, start: str, end: str) -> None:
    assert period_span(name, NOON_NY, "America/New_York") == (ms(start), ms(end))


def test_reports_and_days_across_dst() -> None:
    span = report_span("weekly", date(2026, 11, 4), "America/New_York")
    assert span == (ms("2026-11-02T05:00:00+00:00"), ms("2026-11-09T05:00:00+00:00"))
    assert local_days(report_span("weekly", date(2026, 11, 1), "America/New_York"),
                      "America/New_York")[-1] == date(2026, 11, 1)  # fmt: skip
    month = report_span("monthly", date(2026, 3, 31), "America/New_York")
    halves = span_intervals(month, "America/New_York", 30)
    assert len(halves) == 31 * 48 - 2  # one day of 46
    assert halves[0][0] == month[0] and halves[-1][1] == month[1]
    assert all(a[1] == b[0] for a, b in pairwise(halves))


def test_business_hours_by_local_wall_clock() -> None:
    c = Contract(tenant_id="t", timezone="Asia/Kathmandu", business_hours=((0, 540, 1050),))
    assert in_business_hours(ms("2026-03-09T03:15:00+00:00"), c)  # Mon 09:00 +05:45
    assert not in_business_hours(ms("2026-03-09T03:00:00+00:00"), c)  # 08:45
    assert not in_business_hours(ms("2026-03-09T11:45:00+00:00"), c)  # 17:30, the end
    assert not in_business_hours(ms("2026-03-10T03:15:00+00:00"), c)  # Tuesday
    assert in_business_hours(ms("2026-03-10T03:15:00+00:00"), Contract(tenant_id="t"))


def level(met: bool | None) -> ServiceLevel:
    return ServiceLevel(None if met is None else 1.0, 1, 1, "answered", 20, True, 80.0, met, 1)


def test_attainment_counts_only_measured_intervals() -> None:
    a = attainment([level(True), level(False), level(None), level(True)])
    assert (a.met, a.measured, a.intervals) == (2, 3, 4)
    assert a.value_pct == pytest.approx(200 / 3)
    assert attainment([level(None)]).value_pct is None


def test_contract_rejects_bad_business_hours() -> None:
    with pytest.raises(ValueError, match="business_hours"):
        Contract(tenant_id="t", business_hours=((7, 0, 60),))
    with pytest.raises(ValueError, match="business_hours"):
        Contract(tenant_id="t", business_hours=((1, 600, 600),))
    assert datetime(2026, 3, 8, tzinfo=UTC).weekday() == 6


counters_st = st.builds(
    lambda scalars, maxima, ha, hb: Counters(
        offered=scalars[0], answered=scalars[1], abandoned=scalars[2], flowed_out=scalars[3],
        transferred=scalars[4], handled=scalars[5], wait_answered_ms=scalars[6],
        wait_abandoned_ms=scalars[7], talk_ms=scalars[8], hold_ms=scalars[9], wrap_ms=scalars[10],
        max_wait_answered_ms=maxima[0], max_wait_abandoned_ms=maxima[1],
        hist_answered=ha, hist_abandoned=hb,
    ),
    st.lists(st.integers(0, 10**6), min_size=11, max_size=11),
    st.lists(st.integers(0, 10**6), min_size=2, max_size=2),
    st.lists(st.integers(0, 50), min_size=HIST_BINS, max_size=HIST_BINS),
    st.lists(st.integers(0, 50), min_size=HIST_BINS, max_size=HIST_BINS),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(counters_st, max_size=6))
def test_merged_equals_merging_one_by_one(buckets: list[Counters]) -> None:
    expected = Counters()
    for b in buckets:
        expected.merge(b)
    before = [msgspec.json.decode(msgspec.json.encode(b), type=Counters) for b in buckets]
    total = merged(buckets)
    assert total == expected
    if buckets:  # the result shares no list with its inputs, and they are unchanged
        total.hist_answered[0] += 1
        assert buckets == before
