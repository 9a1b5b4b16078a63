"""Administration (admin keys only): tenants, queues, versioned contracts and API keys.

Contract versions are never rewritten: a change is a new version that takes effect from a
stated instant (`effective_from`), so figures of earlier periods keep the contract that was
in force then. Versions are numbered per tenant (1, 2, ...), so a version number names one
contract of the tenant (`?contract_version=` on the history routes recomputes under it).
A key's secret is returned once, when it is created or rotated, and stored only hashed.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ...kpi.contracts import Contract, ContractError, Variant
from ...kpi.counters import WAIT_EDGES_S
from ...kpi.windows import from_ms, to_ms
from ...store.keys import ROLES, ApiKey, new_key
from ...store.tenancy import KeyGrants, QueueRecord, TenantRecord
from ..backend import Backend
from ..deps import AdminDep, BackendDep, HistoryScopeDep
from ..errors import ERROR_RESPONSES, ApiError

log = logging.getLogger(__name__)

router = APIRouter(tags=["admin"])

Id = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\s/]+$")]
KeyIdPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of a page")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = Weekday.__args__  # type: ignore[attr-defined]
HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$", examples=["08:00"])]
ADMIN_RESPONSES = {**ERROR_RESPONSES, 404: {**ERROR_RESPONSES[404], "description": "not found"}}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


# -- tenants and queues ---------------------------------------------------------------------


class TenantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200, examples=["ACME Insurance"])


class TenantView(BaseModel):
    """A tenant (a BPO client). `declared` false: known only from its data, contracts or keys."""

    tenant_id: str
    name: str
    declared: bool
    created_at: datetime | None


class TenantsPage(BaseModel):
    tenants: list[TenantView]
    next_cursor: str | None


class QueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200, examples=["Claims hotline"])


class QueueView(BaseModel):
    tenant_id: str
    queue_id: str
    name: str
    declared: bool = Field(description="false: known only from its data or contract")


class QueuesPage(BaseModel):
    queues: list[QueueView]


def _tenant_view(t: TenantRecord) -> TenantView:
    return TenantView(
        tenant_id=t.tenant_id, name=t.name, declared=t.declared,
        created_at=_dt(t.created_at_ms) if t.declared else None,
    )  # fmt: skip


@router.get("/v1/admin/tenants", response_model=TenantsPage, responses=ADMIN_RESPONSES)
async def list_tenants(
    who: AdminDep, backend: BackendDep, limit: Limit = 100, cursor: Cursor = None
) -> TenantsPage:
    """Every tenant, by id, a page at a time."""
    rest = [t for t in backend.tenants() if cursor is None or t.tenant_id > cursor]
    page = rest[:limit]
    return TenantsPage(
        tenants=[_tenant_view(t) for t in page],
        next_cursor=page[-1].tenant_id if len(rest) > limit else None,
    )


@router.get("/v1/admin/tenants/{tenant_id}", response_model=TenantView, responses=ADMIN_RESPONSES)
async def get_tenant(tenant_id: Id, who: AdminDep, backend: BackendDep) -> TenantView:
    for t in backend.tenants():
        if t.tenant_id == tenant_id:
            return _tenant_view(t)
    raise ApiError(404, "not_found", f"no tenant {tenant_id!r}")


@router.put("/v1/admin/tenants/{tenant_id}", response_model=TenantView, responses=ADMIN_RESPONSES)
async def put_tenant(
    tenant_id: Id, body: TenantIn, who: AdminDep, backend: BackendDep
) -> TenantView:
    """Declare a tenant, or rename it."""
    backend.put_tenant(TenantRecord(tenant_id=tenant_id, name=body.name, created_at_ms=_now_ms()))
    log.info("tenant %s declared by key %s", tenant_id, who.key_id)
    return await get_tenant(tenant_id, who, backend)


@router.get(
    "/v1/admin/tenants/{tenant_id}/queues", response_model=QueuesPage, responses=ADMIN_RESPONSES
)
async def list_queues(tenant_id: Id, who: AdminDep, backend: BackendDep) -> QueuesPage:
    """Declared queues and queues known from data or contracts."""
    declared = {q.queue_id: q for q in backend.declared_queues(tenant_id)}
    return QueuesPage(
        queues=[
            QueueView(
                tenant_id=tenant_id, queue_id=q,
                name=declared[q].name if q in declared else "", declared=q in declared,
            )
            for q in backend.queues(tenant_id)
        ]
    )  # fmt: skip


@router.put(
    "/v1/admin/tenants/{tenant_id}/queues/{queue_id}",
    response_model=QueueView,
    responses=ADMIN_RESPONSES,
)
async def put_queue(
    tenant_id: Id, queue_id: Id, body: QueueIn, who: AdminDep, backend: BackendDep
) -> QueueView:
    """Declare a queue (it is listed before it has any data), or rename it."""
    backend.put_queue(
        QueueRecord(tenant_id=tenant_id, queue_id=queue_id, name=body.name, created_at_ms=_now_ms())
    )
    log.info("queue %s/%s declared by key %s", tenant_id, queue_id, who.key_id)
    return QueueView(tenant_id=tenant_id, queue_id=queue_id, name=body.name, declared=True)


# -- contracts ------------------------------------------------------------------------------


class BusinessHours(BaseModel):
    """Local wall-clock hours on some weekdays, [start, end)."""

    model_config = ConfigDict(extra="forbid")
    days: list[Weekday] = Field(min_length=1, max_length=7, examples=[["mon", "tue", "wed"]])
    start: HHMM
    end: HHMM = Field(examples=["18:00"])


class ContractIn(BaseModel):
    """A new contract version. Omit `queue_id` for the tenant's default contract."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "queue_id": "claims",
                    "effective_from": "2026-04-01T00:00:00+01:00",
                    "threshold_s": 20,
                    "target_pct": 80,
                    "variant": "abandon_within_ignored",
                    "short_abandon_s": 5,
                    "inclusive": True,
                    "interval_min": 30,
                    "timezone": "Europe/London",
                    "business_hours": [
                        {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00",
                         "end": "20:00"}
                    ],
                }
            ]
        },
    )  # fmt: skip
    queue_id: str | None = Field(None, min_length=1, max_length=128)
    effective_from: AwareDatetime = Field(description="in force from this instant on")
    threshold_s: int = Field(20, description=f"T, seconds; one of {list(WAIT_EDGES_S)}")
    target_pct: float = Field(80.0, ge=0, le=100)
    variant: Variant = "answered"
    short_abandon_s: int = Field(5, description="short-abandon threshold, a histogram edge <= T")
    inclusive: bool = Field(True, description="true: within T is wait <= T; false: wait < T")
    interval_min: Literal[15, 30, 60] = 30
    timezone: str = Field("UTC", max_length=64, examples=["America/New_York"])
    business_hours: list[BusinessHours] = Field([], max_length=50)
    csat_satisfied_pct: float = Field(80.0, gt=0, le=100)
    fcr_window_h: int = Field(72, ge=1, le=2160)


