"""The access (audit) log: who read or changed what, stored through the backend.

`get_principal` leaves the authenticated principal and its scope tenant in the request
state; this middleware records one `AccessRecord` per authenticated request when the
response starts (so endless streams are recorded too), including refusals (403/404/429).
Records are written in small batches, at least every `flush_every_s` seconds: a crash of
the API process can lose the last second of the log, never figures.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store.tenancy import AccessRecord
from .backend import Backend

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # kept while the store fails; beyond that the oldest are dropped


class AccessLog:
    """Buffers access records and hands them to the backend in batches."""

    def __init__(self, backend: Backend, flush_every_s: float = 1.0, batch: int = 256) -> None:
        self.backend = backend
        self.flush_every_s = flush_every_s
        self.batch = batch
        self.pending: list[AccessRecord] = []
        self.dropped = 0
        self._last_flush = time.monotonic()
        self._write = getattr(backend, "record_access", None)
        if self._write is None:  # a backend that does not keep the log yet: say so once
            log.warning("this backend has no access log: API access is not recorded")

    def add(self, record: AccessRecord) -> None:
        self.pending.append(record)
        if (
            len(self.pending) >= self.batch
            or time.monotonic() - self._last_flush >= self.flush_every_s
        ):
            self.flush()

    def flush(self) -> None:
        """Write what is pending; on a store failure keep it (bounded) for the next try."""
        self._last_flush = time.monotonic()
        if not self.pending:
            return
        if self._write is None:
            self.dropped += len(self.pending)
            self.pending = []
            return
        try:
            self._write(self.pending)
        except Exception as exc:  # the store may fail in many ways; figures must not
            if len(self.pending) > MAX_PENDING:
                self.dropped += len(self.pending) - MAX_PENDING
                del self.pending[: len(self.pending) - MAX_PENDING]
            log.warning("access log write failed (%d pending): %s", len(self.pending), exc)
            return
        self.pending = []


class AuditMiddleware:
    """ASGI middleware recording every request that `get_principal` authenticated."""

    def __init__(self, app: ASGIApp, access_log: AccessLog) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                principal = state.get("principal")
                if principal is not None:
                    self.access_log.add(
                        AccessRecord(
                            at_ms=int(time.time() * 1000),
                            key_id=principal.key_id,
                            role=principal.role,
                            tenant_id=state.get("scope_tenant", principal.tenant_id),
                            method=scope["method"],
                            path=scope["path"][:512],
                            query=scope.get("query_string", b"").decode("latin-1")[:1024],
                            status=message["status"],
                        )
                    )
            await send(message)

        await self.app(scope, receive, recording_send)
