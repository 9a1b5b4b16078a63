"""Prometheus collectors read at scrape time: key KPIs per queue (from `live_view`, the one
serializer of live figures) and pipeline health. Labels are bounded: tenant, queue, window
(six fixed names) and agent state (five); never a call or an agent id.

A figure with a zero denominator (e.g. SL with no calls) is left out of the scrape rather
than reported as 0 or 100 %, so Prometheus sees "no data", as the API does with null.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..kpi.leg import MINUTE_MS
from .backend import Backend
from .routes.live import live_view

Clock = Callable[[], float]


class KpiCollector(Collector):
    """callpulse_kpi_*: live gauges and the windows of `live_view` for every queue."""

    def __init__(self, backend: Backend, clock: Clock = time.time) -> None:
        self.backend = backend
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now_ms = int(self.clock() * 1000)
        q = ["tenant", "queue"]
        w = [*q, "window"]
        waiting = GaugeMetricFamily("callpulse_kpi_calls_waiting", "Calls waiting now", labels=q)
        longest = GaugeMetricFamily(
            "callpulse_kpi_longest_wait_seconds", "Wait of the oldest call waiting now", labels=q
        )
        agents = GaugeMetricFamily(
            "callpulse_kpi_agents", "Agents serving the queue, by state", labels=[*q, "state"]
        )
        sl = GaugeMetricFamily(
            "callpulse_kpi_service_level_ratio",
            "Service level under the queue's contract (0-1), by window",
            labels=w,
        )
        target = GaugeMetricFamily(
            "callpulse_kpi_service_level_target_ratio", "The contract's SL target (0-1)", labels=q
        )
        asa = GaugeMetricFamily("callpulse_kpi_asa_seconds", "Average speed of answer", labels=w)
        aht = GaugeMetricFamily("callpulse_kpi_aht_seconds", "Average handle time", labels=w)
        abandon = GaugeMetricFamily(
            "callpulse_kpi_abandon_ratio", "Abandoned / offered (0-1)", labels=w
        )
        offered = GaugeMetricFamily(
            "callpulse_kpi_offered_calls", "Calls offered in the window", labels=w
        )
        for tenant in sorted(t.tenant_id for t in self.backend.tenants()):
            for queue in self.backend.queues(tenant):
                view = live_view(self.backend, tenant, queue, now_ms)
                labels = [tenant, queue]
                waiting.add_metric(labels, view.gauges.calls_waiting)
                longest.add_metric(labels, view.gauges.longest_wait_ms / 1000)
                for state, count in view.gauges.agents.items():
                    agents.add_metric([*labels, state], count)
                for window in view.windows:
                    wl = [*labels, window.name]
                    offered.add_metric(wl, window.offered)
                    if window.service_level.value_pct is not None:
                        sl.add_metric(wl, window.service_level.value_pct / 100)
                    if window.asa_ms.value is not None:
                        asa.add_metric(wl, window.asa_ms.value / 1000)
                    if window.aht_ms.value is not None:
                        aht.add_metric(wl, window.aht_ms.value / 1000)
                    if window.abandon_rate.value is not None:
                        abandon.add_metric(wl, window.abandon_rate.value)
                if view.windows:
                    target.add_metric(labels, view.windows[0].service_level.target_pct / 100)
        yield from (waiting, longest, agents, sl, target, asa, aht, abandon, offered)


class PipelineCollector(Collector):
    """callpulse_pipeline_*: lag, staleness, and queues that went quiet.

    A queue is quiet when it had calls in the last hour but none offered or finished in the
    last `quiet_after_s` seconds: typically an ACD adapter that stopped sending.
    """

    def __init__(self, backend: Backend, clock: Clock = time.time, quiet_after_s: int = 900):
        self.backend = backend
        self.clock = clock
        self.quiet_after_ms = quiet_after_s * 1000

    def collect(self) -> Iterator[GaugeMetricFamily]:
        health = self.backend.health()
        lag = GaugeMetricFamily(
            "callpulse_pipeline_lag_events", "Events accepted but not yet applied to the figures"
        )
        lag.add_metric([], health.lag_events)
        stale = GaugeMetricFamily(
            "callpulse_pipeline_stale",
            "1 while live figures are stale (pipeline behind or store failing), else 0",
        )
        stale.add_metric([], 1.0 if health.stale else 0.0)
        up = GaugeMetricFamily(
            "callpulse_pipeline_store_ok", "1 while store writes succeed, else 0"
        )
        up.add_metric([], 1.0 if health.ok else 0.0)
        now_ms = int(self.clock() * 1000)
        end = now_ms - now_ms % MINUTE_MS + MINUTE_MS
        age = GaugeMetricFamily(
            "callpulse_pipeline_queue_activity_age_seconds",
            "Seconds since the last minute with calls (queues with calls in the last hour)",
            labels=["tenant", "queue"],
        )
        quiet = 0
        for tenant in sorted(t.tenant_id for t in self.backend.tenants()):
            for queue in self.backend.queues(tenant):
                buckets = self.backend.bucket_map(tenant, queue, end - 60 * MINUTE_MS, end)
                active = [m for m, c in buckets.items() if not c.is_empty()]
                if not active:
                    continue
                last_ms = max(active) + MINUTE_MS
                age.add_metric([tenant, queue], max(0, now_ms - last_ms) / 1000)
                quiet += now_ms - last_ms > self.quiet_after_ms
        quiet_queues = GaugeMetricFamily(
            "callpulse_pipeline_stale_queues",
            "Queues with calls in the last hour but none in the last 15 minutes",
        )
        quiet_queues.add_metric([], quiet)
        yield from (lag, stale, up, age, quiet_queues)
