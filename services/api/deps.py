"""Request dependencies shared by every router: the backend, the config, the caller's key.

The tenant of every read and write comes from the API key; an admin key (no tenant) names
the tenant with `?tenant=`; any other key may not name another tenant.
"""

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..kpi.contracts import Contract, contract_at
from ..store.keys import matches, parse_key
from .backend import Backend
from .errors import ApiError


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


@dataclass(frozen=True)
class Scope:
    """Who asks, and for which tenant."""

    principal: Principal
    tenant_id: str


_bearer = HTTPBearer(auto_error=False, description="An API key: `cp_<id>_<secret>`")


def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


def get_config(request: Request) -> ApiConfig:
    config: ApiConfig = request.app.state.config
    return config


BackendDep = Annotated[Backend, Depends(get_backend)]
ConfigDep = Annotated[ApiConfig, Depends(get_config)]


def get_principal(
    backend: BackendDep,
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
        raise ApiError(
            401, "unauthenticated", "the API key is invalid, expired or revoked",
            headers=unauthorized,
        )  # fmt: skip
    return Principal(record.key_id, record.tenant_id, record.role)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_scope(
    who: PrincipalDep,
    tenant: Annotated[str | None, Query(description="admin keys only: the tenant")] = None,
) -> Scope:
    if who.tenant_id is None:
        if tenant is None:
            raise ApiError(422, "tenant_required", "an admin key must name ?tenant=")
        return Scope(who, tenant)
    if tenant is not None and tenant != who.tenant_id:
        raise ApiError(403, "forbidden", "the tenant comes from the API key")
    return Scope(who, who.tenant_id)


ScopeDep = Annotated[Scope, Depends(get_scope)]


def contract_for(backend: Backend, tenant: str, queue: str, at_ms: int) -> Contract:
    """The contract in force for a queue at an instant, or the built-in default (version 0)."""
    found = contract_at(backend.contracts(tenant), queue, at_ms)
    return found if found is not None else Contract(tenant_id=tenant, queue_id=None, version=0)


def require_queue(backend: Backend, tenant: str, queue: str) -> None:
    """404 for a queue the tenant does not have (the same answer whether or not another
    tenant has a queue of that name)."""
    if queue not in backend.queues(tenant):
        raise ApiError(404, "not_found", f"no queue {queue!r} for this tenant")
