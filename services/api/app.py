"""The FastAPI application: the same app serves the embedded and the distributed mode.

(No `from __future__ import annotations` here: FastAPI must see the dependency closures.)

The backend (see `backend.py`) is the only thing that differs between modes. The tenant of
every read and write comes from the API key; an admin key may name a tenant with `?tenant=`.
"""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..ingest.edge import prepare
from ..kpi.contracts import Contract, contract_at
from ..kpi.counters import Counters, merged
from ..kpi.windows import from_ms, intervals, local_date, rolling, to_ms, today
from ..kpi.windows import interval_at as interval_span
from ..store.keys import matches, parse_key
from .backend import Backend, Unavailable
from .errors import ERROR_RESPONSES, ApiError, api_error, http_error, validation_error
from .views import (
    IntervalsView,
    LiveView,
    QueueSummary,
    QueuesView,
    gauges_view,
    window_view,
)

DESCRIPTION = """
Live and historical KPIs of a BPO's client queues.

Authenticate with `Authorization: Bearer <key>`. The tenant always comes from the key.

**Attribution.** Offered legs count in the minute they entered the queue; answered,
abandoned and flowed-out legs and their waits count in the minute of that outcome; handle
time (talk + hold + wrap-up) counts in the minute wrap-up ended. Every SL figure carries
its numerator, denominator, formula variant, threshold and contract version, and is `null`
when its denominator is zero.
"""


@dataclass(frozen=True)
class ApiConfig:
    max_body_bytes: int = 8 * 1024 * 1024
    max_events_per_request: int = 10_000
    caller_key_secret: bytes = b""
    stale_after_s: float = 5.0
    max_intervals: int = 3000


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: str | None  # None: every tenant (admin)
    role: str


class IngestRejection(BaseModel):
    index: int
    path: str
    reason: str


class IngestResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[IngestRejection]


class HealthView(BaseModel):
    status: Literal["ok", "degraded"]
    stale: bool
    lag_events: int
    detail: str


_bearer = HTTPBearer(auto_error=False, description="An API key: `cp_<id>_<secret>`")