class ContractView(ContractIn):
    """One stored contract version."""

    model_config = ConfigDict(extra="forbid")
    tenant_id: str
    version: int = Field(description="0 is the built-in default, never stored")


class ContractsPage(BaseModel):
    contracts: list[ContractView]


def _hours_in(hours: list[BusinessHours]) -> tuple[tuple[int, int, int], ...]:
    def minute(hhmm: str) -> int:
        h, m = hhmm.split(":")
        return int(h) * 60 + int(m)

    out = []
    for block in hours:
        for day in block.days:
            out.append((WEEKDAYS.index(day), minute(block.start), minute(block.end)))
    return tuple(sorted(set(out)))


def _hours_out(hours: tuple[tuple[int, int, int], ...]) -> list[BusinessHours]:
    def hhmm(minute: int) -> str:
        return f"{minute // 60:02d}:{minute % 60:02d}"

    return [BusinessHours(days=[WEEKDAYS[d]], start=hhmm(s), end=hhmm(e)) for d, s, e in hours]  # type: ignore[list-item]


def contract_view(c: Contract) -> ContractView:
    return ContractView(
        tenant_id=c.tenant_id, version=c.version, queue_id=c.queue_id,
        effective_from=from_ms(c.effective_from_ms), threshold_s=c.threshold_s,
        target_pct=c.target_pct, variant=c.variant, short_abandon_s=c.short_abandon_s,
        inclusive=c.inclusive, interval_min=c.interval_min, timezone=c.timezone,
        business_hours=_hours_out(c.business_hours), csat_satisfied_pct=c.csat_satisfied_pct,
        fcr_window_h=c.fcr_window_h,
    )  # fmt: skip


