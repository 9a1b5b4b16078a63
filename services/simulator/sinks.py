"""Where simulated events go (an NDJSON stream, the HTTP ingest API) and at what pace.

`pump()` reads events in `occurred_at` order and hands them to the sinks in batches. With a
`speed`, an event is released when `(occurred_at - origin) / speed` seconds of wall time
have passed since the pump started (speed 1 = real time); without one, as fast as the sinks
accept them. While pacing, an event is never held back more than `linger` seconds of wall
time after it fell due (waiting for more to fill a batch), so a live wallboard sees it promptly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, BinaryIO, Final, Protocol

from services.kpi.events import Event, encode_event

from .errors import SinkError

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

DEFAULT_BATCH: Final = 500
"""Events per HTTP request / write, at most."""


class Sink(Protocol):
    """A destination for events, written in batches in `occurred_at` order."""

    def write(self, events: Sequence[Event]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class NdjsonSink:
    """One JSON event per line to a binary stream (a file or stdout)."""

    def __init__(self, stream: BinaryIO, *, close_stream: bool = True) -> None:
        self._stream = stream
        self._close_stream = close_stream

    def write(self, events: Sequence[Event]) -> None:
        self._stream.write(b"".join(encode_event(event) + b"\n" for event in events))

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._close_stream:
            self._stream.close()


class HttpSink:
    """POSTs batches as a JSON array to `{url}/v1/events` with a bearer key.

    A 503 or 429 is retried after its `Retry-After` (seconds or an HTTP date; capped at
    `max_delay` seconds), a network error after an exponential backoff (0.5 s doubling, also
    capped); after `attempts` tries a SinkError is raised. Any other non-2xx answer raises a
    SinkError at once, with the status and the start of the body. Retries resend the same
    bytes, so the same event ids: the service deduplicates.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        client: httpx.Client | None = None,
        attempts: int = 10,
        max_delay: float = 30.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import httpx  # imported here so that NDJSON-only use does not need it

        self._endpoint = url.rstrip("/") + "/v1/events"
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._owns_client = client is None
        self._attempts = attempts
        self._max_delay = max_delay
        self._sleep = sleep
        self._transport_error: type[Exception] = httpx.TransportError
        self.posted = 0
        """Events the service has accepted (2xx), for the summary."""
        self.requests = 0

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        body = b"[" + b",".join(encode_event(event) for event in events) + b"]"
        backoff = 0.5
        for attempt in range(1, self._attempts + 1):
            self.requests += 1
            try:
                response = self._client.post(self._endpoint, content=body, headers=self._headers)
            except self._transport_error as exc:
                reason, delay = f"{type(exc).__name__}: {exc}", backoff
            else:
                if response.is_success:
                    self.posted += len(events)
                    self._report_rejections(response)
                    return
                if response.status_code not in (429, 503):
                    raise SinkError(
                        f"POST {self._endpoint} answered {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                reason = f"HTTP {response.status_code}"
                delay = retry_after(response.headers.get("Retry-After"), backoff)
            delay = min(delay, self._max_delay)
            if attempt == self._attempts:
                break
            logger.warning(
                "POST %s: %s; retrying in %.1f s (attempt %d of %d)",
                self._endpoint,
                reason,
                delay,
                attempt,
                self._attempts,
            )
            self._sleep(delay)
            backoff = min(backoff * 2, self._max_delay)
        raise SinkError(
            f"POST {self._endpoint} failed {self._attempts} times (last: {reason}); "
            f"{len(events)} events not delivered"
        )

    def _report_rejections(self, response: httpx.Response) -> None:
        """Log events the service refused one by one inside an accepted batch."""
        try:
            answer = response.json()
        except ValueError:
            return
        if isinstance(answer, dict):
            for name in ("rejected", "errors"):
                found = answer.get(name)
                if isinstance(found, list) and found:
                    logger.warning(
                        "the service rejected %d events of a batch, e.g. %s", len(found), found[0]
                    )
                    return

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date)."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(slots=True)
class PumpStats:
    """What a pump delivered."""

    events: int = 0
    batches: int = 0
    slept: float = 0.0
    """Wall seconds spent waiting for events to fall due."""


def pump(
    events: Iterable[Event],
    sinks: Sequence[Sink],
    *,
    origin: datetime,
    speed: float | None = None,
    batch_size: int = DEFAULT_BATCH,
    linger: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PumpStats:
    """Deliver `events` to every sink, paced at `speed` times real time (None: no pacing).

    `origin` is the simulated instant that corresponds to the moment the pump starts. The
    sinks are flushed, but not closed, at the end (also when interrupted).
    """
    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive")
    stats = PumpStats()
    batch: list[Event] = []
    wall_start = clock()
    oldest = wall_start  # wall time the oldest event of `batch` fell due

    def deliver() -> None:
        for sink in sinks:
            sink.write(batch)
            sink.flush()
        stats.batches += 1
        stats.events += len(batch)
        batch.clear()

    try:
        for event in events:
            if speed is not None:
                due = wall_start + (event.occurred_at - origin).total_seconds() / speed
                if batch and due > oldest + linger:
                    deliver()  # the next event is too far off to keep these waiting for it
                now = clock()
                if due > now:
                    sleep(due - now)
                    stats.slept += due - now
                if not batch:
                    oldest = max(due, now)
            batch.append(event)
            if len(batch) >= batch_size:
                deliver()
        if batch:
            deliver()
    finally:
        if batch:
            logger.info("stopped with %d events not delivered", len(batch))
        for sink in sinks:
            try:
                sink.flush()
            except (OSError, SinkError) as exc:
                logger.warning("could not flush %r: %s", sink, exc)
    return stats
