"""What the API needs from a deployment mode; embedded and distributed implement it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..kpi.agents import Change
from ..kpi.contracts import Contract
from ..kpi.counters import AgentCounters, Counters, StateTime
from ..kpi.events import Event
from ..kpi.gauges import QueueGauges
from ..kpi.quality import ContactLeg
from ..store.keys import ApiKey
from ..store.links import WallboardLink
from ..store.tenancy import AccessRecord, KeyGrants, QueueRecord, SurveyRecord, TenantRecord


class Unavailable(Exception):
    """The bus did not durably accept the events in time; the client should retry."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailable(Unavailable):
    """The store cannot be reached (e.g. the database is down or restarting): answered
    503 with Retry-After; live figures fall back to their last-known values, marked stale."""


@dataclass(frozen=True)
class Health:
    ok: bool
    stale: bool
    lag_events: int
    detail: str


class Backend(Protocol):
    async def ingest(self, events: list[Event]) -> int:
        """Durably accept validated events; returns how many were new (not duplicates).
        Raises Unavailable when they could not be made durable in time."""
        ...

    def gauges(self, tenant_id: str, queue_id: str, now_ms: int) -> QueueGauges: ...

    def buckets(self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int) -> Counters:
        """The sum of a queue's buckets in [start_ms, end_ms), newest state included."""
        ...

    def bucket_map(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> dict[int, Counters]: ...

    def restated_minutes(
        self, tenant_id: str, queue_id: str, start_ms: int, end_ms: int
    ) -> set[int]:
        """Starts (ms) of the queue's stored buckets in [start_ms, end_ms) that a late event
        restated after they were first written."""
        ...

    def queues(self, tenant_id: str) -> list[str]: ...

    def contracts(self, tenant_id: str) -> list[Contract]: ...

    def get_key(self, key_id: str) -> ApiKey | None: ...

    def health(self) -> Health: ...

    # -- live feed, agents and wallboard links (wallboards and team-lead views) --------

    def change_count(self) -> int:
        """A number that moves whenever live figures may have changed (e.g. events applied);
        cheap enough to poll every few milliseconds."""
        ...

    def agents(self, tenant_id: str) -> dict[str, Change]:
        """Each known agent's latest state change (team, state, reason, queues), by agent id."""
        ...

    def agent_counters(
        self, tenant_id: str, start_ms: int, end_ms: int
    ) -> dict[str, AgentCounters]:
        """Per agent, the sum of its handle-time buckets in [start_ms, end_ms)."""
        ...

    def state_times(self, tenant_id: str, start_ms: int, end_ms: int) -> dict[str, StateTime]:
        """Per agent, time in each state in the buckets of [start_ms, end_ms), closed segments
        only: the open segment after an agent's latest change is added by the reader."""
        ...

    def put_link(self, link: WallboardLink) -> None: ...

    def get_link(self, link_id: str) -> WallboardLink | None: ...

    def links(self, tenant_id: str | None) -> list[WallboardLink]:
        """Links whose scope includes a tenant (None: every link)."""
        ...

    # -- tenancy: tenants, queues, contracts, keys, quality inputs, access log -----------

    def tenants(self) -> list[TenantRecord]:
        """Declared tenants and those known only from data, contracts or keys, by id."""
        ...

    def put_tenant(self, tenant: TenantRecord) -> None: ...

    def declared_queues(self, tenant_id: str) -> list[QueueRecord]: ...

    def has_queue(self, tenant_id: str, queue_id: str) -> bool:
        """Whether the tenant has the queue (exact: `queues` may be cached briefly)."""
        ...

    def put_queue(self, queue: QueueRecord) -> None: ...

    def put_contract(self, contract: Contract) -> None:
        """Store one contract version (versions are never rewritten by the API)."""
        ...

    def put_key(self, key: ApiKey, grants: KeyGrants | None = None) -> None:
        """Store a key (and, if given, replace its grants)."""
        ...

    def key_grants(self, key_id: str) -> KeyGrants: ...

    def keys(self, tenant_id: str | None, after: str, limit: int) -> list[ApiKey]:
        """Keys of one tenant (None: admin keys) with id > `after`, by id, at most `limit`."""
        ...

    def surveys(self, tenant_id: str, start_ms: int, end_ms: int) -> list[SurveyRecord]:
        """Surveys completed in [start_ms, end_ms)."""
        ...

    def contact_legs(self, tenant_id: str, start_ms: int, end_ms: int) -> list[ContactLeg]:
        """Legs with a caller key that entered their queue in [start_ms, end_ms)."""
        ...

    def record_access(self, records: list[AccessRecord]) -> None:
        """Append to the access (audit) log."""
        ...

    def access_log(
        self, tenant_id: str | None, start_ms: int, end_ms: int, after_seq: int, limit: int,
        every_tenant: bool = False,
    ) -> list[AccessRecord]:  # fmt: skip
        """Access records of one tenant (or, `every_tenant`, all) in [start_ms, end_ms)
        with seq > `after_seq`, oldest first, at most `limit`."""
        ...
