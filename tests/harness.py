"""The replay oracle harness: an event stream, a fault plan, a mode, and an exact comparison.

The pieces, in the order a reliability test uses them:

1. `simulated_events(...)` (or any list of wire bytes): the stream a source would send.
2. `FaultPlan(...).deliver(events)` -> `Delivery`: the same events in the order they reach
   the product, with duplicates, reordering within the allowed lateness, events late beyond
   it (restatements) or beyond the correction horizon (quarantine), and positioned `Fault`s
   (SIGKILL, or any kind a runner knows: e.g. "stop_postgres", "pause_broker"). Deterministic
   by seed.
3. A runner executes the delivery and its faults against a real mode and reads the store:
   `run_embedded(delivery, workdir)` drives a real `callpulse run` process over HTTP
   (tests/harness_distributed.py does the same for the distributed mode).
4. `expected(delivery.wire, lateness, horizon)`: the batch recomputation from the
   deduplicated events, written without the core (tests/oracle.py), after removing what the
   product must quarantine given the delivery order alone; it also says which buckets a
   late event restates.
5. `assert_exact(stored, expected)`: every queue bucket, agent bucket and leg, integer for
   integer, with a readable diff.

The lateness rule, as the product states it (services/kpi/centre.py) and re-expressed here:
with M the largest event time delivered before an event (per aggregation state, i.e. per
partition in the distributed mode), an event older than `M - horizon` is quarantined; one
older than `M - lateness` is late and the buckets it changes are restated. The product also
forgets (evicts) buckets up to one minute past `M - horizon` when it checkpoints, and sets
aside an event that would change such a bucket; since that instant depends on timing, the
harness calls events near that edge *ambiguous*, the fault plan never makes one, and
`expected` refuses a delivery that holds one (the test would not be deterministic).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec

from services.kpi.counters import AgentCounters, Counters
from tests.oracle import MIN, batch, hold_between, ms, nonzero

ROOT = Path(__file__).resolve().parents[1]

QKey = tuple[str, str, int]
AKey = tuple[str, str, int]
LegKey = tuple[str, str, str, int]

#: Leg fields the harness recomputes independently (a subset of the stored leg record:
#: priority, caller key, flow-out reason and anomaly counts are not recomputed).
LEG_FIELDS = (
    "queued_at_ms", "outcome", "outcome_at_ms", "wait_ms", "agent_id", "transferred_at_ms",
    "handled_at_ms", "talk_ms", "hold_ms", "wrap_ms",
)  # fmt: skip

_decode = msgspec.json.Decoder()


def soak_factor() -> int:
    """How much longer to run (1 normally; `CALLPULSE_SOAK=N` for the soak runs)."""
    return max(1, int(os.environ.get("CALLPULSE_SOAK", "1")))


def simulated_events(
    minutes: int = 40, seed: int = 11, scenario: str = "large",
    start: datetime = datetime(2026, 11, 20, 8, 0, tzinfo=UTC),
) -> list[bytes]:  # fmt: skip
    """`minutes` of a scenario of scenarios/ (default the large centre, about 310 events a
    minute), as the wire bytes a source would send, in event-time order."""
    from services.kpi.events import encode_event
    from services.simulator.engine import simulate
    from services.simulator.scenario import load_scenario

    loaded = load_scenario(ROOT / "scenarios" / f"{scenario}.toml")
    return [encode_event(e) for e in simulate(loaded, seed, start, timedelta(minutes=minutes))]


# -- faults and the delivery ----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One fault a runner executes once the delivery reaches `at`.

    `kind` names what to do; a runner executes the kinds it knows and fails on others.
    Known here: "sigkill" (the embedded runner kills `callpulse run` with SIGKILL, `delay_s`
    into the POST of the batch holding position `at`, restarts it, and waits until it has
    caught up). Other runners add their own (e.g. "sigkill_worker", "stop_postgres" with
    `duration_s`, "pause_broker"). `at` is a fraction of the delivery (0 = before the first
    event, 1 = after the last); `params` are plain values the runner interprets.
    """

    kind: str
    at: float
    params: dict[str, Any] = field(default_factory=dict)

    def index(self, n: int) -> int:
        """The delivery position (events delivered before the fault) in a delivery of n."""
        return min(n, max(0, round(self.at * n)))


