"""Where imported events go: an NDJSON stream, or batches POSTed to the ingest API.

`NdjsonSink` writes one canonical JSON event per line. `HttpSink` POSTs JSON arrays of up
to `batch_size` events to `{url}/v1/events` with `Authorization: Bearer <key>`; a batch is
retried on a transport error, 429 or 5xx (honouring a numeric `Retry-After`, else backing
off exponentially from `backoff_s`) and abandoned with `SinkError` after `retries` more
attempts. A 4xx rejection of a batch is logged and counted, and the import goes on.
Both flush on `flush()` (the follow loop calls it whenever the source is idle) and `close()`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Protocol

from services.kpi.events import Event, encode_event

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)


class SinkError(Exception):
    """Events could not be delivered."""


class Sink(Protocol):
    def write(self, event: Event) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class NdjsonSink:
    """Events as NDJSON lines on a binary stream (closed by `close()` if `owns` it)."""

    def __init__(self, stream: IO[bytes], *, owns: bool = False) -> None:
        self.stream = stream
        self.owns = owns
        self.written = 0

    def write(self, event: Event) -> None:
        self.stream.write(encode_event(event) + b"\n")
        self.written += 1

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.owns:
            self.stream.close()


class HttpSink:
    """Batches of events POSTed to the ingest API (see the module docstring)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        batch_size: int = 500,
        timeout_s: float = 10.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx  # imported here: only this output needs it

        self.endpoint = url.rstrip("/") + "/v1/events"
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.client = client or httpx.Client(timeout=timeout_s)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.buffer: list[bytes] = []
        self.sent = 0
        self.rejected = 0

    def write(self, event: Event) -> None:
        self.buffer.append(encode_event(event))
        if len(self.buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        self._post(b"[" + b",".join(batch) + b"]", len(batch))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.client.close()

    def _post(self, body: bytes, count: int) -> None:
        import httpx

        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                response = self.client.post(self.endpoint, content=body, headers=self.headers)
            except httpx.TransportError as exc:
                problem = f"transport error: {exc}"
            else:
                status = response.status_code
                if status < 300:
                    self.sent += count
                    return
                if status != 429 and status < 500:
                    self.rejected += count
                    logger.error(
                        "ingest API rejected a batch of %d events: HTTP %d %s",
                        count,
                        status,
                        response.text[:500],
                    )
                    return
                problem = f"HTTP {status}"
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    wait = float(retry_after)
            if attempt < self.retries:
                logger.warning(
                    "posting %d events failed (%s); retrying in %.1f s", count, problem, wait
                )
                self.sleep(wait)
        raise SinkError(f"could not deliver {count} events to {self.endpoint}: {problem}")
