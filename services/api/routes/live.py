"""Live and interval figures per queue."""

import time
import weakref
from bisect import bisect_left
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from ...kpi.counters import merged
from ...kpi.periods import local_days, span_intervals
from ...kpi.windows import day_span, from_ms, interval_at, rolling, to_ms, today
from ..backend import Backend, StoreUnavailable
from ..deps import (
    BackendDep,
    ConfigDep,
    HistoryScopeDep,
    LiveScopeDep,
    contract_for,
    require_visible_queue,
    visible_queues,
)
from ..errors import ERROR_RESPONSES, ApiError
from ..examples import json_example, window_example
from ..reports import contract_lookup, interval_totals
from ..views import (
    IntervalsView,
    LiveView,
    QueueSummary,
    QueuesView,
    WindowView,
    cached_window_view,
    gauges_view,
    window_view,
)

router = APIRouter()

# Per backend and queue: the windows last read from the store and when (ms), served, marked
# stale, while the store is unreachable.
_Windows = dict[tuple[str, str], tuple[int, list[WindowView]]]
_LAST_WINDOWS: weakref.WeakKeyDictionary[Backend, _Windows] = weakref.WeakKeyDictionary()


def live_view(backend: Backend, tenant: str, queue: str, now_ms: int) -> LiveView:
    """The live snapshot of one queue at `now_ms`: the one serializer behind the live
    endpoints, the SSE stream and the wallboard. Gauges come from live state; when the
    store cannot be read, the windows are the last-known ones (`windows_as_of`, `stale`)."""
    contract = contract_for(backend, tenant, queue, now_ms)
    tz = contract.timezone
    spans = [(f"rolling_{m}m", rolling(now_ms, m)) for m in (5, 15, 30, 60)]
    spans.append(("interval", interval_at(now_ms, tz, contract.interval_min)))
    spans.append(("today", today(now_ms, tz)))
    last = _LAST_WINDOWS.setdefault(backend, {})
    try:
        windows = [
            cached_window_view(name, span, backend.buckets(tenant, queue, *span), contract)
            for name, span in spans
        ]
    except StoreUnavailable:
        if (tenant, queue) not in last:
            raise
        read_ms, windows = last[(tenant, queue)]
    else:
        read_ms = now_ms
        if len(last) >= 10_000:
            last.clear()
        last[(tenant, queue)] = (now_ms, windows)
    return LiveView(
        tenant_id=tenant,
        queue_id=queue,
        as_of=from_ms(now_ms),
        stale=backend.health().stale or read_ms < now_ms,
        windows_as_of=from_ms(read_ms),
        timezone=tz,
        gauges=gauges_view(backend.gauges(tenant, queue, now_ms)),
        windows=windows,
    )


@router.get("/v1/queues", response_model=QueuesView, responses=ERROR_RESPONSES, tags=["live"])
async def get_queues(scope: LiveScopeDep, backend: BackendDep) -> QueuesView:
    """The tenant's queues, each with its live snapshot."""
    now_ms = int(time.time() * 1000)
    tenant = scope.tenant_id
    return QueuesView(
        tenant_id=tenant,
        queues=[
            QueueSummary(queue_id=q, live=live_view(backend, tenant, q, now_ms))
            for q in visible_queues(backend, scope)
        ],
    )


@router.get(
    "/v1/queues/{queue_id}/live", response_model=LiveView, responses=ERROR_RESPONSES, tags=["live"]
)
async def get_live(queue_id: str, scope: LiveScopeDep, backend: BackendDep) -> LiveView:
    """Gauges (calls waiting, longest wait, agents by state), rolling 5/15/30/60-minute
    windows, the current interval and today (in the contract's zone), with SL details.
    (Async: it runs between the aggregator's steps, so it reads one consistent state.)"""
    require_visible_queue(backend, scope, queue_id)
    return live_view(backend, scope.tenant_id, queue_id, int(time.time() * 1000))


