"""Crash safety of `callpulse run`: SIGKILL at random points (at least 10 times) while a
recorded event stream is replayed over HTTP. After the restarts every stored bucket and leg
equals the batch recomputation from the deduplicated events, and the whole store (every leg
column, agent state time) equals an uninterrupted run's. Recovery times are recorded.

(This replaces the earlier tests/test_embedded_crash.py, which killed the process 6 times
during the same kind of replay.)"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.harness import (
    FaultPlan,
    assert_exact,
    expected,
    run_embedded,
    simulated_events,
    soak_factor,
)
from tests.reliability import record

pytestmark = pytest.mark.reliability

# Checkpoints every half second: a kill lands between checkpoints, so a restart restores
# one and replays the log after it (the path a crash in production takes).
ENV = {"CALLPULSE_CHECKPOINT_INTERVAL_S": "0.5"}


def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path: Path) -> None:
    soak = soak_factor()
    minutes, kills = 40 * soak, 12 * soak
    events = simulated_events(minutes)
    # A few duplicates too: a source retrying while the product was down.
    plan = FaultPlan(seed=2027, crashes=kills, duplicates=0.02)
    delivery = plan.deliver(events)
    want = expected(delivery.wire, plan.lateness_ms, plan.horizon_ms)

    crashy = run_embedded(delivery, tmp_path / "crashy", batch_size=250, env=ENV)
    calm = run_embedded(FaultPlan().deliver(events), tmp_path / "calm", batch_size=250, env=ENV)

    assert crashy.figures["sigkills"] == kills >= 10
    assert_exact(crashy.stored, want)
    assert_exact(calm.stored, want)
    assert crashy.stored.records == calm.stored.records
    assert crashy.stored.state == calm.stored.state
    healthy = crashy.figures["restart_to_healthy_s"]
    caught_up = crashy.figures["restart_to_caught_up_s"]
    assert len(healthy) == len(caught_up) == kills
    print(
        f"{kills} SIGKILLs during a replay of {len(events)} events: kill to healthy "
        f"median {statistics.median(healthy):.2f} s, max {max(healthy):.2f} s; kill to "
        f"caught up median {statistics.median(caught_up):.2f} s, max {max(caught_up):.2f} s"
    )
    record(
        "crash-embedded",
        f"SIGKILL of `callpulse run` during an HTTP replay ({minutes} min of the large centre)",
        {
            "events": len(events), "deliveries": len(delivery.wire),
            "duplicates": delivery.duplicates, "sigkills": kills,
            "requests": crashy.figures["requests"], "checkpoint_interval_s": 0.5,
            **want.figures(),
            "kill_to_healthy_s": {
                "median": statistics.median(healthy), "max": max(healthy), "all": healthy,
            },
            "kill_to_caught_up_s": {
                "median": statistics.median(caught_up), "max": max(caught_up), "all": caught_up,
            },
            "run_s": crashy.figures["run_s"], "uninterrupted_run_s": calm.figures["run_s"],
            "exact": True, "equal_to_uninterrupted_run": True,
        },
    )  # fmt: skip
