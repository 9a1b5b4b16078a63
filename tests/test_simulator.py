"""The simulator (services/simulator), judged by the events it emits.

Statistical checks compare the emitted events with the scenario's *parameters* (expected
counts, means, distribution functions computed here), never with a second run of the same
code. The seeds are fixed, so every check is deterministic; tolerances are 4 standard errors
(3 for Erlang C, as the brief asks) and KS tests use p > 0.001, so a correct simulator fails
a given check for a given seed with probability well below 1 %.
"""

from __future__ import annotations

import bisect
import io
import itertools
import json
import math
import statistics
import textwrap
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jsonschema
import msgspec
import pytest
from referencing import Registry, Resource

from services.cli import build_parser, main
from services.kpi.events import (
    EVENT_TYPES,
    AgentStateChanged,
    CallAbandoned,
    CallAnswered,
    CallEnded,
    CallFlowedOut,
    CallHoldEnded,
    CallHoldStarted,
    CallLegEvent,
    CallQueued,
    CallTransferred,
    CallWrapupEnded,
    Envelope,
    Event,
    EventError,
    decode_event,
    encode_event,
)
from services.kpi.leg import at_ms, new_leg
from services.simulator import ScenarioError, load_scenario, parse_scenario, simulate
from services.simulator.erlang import erlang_c
from services.simulator.errors import SinkError
from services.simulator.sinks import HttpSink, NdjsonSink, pump, retry_after

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
MONDAY = datetime(2026, 11, 23, tzinfo=UTC)
LegKey = tuple[str, str, str, int]


# --- helpers ------------------------------------------------------------------------------


def emitted(
    text_or_path: str | Path, hours: float, seed: int = 1, start: datetime = MONDAY
) -> list[Event]:
    """The run's events as a consumer sees them: encoded to JSON and decoded back."""
    scenario = (
        load_scenario(text_or_path)
        if isinstance(text_or_path, Path)
        else parse_scenario(text_or_path)
    )
    events: list[Event] = []
    for event in simulate(scenario, seed, start, timedelta(hours=hours)):
        decoded = decode_event(encode_event(event))
        assert not isinstance(decoded, EventError), decoded
        events.append(decoded)
    return events


def encode_batch(events: Iterable[Event]) -> bytes:
    """NDJSON bytes, exactly as the file sink writes them."""
    stream = io.BytesIO()
    NdjsonSink(stream, close_stream=False).write(list(events))
    return stream.getvalue()


def seconds(a: Envelope, b: Envelope) -> float:
    return (b.occurred_at - a.occurred_at).total_seconds()


def leg_key(event: CallLegEvent) -> LegKey:
    return (event.tenant_id, event.call_id, event.queue_id, event.visit)


Leg = dict[str, list[CallLegEvent]]
"""A leg's events by event type."""


def legs_of(events: Iterable[Event]) -> dict[LegKey, Leg]:
    legs: dict[LegKey, Leg] = defaultdict(lambda: defaultdict(list))
    for event in events:
        if isinstance(event, CallLegEvent):
            legs[leg_key(event)][str(type(event).__struct_config__.tag)].append(event)
    return legs


def agent_of(leg: Leg) -> str:
    (answer,) = leg["call.answered"]
    assert isinstance(answer, CallAnswered)
    return answer.agent_id


def ks_pvalue(sample: Sequence[float], cdf: Callable[[float], float]) -> float:
    """One-sample Kolmogorov-Smirnov test: asymptotic p-value with Stephens' correction."""
    xs = sorted(sample)
    n = len(xs)
    d = max(max((i + 1) / n - cdf(x), cdf(x) - i / n) for i, x in enumerate(xs))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    p = 2 * sum((1 if k % 2 else -1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, p))


def exponential_cdf(mean: float) -> Callable[[float], float]:
    return lambda x: 1 - math.exp(-x / mean) if x > 0 else 0.0


def lognormal_cdf(mean: float, sd: float) -> Callable[[float], float]:
    sigma = math.sqrt(math.log(1 + (sd / mean) ** 2))
    mu = math.log(mean) - sigma**2 / 2
    return lambda x: (
        0.5 * (1 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2)))) if x > 0 else 0.0
    )


def assert_mean(sample: Sequence[float], mean: float, sd: float, what: str) -> None:
    """The sample mean is within 4 standard errors (sd / √n, sd from the parameters)."""
    se = sd / math.sqrt(len(sample))
    got = statistics.fmean(sample)
    assert abs(got - mean) < 4 * se, f"{what}: mean {got:.3f}, expected {mean} ± 4 SE ({se:.3f})"


def assert_share(hits: int, n: int, p: float, what: str) -> None:
    """A binomial share within 4 standard errors of p."""
    se = math.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) < 4 * se, f"{what}: {hits}/{n} = {hits / n:.4f}, expected {p}"


def centre(queues: str, agents: str = "", timezone: str = "UTC", name: str = "t") -> str:
    return f'name = "{name}"\n[[tenants]]\nid = "acme"\ntimezone = "{timezone}"\n{queues}\n{agents}'


# --- the wire -----------------------------------------------------------------------------


