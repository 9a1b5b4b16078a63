"""Summaries, reports (JSON and CSV) and roll-ups of a tenant's queues and of the floor.

Periods are local to the contract's IANA zone: `today`/`yesterday` are local days,
weeks are ISO weeks (Monday 00:00 local), months calendar months. Every SL figure carries
its numerator, denominator, variant, threshold and contract version; see `reports.py` for
how intervals, periods, business hours and attainment fit together.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ...kpi.contracts import Contract
from ...kpi.periods import period_span, report_span
from ...kpi.windows import Span, from_ms, local_date
from ..backend import Backend
from ..deps import (
    AdminDep,
    BackendDep,
    HistoryScopeDep,
    Scope,
    require_visible_queue,
    visible_queues,
)
from ..errors import ERROR_RESPONSES, ApiError
from ..examples import json_example, section_example
from ..reports import (
    ContractAt,
    QualityInputs,
    Section,
    combined,
    contract_lookup,
    section,
)

router = APIRouter(tags=["history"])

Period = Literal["today", "yesterday", "this_week", "last_week", "this_month", "last_month"]
PeriodQuery = Annotated[
    Period, Query(description="local to the contract's zone; weeks start on Monday")
]
VersionQuery = Annotated[
    int | None,
    Query(
        ge=0,
        le=1_000_000,
        description="recompute under this contract version instead of the versions in force",
    ),
]
LimitQuery = Annotated[int, Query(ge=1, le=200, description="queues (or tenants) per page")]
CursorQuery = Annotated[
    str | None,
    Query(max_length=200, description="`next_cursor` of the previous page"),
]


class QueueSummaryView(BaseModel):
    """One queue over one period."""

    tenant_id: str
    queue_id: str
    period: Period
    as_of: datetime
    complete: bool = Field(description="the period has ended")
    summary: Section


class TenantSummaryView(BaseModel):
    """A tenant's queues over one period, and their roll-up (first page only)."""

    tenant_id: str
    period: Period
    as_of: datetime
    queues: list[Section]
    rollup: Section | None = Field(
        description="all the key's queues together, under the tenant's default contract"
    )
    next_cursor: str | None


class ReportView(BaseModel):
    """A daily report has a row per interval; weekly and monthly reports a row per day."""

    tenant_id: str
    kind: Literal["daily", "weekly", "monthly"]
    start: datetime
    end: datetime
    as_of: datetime
    complete: bool
    queues: list[Section]
    rollup: Section | None
    next_cursor: str | None


class TenantRollup(BaseModel):
    tenant_id: str
    summary: Section


class FloorView(BaseModel):
    """Every tenant's roll-up, each under its own default contract, and the floor total
    under the built-in contract (version 0: `answered`, T = 20 s, <=, target 80 %)."""

    period: Period
    timezone: str
    as_of: datetime
    tenants: list[TenantRollup]
    total: Section | None = Field(description="first page only")
    next_cursor: str | None


_EXAMPLE_SL = {
    "value_pct": 84.2,
    "numerator": 160,
    "denominator": 190,
    "variant": "offered",
    "threshold_s": 20,
    "inclusive": True,
    "target_pct": 80.0,
    "met": True,
    "contract_version": 3,
}


