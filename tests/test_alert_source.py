"""Rule metrics read from a backend (a stub with known figures): the predictive projection,
aggregation over a tenant's queues, pipeline staleness with its onset."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.alerts.source import MetricSource, Target
from services.api.backend import Health
from services.kpi.alerts import Rule
from services.kpi.contracts import Contract
from services.kpi.counters import Counters, wait_bin
from services.kpi.gauges import QueueGauges

NOW = int(datetime(2026, 6, 1, 12, 10, 30, tzinfo=UTC).timestamp() * 1000)


def counters(answered_waits_s: list[int], abandoned: int = 0) -> Counters:
    c = Counters(offered=len(answered_waits_s) + abandoned, abandoned=abandoned)
    for wait in answered_waits_s:
        c.answered += 1
        c.wait_answered_ms += wait * 1000
        c.hist_answered[wait_bin(wait * 1000)] += 1
    return c


class StubBackend:
    """Only what `MetricSource` reads; figures per queue are fixed by the test."""

    def __init__(self, figures: dict[str, tuple[Counters, int, int]]) -> None:
        self.figures = figures  # queue -> (interval counters, calls waiting, longest wait s)
        self.spans: list[tuple[int, int]] = []
        self.stale = False

    def queues(self, tenant_id: str) -> list[str]:
        return sorted(self.figures)

    def contracts(self, tenant_id: str) -> list[Contract]:
        return [Contract(tenant_id=tenant_id, threshold_s=20, target_pct=80.0, interval_min=30)]

    def buckets(self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int) -> Counters:
        self.spans.append((start_ms, end_ms))
        return self.figures[queue_id][0]

    def gauges(self, tenant_id: str, queue_id: str, now_ms: int) -> QueueGauges:
        _, waiting, longest_s = self.figures[queue_id]
        return QueueGauges(
            as_of_ms=now_ms, calls_waiting=waiting, longest_wait_ms=longest_s * 1000,
            oldest_queued_at_ms=now_ms - longest_s * 1000 if waiting else None, agents={},
        )  # fmt: skip

    def health(self) -> Health:
        return Health(ok=True, stale=self.stale, lag_events=5 if self.stale else 0, detail="")

    def tenants(self) -> list[Any]:
        return []


def source(figures: dict[str, tuple[Counters, int, int]]) -> tuple[MetricSource, StubBackend]:
    backend = StubBackend(figures)
    return MetricSource(backend), backend  # type: ignore[arg-type]


PREDICT = Rule(rule_id="will-miss", tenant_id="t", queue_id="q", metric="sl_interval_projected",
               op="<")  # fmt: skip


def test_projection_with_every_waiting_call_still_within_threshold() -> None:
    # 3 of 4 answered within 20 s this interval (75 %); 1 call waiting for 5 s
    src, backend = source({"q": (counters([5, 10, 15, 60]), 1, 5)})
    src.begin(NOW)
    sample = src.sample(PREDICT, Target("t", "q", None), NOW)
    assert (sample.value, sample.target) == (80.0, 80.0)  # 4 / 5 if it is answered now
    # the interval read is the contract's current half-hour, 12:00-12:30 UTC
    start = int(datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp() * 1000)
    assert backend.spans == [(start, start + 30 * 60_000)]


def test_projection_with_a_call_already_past_threshold() -> None:
    # 2 waiting, the longest for 30 s (> 20 s): at best 4 / 6 = 66.7 % < 80 %: will miss
    src, _ = source({"q": (counters([5, 10, 15, 60]), 2, 30)})
    src.begin(NOW)
    sample = src.sample(PREDICT, Target("t", "q", None), NOW)
    assert sample.value is not None and round(sample.value, 1) == 66.7


def test_tenant_figures_sum_numerators_and_denominators() -> None:
    src, _ = source({"a": (counters([5, 5, 5]), 0, 0), "b": (counters([60]), 0, 0)})
    src.begin(NOW)
    tenant_rule = Rule(rule_id="r", tenant_id="t", scope="tenant", metric="sl_rolling", op="<",
                       threshold=80.0)  # fmt: skip
    # 3 of 4 within T across both queues (not the mean of 100 % and 0 %)
    assert src.sample(tenant_rule, Target("t", None, None), NOW).value == 75.0
    asa = Rule(rule_id="r2", tenant_id="t", scope="tenant", metric="asa_s", op=">", threshold=9)
    assert src.sample(asa, Target("t", None, None), NOW).value == 75 / 4
    # min_count: too few calls to judge
    strict = Rule(rule_id="r3", tenant_id="t", scope="tenant", metric="sl_rolling", op="<",
                  threshold=80.0, min_count=5)  # fmt: skip
    assert src.sample(strict, Target("t", None, None), NOW).value is None


def test_pipeline_staleness_counts_from_the_last_fresh_instant() -> None:
    src, backend = source({})
    rule = Rule(rule_id="stale", tenant_id=None, scope="floor", metric="pipeline_staleness_s",
                op=">", threshold=30.0)  # fmt: skip
    floor = Target(None, None, None)
    src.begin(NOW)
    assert src.sample(rule, floor, NOW).value == 0.0
    backend.stale = True
    assert src.begin(NOW + 10_000) is True
    later = src.sample(rule, floor, NOW + 45_000)
    assert later.value == 45.0 and later.onset_ms == NOW + 30_000
