"""Request protection: a token bucket per API key (429 + Retry-After) and a body size limit
for every route but ingest (which enforces its own, larger limit while streaming).

The buckets live in the API process: with N API processes a key may make up to N times the
rate. Nothing here reads a tenant: limits are per key.
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ErrorBody, ErrorResponse


class RateLimiter:
    """Token buckets: `rate_per_s` sustained requests per key, bursts up to `burst`."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic s)

    def take(self, key_id: str, now_s: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else seconds until a token is available."""
        now = time.monotonic() if now_s is None else now_s
        tokens, at = self._buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens >= 1:
            self._buckets[key_id] = (tokens - 1, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> dict[str, str]:
    """Retry-After in whole seconds (at least 1), rounded up."""
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}


class BodyLimit:
    """ASGI middleware: 413 for bodies above `limit` bytes, declared or streamed, on every
    path except those starting with one of `exempt` (they enforce their own limit)."""

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ("/v1/events",)) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # End the body here; whatever the app answers is replaced by a 413.
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(send)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Send) -> None:
        body = (
            ErrorResponse(
                error=ErrorBody(
                    code="payload_too_large", message=f"the body exceeds {self.limit} bytes"
                )
            )
            .model_dump_json()
            .encode()
        )
        headers: list[Any] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