def contract_from(tenant_id: str, version: int, body: ContractIn) -> Contract:
    """The core contract of an input (raises ContractError naming a bad field)."""
    return Contract(
        tenant_id=tenant_id, queue_id=body.queue_id, version=version,
        effective_from_ms=to_ms(body.effective_from), threshold_s=body.threshold_s,
        target_pct=body.target_pct, variant=body.variant,
        short_abandon_s=body.short_abandon_s, inclusive=body.inclusive,
        interval_min=body.interval_min, timezone=body.timezone,
        business_hours=_hours_in(body.business_hours),
        csat_satisfied_pct=body.csat_satisfied_pct, fcr_window_h=body.fcr_window_h,
    )  # fmt: skip


def next_version(contracts: list[Contract]) -> int:
    """Versions are numbered per tenant, across its queues."""
    return max([0, *(c.version for c in contracts)]) + 1


def new_contract(backend: Backend, tenant_id: str, body: ContractIn) -> Contract:
    """Validate and store the next version of a tenant's contracts (422 on a bad field)."""
    try:
        contract = contract_from(tenant_id, next_version(backend.contracts(tenant_id)), body)
    except (ContractError, ValueError, OverflowError) as exc:
        field, _, reason = str(exc).partition(": ")
        raise ApiError(
            422, "invalid_contract", str(exc), [{"path": f"body.{field}", "reason": reason}]
        ) from None
    backend.put_contract(contract)
    return contract


@router.get(
    "/v1/admin/tenants/{tenant_id}/contracts",
    response_model=ContractsPage,
    responses=ADMIN_RESPONSES,
)
async def list_contracts(tenant_id: Id, who: AdminDep, backend: BackendDep) -> ContractsPage:
    """Every contract version of a tenant (queue defaults first), oldest version first."""
    found = sorted(backend.contracts(tenant_id), key=lambda c: (c.queue_id or "", c.version))
    return ContractsPage(contracts=[contract_view(c) for c in found])


@router.post(
    "/v1/admin/tenants/{tenant_id}/contracts",
    response_model=ContractView,
    status_code=201,
    responses={**ADMIN_RESPONSES, 422: {**ERROR_RESPONSES[422], "description": "invalid field"}},
)
async def post_contract(
    tenant_id: Id, body: ContractIn, who: AdminDep, backend: BackendDep
) -> ContractView:
    """Add a contract version, in force from `effective_from` (which may be in the past: the
    periods from then on are figured under it; earlier ones keep their contract)."""
    contract = new_contract(backend, tenant_id, body)
    log.info(
        "contract %s v%d (queue %s) from %s added by key %s", tenant_id, contract.version,
        contract.queue_id, body.effective_from.isoformat(), who.key_id,
    )  # fmt: skip
    return contract_view(contract)


@router.get(
    "/v1/contracts",
    response_model=ContractsPage,
    responses=ERROR_RESPONSES,
    tags=["history"],
    summary="The contracts of the key's tenant (and queues)",
)
async def my_contracts(scope: HistoryScopeDep, backend: BackendDep) -> ContractsPage:
    """Every version of the tenant's default contract and of the queues this key may see."""
    granted = scope.principal.queues
    found = [
        c
        for c in backend.contracts(scope.tenant_id)
        if c.queue_id is None or granted is None or c.queue_id in granted
    ]
    found.sort(key=lambda c: (c.queue_id or "", c.version))
    return ContractsPage(contracts=[contract_view(c) for c in found])


