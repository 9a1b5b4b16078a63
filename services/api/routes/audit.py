"""The access log: who (which key, which role) read or changed what, and when.

A client key reads its own tenant's records (its own keys' requests, and admin requests
made for its tenant); admin keys read one tenant's (`?tenant=`) or, under `/v1/admin/audit`,
every record. Records are kept in request order; page with `cursor` (the last `seq`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ...kpi.windows import from_ms, to_ms
from ...store.tenancy import AccessRecord
from ..deps import AdminDep, BackendDep, ScopeDep
from ..errors import ERROR_RESPONSES, ApiError

router = APIRouter(tags=["audit"])

FAR_PAST = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
FAR_FUTURE = datetime.fromisoformat("9999-01-01T00:00:00+00:00")


class AccessView(BaseModel):
    """One authenticated request."""

    seq: int
    at: datetime
    key_id: str
    role: str
    tenant_id: str | None = Field(description="the tenant the request was for")
    method: str
    path: str
    query: str
    status: int


class AccessPage(BaseModel):
    records: list[AccessView]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


Since = Annotated[datetime | None, Query(alias="from", description="RFC 3339, with offset")]
Until = Annotated[datetime | None, Query(alias="to", description="RFC 3339, with offset")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=20, pattern=r"^\d+$")]


def _bounds(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    for value in (start, end):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, "invalid_request", "from/to need a UTC offset")
    return to_ms(start or FAR_PAST), to_ms(end or FAR_FUTURE)


def _page(records: list[AccessRecord], limit: int) -> AccessPage:
    page = records[:limit]
    return AccessPage(
        records=[
            AccessView(
                seq=r.seq, at=from_ms(r.at_ms), key_id=r.key_id, role=r.role,
                tenant_id=r.tenant_id, method=r.method, path=r.path, query=r.query,
                status=r.status,
            )
            for r in page
        ],
        next_cursor=str(page[-1].seq) if len(records) > limit else None,
    )  # fmt: skip


@router.get(
    "/v1/audit",
    response_model=AccessPage,
    responses=ERROR_RESPONSES,
    summary="The access log of the key's tenant",
)
async def get_audit(
    request: Request,
    scope: ScopeDep,
    backend: BackendDep,
    start: Since = None,
    end: Until = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AccessPage:
    """Requests made with the tenant's keys, and admin requests for the tenant, oldest first."""
    if scope.principal.role not in ("admin", "client"):
        raise ApiError(403, "forbidden", f"{scope.principal.role} keys may not read this")
    request.app.state.access_log.flush()
    lo, hi = _bounds(start, end)
    found = backend.access_log(scope.tenant_id, lo, hi, int(cursor or 0), limit + 1)
    return _page(found, limit)


@router.get(
    "/v1/admin/audit",
    response_model=AccessPage,
    responses=ERROR_RESPONSES,
    tags=["admin"],
    summary="Admin: the whole access log",
)
async def get_admin_audit(
    request: Request,
    who: AdminDep,
    backend: BackendDep,
    start: Since = None,
    end: Until = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> AccessPage:
    """Every request of every key, oldest first."""
    request.app.state.access_log.flush()
    lo, hi = _bounds(start, end)
    found = backend.access_log(None, lo, hi, int(cursor or 0), limit + 1, every_tenant=True)
    return _page(found, limit)
