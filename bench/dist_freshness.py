"""Freshness of the distributed mode: an event accepted by `callpulse ingest` (its 202, after
the broker's acknowledgement) -> visible on `callpulse api`'s live endpoint, p50/p95/p99,
while the simulator's large centre loads the same stack at 20x real time (as the embedded
figure, `bench.freshness`, whose load and probe this reuses). Target: p99 < 1 s.

The path measured: ingest -> Kafka (mock broker) -> `callpulse aggregator` (one Faust worker,
default batching and a 0.5 s flush) -> PostgreSQL commit -> snapshot topic -> the API
replica's snapshot consumer -> GET /v1/queues/{queue}/live. Four probers run at once, each
on a queue of its own, polling every 20 ms (so the figures may read up to 20 ms late).

Read with the broker in mind: librdkafka's mock broker does not answer a pending fetch when
a record arrives (a real broker answers as soon as `fetch.min.bytes` is there), so a
caught-up consumer waits out its whole `fetch_max_wait_ms` (aiokafka's default: 500 ms).
Measured here with an idle aiokafka consumer: a new record arrived after ~365 ms with the
default, ~1 ms with 10 ms. Two consumers are on this path (the aggregator's, the API's).
"""

from __future__ import annotations

import statistics
import threading
import time

from . import infra
from .freshness import load, probe
from .table import Row

PROBERS = 4
POLL_S = 0.02


def freshness(probes: int, speed: float) -> tuple[list[float], float]:
    """(probe latencies in ms, background events/s) against a fresh distributed stack."""
    with infra.stack("ingest", "aggregator", "api") as (s, key):
        headers = {"Authorization": f"Bearer {key}"}
        ingest, api = s.url("ingest"), s.url("api")
        stop = threading.Event()
        sent: list[int] = []
        loading = time.monotonic()
        loader = threading.Thread(target=lambda: sent.append(load(ingest, headers, speed, stop)))
        loader.start()
        try:
            infra.wait_assigned(s)
            samples: list[float] = []
            errors: list[BaseException] = []

            def prober(k: int) -> None:
                try:
                    # Not measured: the first probe of a queue meets a cold API and store.
                    probe(ingest, headers, 0, api, f"probe-q{k}", POLL_S, 120)
                    for n in range(1, probes // PROBERS + 1):
                        samples.append(1000 * probe(ingest, headers, n, api, f"probe-q{k}",
                                                    POLL_S))  # fmt: skip
                        time.sleep(0.05)
                except BaseException as exc:  # reported below, in the main thread
                    errors.append(exc)

            threads = [threading.Thread(target=prober, args=(k,)) for k in range(PROBERS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
        finally:
            stop.set()
            loader.join()
        return samples, sent[0] / (time.monotonic() - loading)


def measure(quick: bool) -> list[Row]:
    samples, load_rate = freshness(8 if quick else 160, 20.0)
    q = statistics.quantiles(samples, n=100)
    note = (f"large centre at 20x real time, {load_rate:.0f} events/s of background load;"
            f" {len(samples)} probes")  # fmt: skip
    return [
        Row("freshness", f"distributed ingest -> API live endpoint, {name}", "ms", value,
            baseline=1000.0 if name == "p99" else None, baseline_name="target 1 s",
            target=1.0 if name == "p99" else None, higher_is_better=False, note=note)
        for name, value in (("p50", q[49]), ("p95", q[94]), ("p99", q[98]))
    ]  # fmt: skip
