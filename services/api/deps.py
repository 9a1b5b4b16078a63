"""Request dependencies shared by every router: the backend, the config, the caller's key.

The tenant of every read and write comes from the API key; an admin key (no tenant) names
the tenant with `?tenant=`; any other key may not name another tenant.
"""

import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..kpi.contracts import Contract, contract_at
from ..store.keys import matches, parse_key
from .backend import Backend
from .errors import ApiError
from .limits import retry_after_header


@dataclass(frozen=True)
class ApiConfig:
    max_body_bytes: int = 8 * 1024 * 1024
    max_events_per_request: int = 10_000
    caller_key_secret: bytes = b""
    stale_after_s: float = 5.0
    max_intervals: int = 3000
    link_secret: bytes = b""  # signs wallboard links; empty: links are disabled
    stream_heartbeat_s: float = 2.0  # SSE: a comment at least this often
    stream_refresh_s: float = 5.0  # SSE: every snapshot re-sent at least this often
    rate_limit_per_s: float = 20.0  # sustained requests per second per key
    rate_limit_burst: int = 60  # requests a key may make at once after a pause
    max_request_body_bytes: int = 64 * 1024  # every route but ingest


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: str | None  # None: every tenant (admin)
    role: str
    # A teamlead key's grants inside its tenant; None: not restricted (the whole tenant).
    queues: frozenset[str] | None = None
    teams: frozenset[str] | None = None


@dataclass(frozen=True)
class Scope:
    """Who asks, and for which tenant."""

    principal: Principal
    tenant_id: str


_bearer = HTTPBearer(auto_error=False, description="An API key: `cp_<id>_<secret>`")


# The dependencies FastAPI resolves are `async def`: a plain `def` dependency costs a hop to
# the thread pool per request (and they only read app state or make one quick store lookup).


async def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def get_config(request: Request) -> ApiConfig:
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
    queues = teams = None
    if record.role == "teamlead":
        key_grants = getattr(backend, "key_grants", None)
        if key_grants is None:  # fail closed: never widen a teamlead key to its whole tenant
            raise ApiError(503, "unavailable", "this deployment cannot check teamlead grants")
        grants = key_grants(record.key_id)
        queues = frozenset(grants.queues) if grants.queues else None
        teams = frozenset(grants.teams) if grants.teams else None
    return Principal(record.key_id, record.tenant_id, record.role, queues, teams)


def authenticated(request: Request, who: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """The caller's principal, recorded for the access log and held to its key's rate limit
    (429 with Retry-After). Every authenticated route should depend on this."""
    request.state.principal = who
    wait_s = request.app.state.limiter.take(who.key_id)
    if wait_s > 0:
        raise ApiError(
            429, "rate_limited", "too many requests for this API key",
            headers=retry_after_header(wait_s),
        )  # fmt: skip
    return who


async def _principal(
    request: Request,
    backend: BackendDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    return authenticated(request, get_principal(backend, credentials))


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def _sender(
    request: Request,
    backend: BackendDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The principal of an event sender. Not held to the per-key request rate: a source
    sending one event per request is normal, and ingest is bounded instead by its body and
    batch limits and by 503 + Retry-After when the log cannot keep up."""
    who = get_principal(backend, credentials)
    request.state.principal = who
    return who


SenderDep = Annotated[Principal, Depends(_sender)]


TenantQuery = Annotated[str | None, Query(description="admin keys only: the tenant")]


async def get_scope(request: Request, who: PrincipalDep, tenant: TenantQuery = None) -> Scope:
    return scope_of(request, who, tenant)


def scope_of(request: Request, who: Principal, tenant: str | None) -> Scope:
    """The tenant a request is for: the key's, or (admin keys only) the one named."""
    if who.tenant_id is None:
        if tenant is None:
            raise ApiError(422, "tenant_required", "an admin key must name ?tenant=")
        request.state.scope_tenant = tenant
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
    # (A backend that does not implement `has_queue` yet is asked for its queue list.)
    has_queue = getattr(backend, "has_queue", None)
    found = has_queue(tenant, queue) if has_queue is not None else queue in backend.queues(tenant)
    if not found:
        raise ApiError(404, "not_found", f"no queue {queue!r} for this tenant")


# -- roles and queue visibility ------------------------------------------------------------

LIVE_ROLES = ("admin", "client", "teamlead", "wallboard")  # wallboard: live figures only
HISTORY_ROLES = ("admin", "client", "teamlead")


def _with_roles(*roles: str) -> Callable[..., Coroutine[None, None, Scope]]:
    # One flat dependency (authentication, rate limit, scope, role): each nested FastAPI
    # dependency costs tens of microseconds, and the live routes are called a lot.
    async def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        tenant: TenantQuery = None,
    ) -> Scope:
        who = authenticated(request, get_principal(request.app.state.backend, credentials))
        scope = scope_of(request, who, tenant)
        if who.role not in roles:
            raise ApiError(403, "forbidden", f"{who.role} keys may not read this")
        return scope

    return check


LiveScopeDep = Annotated[Scope, Depends(_with_roles(*LIVE_ROLES))]
HistoryScopeDep = Annotated[Scope, Depends(_with_roles(*HISTORY_ROLES))]


async def get_admin(who: PrincipalDep) -> Principal:
    """Only an admin key (BPO operations, every tenant)."""
    if who.role != "admin" or who.tenant_id is not None:
        raise ApiError(403, "forbidden", "only an admin key may do this")
    return who


AdminDep = Annotated[Principal, Depends(get_admin)]


def visible_queues(backend: Backend, scope: Scope) -> list[str]:
    """The tenant's queues this key may see: all of them, or a teamlead key's granted ones."""
    queues = backend.queues(scope.tenant_id)
    granted = scope.principal.queues
    return queues if granted is None else [q for q in queues if q in granted]


def require_visible_queue(backend: Backend, scope: Scope, queue: str) -> None:
    """404 for a queue the tenant does not have or this key may not see (the same answer)."""
    granted = scope.principal.queues
    if granted is not None and queue not in granted:
        raise ApiError(404, "not_found", f"no queue {queue!r} for this tenant")
    require_queue(backend, scope.tenant_id, queue)
