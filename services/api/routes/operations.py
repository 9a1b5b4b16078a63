"""Health and metrics: no key needed."""

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from ..deps import BackendDep

router = APIRouter(tags=["operations"])


class HealthView(BaseModel):
    status: Literal["ok", "degraded"]
    stale: bool
    lag_events: int
    detail: str


@router.get("/healthz", response_model=HealthView, responses={503: {"model": HealthView}})
def healthz(backend: BackendDep) -> Any:
    """Liveness and pipeline health; 503 when degraded (e.g. the store is failing)."""
    h = backend.health()
    view = HealthView(
        status="ok" if h.ok else "degraded", stale=h.stale, lag_events=h.lag_events,
        detail=h.detail,
    )  # fmt: skip
    return JSONResponse(view.model_dump(), status_code=200 if h.ok else 503)


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
