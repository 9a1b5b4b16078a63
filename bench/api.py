"""The API in the table: `bench.api_live` (the live endpoint of `callpulse run`'s app with
authentication, rate limiter, access log, contract lookup, gauges and six SL windows, next to
a constant endpoint of the same size on the same server, while live calls come in), its
throughput ratio (target >= 0.5) and p99 latency next to the constant endpoint's."""

from __future__ import annotations

from .api_live import CONSTANT, LIVE, compare, percentile
from .table import Row, Samples


def measure(quick: bool) -> list[Row]:
    if quick:
        c = compare(seconds=0.5, rounds=1, concurrency=4, traffic_per_s=20.0, hours=1.0)
    else:
        c = compare(seconds=3.0, rounds=3, concurrency=8, traffic_per_s=20.0)
    assert not c.errors[LIVE] and not c.errors[CONSTANT], c.errors
    live, constant = Samples(c.rates[LIVE]), Samples(c.rates[CONSTANT])
    p99 = {path: 1000 * percentile(c.latencies[path], 0.99) for path in (LIVE, CONSTANT)}
    note = (f"{len(c.rates[LIVE])} rounds, {c.sizes[LIVE]} B bodies, live calls ingested"
            " meanwhile; embedded app, one uvicorn process")  # fmt: skip
    return [
        Row("api", "live endpoint throughput vs constant endpoint", "requests/s", live.median,
            constant.median, "constant endpoint, same size and server", target=0.5,
            spread=live.spread, baseline_spread=constant.spread, note=note),
        Row("api", "live endpoint p99 latency vs constant endpoint", "ms", p99[LIVE],
            p99[CONSTANT], "constant endpoint p99", target=2.0, higher_is_better=False,
            note=f"over all {len(c.latencies[LIVE]):,} requests; ≤2 = the ≥50 % target"),
    ]  # fmt: skip
