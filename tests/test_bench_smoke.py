"""The benchmark suite runs (quick mode): a smoke test of the benchmarks, not of timings."""

from __future__ import annotations

import math

from bench.run import GROUPS, MODULES, run


def test_every_benchmark_runs_and_reports_finite_figures() -> None:
    rows = run(quick=True)
    groups = {r.group for r in rows}
    assert {"decode", "core", "ingest", "aggregate", "store", "freshness", "api",
            "memory"} <= groups  # fmt: skip
    assert len({m for m in MODULES}) == len(MODULES)
    names = " | ".join(r.name for r in rows)
    # Both modes where the issue asks for both: embedded and distributed side by side.
    for expected in ("embedded ingest", "Kafka (distributed) ingest", "Faust aggregator",
                     "PG batched upserts", "SQLite batched", "distributed ingest -> API live",
                     "embedded POST -> live", "live endpoint throughput",
                     "retained queue-day"):  # fmt: skip
        assert expected in names, expected
    assert [r.group for r in rows] == sorted((r.group for r in rows), key=GROUPS.index)
    for r in rows:
        assert math.isfinite(r.ours) and r.ours > 0, r
        assert r.baseline is None or (math.isfinite(r.baseline) and r.baseline > 0), r
