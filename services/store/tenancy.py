"""Records of the tenancy registry shared by both stores: tenants, queues, key grants,
surveys and the access (audit) log. Instants are UTC milliseconds."""

from __future__ import annotations

from typing import Final

import msgspec

MAX_PAGE: Final = 1000


class TenantRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A BPO client. `declared` False: known only from its data, contracts or keys."""

    tenant_id: str
    name: str = ""
    created_at_ms: int = 0
    declared: bool = True


class QueueRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A declared queue of a tenant (queues with data exist without being declared)."""

    tenant_id: str
    queue_id: str
    name: str = ""
    created_at_ms: int = 0


class KeyGrants(msgspec.Struct, frozen=True, kw_only=True):
    """What a teamlead key covers inside its tenant; empty lists mean the whole tenant."""

    queues: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()


class SurveyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored `survey.completed` event (deduplicated by event id)."""

    tenant_id: str
    event_id: str
    call_id: str
    queue_id: str | None
    agent_id: str | None
    at_ms: int
    score: int
    scale_max: int


class AccessRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One authenticated API request: who (key, role), for which tenant (None: an admin
    request not scoped to one tenant), what (method, path, query) and the status answered.
    `seq` is assigned by the store (0 before it is stored)."""

    seq: int = 0
    at_ms: int
    key_id: str
    role: str
    tenant_id: str | None
    method: str
    path: str
    query: str
    status: int
