"""The benchmark suite runs (quick mode): a smoke test of the benchmarks, not of timings."""

from __future__ import annotations

import math

from bench.run import MODULES, run


def test_every_benchmark_runs_and_reports_finite_figures() -> None:
    rows = run(quick=True)
    groups = {r.group for r in rows}
    assert {"decode", "core", "ingest", "aggregate", "store", "freshness", "memory"} <= groups
    assert len({m for m in MODULES}) == len(MODULES)
    for r in rows:
        assert math.isfinite(r.ours) and r.ours > 0, r
        assert r.baseline is None or (math.isfinite(r.baseline) and r.baseline > 0), r