_SECTION = section_example()
_QUEUE_SUMMARY = {
    "tenant_id": "acme",
    "queue_id": "claims",
    "period": "today",
    "as_of": "2026-03-09T12:00:00Z",
    "complete": False,
    "summary": {**_SECTION, "rows": []},
}
_TENANT_SUMMARY = {
    "tenant_id": "acme",
    "period": "today",
    "as_of": "2026-03-09T12:00:00Z",
    "queues": [{**_SECTION, "rows": []}],
    "rollup": {**_SECTION, "queue_id": None, "rows": []},
    "next_cursor": None,
}
_REPORT = {
    "tenant_id": "acme",
    "kind": "daily",
    "start": _SECTION["start"],
    "end": _SECTION["end"],
    "as_of": "2026-03-10T08:00:00Z",
    "complete": True,
    "queues": [_SECTION],
    "rollup": {**_SECTION, "queue_id": None},
    "next_cursor": None,
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _page(items: list[str], cursor: str | None, limit: int) -> tuple[list[str], str | None]:
    """Items after `cursor` (an item value), at most `limit`, and the next cursor."""
    rest = [i for i in items if cursor is None or i > cursor]
    page = rest[:limit]
    return page, (page[-1] if len(rest) > limit else None)


def _maps(backend: Backend, tenant: str, queues: list[str], span: Span) -> dict[str, Any]:
    return {q: backend.bucket_map(tenant, q, span[0], span[1]) for q in queues}


def _quality_window(contracts: list[Contract]) -> int:
    return max([72, *(c.fcr_window_h for c in contracts)])


def _tenant_sections(
    backend: Backend, scope: Scope, span_of: Any, version: int | None, rows: Any,
    cursor: str | None, limit: int, now_ms: int, queue: str | None = None,
) -> tuple[list[Section], Section | None, str | None]:  # fmt: skip
    """Per-queue sections (one page) and, on the first page, the roll-up of every visible
    queue. `span_of(contract)` gives the period in a contract's zone.

    Called in a worker thread (a month of minutes is work): it only reads. The backend
    reads the core's memory on the aggregator's loop and evicted, unchangeable minutes
    from the store."""
    tenant = scope.tenant_id
    contracts = backend.contracts(tenant)
    every = visible_queues(backend, scope)
    if queue is not None:
        require_visible_queue(backend, scope, queue)
        every = [queue]
    page, next_cursor = _page(every, cursor, limit)
    with_rollup = cursor is None and queue is None  # one queue: no roll-up
    spans: dict[str | None, Span] = {}
    lookups: dict[str | None, ContractAt] = {
        q: contract_lookup(contracts, tenant, q, version) for q in page
    }
    if with_rollup:
        lookups[None] = contract_lookup(contracts, tenant, None, version)
    for q, at in lookups.items():
        first = span_of(at(now_ms))
        spans[q] = span_of(at(first[0]))  # the zone in force at the period's start
    if not spans:
        return [], None, next_cursor
    lo = min(s[0] for s in spans.values())
    hi = max(s[1] for s in spans.values())
    inputs = QualityInputs(backend, tenant, (lo, hi), _quality_window(contracts))
    maps = _maps(backend, tenant, every if with_rollup else page, (lo, hi))
    sections = []
    for q in page:
        s = section(q, maps[q], spans[q], lookups[q], rows)
        s.quality = inputs.view(lookups[q](spans[q][0]), [q], spans[q], now_ms)
        sections.append(s)
    rollup = None
    if with_rollup:
        roll_at, roll_span = lookups[None], spans[None]
        rollup = section(None, combined(list(maps.values())), roll_span, roll_at, rows)
        restricted = scope.principal.queues is not None
        rollup.quality = inputs.view(
            roll_at(roll_span[0]), every if restricted else None, roll_span, now_ms
        )
    return sections, rollup, next_cursor


@router.get(
    "/v1/queues/{queue_id}/summary",
    response_model=QueueSummaryView,
    responses={**ERROR_RESPONSES, 200: json_example(_QUEUE_SUMMARY)},
    summary="One queue over a period: figures, SLA attainment, CSAT and FCR",
)
async def get_queue_summary(
    queue_id: Annotated[str, Path(max_length=128)],
    scope: HistoryScopeDep,
    backend: BackendDep,
    period: PeriodQuery = "today",
    contract_version: VersionQuery = None,
) -> QueueSummaryView:
    """The period figure (the sum of the period's intervals, under the contract in force at
    the period's start) and attainment (share of intervals meeting their target)."""
    require_visible_queue(backend, scope, queue_id)
    now_ms = _now_ms()
    sections, _, _ = await run_in_threadpool(
        _tenant_sections, backend, scope, lambda c: period_span(period, now_ms, c.timezone),
        contract_version, None, None, 1, now_ms, queue_id,
    )  # fmt: skip
    s = sections[0]
    return QueueSummaryView(
        tenant_id=scope.tenant_id, queue_id=queue_id, period=period, as_of=from_ms(now_ms),
        complete=s.end <= from_ms(now_ms), summary=s,
    )  # fmt: skip


@router.get(
    "/v1/summary",
    response_model=TenantSummaryView,
    responses={**ERROR_RESPONSES, 200: json_example(_TENANT_SUMMARY)},
    summary="The tenant's queues over a period, and their roll-up",
)
async def get_tenant_summary(
    scope: HistoryScopeDep,
    backend: BackendDep,
    period: PeriodQuery = "today",
    contract_version: VersionQuery = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> TenantSummaryView:
    """Each queue under its own contract, and the roll-up of every queue the key may see
    under the tenant's default contract (a queue-specific version cannot be pinned here)."""
    now_ms = _now_ms()
    sections, rollup, next_cursor = await run_in_threadpool(
        _tenant_sections, backend, scope, lambda c: period_span(period, now_ms, c.timezone),
        contract_version, None, cursor, limit, now_ms,
    )  # fmt: skip
    return TenantSummaryView(
        tenant_id=scope.tenant_id, period=period, as_of=from_ms(now_ms), queues=sections,
        rollup=rollup, next_cursor=next_cursor,
    )  # fmt: skip


REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {
        "description": "the report (JSON, or CSV with `format=csv`)",
        "content": {
            "application/json": {"example": _REPORT},
            "text/csv": {
                "schema": {"type": "string"},
                "example": "scope,queue_id,row,label,start_utc,end_utc,...\n",
            },
        },
    },
}


@router.get(
    "/v1/reports/{kind}",
    response_model=ReportView,
    responses=REPORT_RESPONSES,
    summary="Daily, weekly or monthly report (JSON or CSV)",
)
async def get_report(
    kind: Literal["daily", "weekly", "monthly"],
    scope: HistoryScopeDep,
    backend: BackendDep,
    day: Annotated[
        date | None,
        Query(
            alias="date",
            description="a local date inside the period; default: the last complete period",
        ),
    ] = None,
    queue: Annotated[str | None, Query(max_length=128, description="only this queue")] = None,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
    contract_version: VersionQuery = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> Any:
    """Rows per interval (daily) or per local day (weekly, monthly), a total per queue with
    attainment, CSAT and FCR, and the roll-up of the key's queues (first page only, and
    not when one `queue` is asked for)."""
    now_ms = _now_ms()
    if day is not None and not date(1971, 1, 1) <= day <= date(9997, 12, 31):
        raise ApiError(422, "invalid_request", "date is out of range")

    def span_of(c: Contract) -> Span:
        target = day
        if target is None:
            today = local_date(now_ms, c.timezone)
            target = {
                "daily": today - timedelta(days=1),
                "weekly": today - timedelta(days=7),
                "monthly": today.replace(day=1) - timedelta(days=1),
            }[kind]
        return report_span(kind, target, c.timezone)

    rows = "interval" if kind == "daily" else "day"
    sections, rollup, next_cursor = await run_in_threadpool(
        _tenant_sections, backend, scope, span_of, contract_version, rows, cursor, limit,
        now_ms, queue,
    )  # fmt: skip
    first = rollup if rollup is not None else (sections[0] if sections else None)
    start = first.start if first is not None else from_ms(now_ms)
    end = first.end if first is not None else from_ms(now_ms)
    view = ReportView(
        tenant_id=scope.tenant_id, kind=kind, start=start, end=end, as_of=from_ms(now_ms),
        complete=end <= from_ms(now_ms), queues=sections, rollup=rollup,
        next_cursor=next_cursor,
    )  # fmt: skip
    if fmt == "csv":
        return Response(
            await run_in_threadpool(report_csv, view),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{kind}-report.csv"',
                **({"X-Next-Cursor": next_cursor} if next_cursor else {}),
            },
        )
    return view


@router.get(
    "/v1/floor/summary",
    response_model=FloorView,
    responses=ERROR_RESPONSES,
    tags=["admin"],
    summary="Admin: every tenant's roll-up and the floor total over a period",
)
async def get_floor_summary(
    who: AdminDep,
    backend: BackendDep,
    period: PeriodQuery = "today",
    tz: Annotated[str, Query(max_length=64, description="IANA zone of the period")] = "UTC",
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> FloorView:
    """Periods are local to `tz` for every tenant; each tenant's roll-up uses its default
    contract's formula (in that zone); the floor total uses the built-in contract."""
    now_ms = _now_ms()
    try:
        floor = Contract(tenant_id="*", version=0, timezone=tz)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    span = period_span(period, now_ms, tz)

    def compute() -> FloorView:
        tenants = [t.tenant_id for t in backend.tenants()]
        page, next_cursor = _page(tenants, cursor, limit)
        rows = []
        all_maps: list[dict[int, Any]] = []
        for tenant in tenants if cursor is None else page:
            contracts = [msgspec.structs.replace(c, timezone=tz) for c in backend.contracts(tenant)]
            maps = [backend.bucket_map(tenant, q, *span) for q in backend.queues(tenant)]
            all_maps += maps
            if tenant in page:
                at = _in_zone(contract_lookup(contracts, tenant, None, None), tz)
                rows.append(
                    TenantRollup(tenant_id=tenant, summary=section(None, combined(maps), span, at))
                )
        total = None
        if cursor is None:
            total = section(None, combined(all_maps), span, lambda _: floor)
        return FloorView(
            period=period, timezone=tz, as_of=from_ms(now_ms), tenants=rows, total=total,
            next_cursor=next_cursor,
        )  # fmt: skip

    return await run_in_threadpool(compute)


def _in_zone(at: Any, tz: str) -> Any:
    return lambda ms: msgspec.structs.replace(at(ms), timezone=tz)


# -- CSV -------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "scope", "queue_id", "row", "label", "start_utc", "end_utc", "in_business_hours",
    "offered", "answered", "abandoned", "flowed_out", "handled", "transferred",
    "sl_pct", "sl_numerator", "sl_denominator", "sl_variant", "sl_threshold_s",
    "sl_inclusive", "sl_target_pct", "sl_met", "contract_version",
    "asa_ms", "aht_ms", "abandon_rate", "transfer_rate",
    "attainment_pct", "attainment_met", "attainment_measured", "attainment_intervals",
    "csat", "csat_numerator", "csat_denominator", "fcr", "fcr_numerator", "fcr_denominator",
    "fcr_pending",
)  # fmt: skip


def _cell(value: object) -> object:
    """A CSV cell; text starting like a formula is quoted with ' (CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def report_csv(view: ReportView) -> str:
    """The report as CSV: one line per row, then the section's total, per section."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    sections = [*view.queues, *([view.rollup] if view.rollup is not None else [])]
    for s in sections:
        kind = "queue" if s.queue_id is not None else "rollup"
        lines: list[tuple[str, Any, Any, Any, Any]] = [
            (r.figures.name, r.label, r.in_business_hours, r.figures, r.attainment) for r in s.rows
        ]
        lines.append(("total", s.start.isoformat(), True, s.figures, s.attainment))
        for row, label, in_hours, w, a in lines:
            sl = w.service_level
            q = s.quality if row == "total" else None
            writer.writerow(
                _cell(v)
                for v in (
                    kind, s.queue_id, row, label, w.start.isoformat(), w.end.isoformat(),
                    in_hours, w.offered, w.answered, w.abandoned, w.flowed_out, w.handled,
                    w.transferred, sl.value_pct, sl.numerator, sl.denominator, sl.variant,
                    sl.threshold_s, sl.inclusive, sl.target_pct, sl.met, sl.contract_version,
                    w.asa_ms.value, w.aht_ms.value, w.abandon_rate.value, w.transfer_rate.value,
                    None if a is None else a.value_pct, None if a is None else a.met,
                    None if a is None else a.measured, None if a is None else a.intervals,
                    None if q is None else q.csat.value,
                    None if q is None else q.csat.numerator,
                    None if q is None else q.csat.denominator,
                    None if q is None else q.fcr.value,
                    None if q is None else q.fcr.numerator,
                    None if q is None else q.fcr.denominator,
                    None if q is None else q.fcr.pending,
                )
            )  # fmt: skip
    return out.getvalue()
