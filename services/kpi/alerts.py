"""Alert rules and their evaluation over a metric's history: pure, no I/O, no clock.

A rule watches one metric of one target (a queue, a team, a tenant or the whole floor).
The adapter samples the metric and calls `step(rule, state, at_ms, sample, tz)`; the core
returns the new state and the lifecycle transitions and notices it caused.

Time semantics (instants are UTC milliseconds; durations in rule fields are seconds):

- A sample taken at `at_ms` holds until the next one (the metric is piecewise constant
  between samples). Timed transitions (the for-duration elapsing, the cool-down ending,
  quiet hours ending, a repeat falling due) happen at their own instants, computed from
  the history, not at the instant `step` is called: evaluating on every update, once a
  second or only when the value changes gives the same transitions at the same instants.
- A breach latches (Schmitt trigger): it starts when the value crosses `threshold` and
  ends only when it crosses `clear_threshold` (the hysteresis band in between keeps the
  current state), so a value flapping around the threshold cannot start a storm.
- Lifecycle: idle -> pending (breach began at `since`) -> firing (at `since + for_s`,
  and not before the cool-down after the previous resolution) -> resolved; a pending
  alert whose breach ends before firing is cancelled and never notified.
- Notices (what recipients get): `firing` once per alert, `repeat` every `repeat_s`
  while firing and not acknowledged, `resolved` once if `firing` was sent. In quiet hours
  (local wall-clock time in the tenant's IANA zone, DST-correct) a notice is held back and
  sent when they end, if still relevant: an alert that fired and resolved inside quiet
  hours sends nothing; repeats falling in quiet hours are skipped.
- A value of None (no data: e.g. an SL with a zero denominator) neither starts nor ends
  a breach.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .contracts import Components, sl_fraction

Metric = Literal[
    "sl_rolling",
    "sl_interval",
    "sl_interval_projected",
    "calls_waiting",
    "longest_wait_s",
    "asa_s",
    "aht_s",
    "abandon_rate_pct",
    "agents_available",
    "occupancy_pct",
    "pipeline_staleness_s",
]
METRICS: Final[tuple[str, ...]] = Metric.__args__  # type: ignore[attr-defined]
Scope = Literal["queue", "team", "tenant", "floor"]
Op = Literal["<", "<=", ">", ">="]
Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: Final = {"info": 0, "warning": 1, "critical": 2}
ROLLING_WINDOWS_MIN: Final = (5, 15, 30, 60)
MAX_DURATION_S: Final = 30 * 86_400

#: Metrics that carry the contract's SL target, so a rule may leave `threshold` unset.
SL_METRICS: Final = ("sl_rolling", "sl_interval", "sl_interval_projected")
#: Metrics of agents, the only ones a team rule can watch (teams have no queue figures).
TEAM_METRICS: Final = ("agents_available", "occupancy_pct", "pipeline_staleness_s")
#: Metrics that grow with the clock while nothing happens; their sample may say when the
#: current breach began (`Sample.onset_ms`).
TIME_DRIVEN_METRICS: Final = ("longest_wait_s", "pipeline_staleness_s")

_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


class AlertRuleError(ValueError):
    """A rule field is invalid; the message names the field and the reason."""


class QuietHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A local wall-clock period, `start` to `end` ("HH:MM"), during which notices wait.

    The period wraps midnight when `end <= start` (22:00 to 07:00 ends the next morning).
    `days` are the weekdays (0 = Monday) on which a period starts.
    """

    start: str
    end: str
    days: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            if not _HHMM.match(getattr(self, name)):
                raise AlertRuleError(
                    f"quiet_hours.{name}: expected HH:MM (24 h), got {getattr(self, name)!r}"
                )
        if self.start == self.end:
            raise AlertRuleError("quiet_hours: start and end must differ")
        if not self.days or any(not 0 <= d <= 6 for d in self.days):
            raise AlertRuleError("quiet_hours.days: weekdays 0 (Monday) to 6, at least one")


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One alert rule. Durations are seconds; thresholds are in the metric's unit.

    Metric units: `sl_*` and `*_pct` percent (0-100); `*_s` seconds; `calls_waiting` and
    `agents_available` counts. `sl_rolling`, `asa_s`, `aht_s`, `abandon_rate_pct` and
    `occupancy_pct` cover the rolling window of the last `window_min` minutes; `sl_interval`
    the current interval of the queue's contract (its zone and length);
    `sl_interval_projected` the current interval's SL if every waiting call were answered
    now and no other call arrived (the predictive rule: with `op = "<"` and no threshold
    it fires when the interval will miss the contract's target anyway).

    Scope: `queue` (one queue, or every queue of the tenant when `queue_id` is None, each
    with its own alert), `team` (one team, or each team), `tenant` (all its queues summed),
    `floor` (every tenant; admin only, `tenant_id` None). Ratios of several queues are sums
    of numerators over sums of denominators, each queue under its own contract.

    `threshold` None: the contract's SL target (SL rules of a queue only). `clear_threshold`
    (on the healthy side of `threshold`) is where a breach ends (hysteresis). `min_count`:
    SL, ASA, AHT and abandon rate with fewer calls in their denominator are "no data".
    `for_s`, `cooldown_s`, `repeat_s` (0: never), `quiet_hours` and `timezone` (default:
    the target queue's contract zone, else the tenant's): see the module docstring.
    """

    rule_id: str
    tenant_id: str | None
    scope: Scope = "queue"
    queue_id: str | None = None
    team_id: str | None = None
    metric: Metric
    window_min: int = 15
    op: Op
    threshold: float | None = None
    clear_threshold: float | None = None
    for_s: int = 0
    min_count: int = 1
    severity: Severity = "warning"
    cooldown_s: int = 0
    repeat_s: int = 0
    quiet_hours: QuietHours | None = None
    timezone: str | None = None
    summary: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        if not _RULE_ID.match(self.rule_id):
            raise AlertRuleError("rule_id: 1-64 characters of letters, digits, '.', '_' or '-'")
        if (self.scope == "floor") != (self.tenant_id is None):
            raise AlertRuleError("tenant_id: required, except for (and only for) floor rules")
        if self.scope != "queue" and self.queue_id is not None:
            raise AlertRuleError(f"queue_id: not allowed in a {self.scope} rule")
        if self.scope != "team" and self.team_id is not None:
            raise AlertRuleError(f"team_id: not allowed in a {self.scope} rule")
        if self.scope == "team" and self.metric not in TEAM_METRICS:
            raise AlertRuleError(f"metric: a team rule watches one of {TEAM_METRICS}")
        if self.window_min not in ROLLING_WINDOWS_MIN:
            raise AlertRuleError(f"window_min: one of {ROLLING_WINDOWS_MIN}")
        if self.threshold is None and not (self.metric in SL_METRICS and self.scope == "queue"):
            raise AlertRuleError(
                "threshold: required (only SL rules of a queue may default to its contract target)"
            )
        if self.threshold is not None and self.clear_threshold is not None:
            lower = self.op in ("<", "<=")
            if (lower and self.clear_threshold < self.threshold) or (
                not lower and self.clear_threshold > self.threshold
            ):
                raise AlertRuleError(
                    "clear_threshold: must lie on the healthy side of threshold"
                    f" ({'>=' if lower else '<='} {self.threshold})"
                )
        for name in ("for_s", "cooldown_s", "repeat_s"):
            if not 0 <= getattr(self, name) <= MAX_DURATION_S:
                raise AlertRuleError(f"{name}: seconds, 0 to {MAX_DURATION_S} (30 days)")
        if not 1 <= self.min_count <= 1_000_000:
            raise AlertRuleError("min_count: 1 to 1000000")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: e.g. a directory
                raise AlertRuleError(f"timezone: {self.timezone!r} is not an IANA zone") from None


class Sample(msgspec.Struct, frozen=True):
    """A metric's value at a sampling instant, in the rule's unit (None: no data).

    `target` is the contract's SL target (percent) for SL metrics; `onset_ms` may say when
    the current breach began for a time-driven metric (e.g. the oldest waiting call's
    queue entry + the threshold), so its start does not depend on when it was sampled.
    """

    value: float | None
    target: float | None = None
    onset_ms: int | None = None


class Owed(msgspec.Struct, frozen=True):
    """A resolution notice held back by quiet hours."""

    alert_id: str
    resolved_ms: int
    value: float | None
    threshold: float | None


Phase = Literal["idle", "pending", "firing"]


class TargetState(msgspec.Struct, kw_only=True):
    """Everything the evaluation of one (rule, target) remembers between samples."""

    at_ms: int
    value: float | None = None
    threshold: float | None = None
    active: bool = False
    phase: Phase = "idle"
    alert_id: str | None = None
    since_ms: int | None = None
    fired_ms: int | None = None
    notified: bool = False
    repeat_from_ms: int | None = None
    acknowledged: bool = False
    resolved_ms: int | None = None
    owed: tuple[Owed, ...] = ()


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """A lifecycle change of one alert at `at_ms` (the breach began at `since_ms`)."""

    kind: Literal["pending", "firing", "resolved", "cancelled"]
    alert_id: str
    at_ms: int
    since_ms: int
    value: float | None
    threshold: float | None


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """Something to tell recipients, due at `at_ms` (after quiet hours, if they held it)."""

    kind: Literal["firing", "resolved", "repeat"]
    alert_id: str
    at_ms: int
    value: float | None
    threshold: float | None


Output = Transition | Notice


def target_key(tenant_id: str | None, queue_id: str | None, team_id: str | None) -> str:
    """A stable text key of a rule's target."""
    return f"{tenant_id or '*'}|{queue_id or ''}|{team_id or ''}"


def alert_id(rule_id: str, target: str, since_ms: int) -> str:
    """A deterministic alert id: re-deriving the same breach gives the same id."""
    digest = hashlib.sha256(f"{rule_id}\0{target}\0{since_ms}".encode()).hexdigest()
    return f"al_{digest[:20]}"


def breaching(op: Op, value: float, threshold: float) -> bool:
    match op:
        case "<":
            return value < threshold
        case "<=":
            return value <= threshold
        case ">":
            return value > threshold
        case ">=":
            return value >= threshold
    raise AssertionError(op)  # pragma: no cover


def clear_level(rule: Rule, threshold: float) -> float:
    """The clearing threshold in force: `clear_threshold` when it lies on the healthy side
    of the effective threshold, else the threshold itself (no hysteresis)."""
    clear = rule.clear_threshold
    if clear is None:
        return threshold
    lower = rule.op in ("<", "<=")
    return clear if (clear >= threshold if lower else clear <= threshold) else threshold


def cleared(rule: Rule, value: float, threshold: float) -> bool:
    """A latched breach ends once the value no longer breaches the clearing threshold."""
    return not breaching(rule.op, value, clear_level(rule, threshold))


# -- quiet hours ------------------------------------------------------------------------


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _period(qh: QuietHours, day: date) -> tuple[datetime, datetime] | None:
    """The naive local wall-clock period starting on `day`, if one does."""
    if day.weekday() not in qh.days:
        return None
    start, end = _hhmm(qh.start), _hhmm(qh.end)
    end_day = day if end > start else day + timedelta(days=1)
    return datetime.combine(day, start), datetime.combine(end_day, end)


def _wall(at_ms: int, zone: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, tz=UTC).astimezone(zone).replace(tzinfo=None)


def _containing(qh: QuietHours, zone: ZoneInfo, at_ms: int) -> datetime | None:
    """The wall-clock end of the quiet period containing an instant, or None."""
    wall = _wall(at_ms, zone)
    for day in (wall.date(), wall.date() - timedelta(days=1)):
        period = _period(qh, day)
        if period is not None and period[0] <= wall < period[1]:
            return period[1]
    return None


def quiet_at(qh: QuietHours | None, tz: str, at_ms: int) -> bool:
    """Whether an instant lies in quiet hours, read on the local wall clock of `tz`."""
    return qh is not None and _containing(qh, ZoneInfo(tz), at_ms) is not None


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def first_instant_at_or_after(wall: datetime, tz: str, after_ms: int) -> int:
    """The first instant after `after_ms` whose local wall-clock time is `wall` or later.

    A wall time skipped by a spring-forward gap resolves to the end of the gap; one that
    occurs twice (fall back) resolves to its first occurrence after `after_ms`.
    """
    zone = ZoneInfo(tz)
    found = [
        ms
        for fold in (0, 1)
        if _wall(ms := _ms(wall.replace(tzinfo=zone, fold=fold)), zone) == wall and ms > after_ms
    ]
    if found:
        return min(found)
    # In a gap: the two folds straddle the jump; find the first instant at or past `wall`.
    lo = min(_ms(wall.replace(tzinfo=zone, fold=f)) for f in (0, 1))
    hi = max(_ms(wall.replace(tzinfo=zone, fold=f)) for f in (0, 1))
    lo = max(lo, after_ms)
    while lo < hi:
        mid = (lo + hi) // 2
        if _wall(mid, zone) >= wall:
            hi = mid
        else:
            lo = mid + 1
    return lo


def quiet_until(qh: QuietHours | None, tz: str, at_ms: int) -> int:
    """The first instant at or after `at_ms` outside quiet hours (`at_ms` itself if loud)."""
    if qh is None:
        return at_ms
    zone = ZoneInfo(tz)
    current = at_ms
    for _ in range(8):  # back-to-back periods (e.g. 00:00-23:59 every day) end eventually
        end = _containing(qh, zone, current)
        if end is None:
            return current
        current = first_instant_at_or_after(end, tz, current)
    return current


# -- the predictive projection ----------------------------------------------------------


def projected_components(c: Components, waiting_within: int, waiting_over: int) -> Components:
    """Interval components if every waiting call were answered now and nothing else came:
    the waiting calls become answered, those still within T answered within T."""
    return msgspec.structs.replace(
        c,
        answered=c.answered + waiting_within + waiting_over,
        answered_within=c.answered_within + waiting_within,
    )


def projected_sl(
    variant: str, c: Components, waiting_within: int, waiting_over: int
) -> tuple[int, int]:
    """(numerator, denominator) of the best-case SL; see `projected_components`."""
    return sl_fraction(variant, projected_components(c, waiting_within, waiting_over))


# -- evaluation -------------------------------------------------------------------------


def initial_state(at_ms: int) -> TargetState:
    return TargetState(at_ms=at_ms)


def resume(state: TargetState, at_ms: int) -> TargetState:
    """A state restored after a restart: nothing was observed while the process was down,
    so timers that fell due in the gap take effect at the first evaluation, `at_ms`."""
    return msgspec.structs.replace(state, at_ms=max(state.at_ms, at_ms))


def _fire_due(rule: Rule, s: TargetState) -> int | None:
    if s.phase != "pending" or not s.active or s.since_ms is None:
        return None
    due = s.since_ms + rule.for_s * 1000
    if s.resolved_ms is not None:
        due = max(due, s.resolved_ms + rule.cooldown_s * 1000)
    return due


def _loud_due(rule: Rule, s: TargetState, tz: str) -> int | None:
    """When held-back notices can go out (quiet hours end)."""
    held = s.owed or (s.phase == "firing" and not s.notified)
    return quiet_until(rule.quiet_hours, tz, s.at_ms) if held else None


def _repeat_due(rule: Rule, s: TargetState) -> int | None:
    if (
        rule.repeat_s <= 0
        or s.phase != "firing"
        or not s.notified
        or s.acknowledged
        or s.repeat_from_ms is None
    ):
        return None
    return s.repeat_from_ms + rule.repeat_s * 1000


def _timers(rule: Rule, state: TargetState, until_ms: int, tz: str, out: list[Output]) -> None:
    """Apply every timed transition due at or before `until_ms`, in order, in place.

    Each happens at its own instant, but never before `state.at_ms` (what was already
    evaluated stays evaluated; after a restart, overdue timers happen at the resume).
    """
    s = state
    for _ in range(10_000):
        candidates = [
            (due, order)
            for order, due in enumerate(
                (_fire_due(rule, s), _loud_due(rule, s, tz), _repeat_due(rule, s))
            )
            if due is not None
        ]
        if not candidates:
            return
        due, order = min(candidates)
        if due > until_ms:
            return
        at = max(due, s.at_ms)
        s.at_ms = at
        if order == 0:
            assert s.alert_id is not None and s.since_ms is not None
            s.phase, s.fired_ms = "firing", at
            out.append(_transition("firing", s, at))
            if not quiet_at(rule.quiet_hours, tz, at):
                _notify_firing(s, at, out)
        elif order == 1:
            for owed in s.owed:
                out.append(
                    Notice(
                        kind="resolved",
                        alert_id=owed.alert_id,
                        at_ms=at,
                        value=owed.value,
                        threshold=owed.threshold,
                    )
                )
            s.owed = ()
            if s.phase == "firing" and not s.notified:
                _notify_firing(s, at, out)
        else:
            assert s.alert_id is not None
            if not quiet_at(rule.quiet_hours, tz, at):
                out.append(
                    Notice(
                        kind="repeat",
                        alert_id=s.alert_id,
                        at_ms=at,
                        value=s.value,
                        threshold=s.threshold,
                    )
                )
            s.repeat_from_ms = at
    raise AssertionError("timer loop did not settle")  # pragma: no cover


def _transition(
    kind: Literal["pending", "firing", "resolved", "cancelled"], s: TargetState, at: int
) -> Transition:
    assert s.alert_id is not None and s.since_ms is not None
    return Transition(
        kind=kind,
        alert_id=s.alert_id,
        at_ms=at,
        since_ms=s.since_ms,
        value=s.value,
        threshold=s.threshold,
    )


def _notify_firing(s: TargetState, at: int, out: list[Output]) -> None:
    assert s.alert_id is not None
    s.notified, s.repeat_from_ms = True, at
    out.append(
        Notice(kind="firing", alert_id=s.alert_id, at_ms=at, value=s.value, threshold=s.threshold)
    )


def advance(
    rule: Rule, state: TargetState, until_ms: int, tz: str
) -> tuple[TargetState, list[Output]]:
    """Let time pass to `until_ms` under the last sample (no new value)."""
    s = msgspec.structs.replace(state)
    out: list[Output] = []
    _timers(rule, s, until_ms, tz, out)
    s.at_ms = max(s.at_ms, until_ms)
    return s, out


def step(
    rule: Rule, state: TargetState, at_ms: int, sample: Sample, tz: str, target: str = ""
) -> tuple[TargetState, list[Output]]:
    """Apply a sample taken at `at_ms` (UTC ms) to one target's state.

    `tz` is the IANA zone quiet hours are read in; `target` (see `target_key`) goes into the
    alert id. Time first passes to `at_ms` under the previous sample, then the new value
    applies; an instant earlier than the last one is taken as the last one.
    """
    s, out = advance(rule, state, at_ms, tz)
    at_ms = s.at_ms
    threshold = rule.threshold if rule.threshold is not None else sample.target
    s.value, s.threshold = sample.value, threshold
    began = at_ms
    if sample.value is not None and threshold is not None:
        if not s.active and breaching(rule.op, sample.value, threshold):
            s.active = True
            if sample.onset_ms is not None:
                # The breach provably began at the onset, but not before the last sample,
                # which saw no breach.
                began = min(at_ms, max(sample.onset_ms, state.at_ms))
        elif s.active and cleared(rule, sample.value, threshold):
            s.active = False
    if s.active and s.phase == "idle":
        s.phase, s.since_ms = "pending", began
        s.alert_id = alert_id(rule.rule_id, target, began)
        s.fired_ms, s.notified, s.acknowledged, s.repeat_from_ms = None, False, False, None
        out.append(
            Transition(
                kind="pending",
                alert_id=s.alert_id,
                at_ms=began,
                since_ms=began,
                value=s.value,
                threshold=threshold,
            )
        )
        s.at_ms = began
        _timers(rule, s, at_ms, tz, out)
        s.at_ms = at_ms
    elif not s.active and s.phase != "idle":
        out.extend(_end(rule, s, at_ms, tz))
    return s, out


def retire(rule: Rule, state: TargetState, at_ms: int, tz: str) -> tuple[TargetState, list[Output]]:
    """End an open alert because its rule was removed or disabled (as if it cleared)."""
    s, out = advance(rule, state, at_ms, tz)
    s.active = False
    if s.phase != "idle":
        out.extend(_end(rule, s, s.at_ms, tz))
    return s, out


def _end(rule: Rule, s: TargetState, at_ms: int, tz: str) -> list[Output]:
    assert s.alert_id is not None and s.since_ms is not None
    out: list[Output] = []
    if s.phase == "pending":
        out.append(_transition("cancelled", s, at_ms))
    else:
        out.append(_transition("resolved", s, at_ms))
        s.resolved_ms = at_ms
        if s.notified:
            if quiet_at(rule.quiet_hours, tz, at_ms):
                s.owed = (*s.owed, Owed(s.alert_id, at_ms, s.value, s.threshold))
            else:
                out.append(
                    Notice(
                        kind="resolved",
                        alert_id=s.alert_id,
                        at_ms=at_ms,
                        value=s.value,
                        threshold=s.threshold,
                    )
                )
    s.phase, s.alert_id, s.since_ms, s.fired_ms = "idle", None, None, None
    s.notified, s.acknowledged, s.repeat_from_ms = False, False, None
    return out


def acknowledge(state: TargetState, alert: str) -> TargetState:
    """Mark the open alert acknowledged (stops repeats); other ids leave the state as is."""
    if state.alert_id != alert:
        return state
    return msgspec.structs.replace(state, acknowledged=True)


# -- routing -----------------------------------------------------------------------------

Channel = Literal["email", "webhook", "slack", "teams", "alertmanager"]
CHANNELS: Final[tuple[str, ...]] = Channel.__args__  # type: ignore[attr-defined]


class Recipient(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who hears about which alerts, and how.

    An alert reaches a recipient when each of `tenant_id`, `queue_id` and `team_id` is
    None (any) or equal to the alert's, and the alert's severity is at least
    `min_severity`. `address` is an email address for `email`, else a URL (for
    `alertmanager` its base URL, e.g. http://alertmanager:9093).
    """

    recipient_id: str
    tenant_id: str | None
    queue_id: str | None = None
    team_id: str | None = None
    min_severity: Severity = "warning"
    channel: Channel
    address: str
    enabled: bool = True

    def __post_init__(self) -> None:
        if not _RULE_ID.match(self.recipient_id):
            raise AlertRuleError(
                "recipient_id: 1-64 characters of letters, digits, '.', '_' or '-'"
            )
        if self.channel == "email":
            if not re.match(r"^[^@\s]+@[^@\s]+$", self.address):
                raise AlertRuleError("address: an email address")
            return
        try:
            url = urlsplit(self.address)
            ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
        except ValueError:  # a malformed host or port
            ok = False
        if not ok or re.search(r"\s", self.address):
            raise AlertRuleError("address: an http(s) URL")


def routes(
    recipients: list[Recipient],
    tenant_id: str | None,
    queue_id: str | None,
    team_id: str | None,
    severity: str,
) -> list[Recipient]:
    """The enabled recipients an alert of this target and severity goes to."""
    rank = SEVERITY_RANK[severity]
    return [
        r
        for r in recipients
        if r.enabled
        and r.tenant_id in (None, tenant_id)
        and r.queue_id in (None, queue_id)
        and r.team_id in (None, team_id)
        and SEVERITY_RANK[r.min_severity] <= rank
    ]
