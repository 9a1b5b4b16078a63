"""Metric samples for alert rules, read from the API backend (the same figures the live
endpoints serve: the buckets, gauges and agent states of `Backend`).

One `MetricSource.begin(now_ms)` starts an evaluation round (a health snapshot and a fresh
cache); `targets` and `sample` then read each rule's targets at that instant.
"""

from __future__ import annotations

from typing import NamedTuple

from ..api.backend import Backend
from ..kpi.alerts import Rule, Sample, projected_sl, target_key
from ..kpi.contracts import (
    Contract,
    abandon_rate,
    aht_ms,
    asa_ms,
    components,
    contract_at,
    service_level,
)
from ..kpi.counters import Counters
from ..kpi.windows import Span, interval_at, rolling


class Target(NamedTuple):
    """What one alert is about: a queue, a team, a tenant (both None) or the floor."""

    tenant_id: str | None
    queue_id: str | None
    team_id: str | None

    @property
    def key(self) -> str:
        return target_key(self.tenant_id, self.queue_id, self.team_id)


class MetricSource:
    """Reads rule metrics at an instant; caches bucket sums within one round."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.stale = False
        self._fresh_ms: int | None = None  # the last instant the pipeline was up to date
        self._buckets: dict[tuple[str, str, Span], Counters] = {}
        self._contracts: dict[str, list[Contract]] = {}

    def begin(self, now_ms: int) -> bool:
        """Start a round at `now_ms`; returns True when the pipeline is stale (behind or
        failing its store writes), in which case KPI figures are not to be trusted."""
        self._buckets.clear()
        self._contracts.clear()
        health = self.backend.health()
        self.stale = health.stale or not health.ok
        if not self.stale or self._fresh_ms is None:
            self._fresh_ms = now_ms
        return self.stale

    # -- what a rule watches ---------------------------------------------------------

    def tenants(self) -> list[str]:
        return [t.tenant_id for t in self.backend.tenants()]

    def targets(self, rule: Rule) -> list[Target]:
        """The targets of a rule: its queue, or each queue; its team, or each team; its
        tenant; or the floor."""
        tenant = rule.tenant_id
        if rule.scope == "floor" or tenant is None:
            return [Target(None, None, None)]
        if rule.scope == "tenant":
            return [Target(tenant, None, None)]
        if rule.scope == "team":
            if rule.team_id is not None:
                return [Target(tenant, None, rule.team_id)]
            teams = {c.team_id for c in self.backend.agents(tenant).values()}
            return [Target(tenant, None, team) for team in sorted(teams)]
        if rule.queue_id is not None:
            return [Target(tenant, rule.queue_id, None)]
        return [Target(tenant, queue, None) for queue in self.backend.queues(tenant)]

    def contract(self, tenant: str, queue: str, at_ms: int) -> Contract:
        """The queue's contract in force at an instant, or the built-in default."""
        if tenant not in self._contracts:
            self._contracts[tenant] = self.backend.contracts(tenant)
        found = contract_at(self._contracts[tenant], queue, at_ms)
        return found if found is not None else Contract(tenant_id=tenant, version=0)

    def timezone(self, target: Target, at_ms: int) -> str:
        """The zone quiet hours are read in: the target queue's contract zone, else the
        tenant's default contract zone, else UTC."""
        if target.tenant_id is None:
            return "UTC"
        return self.contract(target.tenant_id, target.queue_id or "", at_ms).timezone

    # -- samples -----------------------------------------------------------------------

    def sample(self, rule: Rule, target: Target, now_ms: int) -> Sample:
        """The rule's metric for one target at `now_ms` (see `Rule` for units)."""
        metric = rule.metric
        if metric == "pipeline_staleness_s":
            fresh = self._fresh_ms if self._fresh_ms is not None else now_ms
            onset = None
            if rule.threshold is not None and rule.op in (">", ">="):
                onset = fresh + int(rule.threshold * 1000)
            return Sample((now_ms - fresh) / 1000, onset_ms=onset)
        if metric in ("agents_available", "occupancy_pct"):
            return self._agent_sample(rule, target, now_ms)
        pairs = [
            (tenant, queue)
            for tenant in self._tenants_of(target)
            for queue in ([target.queue_id] if target.queue_id else self.backend.queues(tenant))
        ]
        if metric in ("calls_waiting", "longest_wait_s"):
            waiting, oldest = 0, None
            for tenant, queue in pairs:
                g = self.backend.gauges(tenant, queue, now_ms)
                waiting += g.calls_waiting
                if g.oldest_queued_at_ms is not None and (
                    oldest is None or g.oldest_queued_at_ms < oldest
                ):
                    oldest = g.oldest_queued_at_ms
            if metric == "calls_waiting":
                return Sample(float(waiting))
            onset = None
            if oldest is not None and rule.threshold is not None and rule.op in (">", ">="):
                onset = oldest + int(rule.threshold * 1000)
            longest = 0 if oldest is None else now_ms - oldest
            return Sample(longest / 1000, onset_ms=onset)
        num = den = 0
        target_pct: float | None = None
        for tenant, queue in pairs:
            contract = self.contract(tenant, queue, now_ms)
            if target.queue_id is not None:
                target_pct = contract.target_pct
            n, d = self._fraction(rule, tenant, queue, contract, now_ms)
            num, den = num + n, den + d
        scale = 100.0 if metric in ("sl_rolling", "sl_interval", "sl_interval_projected",
                                    "abandon_rate_pct") else 0.001  # fmt: skip
        value = scale * num / den if den >= rule.min_count and den > 0 else None
        return Sample(value, target=target_pct)

    def _tenants_of(self, target: Target) -> list[str]:
        return [target.tenant_id] if target.tenant_id is not None else self.tenants()

    def _counters(self, tenant: str, queue: str, span: Span) -> Counters:
        key = (tenant, queue, span)
        if key not in self._buckets:
            self._buckets[key] = self.backend.buckets(tenant, queue, *span)
        return self._buckets[key]

    def _fraction(
        self, rule: Rule, tenant: str, queue: str, contract: Contract, now_ms: int
    ) -> tuple[int, int]:
        """(numerator, denominator) of a ratio metric for one queue. ASA and AHT are in
        milliseconds here (scaled to seconds by the caller)."""
        metric = rule.metric
        if metric in ("sl_interval", "sl_interval_projected"):
            span = interval_at(now_ms, contract.timezone, contract.interval_min)
        else:
            span = rolling(now_ms, rule.window_min)
        counters = self._counters(tenant, queue, span)
        if metric in ("sl_rolling", "sl_interval"):
            sl = service_level(counters, contract)
            return sl.numerator, sl.denominator
        if metric == "sl_interval_projected":
            # Only the count and the longest wait of the waiting calls are known: at most
            # the longest-waiting one is already past T (an optimistic bound, so the rule
            # fires only when the miss is certain unless new calls arrive and are answered
            # within T).
            g = self.backend.gauges(tenant, queue, now_ms)
            limit_ms = contract.threshold_s * 1000
            past = g.longest_wait_ms > limit_ms or (
                not contract.inclusive and g.longest_wait_ms == limit_ms
            )
            over = 1 if g.calls_waiting and past else 0
            return projected_sl(
                contract.variant, components(counters, contract), g.calls_waiting - over, over
            )
        figure = {"asa_s": asa_ms, "aht_s": aht_ms, "abandon_rate_pct": abandon_rate}[metric](
            counters
        )
        return figure.numerator, figure.denominator

    def _agent_sample(self, rule: Rule, target: Target, now_ms: int) -> Sample:
        """Agents available now, or occupancy over the rolling window, of the agents that
        serve the target queue / belong to the target team / work for the tenant(s).
        Agents are filtered by their current queues and team."""
        start, _ = rolling(now_ms, rule.window_min)
        available = busy = idle = 0
        for tenant in self._tenants_of(target):
            agents = self.backend.agents(tenant)
            chosen = {
                agent: change
                for agent, change in agents.items()
                if (target.team_id is None or change.team_id == target.team_id)
                and (target.queue_id is None or target.queue_id in change.queues)
            }
            if rule.metric == "agents_available":
                available += sum(
                    1 for c in chosen.values() if c.state == "available" and c.at <= now_ms
                )
                continue
            times = self.backend.state_times(tenant, start, now_ms)
            for agent, change in chosen.items():
                t = times.get(agent)
                if t is not None:
                    busy += t.on_call_ms + t.wrapup_ms
                    idle += t.available_ms
                # the open segment after the latest change (not in the buckets yet)
                open_ms = max(0, now_ms - max(change.at, start))
                if change.state in ("on_call", "wrapup"):
                    busy += open_ms
                elif change.state == "available":
                    idle += open_ms
        if rule.metric == "agents_available":
            return Sample(float(available))
        total = busy + idle  # ms; no agent time in the window: no data
        return Sample(100.0 * busy / total if total > 0 else None)