SCHEMA_DOCS = [json.loads(p.read_text()) for p in sorted((ROOT / "schemas").glob("*.json"))]
REGISTRY: Registry[Any] = Registry().with_resources(
    (doc["$id"], Resource.from_contents(doc)) for doc in SCHEMA_DOCS
)


def test_events_round_trip_validate_and_come_in_time_order() -> None:
    events = emitted(SCENARIOS / "demo.toml", hours=24, seed=3)
    kinds = {type(e).__struct_config__.tag for e in events}
    assert kinds >= {t for t in EVENT_TYPES if t.startswith("call.")} - {"call.flowed_out"}
    assert "agent.state_changed" in kinds
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "event ids sort in emission order (a tie-breaker for consumers)"
    instants = [e.occurred_at for e in events]
    assert instants == sorted(instants)
    zones = {
        "acme-insurance": ZoneInfo("Europe/London"),
        "globex-telco": ZoneInfo("America/New_York"),
    }
    for e in events:
        assert e.occurred_at.utcoffset() == e.occurred_at.astimezone(zones[e.tenant_id]).utcoffset()
    # Every event type, validated against the published JSON Schema.
    checked: Counter[str] = Counter()
    for e in events:
        body = json.loads(encode_event(e))
        if checked[body["event_type"]] < 30:
            checked[body["event_type"]] += 1
            schema = REGISTRY.contents(
                f"https://callpulse.example/schemas/{body['event_type']}.json"
            )
            jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(body)
    assert len(checked) >= 9


def test_same_seed_same_bytes_other_seed_other_events() -> None:
    scenario = load_scenario(SCENARIOS / "demo.toml")

    def run(seed: int, start: datetime = MONDAY) -> bytes:
        return b"".join(
            encode_event(e) + b"\n" for e in simulate(scenario, seed, start, timedelta(hours=6))
        )

    first = run(5)
    assert first.count(b"\n") > 500
    assert run(5) == first
    assert run(6) != first
    later = run(5, MONDAY + timedelta(hours=1))
    assert not set(first.splitlines()) & set(later.splitlines())


