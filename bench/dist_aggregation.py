"""Distributed aggregation in the table: events/s through `callpulse aggregator` (Faust) into
committed PostgreSQL rows, next to the naive per-event Faust counting agent on the same broker
(target >= 10x) and raw aiokafka consumption of the same topic (target >= 25 %).

The measurement is `bench.distributed.measure_pipeline` (the standalone benchmark), repeated
on fresh topics: each round produces the large centre's stream again, laid out as
`callpulse ingest` writes it (several events of one key per message), and one event per
message for the naive agent, which only counts per key.
"""

from __future__ import annotations

from .distributed import measure_pipeline, stream
from .infra import database, kafka
from .table import Row, Samples


def measure(quick: bool) -> list[Row]:
    events = stream(4_000 if quick else 100_000)
    naive_n = 1_000 if quick else 8_000
    rounds = 1 if quick else 3
    # One event per message costs the aggregator Faust's per-message overhead: measured once,
    # on part of the stream, to show what the ingest's layout buys (full mode only).
    single_n = 0 if quick else 20_000
    ours, steady, naive, raw = Samples(), Samples(), Samples(), Samples()
    single: tuple[float, float] | None = None
    messages = 0
    for r in range(rounds):
        with database() as url:
            f = measure_pipeline(kafka().bootstrap, url, events, naive_n, 1,
                                 single_n if r == 0 else 0)  # fmt: skip
        n, messages = f.events, f.messages
        ours.values.append(n / f.ours_shaped[0])
        if f.ours_shaped[1] > 0:  # 0: everything came in one commit, no steady phase seen
            steady.values.append(f.ours_shaped[1])
        naive.values.append(f.naive_events / f.naive_s)
        raw.values.append(n / f.raw_shaped_s)
        if f.ours_single is not None:
            single = (f.single_events / f.ours_single[0], f.single_events)
    shape = f"{len(events):,} events in {messages:,} messages, 1 worker"
    rows = [
        Row("aggregate", "Faust aggregator -> committed PG rows vs naive", "events/s",
            ours.median, naive.median, "naive Faust agent, 1 event/msg", target=10.0,
            spread=ours.spread, baseline_spread=naive.spread,
            note=f"{shape}; naive on {naive_n:,}"),
        Row("aggregate", "Faust aggregator -> committed PG rows vs raw", "events/s",
            ours.median, raw.median, "raw aiokafka consumption, same topic", target=0.25,
            spread=ours.spread, baseline_spread=raw.spread, note=shape),
    ]  # fmt: skip
    if steady.values:
        rows.append(
            Row("aggregate", "  same, steady (first to last commit)", "events/s",
                steady.median, naive.median, "naive Faust agent", spread=steady.spread,
                note="startup and first claim excluded")
        )  # fmt: skip
    if single is not None:
        rows.append(
            Row("aggregate", "  same, fed 1 event per message (once)", "events/s", single[0],
                naive.median, "naive Faust agent, 1 event/msg",
                note=f"{single[1]:,} events; Faust's per-message cost dominates")
        )  # fmt: skip
    return rows