@dataclass
class Delivery:
    """What reaches the product, in order, and what the plan did to it.

    `wire` holds every delivery (duplicates included); `delays_ms` maps the event id of each
    moved event to how far (event time, ms) it was held back; `kinds` maps it to
    "reordered", "late" or "beyond_horizon"; `duplicates` counts the extra deliveries, of
    which `after_restart` (event ids) are delivered after a fault that restarts the product
    while their first copy was delivered before it.
    """

    wire: list[bytes]
    faults: list[Fault]
    delays_ms: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    after_restart: list[str] = field(default_factory=list)

    def unique_events(self) -> int:
        return len(self.wire) - self.duplicates

    def figures(self) -> dict[str, Any]:
        """Counts of what was injected, for `record(...)`."""
        counts: dict[str, int] = defaultdict(int)
        for kind in self.kinds.values():
            counts[kind] += 1
        faults: dict[str, int] = defaultdict(int)
        for f in self.faults:
            faults[f.kind] += 1
        return {
            "events": self.unique_events(), "deliveries": len(self.wire),
            "duplicates": self.duplicates, "duplicates_after_restart": len(self.after_restart),
            "reordered_within_lateness": counts["reordered"],
            "late_beyond_lateness": counts["late"],
            "beyond_horizon": counts["beyond_horizon"],
            "max_delay_s": max(self.delays_ms.values(), default=0) / 1000,
            "faults": dict(faults),
        }  # fmt: skip


RESTARTING_KINDS = frozenset({"sigkill", "sigterm", "restart"})


@dataclass(frozen=True)
class FaultPlan:
    """Disorder (fractions of the events) and faults, deterministic by `seed`.

    - `duplicates`: events delivered a second time, a little later (up to `dup_spread`
      deliveries); when the plan restarts the product, one duplicate of an event delivered
      before the first restart is delivered right after it.
    - `reordered`: events held back by less than half the allowed lateness (normal disorder).
    - `late`: events held back beyond the allowed lateness but well inside the horizon
      (they restate past buckets).
    - `beyond_horizon`: events held back beyond the correction horizon (quarantined).
    - `crashes`: SIGKILLs at random points of the delivery (between 5 % and 95 %), each
      `delay_s` (0-50 ms) into the POST of a batch.
    - `faults`: any further faults, as given.
    `lateness_ms`/`horizon_ms` must be those of the product under test.
    """

    seed: int = 0
    duplicates: float = 0.0
    reordered: float = 0.0
    late: float = 0.0
    beyond_horizon: float = 0.0
    crashes: int = 0
    faults: tuple[Fault, ...] = ()
    lateness_ms: int = 120_000
    horizon_ms: int = 7_200_000
    dup_spread: int = 2000

    def crash_faults(self, rng: random.Random) -> list[Fault]:
        return [
            Fault("sigkill", rng.uniform(0.05, 0.95), {"delay_s": rng.uniform(0, 0.05)})
            for _ in range(self.crashes)
        ]

    def deliver(self, events: Sequence[bytes]) -> Delivery:
        """The delivery of `events` (wire bytes in event-time order) under this plan."""
        return _deliver(self, list(events))