def test_start_must_be_aware_and_duration_positive() -> None:
    scenario = load_scenario(SCENARIOS / "erlang-c.toml")
    with pytest.raises(ValueError, match="timezone-aware"):
        simulate(scenario, 1, datetime(2026, 1, 1), timedelta(hours=1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="positive"):
        simulate(scenario, 1, MONDAY, timedelta(0))
    with pytest.raises(ValueError, match="64 bits"):
        simulate(scenario, 10**30, MONDAY, timedelta(hours=1))


def test_an_endless_run_is_consumed_lazily() -> None:
    """A live feed asks for an unbounded run: days are planned as they come."""
    scenario = load_scenario(SCENARIOS / "demo.toml")
    events = list(itertools.islice(simulate(scenario, 1, MONDAY, timedelta.max), 5000))
    assert len(events) == 5000
    assert events[-1].occurred_at - MONDAY > timedelta(hours=6)


# --- legs ---------------------------------------------------------------------------------


def test_every_leg_is_consistent() -> None:
    """Each leg's events come in the documented order, agents handle one call at a time and
    are on_call while talking, transfers continue on the target queue with the right visit
    number, and the KPI core's leg state machine finds no anomaly."""
    events = emitted(SCENARIOS / "demo.toml", hours=48, seed=11)
    legs = legs_of(events)
    ends = ("call.answered", "call.abandoned", "call.flowed_out")
    complete = 0
    for key, leg in legs.items():
        for kind, found in leg.items():
            assert len(found) == 1 or kind.startswith("call.hold"), (key, kind)
        (queued,) = leg["call.queued"]
        outcomes = [kind for kind in ends if kind in leg]
        assert len(outcomes) <= 1, (key, outcomes)
        if outcomes and outcomes[0] != "call.answered":
            assert set(leg) == {"call.queued", outcomes[0]}, key
            assert seconds(queued, leg[outcomes[0]][0]) >= 0
            complete += 1
            continue
        if not outcomes:
            assert set(leg) == {"call.queued"}, key  # still waiting at the end of the run
            continue
        chain: list[CallLegEvent] = [queued, leg["call.answered"][0]]
        starts, stops = leg.get("call.hold_started", []), leg.get("call.hold_ended", [])
        assert len(stops) <= len(starts) <= 1
        chain += starts + stops
        talk_end = leg.get("call.ended", []) + leg.get("call.transferred", [])
        assert len(talk_end) <= 1, key
        assert not talk_end or len(stops) == len(starts), key
        chain += talk_end
        if "call.wrapup_ended" in leg:
            assert talk_end, key
            chain += leg["call.wrapup_ended"]
            complete += 1
        assert [e.occurred_at for e in chain] == sorted(e.occurred_at for e in chain), key
        fold = new_leg(queued)
        for part in (part for found in leg.values() for part in found):
            fold.apply(part, at_ms(part))
        assert fold.anomalies() == {}, key
        assert fold.is_complete() == ("call.wrapup_ended" in leg)
    assert complete > 1500

    # Agents: one call at a time, on_call while talking, never available/aux/offline busy.
    state: dict[str, str] = {}
    busy: dict[str, LegKey] = {}
    for e in events:
        if isinstance(e, AgentStateChanged):
            if e.state in ("available", "aux", "offline"):
                assert e.agent_id not in busy, e
            state[e.agent_id] = e.state
        elif isinstance(e, CallAnswered):
            assert e.agent_id not in busy, e
            busy[e.agent_id] = leg_key(e)
        elif isinstance(e, CallEnded | CallTransferred | CallHoldStarted | CallHoldEnded):
            agent = agent_of(legs[leg_key(e)])
            assert state[agent] == "on_call" and busy[agent] == leg_key(e), e
        elif isinstance(e, CallWrapupEnded):
            agent = agent_of(legs[leg_key(e)])
            assert busy.pop(agent) == leg_key(e)

    # Transfers: the caller is queued on the target at the same instant, as the next visit.
    visits: dict[tuple[str, str], list[int]] = defaultdict(list)
    for e in events:
        if isinstance(e, CallQueued):
            visits[(e.call_id, e.queue_id)].append(e.visit)
    assert all(v == list(range(1, len(v) + 1)) for v in visits.values())
    transfers = [e for e in events if isinstance(e, CallTransferred)]
    assert len(transfers) > 20
    for t in transfers:
        assert t.to_queue_id is not None
        target_visits = visits[(t.call_id, t.to_queue_id)]
        nexts = [
            leg["call.queued"][0]
            for (tenant, call, queue, _), leg in legs.items()
            if (tenant, call, queue) == (t.tenant_id, t.call_id, t.to_queue_id)
            and leg["call.queued"][0].occurred_at == t.occurred_at
        ]
        assert len(nexts) == 1 and nexts[0].visit in target_visits, t


# --- arrivals -----------------------------------------------------------------------------

ARRIVALS = """
[[tenants.queues]]
id = "q"
rate_per_hour = 360
profile = [["06:00", 2.0], ["09:00", 1.0], ["17:00", 0.25], ["22:00", 0.0]]
patience = { distribution = "constant", value = 0 }
talk = { distribution = "constant", value = 60 }
"""
PERIODS = [(6, 9, 2.0), (9, 17, 1.0), (17, 22, 0.25)]  # local hours; 22:00-06:00 is closed


def test_arrivals_are_poisson_with_the_intraday_profile() -> None:
    """Piecewise-constant Poisson arrivals in the tenant's local time, across a DST change
    (America/New_York, 2026-11-01), checked against the configured rates:

    - count per period within 4 SE of λ·T (SE = √(λ·T), Poisson);
    - rate ratio between periods = multiplier ratio within 4 SE (SE of a log ratio of
      Poisson counts ≈ √(1/n₁ + 1/n₂));
    - index of dispersion of 15-minute counts within 4 SE of 1 (SE ≈ √(2/(k-1)) for k bins);
    - gaps inside the 09:00-17:00 period: exponential with mean 10 s (KS p > 0.001);
    - no arrival in the closed period.
    """
    zone = ZoneInfo("America/New_York")
    start = datetime(2026, 10, 27, tzinfo=UTC)
    days = 10
    events = emitted(centre(ARRIVALS, timezone="America/New_York"), hours=24 * days, start=start)
    end = start + timedelta(days=days)
    arrivals = sorted(e.occurred_at.timestamp() for e in events if isinstance(e, CallQueued))
    assert all(isinstance(e, CallQueued | CallAbandoned) for e in events)

    def utc(day: date, hour: int) -> float:
        return datetime.combine(day, time(hour), tzinfo=zone).timestamp()

    def count(a: float, b: float) -> int:
        return bisect.bisect_left(arrivals, b) - bisect.bisect_left(arrivals, a)

    observed: dict[float, int] = Counter()
    exposure: dict[float, float] = defaultdict(float)  # hours of each multiplier inside the run
    bins: dict[float, list[int]] = defaultdict(list)
    gaps: list[float] = []
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        for first, last, multiplier in PERIODS:
            a, b = max(utc(day, first), start.timestamp()), min(utc(day, last), end.timestamp())
            if b <= a:
                continue
            observed[multiplier] += count(a, b)
            exposure[multiplier] += (b - a) / 3600
            edges = [a + 900 * i for i in range(int((b - a) // 900) + 1)]
            bins[multiplier] += [count(x, x + 900) for x in edges[:-1]]
            if multiplier == 1.0:
                inside = arrivals[bisect.bisect_left(arrivals, a) : bisect.bisect_left(arrivals, b)]
                gaps += [y - x for x, y in itertools.pairwise(inside)]
        day += timedelta(days=1)
    assert sum(observed.values()) == len(arrivals), "arrivals outside the open periods"
    for multiplier, n in observed.items():
        expected = 360 * multiplier * exposure[multiplier]
        assert abs(n - expected) < 4 * math.sqrt(expected), (multiplier, n, expected)
        counts = bins[multiplier]
        dispersion = statistics.variance(counts) / statistics.fmean(counts)
        assert abs(dispersion - 1) < 4 * math.sqrt(2 / (len(counts) - 1)), (multiplier, dispersion)
    rate = {m: observed[m] / exposure[m] for m in observed}
    for m1, m2 in [(2.0, 1.0), (1.0, 0.25), (2.0, 0.25)]:
        se = math.sqrt(1 / observed[m1] + 1 / observed[m2])
        assert abs(math.log(rate[m1] / rate[m2]) - math.log(m1 / m2)) < 4 * se, (m1, m2)
    assert_mean(gaps, 10.0, 10.0, "gap")
    assert ks_pvalue(gaps, exponential_cdf(10.0)) > 0.001
    local_hours = {datetime.fromtimestamp(t, zone).hour for t in arrivals}
    assert local_hours <= set(range(6, 22))


# --- patience and timeouts ----------------------------------------------------------------

PATIENCE = """
[[tenants.queues]]
id = "exp"
rate_per_hour = 3600
patience = { distribution = "exponential", mean = 60 }
timeout = 90
talk = { distribution = "constant", value = 60 }

[[tenants.queues]]
id = "logn"
rate_per_hour = 1800
patience = { distribution = "lognormal", mean = 100, sd = 50 }
talk = { distribution = "constant", value = 60 }
"""


def test_patience_and_queue_timeout() -> None:
    """Nobody answers: each caller leaves after their patience (exponential, mean 60 s),
    or flows out with reason "timeout" at exactly 90 s, whichever is first."""
    events = emitted(centre(PATIENCE), hours=3)
    legs = legs_of(events)
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (_, _, queue, _), leg in legs.items():
        for kind in ("call.abandoned", "call.flowed_out"):
            for e in leg.get(kind, []):
                waits[(queue, kind)].append(seconds(leg["call.queued"][0], e))
                if isinstance(e, CallFlowedOut):
                    assert e.reason == "timeout"
    timeout, mean = 90.0, 60.0
    flowed, abandoned = waits[("exp", "call.flowed_out")], waits[("exp", "call.abandoned")]
    assert set(flowed) == {timeout}
    assert_share(len(flowed), len(flowed) + len(abandoned), math.exp(-timeout / mean), "timeouts")
    # Abandoned waits: exponential truncated at the timeout.
    mass = 1 - math.exp(-timeout / mean)
    truncated_mean = mean - timeout * math.exp(-timeout / mean) / mass
    second_moment = (
        2 * mean**2 - math.exp(-timeout / mean) * (timeout**2 + 2 * mean * timeout + 2 * mean**2)
    ) / mass
    truncated_sd = math.sqrt(second_moment - truncated_mean**2)
    assert_mean(abandoned, truncated_mean, truncated_sd, "abandoned wait")
    assert ks_pvalue(abandoned, lambda x: exponential_cdf(mean)(x) / mass) > 0.001
    lognormal = waits[("logn", "call.abandoned")]
    assert len(lognormal) > 4000 and not waits[("logn", "call.flowed_out")]
    assert_mean(lognormal, 100, 50, "lognormal patience")
    assert ks_pvalue(lognormal, lognormal_cdf(100, 50)) > 0.001


# --- handle times and transfers -----------------------------------------------------------

HANDLING = """
[[tenants.queues]]
id = "main"
rate_per_hour = 900
talk = { distribution = "lognormal", mean = 240, sd = 120 }
hold = { probability = 0.3, length = { distribution = "exponential", mean = 40 } }
wrapup = { distribution = "exponential", mean = 30 }
transfers = [{ to = "second", probability = 0.2 }]

[[tenants.queues]]
id = "second"
rate_per_hour = 300
talk = { distribution = "exponential", mean = 120 }
wrapup = { distribution = "constant", value = 20 }
transfers = [{ to = "main", probability = 0.3 }]
"""
PLENTY = """
[[tenants.agents]]
team = "all"
count = 300
skills = ["main", "second"]
"""


def test_handle_times_holds_and_transfers_follow_their_distributions() -> None:
    """With far more agents than calls nobody waits, and talk (ended or transferred -
    answered - hold), hold and wrap-up durations follow the configured distributions; hold
    and transfer shares are binomial around their probabilities."""
    events = emitted(centre(HANDLING, PLENTY), hours=12)
    talk: dict[str, list[float]] = defaultdict(list)
    wrap: dict[str, list[float]] = defaultdict(list)
    holds: list[float] = []
    answered: Counter[str] = Counter()
    held: Counter[str] = Counter()
    transferred: Counter[str] = Counter()
    for (_, _, queue, _), leg in legs_of(events).items():
        if "call.wrapup_ended" not in leg:
            continue
        answer = leg["call.answered"][0]
        assert seconds(leg["call.queued"][0], answer) == 0
        answered[queue] += 1
        hold = 0.0
        if "call.hold_started" in leg:
            held[queue] += 1
            hold = seconds(leg["call.hold_started"][0], leg["call.hold_ended"][0])
            holds.append(hold)
        (end,) = leg.get("call.ended", []) + leg.get("call.transferred", [])
        transferred[queue] += isinstance(end, CallTransferred)
        talk[queue].append(seconds(answer, end) - hold)
        wrap[queue].append(seconds(end, leg["call.wrapup_ended"][0]))
    assert answered["main"] > 9_000 and answered["second"] > 4_000
    assert_mean(talk["main"], 240, 120, "lognormal talk")
    assert ks_pvalue(talk["main"], lognormal_cdf(240, 120)) > 0.001
    assert_mean(talk["second"], 120, 120, "exponential talk")
    assert ks_pvalue(talk["second"], exponential_cdf(120)) > 0.001
    assert_share(held["main"], answered["main"], 0.3, "holds")
    assert held["second"] == 0
    assert_mean(holds, 40, 40, "hold")
    assert ks_pvalue(holds, exponential_cdf(40)) > 0.001
    assert_mean(wrap["main"], 30, 30, "wrap-up")
    assert ks_pvalue(wrap["main"], exponential_cdf(30)) > 0.001
    assert set(wrap["second"]) == {20.0}
    assert_share(transferred["main"], answered["main"], 0.2, "transfers from main")
    assert_share(transferred["second"], answered["second"], 0.3, "transfers from second")


# --- agents: shifts, breaks, routing ------------------------------------------------------

ROUTING_QUEUES = """
[[tenants.queues]]
id = "vip"
rate_per_hour = 30
priority = 5
profile = [["00:00", 0], ["08:00", 1], ["20:00", 0]]
patience = { distribution = "exponential", mean = 400 }
talk = { distribution = "exponential", mean = 240 }
wrapup = { distribution = "constant", value = 30 }

[[tenants.queues]]
id = "std"
rate_per_hour = 60
profile = [["00:00", 0], ["08:00", 1], ["20:00", 0]]
patience = { distribution = "exponential", mean = 400 }
talk = { distribution = "exponential", mean = 240 }
wrapup = { distribution = "constant", value = 30 }

[[tenants.queues]]
id = "back"
rate_per_hour = 20
profile = [["00:00", 0], ["08:00", 1], ["20:00", 0]]
patience = { distribution = "exponential", mean = 400 }
talk = { distribution = "exponential", mean = 240 }
"""
ROUTING_AGENTS = """
[[tenants.agents]]
team = "front"
count = 4
skills = [{ queue = "vip", level = 1 }, { queue = "std", level = 1 }]
shift = { start = "08:00", end = "20:00" }
breaks = [{ start = "15:00", minutes = 15, reason = "break" }]

[[tenants.agents]]
team = "back"
count = 3
skills = ["back", "std"]
shift = { start = "09:00", end = "17:00", days = ["mon", "wed"] }
breaks = [{ start = "12:00", minutes = 30, reason = "lunch", jitter_minutes = 20 }]
"""
LEVELS = {
    "front": {"vip": 1, "std": 1},
    "back": {"back": 1, "std": 2},
}
PRIORITY = {"vip": 5, "std": 0, "back": 0}


def rank(levels: dict[str, int], queue: str, queued: datetime) -> tuple[int, int, datetime]:
    """How much an agent with skill `levels` prefers a waiting leg (smaller: sooner)."""
    return (levels[queue], -PRIORITY[queue], queued)


def test_routing_shifts_and_breaks() -> None:
    """Replaying the events in order: a new call goes to the longest-idle available agent
    with the skill; an agent taking a waiting call takes the one it should prefer (lowest
    skill level, then highest priority, then longest waiting); agents log on and off at
    their local shift times (Asia/Kathmandu, +05:45) on their days only, finishing a call
    first; breaks start at their time (or after the call in progress) and last their length."""
    zone = ZoneInfo("Asia/Kathmandu")
    start = datetime(2026, 11, 23, tzinfo=zone)  # Monday 00:00 local
    events = emitted(
        centre(ROUTING_QUEUES, ROUTING_AGENTS, timezone="Asia/Kathmandu"), hours=72, start=start
    )
    team = {e.agent_id: e.team_id for e in events if isinstance(e, AgentStateChanged)}
    assert len(team) == 7
    waiting: dict[LegKey, CallQueued] = {}
    idle_since: dict[str, datetime] = {}
    state: dict[str, AgentStateChanged] = {}
    last_wrap: dict[str, datetime] = {}
    queued_at: dict[LegKey, datetime] = {}
    agent_of: dict[LegKey, str] = {}
    picks = fresh = 0
    for e in events:
        if isinstance(e, CallQueued):
            waiting[leg_key(e)] = e
            queued_at[leg_key(e)] = e.occurred_at
        elif isinstance(e, CallAnswered):
            key = leg_key(e)
            waiting.pop(key)
            agent_of[key] = e.agent_id
            levels = LEVELS[team[e.agent_id]]
            if queued_at[key] == e.occurred_at and e.agent_id in idle_since:
                # A new call: the longest idle of the available agents with the skill.
                fresh += 1
                candidates = [idle_since[a] for a in idle_since if e.queue_id in LEVELS[team[a]]]
                assert idle_since[e.agent_id] == min(candidates), e
            else:
                # The agent took a waiting call: none it prefers may still be waiting.
                picks += 1

                mine = rank(levels, e.queue_id, queued_at[key])
                better = [
                    w
                    for w in waiting.values()
                    if w.queue_id in levels and rank(levels, w.queue_id, w.occurred_at) < mine
                ]
                assert not better, (e, better[:1])
            idle_since.pop(e.agent_id, None)
        elif isinstance(e, CallAbandoned | CallFlowedOut):
            waiting.pop(leg_key(e))
        elif isinstance(e, CallWrapupEnded):
            last_wrap[agent_of[leg_key(e)]] = e.occurred_at
        elif isinstance(e, AgentStateChanged):
            before = state.get(e.agent_id)
            state[e.agent_id] = e
            local = e.occurred_at.astimezone(zone)
            shift = ((8, 0), (20, 0)) if e.team_id == "front" else ((9, 0), (17, 0))
            if e.state == "available":
                idle_since[e.agent_id] = e.occurred_at
            else:
                idle_since.pop(e.agent_id, None)
            finishing = last_wrap.get(e.agent_id) == e.occurred_at
            if before is not None and before.state == "offline" and e.state != "offline":
                assert (local.hour, local.minute, local.second) == (*shift[0], 0), e
                if e.team_id == "back":
                    assert local.strftime("%a") in ("Mon", "Wed"), e
            if e.state == "offline" and before is not None:
                end = local.replace(hour=shift[1][0], minute=0, second=0, microsecond=0)
                assert local == end or (local > end and finishing), e
            if e.state == "aux":
                due = (15, 0) if e.reason == "break" else (12, 0)
                due_at = local.replace(hour=due[0], minute=due[1], second=0, microsecond=0)
                jitter = timedelta(minutes=0 if e.reason == "break" else 20)
                assert due_at <= local <= due_at + jitter or (local > due_at and finishing), e
            if before is not None and before.state == "aux" and e.state != "offline":
                length = timedelta(minutes=15 if before.reason == "break" else 30)
                assert e.occurred_at - before.occurred_at == length, e
    assert picks > 300 and fresh > 100
    kinds = Counter(
        (e.team_id, e.state, e.reason) for e in events if isinstance(e, AgentStateChanged)
    )
    assert kinds[("back", "aux", "lunch")] == 3 * 2  # Monday and Wednesday, not Tuesday
    assert kinds[("front", "aux", "break")] == 4 * 3


# --- Erlang C -----------------------------------------------------------------------------


def test_erlang_c_from_the_emitted_events() -> None:
    """scenarios/erlang-c.toml (M/M/14, λ = 200/h, AHT 180 s) run for 1,000 simulated hours
    (≈ 200,000 calls) agrees with Erlang C within 3 standard errors on P(wait > 0), SL(20 s)
    (wait ≤ 20 s), ASA and occupancy, all computed here from the NDJSON events alone.

    Standard errors by batch means: after a 1-hour warm-up the run is cut into 25 batches of
    ~40 h by the instant the call was queued (occupancy: by the start of each agent state
    interval); SE = sd(batch values) / √25. Batches this long are nearly independent
    (the queue forgets its state within minutes), which is what the method needs.
    """
    hours, warmup, batches = 1000, 1.0, 25
    batch_hours = (hours - warmup) / batches
    t0 = MONDAY.timestamp() + warmup * 3600
    calls = [0] * batches
    waited = [0] * batches
    within = [0] * batches
    wait_sum = [0.0] * batches
    busy = [0.0] * batches
    staffed = [0.0] * batches
    queued: dict[str, float] = {}
    since: dict[str, tuple[str, float]] = {}

    class Measure:
        """A sink that reads each event back from its JSON, as a consumer would."""

        def write(self, events: Sequence[Event]) -> None:
            for line in encode_batch(events).splitlines():
                self.read(decode_event(line))

        def read(self, e: Event | EventError) -> None:
            assert not isinstance(e, EventError | CallAbandoned | CallFlowedOut), e
            at = e.occurred_at.timestamp()
            if isinstance(e, CallQueued):
                queued[e.call_id] = at
            elif isinstance(e, CallAnswered):
                q = queued.pop(e.call_id)
                if q >= t0:
                    b = int((q - t0) // (batch_hours * 3600))
                    wait = at - q
                    calls[b] += 1
                    waited[b] += wait > 0
                    within[b] += wait <= 20
                    wait_sum[b] += wait
            elif isinstance(e, AgentStateChanged):
                previous = since.get(e.agent_id)
                if previous is not None and previous[1] >= t0:
                    b = int((previous[1] - t0) // (batch_hours * 3600))
                    staffed[b] += at - previous[1]
                    busy[b] += (at - previous[1]) * (previous[0] in ("on_call", "wrapup"))
                since[e.agent_id] = (e.state, at)

        def flush(self) -> None: ...

        def close(self) -> None: ...

    scenario = load_scenario(SCENARIOS / "erlang-c.toml")
    pump(simulate(scenario, 1, MONDAY, timedelta(hours=hours)), [Measure()], origin=MONDAY)
    theory = erlang_c(200 / 3600, 180, 14)
    measured = {
        "P(wait)": ([w / n for w, n in zip(waited, calls, strict=True)], theory.p_wait),
        "SL(20s)": ([w / n for w, n in zip(within, calls, strict=True)], theory.service_level(20)),
        "ASA": ([w / n for w, n in zip(wait_sum, calls, strict=True)], theory.asa),
        "occupancy": ([b / s for b, s in zip(busy, staffed, strict=True)], theory.occupancy),
    }
    assert sum(calls) > 190_000
    report = []
    for name, (values, expected) in measured.items():
        mean, se = statistics.fmean(values), statistics.stdev(values) / math.sqrt(batches)
        report.append(f"{name}: {mean:.5f} ± {se:.5f} (Erlang C {expected:.5f})")
        assert abs(mean - expected) < 3 * se, report[-1]
    print("\n".join(report))


# --- scenario files -----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_load(path: Path) -> None:
    scenario = load_scenario(path)
    events = list(simulate(scenario, 1, MONDAY, timedelta(minutes=30)))
    assert any(isinstance(e, CallQueued) for e in events)


def test_the_documented_example_is_a_valid_scenario() -> None:
    import services.simulator.scenario as module

    assert module.__doc__ is not None
    example = textwrap.dedent(module.__doc__.split("Shape of a file::")[1])
    scenario = parse_scenario(example)
    assert [q.id for q in scenario.tenants[0].queues] == ["sales", "support"]
    assert scenario.tenants[0].agents[0].skill_levels() == [("sales", 1), ("support", 2)]


def test_erlang_c_scenario_is_the_golden_fixture() -> None:
    scenario = load_scenario(SCENARIOS / "erlang-c.toml")
    (tenant,) = scenario.tenants
    (queue,) = tenant.queues
    (group,) = tenant.agents
    assert queue.rate_per_hour == 200 and not queue.profile
    assert msgspec.to_builtins(queue.talk) == {"distribution": "exponential", "mean": 180}
    assert queue.patience.mean_s() is None and queue.timeout is None
    assert queue.wrapup.mean_s() == 0 and queue.hold.probability == 0 and not queue.transfers
    assert group.count == 14 and group.shift is None and not group.breaks


def test_demo_and_large_are_the_sizes_the_brief_asks_for() -> None:
    demo, large = load_scenario(SCENARIOS / "demo.toml"), load_scenario(SCENARIOS / "large.toml")
    assert len(demo.tenants) == 2
    assert 3 <= sum(len(t.queues) for t in demo.tenants) <= 4
    assert 15 <= sum(g.count for t in demo.tenants for g in t.agents) <= 30
    assert len(large.tenants) >= 4
    assert sum(g.count for t in large.tenants for g in t.agents) >= 300


BASE = """
name = "bad"
[[tenants]]
id = "acme"
timezone = "Europe/London"
[[tenants.queues]]
id = "q1"
rate_per_hour = 10
talk = { distribution = "exponential", mean = 180 }
"""


AGENTS = '[[tenants.agents]]\nteam = "t"\ncount = 2\nskills = ["q1"]\n'
Q = "tenants[0].queues[0]"
BAD = [
    ("priority = 12", f"{Q}.priority: Expected `int` <= 9"),
    ("timeout = -5", f"{Q}.timeout: Expected `float` > 0.0"),
    (
        'patience = { distribution = "gamma" }',
        f"{Q}.patience.distribution: Invalid value 'gamma'; "
        "expected one of: exponential, lognormal, constant, none",
    ),
    (
        'wrapup = { distribution = "lognormal", mean = 30 }',
        f"{Q}.wrapup.sd: required field is missing",
    ),
    ("talkk = 3", f"{Q}.talkk: unknown field (misspelt?)"),
    ('profile = [["9:00", 1.0]]', f'{Q}.profile[0][0]: expected a local time "HH:MM"'),
    (
        'profile = [["10:00", 1.0], ["09:00", 1.0]]',
        f"{Q}.profile: period start times must be strictly increasing",
    ),
    ("hold = { probability = 0.2 }", f"{Q}.hold.length: required when hold.probability > 0"),
    (
        'hold = { probability = 1.5, length = { distribution = "constant", value = 1 } }',
        f"{Q}.hold.probability: Expected `float` <= 1.0",
    ),
    (
        'transfers = [{ to = "nowhere", probability = 0.1 }]',
        f"{Q}.transfers[0].to: no queue 'nowhere' in this tenant",
    ),
    (
        AGENTS.replace("q1", "q2"),
        "tenants[0].agents[0].skills[0]: no queue 'q2' in this tenant",
    ),
    (
        AGENTS + 'breaks = [{ start = "12:00", minutes = 30 }]',
        "tenants[0].agents[0].breaks: breaks need a `shift`",
    ),
    (
        AGENTS + 'shift = { start = "22:00", end = "06:00" }\n'
        'breaks = [{ start = "07:00", minutes = 30 }]',
        "tenants[0].agents[0].breaks[0].start: 07:00 is outside the shift 22:00-06:00",
    ),
    (
        AGENTS + 'shift = { start = "08:00", end = "16:00", days = [] }',
        "tenants[0].agents[0].shift.days: Expected `array` of length >= 1",
    ),
    (
        AGENTS + AGENTS,
        "tenants[0].agents[1]: agent id 't-01' is also used by another group",
    ),
]


@pytest.mark.parametrize(("change", "message"), BAD)
def test_scenario_errors_name_the_field(change: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(BASE + change + "\n", origin="bad.toml")
    assert str(caught.value).startswith(f"bad.toml: {message}"), str(caught.value)


def test_unknown_time_zone_and_broken_toml() -> None:
    with pytest.raises(ScenarioError, match=r"tenants\[0\]\.timezone: unknown IANA time zone"):
        parse_scenario(BASE.replace("Europe/London", "Mars/Olympus"))
    with pytest.raises(ScenarioError, match="not valid TOML"):
        parse_scenario(BASE + "priority = = 3")


# --- sinks and the command line -----------------------------------------------------------


def test_cli_writes_the_same_ndjson_as_the_iterator(tmp_path: Path) -> None:
    out = tmp_path / "events.ndjson"
    argv = ["simulate", str(SCENARIOS / "demo.toml"), "--seed", "4"]
    argv += ["--start", "2026-11-23T08:00:00+00:00", "--duration", "1h30m", "--out", str(out)]
    assert main(argv) == 0
    scenario = load_scenario(SCENARIOS / "demo.toml")
    expected = b"".join(
        encode_event(e) + b"\n"
        for e in simulate(scenario, 4, datetime(2026, 11, 23, 8, tzinfo=UTC), timedelta(hours=1.5))
    )
    assert out.read_bytes() == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "soon"], "--duration 'soon': expected e.g. 90s, 30m, 8h, 2d or 1h30m"),
        (["--start", "2026-11-23T08:00:00"], "give an offset"),
        (["--url", "http://127.0.0.1:9"], "--url needs an API key"),
        (["--speed", "0"], "--speed must be positive"),
    ],
)
def test_cli_errors_are_clear(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CALLPULSE_API_KEY", raising=False)
    assert main(["simulate", str(SCENARIOS / "demo.toml"), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_reports_scenario_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + "priority = 12\n")
    assert main(["simulate", str(bad)]) == 2
    assert "tenants[0].queues[0].priority: Expected `int` <= 9" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read the scenario" in capsys.readouterr().err
    assert "simulate" in build_parser().format_help()


def few_events(n: int) -> list[Event]:
    scenario = load_scenario(SCENARIOS / "erlang-c.toml")
    events = []
    for e in simulate(scenario, 1, MONDAY, timedelta(hours=10)):
        events.append(e)
        if len(events) == n:
            return events
    raise AssertionError("not enough events")


def test_http_sink_batches_authenticates_and_honours_retry_after() -> None:
    requests: list[httpx.Request] = []
    answers = iter([httpx.Response(503, headers={"Retry-After": "2"})] + [httpx.Response(202)] * 10)

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers)

    slept: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(handler))
    sink = HttpSink("http://svc:8000/", "k-123", client=client, sleep=slept.append)
    events = few_events(250)
    stats = pump(events, [sink], origin=MONDAY, batch_size=100)
    assert (stats.events, stats.batches) == (250, 3)
    assert slept == [2.0]
    assert [r.url.path for r in requests] == ["/v1/events"] * 4
    assert all(r.headers["Authorization"] == "Bearer k-123" for r in requests)
    bodies = [json.loads(r.content) for r in requests]
    assert bodies[0] == bodies[1], "a retry resends the same events (same ids)"
    sent = [e["event_id"] for body in bodies[1:] for e in body]
    assert sent == [e.event_id for e in events]
    assert sink.posted == 250


def test_http_sink_gives_up_clearly() -> None:
    refused = HttpSink(
        "http://svc",
        "k",
        client=httpx.Client(
            transport=httpx.MockTransport(lambda r: httpx.Response(401, text="bad key"))
        ),
    )
    with pytest.raises(SinkError, match="answered 401: bad key"):
        refused.write(few_events(3))
    slept: list[float] = []
    busy = HttpSink(
        "http://svc",
        "k",
        client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503))),
        attempts=4,
        sleep=slept.append,
    )
    with pytest.raises(SinkError, match="failed 4 times"):
        busy.write(few_events(3))
    assert slept == [0.5, 1.0, 2.0]
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 5.0) == 0.0
    assert retry_after("soon", 5.0) == 5.0


def test_pacing_follows_simulated_time() -> None:
    """At speed 60, one simulated hour takes one wall minute; events are delivered before
    the pump sleeps, so a live consumer is never more than `linger` behind."""
    now = [0.0]
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        now[0] += seconds

    delivered: list[tuple[float, int]] = []

    class Recorder:
        def write(self, events: Sequence[Event]) -> None:
            for e in events:
                lag = now[0] - (e.occurred_at - MONDAY).total_seconds() / 60
                assert 0 <= lag <= 0.2 + 1e-9
            delivered.append((now[0], len(events)))

        def flush(self) -> None: ...

        def close(self) -> None: ...

    scenario = load_scenario(SCENARIOS / "erlang-c.toml")
    events = list(simulate(scenario, 1, MONDAY, timedelta(hours=1)))
    stats = pump(events, [Recorder()], origin=MONDAY, speed=60, clock=lambda: now[0], sleep=sleep)
    assert stats.events == len(events) == sum(n for _, n in delivered)
    last = (events[-1].occurred_at - MONDAY).total_seconds() / 60
    assert now[0] == pytest.approx(last)
    assert len(delivered) > 50
