"""The FastAPI application: the same app serves the embedded and the distributed mode.

The backend (see `backend.py`) is the only thing that differs between modes. Routers live in
`routes/`, one module per concern, and take what they need through `deps.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backend import Backend, Unavailable
from .deps import ApiConfig
from .errors import ApiError, api_error, http_error, unavailable_error, validation_error
from .metrics import IngestMetrics
from .protection import protect
from .routes import admin, audit, ingest, links, live, operations, pages, reports, stream, teams
from .routes.alerts import router as alerts_router

DESCRIPTION = """
Live and historical KPIs of a BPO's client queues.

Authenticate with `Authorization: Bearer <key>`. The tenant always comes from the key.

**Attribution.** Offered legs count in the minute they entered the queue; answered,
abandoned and flowed-out legs and their waits count in the minute of that outcome; handle
time (talk + hold + wrap-up) counts in the minute wrap-up ended. Every SL figure carries
its numerator, denominator, formula variant, threshold and contract version, and is `null`
when its denominator is zero.

**Keys and roles.** `admin` (BPO operations: every tenant; names one with `?tenant=` on
tenant routes), `client` (its own tenant), `teamlead` (its tenant, or only the queues and
teams its key was granted), `wallboard` (live figures only), `ingest` (sends events only).
Keys are shown once, stored hashed, and can expire, be rotated and revoked.

**Time.** Intervals (15/30/60 min), days, ISO weeks (from Monday) and calendar months are
local to the IANA zone of the queue's contract; a DST day has 46 or 50 half-hours, and the
intervals of a period always add up to its total. A contract version applies from its
`effective_from` instant; `?contract_version=` recomputes a period under one version.

**Limits.** Per key: a token bucket (429 with `Retry-After` when exhausted). Bodies: 64 KiB
(8 MiB on `/v1/events`). Lists are paged: `limit` and the `next_cursor` of the previous
page. Every authenticated request is written to the access log (`/v1/audit`).
"""

ROUTERS = (
    ingest.router, live.router, operations.router,
    stream.router, links.router, teams.router, pages.router,
    reports.router, admin.router, audit.router, alerts_router,
)  # fmt: skip


def create_app(
    backend: Backend, config: ApiConfig, registry: CollectorRegistry,
    routers: Sequence[APIRouter] = ROUTERS,
) -> FastAPI:  # fmt: skip
    """The API; `routers` narrows it (e.g. `callpulse ingest` serves ingest and health)."""
    app = FastAPI(title="CallPulse", version="1.0", description=DESCRIPTION)
    app.state.backend = backend
    app.state.config = config
    app.state.registry = registry
    app.state.ingest_metrics = IngestMetrics(registry)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Unavailable, unavailable_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    protect(app, backend, config)  # rate limits, body limits, the access log
    for router in routers:
        app.include_router(router)
    return app