# -- keys -------------------------------------------------------------------------------------


class KeyIn(BaseModel):
    """A new key. Admin keys have no tenant; every other role needs one."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"tenant_id": "acme", "role": "client", "label": "ACME BI export",
                 "expires_in_days": 365}
            ]
        },
    )  # fmt: skip
    tenant_id: str | None = Field(None, min_length=1, max_length=128)
    role: Literal["admin", "client", "teamlead", "wallboard", "ingest"]
    label: str = Field("", max_length=200)
    expires_at: AwareDatetime | None = None
    expires_in_days: float | None = Field(None, gt=0, le=3650)
    queues: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        [], max_length=200, description="teamlead keys: only these queues (default: all)"
    )
    teams: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        [], max_length=200, description="teamlead keys: only these teams (default: all)"
    )


class KeyView(BaseModel):
    """A stored key, without its secret."""

    key_id: str
    tenant_id: str | None
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    usable: bool
    queues: list[str]
    teams: list[str]


class KeyCreated(BaseModel):
    """The secret is shown here once; only its hash is stored."""

    key: str = Field(description="send as `Authorization: Bearer <key>`; shown only once")
    record: KeyView


class KeysPage(BaseModel):
    keys: list[KeyView]
    next_cursor: str | None


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_s: int = Field(
        0, ge=0, le=30 * 86_400, description="the old key keeps working this long (s)"
    )


class ExpireIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_at: AwareDatetime | None = Field(description="null: never expires")


def key_view(k: ApiKey, grants: KeyGrants, now_ms: int) -> KeyView:
    return KeyView(
        key_id=k.key_id, tenant_id=k.tenant_id, role=k.role, label=k.label,
        created_at=from_ms(k.created_at_ms), expires_at=_dt(k.expires_at_ms),
        revoked_at=_dt(k.revoked_at_ms), usable=k.usable(now_ms), queues=list(grants.queues),
        teams=list(grants.teams),
    )  # fmt: skip


def _existing_key(backend: Backend, key_id: str) -> ApiKey:
    record = backend.get_key(key_id)
    if record is None:
        raise ApiError(404, "not_found", f"no key {key_id!r}")
    return record


def create_key(
    backend: Backend, tenant_id: str | None, role: str, label: str, expires_at_ms: int | None,
    grants: KeyGrants,
) -> tuple[str, ApiKey]:  # fmt: skip
    """Make and store a key; 422 for a role/tenant/grant combination that makes no sense."""
    if role not in ROLES:
        raise ApiError(422, "invalid_request", f"role: one of {ROLES}")
    if (role == "admin") != (tenant_id is None):
        raise ApiError(422, "invalid_request", "admin keys have no tenant; other keys need one")
    if role != "teamlead" and (grants.queues or grants.teams):
        raise ApiError(422, "invalid_request", "only teamlead keys have queues or teams")
    now = _now_ms()
    if expires_at_ms is not None and expires_at_ms <= now:
        raise ApiError(422, "invalid_request", "the expiry must be in the future")
    token, record = new_key(tenant_id, role, label, now, expires_at_ms)
    backend.put_key(record, grants)
    return token, record


@router.post(
    "/v1/admin/keys", response_model=KeyCreated, status_code=201, responses=ADMIN_RESPONSES
)
async def post_key(body: KeyIn, who: AdminDep, backend: BackendDep) -> KeyCreated:
    """Create a key; its secret is in this answer only."""
    if body.expires_at is not None and body.expires_in_days is not None:
        raise ApiError(422, "invalid_request", "give expires_at or expires_in_days, not both")
    expires = None if body.expires_at is None else to_ms(body.expires_at)
    if body.expires_in_days is not None:
        expires = _now_ms() + int(body.expires_in_days * 86_400_000)
    grants = KeyGrants(queues=tuple(sorted(set(body.queues))), teams=tuple(sorted(set(body.teams))))
    token, record = create_key(backend, body.tenant_id, body.role, body.label, expires, grants)
    log.info(
        "key %s (%s, tenant %s) created by key %s", record.key_id, record.role, record.tenant_id,
        who.key_id,
    )  # fmt: skip
    return KeyCreated(key=token, record=key_view(record, grants, _now_ms()))


@router.get("/v1/admin/keys", response_model=KeysPage, responses=ADMIN_RESPONSES)
async def list_keys(
    who: AdminDep,
    backend: BackendDep,
    tenant: Annotated[
        str | None, Query(max_length=128, description="a tenant's keys; omit for admin keys")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> KeysPage:
    """Keys of one tenant (or the admin keys), by id, without secrets."""
    found = backend.keys(tenant, cursor or "", limit + 1)
    page = found[:limit]
    now = _now_ms()
    return KeysPage(
        keys=[key_view(k, backend.key_grants(k.key_id), now) for k in page],
        next_cursor=page[-1].key_id if len(found) > limit else None,
    )


@router.get("/v1/admin/keys/{key_id}", response_model=KeyView, responses=ADMIN_RESPONSES)
async def get_key(key_id: KeyIdPath, who: AdminDep, backend: BackendDep) -> KeyView:
    record = _existing_key(backend, key_id)
    return key_view(record, backend.key_grants(key_id), _now_ms())


@router.post("/v1/admin/keys/{key_id}/revoke", response_model=KeyView, responses=ADMIN_RESPONSES)
async def revoke_key(key_id: KeyIdPath, who: AdminDep, backend: BackendDep) -> KeyView:
    """Revoke a key now (revoking a revoked key keeps the first instant)."""
    record = _existing_key(backend, key_id)
    now = _now_ms()
    if record.revoked_at_ms is None:
        record = msgspec.structs.replace(record, revoked_at_ms=now)
        backend.put_key(record)
        log.info("key %s revoked by key %s", key_id, who.key_id)
    return key_view(record, backend.key_grants(key_id), now)


@router.patch("/v1/admin/keys/{key_id}", response_model=KeyView, responses=ADMIN_RESPONSES)
async def expire_key(
    key_id: KeyIdPath, body: ExpireIn, who: AdminDep, backend: BackendDep
) -> KeyView:
    """Set (or clear) a key's expiry."""
    record = _existing_key(backend, key_id)
    expires = None if body.expires_at is None else to_ms(body.expires_at)
    record = msgspec.structs.replace(record, expires_at_ms=expires)
    backend.put_key(record)
    log.info("key %s expiry set to %s by key %s", key_id, expires, who.key_id)
    return key_view(record, backend.key_grants(key_id), _now_ms())


@router.post(
    "/v1/admin/keys/{key_id}/rotate",
    response_model=KeyCreated,
    status_code=201,
    responses={**ADMIN_RESPONSES, 409: {**ERROR_RESPONSES[404], "description": "not usable"}},
)
async def rotate_key(
    key_id: KeyIdPath, body: RotateIn, who: AdminDep, backend: BackendDep
) -> KeyCreated:
    """A new key with the same tenant, role, label, expiry and grants; the old one stops
    working after `grace_s` seconds (at once by default)."""
    old = _existing_key(backend, key_id)
    now = _now_ms()
    if not old.usable(now):
        raise ApiError(409, "conflict", "the key is already revoked or expired")
    grants = backend.key_grants(key_id)
    token, record = create_key(
        backend, old.tenant_id, old.role, old.label, old.expires_at_ms, grants
    )
    cutoff = now + body.grace_s * 1000
    if old.expires_at_ms is None or cutoff < old.expires_at_ms:
        backend.put_key(msgspec.structs.replace(old, expires_at_ms=cutoff))
    log.info("key %s rotated to %s by key %s", key_id, record.key_id, who.key_id)
    return KeyCreated(key=token, record=key_view(record, grants, now))
