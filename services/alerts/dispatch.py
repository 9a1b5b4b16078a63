"""The outbox dispatcher: deliver each notice, mark it delivered, retry failures with
exponential backoff, give up (visibly) after `max_attempts`.

Order: notices to one recipient go out one at a time in outbox order (a resolution never
overtakes its firing notice, even while the firing notice is being retried; the cost is
that a recipient whose endpoint fails waits until that notice is delivered or given up).
Different recipients are served in parallel.

Delivery is at most once per outbox row in every case but one: a crash between a
channel's acceptance and the commit of `delivered_at` (a few milliseconds) re-sends that
notice after the restart, with the same delivery id for the receiver to drop it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..store.alerts import AlertStore, Delivery
from .channels import Channels, DeliveryError
from .metrics import AlertMetrics
from .settings import AlertSettings

log = logging.getLogger(__name__)

MAX_PARALLEL = 8


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, 2 base, 4 base, ..."""
    return float(min(max_s, base_s * 2 ** (attempts - 1)))


class Dispatcher:
    """Delivers outbox rows through `Channels`; call `run_once` repeatedly."""

    def __init__(
        self, store: AlertStore, channels: Channels, settings: AlertSettings,
        metrics: AlertMetrics, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.store = store
        self.channels = channels
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self._last_keep_alive = 0.0

    def due(self, now_ms: int) -> list[Delivery]:
        """The head of each recipient's queue, if its next attempt is due."""
        heads: dict[str, Delivery] = {}
        for row in self.store.undelivered():
            heads.setdefault(row.recipient_id, row)
        return [row for row in heads.values() if row.next_attempt_ms <= now_ms]

    async def run_once(self, max_rounds: int = 100) -> int:
        """Deliver what is due, recipient queues in parallel, until nothing due is left
        (or it keeps failing); returns how many were delivered."""
        delivered = 0
        gate = asyncio.Semaphore(MAX_PARALLEL)

        async def attempt(row: Delivery) -> bool:
            async with gate:
                return await self._attempt(row)

        for _ in range(max_rounds):
            rows = self.due(int(self.clock() * 1000))
            if not rows:
                break
            results = await asyncio.gather(*(attempt(row) for row in rows))
            delivered += sum(results)
            if not any(results):
                break
        return delivered

    async def _attempt(self, row: Delivery) -> bool:
        attempts = row.attempts + 1
        started = time.perf_counter()
        try:
            await self.channels.deliver(row)
        except Exception as exc:  # every failure of a channel is retried, bugs included
            error = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
            self.metrics.delivery_seconds.labels(row.channel).observe(time.perf_counter() - started)
            now_ms = int(self.clock() * 1000)
            if attempts >= self.settings.max_attempts:
                self.store.mark_failed(row.delivery_id, attempts, now_ms, error)
                self.metrics.deliveries.labels(row.channel, "failed").inc()
                log.error(
                    "giving up delivery %d (%s %s to %s) after %d attempts: %s",
                    row.delivery_id, row.kind, row.alert_id, row.recipient_id, attempts, error,
                )  # fmt: skip
            else:
                wait = backoff_s(attempts, self.settings.retry_base_s, self.settings.retry_max_s)
                self.store.mark_retry(row.delivery_id, attempts, now_ms + int(wait * 1000), error)
                self.metrics.deliveries.labels(row.channel, "retry").inc()
                log.warning(
                    "delivery %d (%s %s to %s) failed, attempt %d, retry in %.1f s: %s",
                    row.delivery_id, row.kind, row.alert_id, row.recipient_id, attempts, wait,
                    error,
                )  # fmt: skip
            return False
        self.metrics.delivery_seconds.labels(row.channel).observe(time.perf_counter() - started)
        self.store.mark_delivered(row.delivery_id, attempts, int(self.clock() * 1000))
        self.metrics.deliveries.labels(row.channel, "delivered").inc()
        log.info("delivered %d: %s %s to %s", row.delivery_id, row.kind, row.alert_id,
                 row.recipient_id)  # fmt: skip
        return True

    async def keep_alive(self) -> None:
        """Re-send firing alerts to Alertmanager every `alertmanager_resend_s` (it expects
        clients to repeat active alerts; re-sending is idempotent there)."""
        now = self.clock()
        if now - self._last_keep_alive < self.settings.alertmanager_resend_s:
            return
        self._last_keep_alive = now
        for address, payload, delivery_id in self.store.alertmanager_firing():
            try:
                await self.channels.post_alertmanager(address, payload, delivery_id)
            except DeliveryError as exc:
                log.warning("Alertmanager keep-alive to %s failed: %s", address, exc)
