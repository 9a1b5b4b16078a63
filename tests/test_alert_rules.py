"""The pure alert-rule core: for-duration, hysteresis, cool-down, repeats, quiet hours across
DST changes, the predictive projection, and independence from evaluation timing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.kpi.alerts import (
    AlertRuleError,
    Notice,
    Output,
    QuietHours,
    Rule,
    Sample,
    TargetState,
    Transition,
    acknowledge,
    advance,
    initial_state,
    projected_sl,
    quiet_at,
    quiet_until,
    resume,
    step,
)
from services.kpi.contracts import Components

S = 1000
MIN = 60 * S
T0 = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def sl_rule(**fields: Any) -> Rule:
    base: dict[str, Any] = {
        "rule_id": "sl-low",
        "tenant_id": "t",
        "queue_id": "q",
        "metric": "sl_rolling",
        "op": "<",
        "threshold": 80.0,
    }
    return Rule(**(base | fields))


def run(
    rule: Rule, samples: list[tuple[int, float | None]], tz: str = "UTC", until: int | None = None
) -> list[Output]:
    """Feed samples (instant, value) in order; optionally let time pass to `until`."""
    state: TargetState = initial_state(samples[0][0])
    out: list[Output] = []
    for at, value in samples:
        state, o = step(rule, state, at, Sample(value), tz, "t|q|")
        out += o
    if until is not None:
        state, o = advance(rule, state, until, tz)
        out += o
    return out


def notices(out: list[Output]) -> list[tuple[str, int]]:
    return [(o.kind, o.at_ms) for o in out if isinstance(o, Notice)]


def transitions(out: list[Output]) -> list[tuple[str, int]]:
    return [(o.kind, o.at_ms) for o in out if isinstance(o, Transition)]


# -- for-duration and hysteresis ---------------------------------------------------------


def test_a_breach_shorter_than_the_for_duration_sends_nothing() -> None:
    rule = sl_rule(for_s=120)
    # breached for 119 s, sampled every second, then healthy for ten minutes
    samples = [(T0 + i * S, 70.0 if i < 119 else 90.0) for i in range(0, 720)]
    out = run(rule, samples)
    assert notices(out) == []
    assert transitions(out) == [("pending", T0), ("cancelled", T0 + 119 * S)]


def test_a_breach_as_long_as_the_for_duration_fires_at_its_own_instant() -> None:
    rule = sl_rule(for_s=120)
    # sampled only at the start of the breach and long after: it fired at T0 + 120 s
    out = run(rule, [(T0, 70.0), (T0 + 500 * S, 70.0), (T0 + 900 * S, 95.0)])
    assert transitions(out) == [
        ("pending", T0),
        ("firing", T0 + 120 * S),
        ("resolved", T0 + 900 * S),
    ]
    assert notices(out) == [("firing", T0 + 120 * S), ("resolved", T0 + 900 * S)]


def test_flapping_around_the_threshold_sends_one_alert_and_one_resolution() -> None:
    # 79 / 81 around a threshold of 80, every 10 s for 30 minutes, then back to 90
    flapping = [(T0 + i * 10 * S, 79.0 if i % 2 == 0 else 81.0) for i in range(180)]
    samples = [*flapping, (T0 + 1800 * S, 90.0), (T0 + 3600 * S, 90.0)]
    calm = run(sl_rule(clear_threshold=85.0, for_s=60), samples)
    assert notices(calm) == [("firing", T0 + 60 * S), ("resolved", T0 + 1800 * S)]
    # without hysteresis and without a for-duration the same history is a storm
    storm = run(sl_rule(), samples)
    assert len(notices(storm)) == 180
    # a for-duration alone keeps it quiet too (the breach never lasts a minute)
    assert notices(run(sl_rule(for_s=60), samples)) == []


def test_the_hysteresis_band_holds_the_state_both_ways() -> None:
    rule = sl_rule(clear_threshold=85.0)
    out = run(rule, [(T0, 82.0), (T0 + MIN, 79.0), (T0 + 2 * MIN, 84.0), (T0 + 3 * MIN, 85.0)])
    assert notices(out) == [("firing", T0 + MIN), ("resolved", T0 + 3 * MIN)]


def test_no_data_neither_starts_nor_ends_a_breach() -> None:
    rule = sl_rule()
    out = run(rule, [(T0, None), (T0 + MIN, 70.0), (T0 + 2 * MIN, None), (T0 + 3 * MIN, 90.0)])
    assert notices(out) == [("firing", T0 + MIN), ("resolved", T0 + 3 * MIN)]


def test_a_rule_without_threshold_uses_the_contract_target() -> None:
    rule = sl_rule(threshold=None, metric="sl_interval_projected")
    state = initial_state(T0)
    state, out = step(rule, state, T0, Sample(85.0, target=90.0), "UTC", "k")
    assert [o.kind for o in out] == ["pending", "firing", "firing"]
    assert out[-1].threshold == 90.0  # type: ignore[union-attr]


# -- cool-down, repeats, acknowledgement -----------------------------------------------


def test_cool_down_defers_the_next_firing() -> None:
    rule = sl_rule(cooldown_s=600)
    out = run(rule, [(T0, 70.0), (T0 + MIN, 90.0), (T0 + 2 * MIN, 70.0), (T0 + 20 * MIN, 70.0)])
    assert notices(out) == [
        ("firing", T0),
        ("resolved", T0 + MIN),
        ("firing", T0 + 11 * MIN),
    ]


def test_repeats_until_acknowledged() -> None:
    rule = sl_rule(repeat_s=300)
    state = initial_state(T0)
    state, out = step(rule, state, T0, Sample(70.0), "UTC", "k")
    state, more = advance(rule, state, T0 + 11 * MIN, "UTC")
    assert notices(out + more) == [
        ("firing", T0),
        ("repeat", T0 + 5 * MIN),
        ("repeat", T0 + 10 * MIN),
    ]
    assert state.alert_id is not None
    state = acknowledge(state, state.alert_id)
    state, later = advance(rule, state, T0 + 60 * MIN, "UTC")
    assert later == []


def test_resume_after_a_restart_does_not_back_date_into_the_gap() -> None:
    rule = sl_rule(for_s=60)
    state, _ = step(rule, initial_state(T0), T0, Sample(70.0), "UTC", "k")
    restored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=TargetState)
    state = resume(restored, T0 + 10 * MIN)
    state, out = step(rule, state, T0 + 10 * MIN, Sample(70.0), "UTC", "k")
    assert notices(out) == [("firing", T0 + 10 * MIN)]


def test_time_driven_onset_does_not_depend_on_the_sampling_instant() -> None:
    rule = sl_rule(metric="longest_wait_s", op=">", threshold=120.0, for_s=30)
    queued = T0
    onset = queued + 120 * S

    def wait_at(at: int) -> Sample:
        return Sample((at - queued) / 1000, onset_ms=onset)

    dense_state, dense = initial_state(T0), []
    for at in range(T0, T0 + 200 * S, S):
        dense_state, o = step(rule, dense_state, at, wait_at(at), "UTC", "k")
        dense += o
    sparse_state, sparse = initial_state(T0), []
    for at in (T0, T0 + 100 * S, T0 + 199 * S):
        sparse_state, o = step(rule, sparse_state, at, wait_at(at), "UTC", "k")
        sparse += o
    # the instants and ids agree; the values reported are those sampled, naturally not
    assert [(o.kind, o.alert_id, o.at_ms) for o in dense] == [
        (o.kind, o.alert_id, o.at_ms) for o in sparse
    ]
    assert transitions(dense) == [("pending", onset), ("firing", onset + 30 * S)]


# -- quiet hours, in the tenant's zone, across DST ------------------------------------------

NIGHT = QuietHours(start="22:00", end="07:00")
NY = "America/New_York"


@pytest.mark.parametrize(
    ("instant", "quiet"),
    [
        ("2026-03-07T21:59:00-05:00", False),
        ("2026-03-07T22:00:00-05:00", True),
        ("2026-03-08T06:59:00-04:00", True),  # after the spring-forward jump
        ("2026-03-08T07:00:00-04:00", False),  # 11:00 UTC; on EST it would be 06:00
        ("2026-10-31T23:30:00-04:00", True),
        ("2026-11-01T01:30:00-04:00", True),  # the first 01:30
        ("2026-11-01T01:30:00-05:00", True),  # the second 01:30
        ("2026-11-01T06:59:00-05:00", True),  # 11:59 UTC; on EDT it would be 07:59
        ("2026-11-01T07:00:00-05:00", False),
    ],
)
def test_quiet_hours_read_the_local_wall_clock(instant: str, quiet: bool) -> None:
    assert quiet_at(NIGHT, NY, ms(instant)) is quiet


def test_quiet_hours_end_on_the_local_clock_across_dst() -> None:
    assert quiet_until(NIGHT, NY, ms("2026-03-07T23:00:00-05:00")) == ms("2026-03-08T11:00:00Z")
    assert quiet_until(NIGHT, NY, ms("2026-10-31T23:00:00-04:00")) == ms("2026-11-01T12:00:00Z")
    # an end inside the spring-forward gap: the quiet ends when the clock jumps over it
    gap = QuietHours(start="23:00", end="02:30")
    assert quiet_until(gap, NY, ms("2026-03-08T01:00:00-05:00")) == ms("2026-03-08T07:00:00Z")
    # weekdays: a Friday-night-only period does not make Saturday night quiet
    fridays = QuietHours(start="22:00", end="07:00", days=(4,))
    assert quiet_at(fridays, NY, ms("2026-03-06T23:00:00-05:00"))
    assert not quiet_at(fridays, NY, ms("2026-03-07T23:00:00-05:00"))
    # a +05:45 zone
    assert quiet_until(NIGHT, "Asia/Kathmandu", ms("2026-03-08T23:00:00+05:45")) == ms(
        "2026-03-09T07:00:00+05:45"
    )


@pytest.mark.parametrize(
    ("breach", "notice"),
    [
        # spring forward: quiet ends at 07:00 EDT = 11:00 UTC
        ("2026-03-08T04:00:00Z", "2026-03-08T11:00:00Z"),
        ("2026-03-08T11:30:00Z", "2026-03-08T11:30:00Z"),  # 07:30 EDT: not quiet
        # fall back: quiet ends at 07:00 EST = 12:00 UTC
        ("2026-11-01T03:00:00Z", "2026-11-01T12:00:00Z"),
        ("2026-11-01T11:30:00Z", "2026-11-01T12:00:00Z"),  # 06:30 EST: still quiet
    ],
)
def test_a_firing_in_quiet_hours_is_notified_when_they_end(breach: str, notice: str) -> None:
    rule = sl_rule(quiet_hours=NIGHT)
    out = run(rule, [(ms(breach), 70.0)], tz=NY, until=ms("2026-11-02T00:00:00Z"))
    assert notices(out) == [("firing", ms(notice))]
    assert transitions(out) == [("pending", ms(breach)), ("firing", ms(breach))]


def test_resolutions_in_quiet_hours() -> None:
    rule = sl_rule(quiet_hours=NIGHT)
    # fired at 21:00 (notified), resolved at 23:00 (quiet): the resolution waits until 07:00
    out = run(
        rule,
        [(ms("2026-03-07T21:00:00-05:00"), 70.0), (ms("2026-03-07T23:00:00-05:00"), 90.0)],
        tz=NY,
        until=ms("2026-03-09T00:00:00Z"),
    )
    assert notices(out) == [
        ("firing", ms("2026-03-07T21:00:00-05:00")),
        ("resolved", ms("2026-03-08T11:00:00Z")),
    ]
    # fired and resolved inside quiet hours: nobody is told anything
    out = run(
        rule,
        [(ms("2026-03-07T23:00:00-05:00"), 70.0), (ms("2026-03-08T03:30:00-04:00"), 90.0)],
        tz=NY,
        until=ms("2026-03-09T00:00:00Z"),
    )
    assert notices(out) == []
    assert [k for k, _ in transitions(out)] == ["pending", "firing", "resolved"]


def test_repeats_inside_quiet_hours_are_skipped() -> None:
    rule = sl_rule(quiet_hours=NIGHT, repeat_s=3600)
    out = run(
        rule,
        [(ms("2026-03-07T20:30:00-05:00"), 70.0)],
        tz=NY,
        until=ms("2026-03-08T09:00:00-04:00"),
    )
    assert notices(out) == [
        ("firing", ms("2026-03-07T20:30:00-05:00")),
        ("repeat", ms("2026-03-07T21:30:00-05:00")),
        # 22:30 ... 06:30 are quiet (and 02:30 does not exist that night)
        ("repeat", ms("2026-03-08T07:30:00-04:00")),
        ("repeat", ms("2026-03-08T08:30:00-04:00")),
    ]


# -- the predictive projection -----------------------------------------------------------


def test_projected_interval_sl_if_every_waiting_call_were_answered_now() -> None:
    # 90 answered this interval, 70 within T, 5 abandoned (2 within T), nothing flowed out
    c = Components(
        answered=90,
        answered_within=70,
        abandoned=5,
        abandoned_within=2,
        short_abandons=1,
        flowed_out=0,
    )
    # ten waiting, all still within T: best case 80 / 100
    assert projected_sl("answered", c, 10, 0) == (80, 100)
    # ten waiting, one already past T: 79 / 100, below an 80 % target whatever happens now
    assert projected_sl("answered", c, 9, 1) == (79, 100)
    assert projected_sl("offered", c, 9, 1) == (79, 105)
    assert projected_sl("abandon_within_met", c, 10, 0) == (82, 105)


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rule_id": "no spaces"}, "rule_id"),
        ({"tenant_id": None}, "tenant_id"),
        ({"scope": "team", "queue_id": None, "metric": "sl_rolling"}, "metric"),
        ({"window_min": 7}, "window_min"),
        ({"metric": "calls_waiting", "threshold": None, "op": ">"}, "threshold"),
        ({"clear_threshold": 75.0}, "clear_threshold"),
        ({"for_s": -1}, "for_s"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_invalid_rules_name_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(AlertRuleError, match=field):
        sl_rule(**fields)
    with pytest.raises(AlertRuleError, match="quiet_hours"):
        QuietHours(start="25:00", end="07:00")


# -- independence from evaluation timing ---------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[Rule, list[tuple[int, float | None]], list[int], int]:
    values = st.one_of(st.none(), st.sampled_from([60.0, 75.0, 79.0, 80.0, 81.0, 84.0, 90.0]))
    gaps = st.integers(min_value=1, max_value=3 * 3600).map(lambda s: s * S)
    n = draw(st.integers(min_value=1, max_value=25))
    start = ms("2026-03-07T18:00:00Z") + draw(st.integers(0, 2 * 86_400)) * S
    changes, at = [], start
    for _ in range(n):
        changes.append((at, draw(values)))
        at += draw(gaps)
    end = at
    ticks = draw(st.lists(st.integers(min_value=start, max_value=end), max_size=60))
    quiet = draw(st.sampled_from([None, NIGHT, QuietHours(start="01:00", end="03:00")]))
    rule = sl_rule(
        for_s=draw(st.sampled_from([0, 30, 600, 3600])),
        clear_threshold=draw(st.sampled_from([None, 80.0, 85.0])),
        cooldown_s=draw(st.sampled_from([0, 900])),
        repeat_s=draw(st.sampled_from([0, 1800])),
        quiet_hours=quiet,
    )
    return rule, changes, ticks, end


@settings(max_examples=150, deadline=None)
@given(histories(), st.sampled_from([NY, "Europe/London", "Asia/Kolkata"]))
def test_transitions_do_not_depend_on_when_rules_are_evaluated(
    case: tuple[Rule, list[tuple[int, float | None]], list[int], int], tz: str
) -> None:
    rule, changes, ticks, end = case
    sparse = run(rule, changes, tz=tz, until=end)
    # the same history, evaluated also at arbitrary extra instants (the value unchanged)
    merged: list[tuple[int, float | None]] = []
    extra = sorted(ticks)
    for i, (at, value) in enumerate(changes):
        merged.append((at, value))
        following = changes[i + 1][0] if i + 1 < len(changes) else end + 1
        merged += [(t, value) for t in extra if at < t < following]
    dense = run(rule, merged, tz=tz, until=end)
    assert dense == sparse


def test_the_example_alert_file_loads() -> None:
    from services.alerts.rules_file import load_rules_file
    from tests.conftest import ROOT

    rules, recipients = load_rules_file(ROOT / "deploy" / "alerts.example.toml")
    assert [r.metric for r in rules] == [
        "sl_rolling", "sl_interval_projected", "longest_wait_s", "agents_available",
    ]  # fmt: skip
    assert {r.channel for r in recipients} == {"email", "slack", "alertmanager"}
