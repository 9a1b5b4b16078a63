"""Live and interval figures per queue."""

import time
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from ...kpi.counters import Counters, merged
from ...kpi.windows import from_ms, interval_at, intervals, local_date, rolling, to_ms, today
from ..backend import Backend
from ..deps import BackendDep, ConfigDep, ScopeDep, contract_for, require_queue
from ..errors import ERROR_RESPONSES, ApiError
from ..views import IntervalsView, LiveView, QueueSummary, QueuesView, gauges_view, window_view

router = APIRouter()


def live_view(backend: Backend, tenant: str, queue: str, now_ms: int) -> LiveView:
    """The live snapshot of one queue at `now_ms`: the one serializer behind the live
    endpoints, the SSE stream and the wallboard."""
    contract = contract_for(backend, tenant, queue, now_ms)
    tz = contract.timezone
    spans = [(f"rolling_{m}m", rolling(now_ms, m)) for m in (5, 15, 30, 60)]
    spans.append(("interval", interval_at(now_ms, tz, contract.interval_min)))
    spans.append(("today", today(now_ms, tz)))
    return LiveView(
        tenant_id=tenant,
        queue_id=queue,
        as_of=from_ms(now_ms),
        stale=backend.health().stale,
        timezone=tz,
        gauges=gauges_view(backend.gauges(tenant, queue, now_ms)),
        windows=[
            window_view(name, span, backend.buckets(tenant, queue, *span), contract)
            for name, span in spans
        ],
    )


@router.get("/v1/queues", response_model=QueuesView, responses=ERROR_RESPONSES, tags=["live"])
def get_queues(scope: ScopeDep, backend: BackendDep) -> QueuesView:
    """The tenant's queues, each with its live snapshot."""
    now_ms = int(time.time() * 1000)
    tenant = scope.tenant_id
    return QueuesView(
        tenant_id=tenant,
        queues=[
            QueueSummary(queue_id=q, live=live_view(backend, tenant, q, now_ms))
            for q in backend.queues(tenant)
        ],
    )


@router.get(
    "/v1/queues/{queue_id}/live", response_model=LiveView, responses=ERROR_RESPONSES, tags=["live"]
)
def get_live(queue_id: str, scope: ScopeDep, backend: BackendDep) -> LiveView:
    """Gauges (calls waiting, longest wait, agents by state), rolling 5/15/30/60-minute
    windows, the current interval and today (in the contract's zone), with SL details."""
    require_queue(backend, scope.tenant_id, queue_id)
    return live_view(backend, scope.tenant_id, queue_id, int(time.time() * 1000))


@router.get(
    "/v1/queues/{queue_id}/intervals",
    response_model=IntervalsView,
    responses=ERROR_RESPONSES,
    tags=["history"],
)
def get_intervals(
    queue_id: str,
    scope: ScopeDep,
    backend: BackendDep,
    config: ConfigDep,
    start: Annotated[datetime, Query(alias="from", description="RFC 3339, with offset")],
    end: Annotated[datetime, Query(alias="to", description="RFC 3339, with offset")],
    interval: Annotated[Literal["15m", "30m", "60m"], Query()] = "30m",
) -> IntervalsView:
    """Intervals aligned to the local clock of the queue's contract zone whose start lies in
    [from, to); each interval's SL uses the contract in force at its start."""
    tenant = scope.tenant_id
    require_queue(backend, tenant, queue_id)
    if start.tzinfo is None or end.tzinfo is None:
        raise ApiError(422, "invalid_request", "from/to need a UTC offset")
    if end <= start:
        raise ApiError(422, "invalid_request", "to must be after from")
    length = int(interval.removesuffix("m"))
    if (end - start) / timedelta(minutes=length) > config.max_intervals:
        raise ApiError(
            422, "invalid_request", f"at most {config.max_intervals} intervals per request"
        )
    lo, hi = to_ms(start), to_ms(end)
    grid = contract_for(backend, tenant, queue_id, lo)
    spans: list[tuple[int, int]] = []
    day = local_date(lo, grid.timezone)
    while True:
        day_spans = intervals(day, grid.timezone, length)
        spans += [s for s in day_spans if lo <= s[0] < hi]
        if day_spans[-1][1] >= hi:
            break
        day += timedelta(days=1)
    buckets = backend.bucket_map(tenant, queue_id, spans[0][0], spans[-1][1]) if spans else {}
    views = []
    totals: list[Counters] = []
    for span in spans:
        total = merged([c for m, c in buckets.items() if span[0] <= m < span[1]])
        totals.append(total)
        views.append(
            window_view("interval", span, total, contract_for(backend, tenant, queue_id, span[0]))
        )
    whole = (spans[0][0], spans[-1][1]) if spans else (lo, lo)
    return IntervalsView(
        tenant_id=tenant,
        queue_id=queue_id,
        timezone=grid.timezone,
        interval_min=length,
        intervals=views,
        total=window_view("total", whole, merged(totals), grid),
    )
