"""What the API needs from a deployment mode; embedded and distributed implement it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..kpi.contracts import Contract
from ..kpi.counters import Counters
from ..kpi.events import Event
from ..kpi.gauges import QueueGauges
from ..store.keys import ApiKey


class Unavailable(Exception):
    """The bus did not durably accept the events in time; the client should retry."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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

    def queues(self, tenant_id: str) -> list[str]: ...

    def contracts(self, tenant_id: str) -> list[Contract]: ...

    def get_key(self, key_id: str) -> ApiKey | None: ...

    def health(self) -> Health: ...
