"""The FastAPI application: the same app serves the embedded and the distributed mode.

The backend (see `backend.py`) is the only thing that differs between modes. Routers live in
`routes/`, one module per concern, and take what they need through `deps.py`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from .backend import Backend
from .deps import ApiConfig
from .errors import ApiError, api_error, http_error, validation_error
from .metrics import IngestMetrics
from .routes import ingest, live, operations

DESCRIPTION = """
Live and historical KPIs of a BPO's client queues.

Authenticate with `Authorization: Bearer <key>`. The tenant always comes from the key.

**Attribution.** Offered legs count in the minute they entered the queue; answered,
abandoned and flowed-out legs and their waits count in the minute of that outcome; handle
time (talk + hold + wrap-up) counts in the minute wrap-up ended. Every SL figure carries
its numerator, denominator, formula variant, threshold and contract version, and is `null`
when its denominator is zero.
"""

ROUTERS = (ingest.router, live.router, operations.router)


def create_app(backend: Backend, config: ApiConfig, registry: CollectorRegistry) -> FastAPI:
    app = FastAPI(title="CallPulse", version="1.0", description=DESCRIPTION)
    app.state.backend = backend
    app.state.config = config
    app.state.registry = registry
    app.state.ingest_metrics = IngestMetrics(registry)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