@router.get(
    "/v1/queues/{queue_id}/intervals",
    response_model=IntervalsView,
    responses={
        **ERROR_RESPONSES,
        200: json_example(
            {
                "tenant_id": "acme",
                "queue_id": "claims",
                "timezone": "Europe/London",
                "interval_min": 30,
                "intervals": [window_example()],
                "total": window_example(),
            }
        ),
    },
    tags=["history"],
)
async def get_intervals(
    queue_id: str,
    scope: HistoryScopeDep,
    backend: BackendDep,
    config: ConfigDep,
    start: Annotated[
        datetime,
        Query(
            alias="from",
            description="RFC 3339, with offset",
            examples=["2026-03-08T00:00:00-05:00"],
        ),
    ],
    end: Annotated[
        datetime,
        Query(
            alias="to", description="RFC 3339, with offset", examples=["2026-03-09T00:00:00-04:00"]
        ),
    ],
    interval: Annotated[
        Literal["15m", "30m", "60m", "1d"], Query(description="1d: local days")
    ] = "30m",
    contract_version: Annotated[
        int | None,
        Query(ge=0, le=1_000_000, description="recompute under this contract version"),
    ] = None,
) -> IntervalsView:
    """Intervals aligned to the local clock of the queue's contract zone (or local days)
    whose start lies in [from, to). Each interval's SL uses the contract in force at its
    start, or with `contract_version` that version throughout (a recompute); `total` is the
    sum of the intervals under the contract in force at the first one's start. A DST day has
    46 or 50 half-hours; the intervals always add up to the total."""
    tenant = scope.tenant_id
    require_visible_queue(backend, scope, queue_id)
    lo, hi = checked_range(start, end)
    length = 1440 if interval == "1d" else int(interval.removesuffix("m"))
    if (end - start) / timedelta(minutes=length) > config.max_intervals:
        raise ApiError(
            422, "invalid_request", f"at most {config.max_intervals} intervals per request"
        )
    at = contract_lookup(backend.contracts(tenant), tenant, queue_id, contract_version)
    grid = at(lo)
    if interval == "1d":
        days = [day_span(d, grid.timezone) for d in local_days((lo, hi), grid.timezone)]
        spans = [s for s in days if lo <= s[0] < hi]
    else:
        spans = span_intervals((lo, hi), grid.timezone, length)
    name = "day" if interval == "1d" else "interval"
    whole = (spans[0][0], spans[-1][1]) if spans else (lo, lo)

    def compute() -> IntervalsView:  # in a worker thread: up to 3000 intervals of reading
        buckets = backend.bucket_map(tenant, queue_id, *whole) if spans else {}
        totals = interval_totals(buckets, spans)
        restated = sorted(backend.restated_minutes(tenant, queue_id, *whole)) if spans else []
        return IntervalsView(
            tenant_id=tenant,
            queue_id=queue_id,
            timezone=grid.timezone,
            interval_min=length,
            intervals=[
                window_view(name, span, total, at(span[0])).model_copy(
                    update={"restated": _any_within(restated, span)}
                )
                for span, total in zip(spans, totals, strict=True)
            ],
            total=window_view("total", whole, merged(totals), at(whole[0])),
        )

    return await run_in_threadpool(compute)


def _any_within(sorted_ms: list[int], span: tuple[int, int]) -> bool:
    i = bisect_left(sorted_ms, span[0])
    return i < len(sorted_ms) and sorted_ms[i] < span[1]


MIN_INSTANT = datetime(1971, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9998, 1, 1, tzinfo=UTC)


def checked_range(start: datetime, end: datetime) -> tuple[int, int]:
    """[from, to) in UTC ms; 422 unless both have an offset, from < to, within 1971-9997."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ApiError(422, "invalid_request", "from/to need a UTC offset")
    if end <= start:
        raise ApiError(422, "invalid_request", "to must be after from")
    if start < MIN_INSTANT or end > MAX_INSTANT:
        raise ApiError(422, "invalid_request", "from/to must lie between 1971 and 9997")
    return to_ms(start), to_ms(end)
