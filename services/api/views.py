"""Response models and the one pure serializer behind the HTTP routes, SSE and wallboard.

Attribution (also in the OpenAPI description): offered counts in the minute the leg entered
the queue; answered / abandoned / flowed-out legs and their waits in the minute of that
outcome; handle time (talk, hold, wrap-up) in the minute wrap-up ended.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from pydantic import BaseModel, Field

from ..kpi.contracts import (
    Contract,
    Ratio,
    ServiceLevel,
    abandon_rate,
    aht_ms,
    asa_ms,
    ratio,
    service_level,
    transfer_rate,
    wait_percentile_upper_s,
)
from ..kpi.counters import Counters, count_within
from ..kpi.gauges import QueueGauges
from ..kpi.windows import from_ms


class RatioView(BaseModel):
    """A derived figure with the counts it came from; `value` is null on a zero denominator."""

    value: float | None
    numerator: int
    denominator: int


class ServiceLevelView(BaseModel):
    """An SL figure in percent with its formula, threshold and contract version."""

    value_pct: float | None = Field(description="null when the denominator is zero")
    numerator: int
    denominator: int
    variant: str
    threshold_s: int
    inclusive: bool = Field(description="true: within T means wait <= T; false: wait < T")
    target_pct: float
    met: bool | None
    contract_version: int = Field(description="0 = the built-in default contract")


class WindowView(BaseModel):
    """KPIs over one window of 1-minute buckets, [start, end)."""

    name: str
    start: datetime
    end: datetime
    offered: int
    answered: int
    abandoned: int
    flowed_out: int
    handled: int
    transferred: int
    service_level: ServiceLevelView
    asa_ms: RatioView
    aht_ms: RatioView
    abandon_rate: RatioView
    transfer_rate: RatioView
    waited: RatioView = Field(description="answered legs that waited at all / answered")
    wait_p80_upper_s: int | None = Field(
        description="histogram edge (s) at or below which 80 % of answered waits lie"
    )
    max_wait_answered_ms: int
    max_wait_abandoned_ms: int
    restated: bool = Field(
        default=False,
        description="intervals only: a late event (past the allowed lateness, inside the"
        " correction horizon) changed this interval's figures after they were first stored",
    )


class GaugesView(BaseModel):
    """Live gauges at `as_of`; the longest wait keeps growing between events."""

    calls_waiting: int
    longest_wait_ms: int
    oldest_queued_at: datetime | None
    agents: dict[str, int]


class LiveView(BaseModel):
    """Live figures of one queue: gauges, rolling windows, the current interval, today."""

    tenant_id: str
    queue_id: str
    as_of: datetime
    stale: bool = Field(description="true when the pipeline is behind or the store is failing")
    windows_as_of: datetime = Field(
        description="when the windows were read: before `as_of` while the store is unreachable"
        " and their last-known values are served (then `stale` is true)"
    )
    timezone: str
    gauges: GaugesView
    windows: list[WindowView]


class QueueSummary(BaseModel):
    queue_id: str
    live: LiveView


class QueuesView(BaseModel):
    tenant_id: str
    queues: list[QueueSummary]


class IntervalsView(BaseModel):
    """Intervals aligned to the contract's zone; their totals add up to `total`."""

    tenant_id: str
    queue_id: str
    timezone: str
    interval_min: int
    intervals: list[WindowView]
    total: WindowView


def _ratio(r: Ratio) -> RatioView:
    return RatioView(value=r.value, numerator=r.numerator, denominator=r.denominator)


def _sl(s: ServiceLevel) -> ServiceLevelView:
    return ServiceLevelView(
        value_pct=s.value_pct,
        numerator=s.numerator,
        denominator=s.denominator,
        variant=s.variant,
        threshold_s=s.threshold_s,
        inclusive=s.inclusive,
        target_pct=s.target_pct,
        met=s.met,
        contract_version=s.contract_version,
    )


def window_view(name: str, span: tuple[int, int], c: Counters, contract: Contract) -> WindowView:
    """Every figure of one window, derived from its summed counters under a contract."""
    return WindowView(
        name=name,
        start=from_ms(span[0]),
        end=from_ms(span[1]),
        offered=c.offered,
        answered=c.answered,
        abandoned=c.abandoned,
        flowed_out=c.flowed_out,
        handled=c.handled,
        transferred=c.transferred,
        service_level=_sl(service_level(c, contract)),
        asa_ms=_ratio(asa_ms(c)),
        aht_ms=_ratio(aht_ms(c)),
        abandon_rate=_ratio(abandon_rate(c)),
        transfer_rate=_ratio(transfer_rate(c)),
        waited=_ratio(ratio(c.answered - count_within(c.hist_answered, 0, True), c.answered)),
        wait_p80_upper_s=wait_percentile_upper_s(c.hist_answered, 0.8),
        max_wait_answered_ms=c.max_wait_answered_ms,
        max_wait_abandoned_ms=c.max_wait_abandoned_ms,
    )


_VIEWS: dict[tuple[object, ...], WindowView] = {}
_encode = msgspec.msgpack.Encoder().encode


def cached_window_view(
    name: str, span: tuple[int, int], c: Counters, contract: Contract
) -> WindowView:
    """`window_view`, memoised by the *values* of its inputs (the counters' encoded bytes,
    the contract): live snapshots of an unchanged queue re-serve the same view. The view
    returned is shared: do not change it."""
    key = (name, span, contract, _encode(c))
    view = _VIEWS.get(key)
    if view is None:
        if len(_VIEWS) >= 4096:
            _VIEWS.clear()
        view = _VIEWS[key] = window_view(name, span, c, contract)
    return view


def gauges_view(g: QueueGauges) -> GaugesView:
    return GaugesView(
        calls_waiting=g.calls_waiting,
        longest_wait_ms=g.longest_wait_ms,
        oldest_queued_at=None if g.oldest_queued_at_ms is None else from_ms(g.oldest_queued_at_ms),
        agents=g.agents,
    )
