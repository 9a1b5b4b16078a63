"""Disorder through `callpulse run`: duplicates (one after a SIGKILL and restart), events
reordered within the allowed lateness, events late beyond it (restating past buckets inside
the correction horizon) and beyond the horizon (quarantined and counted). Every stored
bucket and leg equals the batch recomputation from the deduplicated accepted events; the
restated buckets are exactly those the late events changed and are flagged in the store;
the quarantined count on /metrics is exactly the events beyond the horizon."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.kpi.centre import Centre
from services.kpi.counters import Counters
from services.store.sqlite import SqliteStore
from tests.harness import (
    Fault,
    FaultPlan,
    assert_exact,
    expected,
    read_sqlite,
    run_embedded,
    simulated_events,
    soak_factor,
)
from tests.reliability import record

pytestmark = pytest.mark.reliability

LATENESS_S = 120
# Short enough that a 40-minute replay has events beyond it, long enough for hour-long calls
# of the large centre to stay clear of the eviction edge.
HORIZON_S = 900


def test_disorder_is_restated_or_quarantined_never_lost(tmp_path: Path) -> None:
    minutes = 40 * soak_factor()
    events = simulated_events(minutes)
    plan = FaultPlan(
        seed=2026, duplicates=0.10, reordered=0.05, late=0.004, beyond_horizon=0.001,
        faults=(Fault("sigkill", 0.8, {"delay_s": 0.02}),),
        lateness_ms=LATENESS_S * 1000, horizon_ms=HORIZON_S * 1000,
    )  # fmt: skip
    delivery = plan.deliver(events)
    want = expected(delivery.wire, LATENESS_S * 1000, HORIZON_S * 1000)
    injected = delivery.figures()
    # The plan must have injected what the test claims (a test that cannot fail is useless).
    assert injected["duplicates"] >= 0.09 * len(events)
    assert injected["duplicates_after_restart"] == 1
    assert injected["reordered_within_lateness"] >= 0.04 * len(events)
    assert want.verdict.late and want.verdict.restated and want.verdict.quarantined

    # Frequent checkpoints: the restart resumes from one, not from an empty state.
    run = run_embedded(
        delivery,
        tmp_path,
        lateness_s=LATENESS_S,
        horizon_s=HORIZON_S,
        env={"CALLPULSE_CHECKPOINT_INTERVAL_S": "0.3"},
    )

    assert_exact(run.stored, want)
    # Restated buckets are marked in the store, and only those.
    assert run.stored.restated == want.verdict.restated
    # Quarantined events are counted where an operator sees them, never silently dropped.
    assert run.figures["quarantined_reported"] == len(want.verdict.quarantined)
    record(
        "disorder",
        f"Disorder through the embedded mode ({minutes} min of the large centre)",
        {
            **injected, "allowed_lateness_s": LATENESS_S, "correction_horizon_s": HORIZON_S,
            **want.figures(), "restated_flagged_in_store": len(run.stored.restated),
            "quarantined_reported": run.figures["quarantined_reported"],
            "restart_to_healthy_s": run.figures["restart_to_healthy_s"],
            "restart_to_caught_up_s": run.figures["restart_to_caught_up_s"],
            "run_s": run.figures["run_s"], "exact": True,
        },
    )  # fmt: skip


def test_a_restated_bucket_stays_flagged_when_rewritten(tmp_path: Path) -> None:
    """A late event's restatement is not unflagged by a later on-time write of the bucket
    (e.g. a late `call.queued` changes the wait of a leg answered a moment ago)."""
    store = SqliteStore(tmp_path / "store.db")
    centre = Centre()
    key = ("t", "q", 60_000)
    for offered, restated in ((1, True), (2, False)):
        centre.queue_buckets[key] = Counters(offered=offered)
        centre.dirty_queue.add(key)
        if restated:
            centre.restated.add(key)
        store.write(centre, None)
        centre.clear_dirty()
    assert store.all_queue_buckets()[key].offered == 2
    store.close()
    assert read_sqlite(tmp_path).restated == {key}
