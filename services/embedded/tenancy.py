"""The tenancy part of the embedded backend (tenants, queues, contracts, keys, quality
inputs, access log): thin delegation to the SQLite store, mixed into `EmbeddedBackend`."""

from __future__ import annotations

from ..kpi.contracts import Contract
from ..kpi.quality import ContactLeg
from ..store.keys import ApiKey
from ..store.sqlite import SqliteStore
from ..store.tenancy import AccessRecord, KeyGrants, QueueRecord, SurveyRecord, TenantRecord


class EmbeddedTenancy:
    store: SqliteStore
    queue_lists: dict[str, tuple[float, list[str]]]  # the backend's cache of queue lists

    def tenants(self) -> list[TenantRecord]:
        return self.store.tenancy.tenants()

    def put_tenant(self, tenant: TenantRecord) -> None:
        self.store.tenancy.put_tenant(tenant)

    def declared_queues(self, tenant_id: str) -> list[QueueRecord]:
        return self.store.tenancy.queues(tenant_id)

    def put_queue(self, queue: QueueRecord) -> None:
        self.store.tenancy.put_queue(queue)
        self.queue_lists.pop(queue.tenant_id, None)

    def put_contract(self, contract: Contract) -> None:
        self.store.put_contract(contract)
        self.queue_lists.pop(contract.tenant_id, None)

    def put_key(self, key: ApiKey, grants: KeyGrants | None = None) -> None:
        self.store.put_key(key)
        if grants is not None:
            self.store.tenancy.put_grants(key.key_id, grants)

    def key_grants(self, key_id: str) -> KeyGrants:
        return self.store.tenancy.grants(key_id)

    def keys(self, tenant_id: str | None, after: str, limit: int) -> list[ApiKey]:
        return self.store.tenancy.keys(tenant_id, after, limit)

    def surveys(self, tenant_id: str, start_ms: int, end_ms: int) -> list[SurveyRecord]:
        return self.store.tenancy.surveys(tenant_id, start_ms, end_ms)

    def contact_legs(self, tenant_id: str, start_ms: int, end_ms: int) -> list[ContactLeg]:
        return self.store.tenancy.contact_legs(tenant_id, start_ms, end_ms)

    def record_access(self, records: list[AccessRecord]) -> None:
        self.store.tenancy.append_access(records)

    def access_log(
        self, tenant_id: str | None, start_ms: int, end_ms: int, after_seq: int, limit: int,
        every_tenant: bool = False,
    ) -> list[AccessRecord]:  # fmt: skip
        return self.store.tenancy.access_log(
            tenant_id, start_ms, end_ms, after_seq, limit, every_tenant
        )