def _deliver(plan: FaultPlan, events: list[bytes]) -> Delivery:
    rng = random.Random(plan.seed)
    bodies = [_decode.decode(e) for e in events]
    times = [ms(b) for b in bodies]
    n = len(events)
    # Moves: each chosen event goes after the first event whose time is `delay` past its own.
    picks = list(range(n))
    rng.shuffle(picks)
    counts = {
        "reordered": round(plan.reordered * n), "late": round(plan.late * n),
        "beyond_horizon": round(plan.beyond_horizon * n),
    }  # fmt: skip
    lat, hor = plan.lateness_ms, plan.horizon_ms
    ranges = {
        "reordered": (1_000, max(1_000, lat // 2)),
        "late": (lat + 60_000, max(lat + 60_000, hor - 3 * 60_000)),
        "beyond_horizon": (hor + 2 * 60_000, hor + 10 * 60_000),
    }
    moved: dict[int, tuple[str, int]] = {}
    cursor = 0
    for kind, count in counts.items():
        taken = 0
        while taken < count and cursor < n:
            i = picks[cursor]
            cursor += 1
            lo, hi = ranges[kind]
            delay = rng.randint(lo, hi)
            if times[i] + delay > times[-1]:
                continue  # the stream ends before the event would be due
            moved[i] = (kind, delay)
            taken += 1
    faults = sorted([*plan.crash_faults(rng), *plan.faults], key=lambda f: f.at)
    for _ in range(5):  # drop moves the classifier calls ambiguous, then check again
        order = _order(events, times, moved)
        delivery = _with_duplicates(plan, rng, events, bodies, order, faults)
        verdict = classify(delivery.wire, lat, hor)
        ids = {bodies[i]["event_id"]: i for i in moved}
        bad = [ids[e] for e in verdict.ambiguous if e in ids]
        if not bad:
            break
        for i in bad:
            moved.pop(i)
    delivery.delays_ms = {bodies[i]["event_id"]: d for i, (_, d) in moved.items()}
    delivery.kinds = {bodies[i]["event_id"]: k for i, (k, _) in moved.items()}
    return delivery


def _order(events: list[bytes], times: list[int], moved: dict[int, tuple[str, int]]) -> list[int]:
    """Indexes in delivery order: a moved event after the last event due before its time
    plus delay."""
    import bisect

    slots: dict[int, list[int]] = defaultdict(list)
    for i, (_, delay) in moved.items():
        slots[bisect.bisect_right(times, times[i] + delay) - 1].append(i)
    order: list[int] = []
    for i in range(len(events)):
        if i not in moved:
            order.append(i)
        order.extend(sorted(slots.get(i, ())))
    return order


def _with_duplicates(
    plan: FaultPlan, rng: random.Random, events: list[bytes], bodies: list[dict[str, Any]],
    order: list[int], faults: list[Fault],
) -> Delivery:  # fmt: skip
    n = len(order)
    extra: dict[int, list[int]] = defaultdict(list)  # position -> event indexes sent again
    chosen = rng.sample(range(n), round(plan.duplicates * n))
    for pos in chosen:
        extra[min(n - 1, pos + rng.randint(0, plan.dup_spread))].append(order[pos])
    after_restart: list[str] = []
    restarts = [f for f in faults if f.kind in RESTARTING_KINDS]
    if restarts:
        # Positions count deliveries; with duplicates included the fault index shifts a
        # little, so aim at the position the runner will see, then the first one after it.
        total = n + sum(len(v) for v in extra.values()) + 1
        at = restarts[0].index(total)
        pos = max(1, min(n - 1, at))
        before = order[max(0, pos - 1000) : max(1, pos - 200)] or order[:1]
        target = rng.choice(before)
        extra[min(n - 1, pos + 50)].append(target)
        after_restart.append(bodies[target]["event_id"])
    wire: list[bytes] = []
    for pos, i in enumerate(order):
        wire.append(events[i])
        wire.extend(events[j] for j in extra.get(pos, ()))
    return Delivery(wire=wire, faults=faults, duplicates=len(wire) - n, after_restart=after_restart)


# -- the lateness rule and the expected results ------------------------------------------


@dataclass
class Verdict:
    """How the product must treat each first delivery (by event id)."""

    quarantined: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)  # applied, older than M - lateness
    ambiguous: list[str] = field(default_factory=list)
    restated: set[QKey] = field(default_factory=set)
    quarantined_duplicates: int = 0  # re-deliveries older than M - horizon (if they reach it)
    accepted: list[dict[str, Any]] = field(default_factory=list)


def _leg_key(e: dict[str, Any]) -> LegKey:
    return (e["tenant_id"], e["call_id"], e["queue_id"], e.get("visit", 1))


def _complete(evs: Iterable[dict[str, Any]]) -> bool:
    """No further event expected: ended unanswered, or answered and wrapped up."""
    kinds = {e["event_type"] for e in evs}
    if "call.answered" in kinds:
        return "call.wrapup_ended" in kinds
    return bool(kinds & {"call.abandoned", "call.flowed_out", "call.transferred"})


def _leg_buckets(evs: list[dict[str, Any]]) -> dict[Any, Any]:
    q, a = batch(evs)
    return {**{("q", *k): v for k, v in q.items()}, **{("a", *k): v for k, v in a.items()}}


def classify(
    wire: Sequence[bytes], lateness_ms: int, horizon_ms: int,
    partition_of: Callable[[dict[str, Any]], Any] | None = None,
) -> Verdict:  # fmt: skip
    """Apply the lateness rule to a delivery order (see the module docstring).

    `partition_of(event) -> key` gives each aggregation state its own M (the distributed
    mode: one per partition, keyed as the ingest keys the topic); None means one state.
    """
    v = Verdict()
    seen: set[str] = set()
    high: dict[Any, int] = defaultdict(lambda: -(2**62))
    legs: dict[LegKey, list[dict[str, Any]]] = defaultdict(list)
    for raw in wire:
        e = _decode.decode(raw)
        eid, t = e["event_id"], ms(e)
        part = None if partition_of is None else partition_of(e)
        m = high[part]
        if eid in seen:
            if t < m - horizon_ms:
                v.quarantined_duplicates += 1
            continue
        seen.add(eid)
        if t < m - horizon_ms:
            v.quarantined.add(eid)
            continue
        # The product's eviction edge lies at or before the minute after M - horizon.
        edge = (m - horizon_ms) // MIN * MIN + MIN
        if t < edge:
            v.ambiguous.append(eid)
        late = t < m - lateness_ms
        high[part] = max(m, t)
        v.accepted.append(e)
        if late:
            v.late.add(eid)
        if not e["event_type"].startswith("call."):
            continue
        key = _leg_key(e)
        evs = legs[key]
        first = min((ms(x) for x in evs), default=None)
        if evs and max(ms(x) for x in evs) < edge and _complete(evs) and eid not in v.ambiguous:
            v.ambiguous.append(eid)  # the leg may have been evicted already
        near_edge = first is not None and first < edge
        before = _leg_buckets(evs) if late or near_edge else None
        evs.append(e)
        if before is None:
            continue
        after = _leg_buckets(evs)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        touches = near_edge and any(k[3] < edge for k in changed)
        if touches and eid not in v.ambiguous:
            v.ambiguous.append(eid)  # it may change a bucket the product has evicted
        if late:
            v.restated.update((k[1], k[2], k[3]) for k in changed if k[0] == "q")
    return v


@dataclass
class Expected:
    """What the store must hold: nonzero buckets, legs, and the lateness verdict."""

    queue: dict[QKey, Counters]
    agent: dict[AKey, AgentCounters]
    legs: dict[LegKey, dict[str, Any]]
    verdict: Verdict

    def figures(self) -> dict[str, Any]:
        return {
            "expected_queue_buckets": len(self.queue), "expected_agent_buckets": len(self.agent),
            "expected_legs": len(self.legs), "late_applied": len(self.verdict.late),
            "restated_buckets": len(self.verdict.restated),
            "quarantined": len(self.verdict.quarantined),
        }  # fmt: skip


def expected_legs(events: Iterable[dict[str, Any]]) -> dict[LegKey, dict[str, Any]]:
    """Each leg's resolved outcome and durations (ms), from its deduplicated events, by the
    rules of tests/oracle.py `batch` (first fact of each kind; answered beats the rest; else
    the earliest of abandoned, flowed out, transferred)."""
    by_leg: dict[LegKey, dict[str, dict[str, Any]]] = defaultdict(dict)
    holds: dict[LegKey, list[tuple[int, int]]] = defaultdict(list)
    for e in {x["event_id"]: x for x in events}.values():
        kind = e["event_type"]
        if not kind.startswith("call."):
            continue
        key = _leg_key(e)
        if kind == "call.hold_started":
            holds[key].append((ms(e), 0))
        elif kind == "call.hold_ended":
            holds[key].append((ms(e), 1))
        else:
            facts = by_leg[key]
            old = facts.get(kind)
            if old is None or (ms(e), e["event_id"]) < (ms(old), old["event_id"]):
                facts[kind] = e
    legs: dict[LegKey, dict[str, Any]] = {}
    for key in by_leg.keys() | holds.keys():
        f = by_leg.get(key, {})
        queued, answered = f.get("call.queued"), f.get("call.answered")
        transferred, wrapped, ended = (
            f.get("call.transferred"), f.get("call.wrapup_ended"), f.get("call.ended"),
        )  # fmt: skip
        ending: tuple[str, dict[str, Any]] | None = None
        if answered is not None:
            ending = ("answered", answered)
        else:
            ranked = [
                (ms(x), rank, name, x)
                for rank, name, x in (
                    (0, "abandoned", f.get("call.abandoned")),
                    (1, "flowed_out", f.get("call.flowed_out")),
                    (2, "flowed_out", transferred),
                )
                if x is not None
            ]
            if ranked:
                _, _, name, x = min(ranked, key=lambda r: (r[0], r[1]))
                ending = (name, x)
        leg: dict[str, Any] = dict.fromkeys(LEG_FIELDS)
        leg["queued_at_ms"] = None if queued is None else ms(queued)
        if ending is not None:
            leg["outcome"], leg["outcome_at_ms"] = ending[0], ms(ending[1])
            if queued is not None:
                leg["wait_ms"] = max(0, ms(ending[1]) - ms(queued))
        if answered is not None:
            leg["agent_id"] = answered["agent_id"]
        leg["transferred_at_ms"] = None if transferred is None else ms(transferred)
        if answered is not None and wrapped is not None:
            t_ans = ms(answered)
            stop = ms(ended) if ended else ms(transferred) if transferred else ms(wrapped)
            stop = max(stop, t_ans)
            hold = hold_between(holds.get(key, []), t_ans, stop)
            leg.update(
                handled_at_ms=ms(wrapped), talk_ms=stop - t_ans - hold, hold_ms=hold,
                wrap_ms=max(0, ms(wrapped) - stop),
            )  # fmt: skip
        legs[key] = leg
    return legs


def expected(
    wire: Sequence[bytes], lateness_ms: int, horizon_ms: int,
    partition_of: Callable[[dict[str, Any]], Any] | None = None,
) -> Expected:  # fmt: skip
    """The batch recomputation the store must equal after `wire` was delivered in order:
    tests/oracle.py `batch` over the deduplicated events the product must accept. Raises
    AssertionError when an event is ambiguous (see the module docstring)."""
    verdict = classify(wire, lateness_ms, horizon_ms, partition_of)
    assert not verdict.ambiguous, (
        f"{len(verdict.ambiguous)} event(s) at the eviction edge (timing-dependent): "
        f"{verdict.ambiguous[:5]}; choose a longer horizon or other delays"
    )
    queue, agent = batch(verdict.accepted)
    return Expected(nonzero(queue), nonzero(agent), expected_legs(verdict.accepted), verdict)


# -- what the store holds ---------------------------------------------------------------


@dataclass
class Stored:
    """Buckets (nonzero), legs and restated flags as read from a store."""

    queue: dict[QKey, Counters]
    agent: dict[AKey, AgentCounters]
    legs: dict[LegKey, dict[str, Any]]
    restated: set[QKey] = field(default_factory=set)
    #: Everything else a store of the same mode can be compared on, run against run: every
    #: stored leg column (caller key, priority, anomalies ...) and agent state segments
    #: ((tenant, agent, start, change event id) -> (state, end)).
    records: list[tuple[Any, ...]] = field(default_factory=list)
    state: dict[tuple[str, str, int, str], tuple[str, int]] = field(default_factory=dict)


def read_sqlite(data_dir: Path) -> Stored:
    """Everything the embedded store at `data_dir/store.db` holds for the comparison."""
    import sqlite3

    from services.store.sqlite import SqliteStore

    store = SqliteStore(data_dir / "store.db")
    try:
        legs = {
            (r.tenant_id, r.call_id, r.queue_id, r.visit): {f: getattr(r, f) for f in LEG_FIELDS}
            for r in store.all_legs()
        }
        records = sorted(msgspec.structs.astuple(r) for r in store.all_legs())
        queue, agent = store.all_queue_buckets(), store.all_agent_buckets()
    finally:
        store.close()
    db = sqlite3.connect(data_dir / "store.db")
    try:
        rows = db.execute(
            "SELECT tenant_id, queue_id, minute_ms FROM queue_buckets WHERE restated > 0"
        ).fetchall()
        state = {
            (r[0], r[1], r[2], r[3]): (r[4], r[5])
            for r in db.execute(
                "SELECT tenant_id, agent_id, start_ms, event_id, state, end_ms FROM state_segments"
            ).fetchall()
        }
    finally:
        db.close()
    restated = {(r[0], r[1], r[2]) for r in rows}
    return Stored(nonzero(queue), nonzero(agent), legs, restated, records, state)


def assert_exact(stored: Stored, want: Expected, limit: int = 8) -> None:
    """Every queue bucket, agent bucket and leg equal, integer for integer; on failure the
    message lists up to `limit` differences of each kind, field by field."""
    problems: list[str] = []
    for name, got, exp in (
        ("queue bucket", stored.queue, want.queue),
        ("agent bucket", stored.agent, want.agent),
        ("leg", stored.legs, want.legs),
    ):
        diffs = _diff(got, exp)
        if diffs:
            problems.append(f"{len(diffs)} {name}(s) differ:")
            problems.extend(f"  {d}" for d in diffs[:limit])
    assert not problems, "stored results differ from the batch recomputation\n" + "\n".join(
        problems
    )


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return {f: getattr(value, f) for f in value.__struct_fields__}


def _diff(got: dict[Any, Any], exp: dict[Any, Any]) -> list[str]:
    out = []
    for key in sorted(got.keys() | exp.keys(), key=repr):
        g, e = got.get(key), exp.get(key)
        if g == e:
            continue
        if g is None:
            out.append(f"{key}: missing from the store (expected {_short(e)})")
        elif e is None:
            out.append(f"{key}: not expected (stored {_short(g)})")
        else:
            gd, ed = _as_dict(g), _as_dict(e)
            fields = [_field(f, gd.get(f), ed[f]) for f in ed if gd.get(f) != ed[f]]
            out.append(f"{key}: stored != expected: {', '.join(fields)}")
    return out


def _field(name: str, got: Any, exp: Any) -> str:
    if isinstance(got, list) and isinstance(exp, list) and len(got) == len(exp):
        bins = {i: (g, e) for i, (g, e) in enumerate(zip(got, exp, strict=True)) if g != e}
        return f"{name} bins {{bin: (stored, expected)}} {bins}"
    return f"{name} {got} != {exp}"


def _short(value: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in _as_dict(value).items() if v not in (0, None, []))


# -- the embedded runner --------------------------------------------------------------------


@dataclass
class RunResult:
    """A runner's outcome: the store's contents and figures for `record(...)`."""

    stored: Stored
    figures: dict[str, Any]


def admin_key(data_dir: Path) -> str:
    """An admin API key made with the CLI (the product's own way)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", "--role", "admin",
         "--data-dir", str(data_dir)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def metric(url: str, name: str) -> float:
    """One unlabelled sample of the Prometheus text at `url`/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


def run_embedded(
    delivery: Delivery, workdir: Path, *, lateness_s: int = 120, horizon_s: int = 7200,
    batch_size: int = 500, env: dict[str, str] | None = None, caught_up_timeout_s: float = 120,
) -> RunResult:  # fmt: skip
    """Deliver `delivery` to a real `callpulse run` over HTTP (batches re-sent until
    acknowledged: at-least-once), execute its "sigkill" faults, wait until caught up, stop
    it with SIGTERM and read the store.

    Figures: events, deliveries, requests, faults executed, per restart the seconds from the
    kill to healthy and to caught up (log fully applied), the quarantined count the product
    reports on /metrics, and the whole run's seconds.
    """
    from tests.conftest import Process, free_port

    data_dir = workdir / "data"
    key = admin_key(data_dir)
    proc = Process(data_dir, free_port())
    run_env = {
        "CALLPULSE_ALLOWED_LATENESS_S": str(lateness_s),
        "CALLPULSE_CORRECTION_HORIZON_S": str(horizon_s),
        "CALLPULSE_CALLER_KEY_SECRET": "harness-secret",
        # Thousands of batches a minute from one key: the API rate limit is not under test.
        "CALLPULSE_RATE_LIMIT_PER_S": "100000",
        "CALLPULSE_RATE_LIMIT_BURST": "100000",
        **(env or {}),
    }
    unknown = [f.kind for f in delivery.faults if f.kind != "sigkill"]
    assert not unknown, f"the embedded runner cannot execute {unknown}"
    headers = {"Authorization": f"Bearer {key}"}
    wire = delivery.wire
    pending = sorted((f.index(len(wire)), f) for f in delivery.faults)
    figures: dict[str, Any] = {
        "events": delivery.unique_events(), "deliveries": len(wire), "requests": 0,
        "sigkills": 0, "restart_to_healthy_s": [], "restart_to_caught_up_s": [],
    }  # fmt: skip
    killed_at: list[float] = []
    started = time.monotonic()
    proc.start(env=run_env)
    try:
        with httpx.Client(timeout=30) as client:

            def kill(target: subprocess.Popen[bytes]) -> None:
                if target.poll() is None:
                    target.send_signal(signal.SIGKILL)
                    killed_at.append(time.monotonic())

            def recover() -> None:
                proc.kill()  # reap the dead process
                proc.start(env=run_env)
                figures["restart_to_healthy_s"].append(round(time.monotonic() - killed_at[-1], 3))
                proc.wait_caught_up(caught_up_timeout_s)
                figures["restart_to_caught_up_s"].append(round(time.monotonic() - killed_at[-1], 3))

            for begin in range(0, len(wire), batch_size):
                end = min(len(wire), begin + batch_size)
                timer = None
                # One fault per batch at most (two would hit the same process); a fault
                # that finds its batch taken waits for the next one.
                if pending and pending[0][0] < end:
                    _, fault = pending.pop(0)
                    assert proc.proc is not None
                    timer = threading.Timer(
                        float(fault.params.get("delay_s", 0)), kill, (proc.proc,)
                    )
                    timer.start()
                    figures["sigkills"] += 1
                body = b"[" + b",".join(wire[begin:end]) + b"]"
                while True:
                    try:
                        figures["requests"] += 1
                        r = client.post(f"{proc.url}/v1/events", content=body, headers=headers)
                        if r.status_code == 202:
                            break
                        assert r.status_code in (429, 503), (r.status_code, r.text)
                    except httpx.HTTPError:
                        pass
                    assert proc.proc is not None
                    if proc.proc.poll() is not None:
                        recover()
                    else:
                        time.sleep(0.05)
                if timer is not None:
                    timer.join()
                    assert proc.proc is not None
                    if len(killed_at) > len(figures["restart_to_healthy_s"]):
                        proc.proc.wait(timeout=20)  # killed after the batch was acknowledged
                        recover()
            while pending:  # faults at the very end of the delivery
                _, fault = pending.pop(0)
                assert proc.proc is not None
                kill(proc.proc)
                figures["sigkills"] += 1
                proc.proc.wait(timeout=20)
                recover()
        proc.wait_caught_up(caught_up_timeout_s)
        figures["quarantined_reported"] = metric(
            proc.url, "callpulse_aggregator_quarantined_events_total"
        )
        figures["run_s"] = round(time.monotonic() - started, 1)
    finally:
        proc.kill(signal.SIGTERM)
    assert len(killed_at) == figures["sigkills"], (killed_at, figures["sigkills"])
    return RunResult(read_sqlite(data_dir), figures)


def batches(wire: Sequence[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    """(first position, events) of consecutive batches: how runners cut a delivery."""
    for begin in range(0, len(wire), size):
        yield begin, list(wire[begin : begin + size])
