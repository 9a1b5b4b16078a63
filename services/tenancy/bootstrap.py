"""Bootstrap tenants, queues and contracts from a TOML file (idempotent).

    [[tenants]]
    id = "acme"
    name = "ACME Insurance"
    queues = [{ id = "claims", name = "Claims" }, { id = "sales" }]

    [[tenants.contracts]]            # no `queue_id`: the tenant's default contract
    effective_from = 2026-01-01T00:00:00Z
    timezone = "Europe/London"
    variant = "abandon_within_ignored"
    threshold_s = 20
    target_pct = 80

    [[tenants.contracts.business_hours]]
    days = ["mon", "tue", "wed", "thu", "fri"]
    start = "08:00"
    end = "20:00"

Contract fields are those of `POST /v1/admin/tenants/{tenant}/contracts`. Applying the same
file again changes nothing: a contract that equals an existing version (every field,
`effective_from` included) is not added again; any other is added as the next version.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any, Protocol

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..api.routes.admin import ContractIn, contract_from, next_version
from ..kpi.contracts import Contract, ContractError
from ..store.tenancy import QueueRecord, TenantRecord


class BootstrapError(ValueError):
    """The file is not valid; the message names the place and the reason."""


class QueueEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    name: str = ""


class TenantEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    name: str = ""
    queues: list[QueueEntry] = []
    contracts: list[ContractIn] = []


class BootstrapFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenants: list[TenantEntry] = []


class Registry(Protocol):
    """What bootstrapping writes to (the SQLite store or an API backend)."""

    def contracts(self, tenant_id: str) -> list[Contract]: ...

    def put_contract(self, contract: Contract) -> None: ...


class Applied(msgspec.Struct, kw_only=True):
    tenants: int = 0
    queues: int = 0
    contracts_added: int = 0
    contracts_unchanged: int = 0


def load(path: Path) -> BootstrapFile:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
        return BootstrapFile.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise BootstrapError(f"{path}: not TOML: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BootstrapError(f"{path}: {where}: {first['msg']}") from None


def _same(a: Contract, b: Contract) -> bool:
    return msgspec.structs.replace(a, version=0) == msgspec.structs.replace(b, version=0)


def apply(
    spec: BootstrapFile, put_tenant: Any, put_queue: Any, registry: Registry
) -> Applied:  # fmt: skip
    """Declare every tenant and queue and add every new contract version."""
    for t in spec.tenants:  # validate everything before writing anything
        for n, body in enumerate(t.contracts):
            try:
                contract_from(t.id, 1, body)
            except (ContractError, ValueError) as exc:
                raise BootstrapError(f"tenants.{t.id}.contracts.{n}: {exc}") from None
    now = int(time.time() * 1000)
    done = Applied()
    for t in spec.tenants:
        put_tenant(TenantRecord(tenant_id=t.id, name=t.name, created_at_ms=now))
        done.tenants += 1
        for q in t.queues:
            put_queue(QueueRecord(tenant_id=t.id, queue_id=q.id, name=q.name, created_at_ms=now))
            done.queues += 1
        for n, body in enumerate(t.contracts):
            existing = registry.contracts(t.id)
            try:
                contract = contract_from(t.id, next_version(existing), body)
            except (ContractError, ValueError) as exc:
                raise BootstrapError(f"tenants.{t.id}.contracts.{n}: {exc}") from None
            if any(_same(contract, c) for c in existing):
                done.contracts_unchanged += 1
                continue
            registry.put_contract(contract)
            done.contracts_added += 1
    return done