def create_app(backend: Backend, config: ApiConfig, registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(title="CallPulse", version="1.0", description=DESCRIPTION)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    events_in = Counter(
        "callpulse_ingest_events_total", "Events accepted by ingest (new)", registry=registry
    )
    duplicates = Counter(
        "callpulse_ingest_duplicate_events_total", "Re-sent events (no effect)", registry=registry
    )
    rejected = Counter(
        "callpulse_ingest_rejected_events_total", "Events rejected by validation", registry=registry
    )

    def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Principal:
        unauthorized = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(401, "unauthenticated", "an API key is required", headers=unauthorized)
        parsed = parse_key(credentials.credentials)
        record = None if parsed is None else backend.get_key(parsed[0])
        if (
            parsed is None
            or record is None
            or not matches(record, parsed[1])
            or not record.usable(int(time.time() * 1000))
        ):
            raise ApiError(401, "unauthenticated", "the API key is invalid, expired or revoked",
                           headers=unauthorized)  # fmt: skip
        return Principal(record.key_id, record.tenant_id, record.role)

    def reader(
        who: Annotated[Principal, Depends(principal)],
        tenant: Annotated[str | None, Query(description="admin keys only: the tenant")] = None,
    ) -> tuple[Principal, str]:
        if who.tenant_id is None:
            if tenant is None:
                raise ApiError(422, "tenant_required", "an admin key must name ?tenant=")
            return who, tenant
        if tenant is not None and tenant != who.tenant_id:
            raise ApiError(403, "forbidden", "the tenant comes from the API key")
        return who, who.tenant_id

    def contract_for(tenant: str, queue: str, at_ms: int) -> Contract:
        found = contract_at(backend.contracts(tenant), queue, at_ms)
        return found if found is not None else Contract(tenant_id=tenant, queue_id=None, version=0)

    def known_queue(tenant: str, queue: str) -> None:
        if queue not in backend.queues(tenant):
            raise ApiError(404, "not_found", f"no queue {queue!r} for this tenant")

    def live(tenant: str, queue: str, now_ms: int) -> LiveView:
        contract = contract_for(tenant, queue, now_ms)
        tz = contract.timezone
        spans = [(f"rolling_{m}m", rolling(now_ms, m)) for m in (5, 15, 30, 60)]
        spans.append(("interval", interval_span(now_ms, tz, contract.interval_min)))
        spans.append(("today", today(now_ms, tz)))
        health = backend.health()
        return LiveView(
            tenant_id=tenant,
            queue_id=queue,
            as_of=from_ms(now_ms),
            stale=health.stale,
            timezone=tz,
            gauges=gauges_view(backend.gauges(tenant, queue, now_ms)),
            windows=[
                window_view(name, span, backend.buckets(tenant, queue, *span), contract)
                for name, span in spans
            ],
        )

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=IngestResult,
        responses={
            **ERROR_RESPONSES,
            413: {"model": IngestResult, "description": "body too large"},
            503: {"description": "not durably accepted; retry after Retry-After seconds"},
        },
        tags=["ingest"],
        summary="Send events (JSON array or NDJSON)",
    )
    async def post_events(request: Request, who: Annotated[Principal, Depends(principal)]) -> Any:
        """Valid events are durably appended before the answer (202 with counts); each
        invalid event is reported by index with a reason, and its valid neighbours are
        still accepted (422 when none is valid). Re-sent event ids have no effect."""
        if who.role not in ("admin", "ingest"):
            raise ApiError(403, "forbidden", f"a {who.role} key may not send events")
        body = await _read_body(request, config.max_body_bytes)
        events, errors = prepare(
            body, who.tenant_id, config.caller_key_secret, config.max_events_per_request
        )
        rejected.inc(len(errors) if events or errors[0].index >= 0 else 1)
        rejections = [IngestRejection(index=e.index, path=e.path, reason=e.reason) for e in errors]
        if not events:
            result = IngestResult(accepted=0, duplicates=0, rejected=rejections)
            return JSONResponse(result.model_dump(), status_code=422)
        try:
            new = await backend.ingest(events)
        except Unavailable as exc:
            raise ApiError(503, "unavailable", str(exc),
                           headers={"Retry-After": str(exc.retry_after_s)}) from exc  # fmt: skip
        events_in.inc(new)
        duplicates.inc(len(events) - new)
        return IngestResult(accepted=new, duplicates=len(events) - new, rejected=rejections)

    @app.get("/v1/queues", response_model=QueuesView, responses=ERROR_RESPONSES, tags=["live"])
    def get_queues(scope: Annotated[tuple[Principal, str], Depends(reader)]) -> QueuesView:
        """The tenant's queues, each with its live snapshot."""
        _, tenant = scope
        now_ms = int(time.time() * 1000)
        return QueuesView(
            tenant_id=tenant,
            queues=[
                QueueSummary(queue_id=q, live=live(tenant, q, now_ms))
                for q in backend.queues(tenant)
            ],
        )

    @app.get(
        "/v1/queues/{queue_id}/live",
        response_model=LiveView,
        responses=ERROR_RESPONSES,
        tags=["live"],
    )
    def get_live(
        queue_id: str, scope: Annotated[tuple[Principal, str], Depends(reader)]
    ) -> LiveView:
        """Gauges (calls waiting, longest wait, agents by state), rolling 5/15/30/60-minute
        windows, the current interval and today (in the contract's zone), with SL details."""
        _, tenant = scope
        known_queue(tenant, queue_id)
        return live(tenant, queue_id, int(time.time() * 1000))

    @app.get(
        "/v1/queues/{queue_id}/intervals",
        response_model=IntervalsView,
        responses=ERROR_RESPONSES,
        tags=["history"],
    )
    def get_intervals(
        queue_id: str,
        scope: Annotated[tuple[Principal, str], Depends(reader)],
        start: Annotated[datetime, Query(alias="from", description="RFC 3339, with offset")],
        end: Annotated[datetime, Query(alias="to", description="RFC 3339, with offset")],
        interval: Annotated[Literal["15m", "30m", "60m"], Query()] = "30m",
    ) -> IntervalsView:
        """Intervals aligned to the local clock of the queue's contract zone whose start lies
        in [from, to); each interval's SL uses the contract in force at its start."""
        _, tenant = scope
        known_queue(tenant, queue_id)
        if start.tzinfo is None or end.tzinfo is None:
            raise ApiError(422, "invalid_request", "from/to need a UTC offset")
        if end <= start:
            raise ApiError(422, "invalid_request", "to must be after from")
        length = int(interval.removesuffix("m"))
        if (end - start) / timedelta(minutes=length) > config.max_intervals:
            raise ApiError(422, "invalid_request",
                           f"at most {config.max_intervals} intervals per request")  # fmt: skip
        lo, hi = to_ms(start), to_ms(end)
        grid_contract = contract_for(tenant, queue_id, lo)
        tz = grid_contract.timezone
        spans: list[tuple[int, int]] = []
        day = local_date(lo, tz)
        while True:
            day_spans = intervals(day, tz, length)
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
                window_view("interval", span, total, contract_for(tenant, queue_id, span[0]))
            )
        whole = (spans[0][0], spans[-1][1]) if spans else (lo, lo)
        return IntervalsView(
            tenant_id=tenant,
            queue_id=queue_id,
            timezone=tz,
            interval_min=length,
            intervals=views,
            total=window_view("total", whole, merged(totals), grid_contract),
        )

    @app.get("/healthz", response_model=HealthView, tags=["operations"])
    def healthz() -> Any:
        """Liveness and pipeline health (no key needed); 503 when degraded."""
        h = backend.health()
        view = HealthView(status="ok" if h.ok else "degraded", stale=h.stale,
                          lag_events=h.lag_events, detail=h.detail)  # fmt: skip
        return JSONResponse(view.model_dump(), status_code=200 if h.ok else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = ApiError(413, "payload_too_large", f"the body exceeds {limit} bytes")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)
