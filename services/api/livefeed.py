"""The live feed behind the SSE stream: live snapshots recomputed as soon as figures change.

One feed per app. While at least one stream watches a tenant, a task polls the backend's
cheap change counter (every `poll_s`); when it moves, the tenant's queues are recomputed
through `live_view` (the one serializer of live figures) and every stream is woken. A
snapshot counts as changed when anything but its instant and the longest wait (which the
page ticks by itself) differs. Every `refresh_s` all snapshots are re-sent regardless, so
rolling windows, interval boundaries and the stale flag move on without events.

The work runs on the event loop, the same thread as the embedded aggregator: reading its
in-memory state there needs no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

from .backend import Backend
from .routes.live import live_view

log = logging.getLogger(__name__)

QueueKey = tuple[str, str]  # (tenant_id, queue_id)


@dataclass(frozen=True)
class Snapshot:
    """A queue's LiveView as JSON, and the feed generation that produced it."""

    generation: int
    as_of_ms: int
    body: str


class LiveFeed:
    """See the module docstring. `generation` grows by one per published change."""

    def __init__(
        self, backend: Backend, refresh_s: float, registry: CollectorRegistry | None = None,
        poll_s: float = 0.02, min_gap_s: float = 0.05,
    ) -> None:  # fmt: skip
        self.backend = backend
        self.streams = Gauge(
            "callpulse_api_live_streams", "Open live (SSE) streams", registry=registry
        )
        self.publish_seconds = Histogram(
            "callpulse_api_live_publish_seconds",
            "Time to recompute the watched tenants' live snapshots after a change",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.refresh_s = refresh_s
        self.poll_s = poll_s
        self.min_gap_s = min_gap_s
        # Stream ids carry this, so ids of an earlier process never look current.
        self.boot_id = secrets.token_hex(4)
        self.generation = 0
        self.snapshots: dict[QueueKey, Snapshot] = {}
        self.queues: dict[str, tuple[str, ...]] = {}
        self.closed = False
        self._content: dict[QueueKey, str] = {}
        self._watchers: Counter[str] = Counter()
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watch(self, tenants: tuple[str, ...]) -> Iterator[None]:
        """Keep the tenants' snapshots up to date while the block runs (computed at once
        for a tenant nobody watched before)."""
        new = [t for t in tenants if not self._watchers[t]]
        self._watchers.update(tenants)
        self.streams.inc()
        try:
            if new:
                self._publish(new, force=True)
            if self._task is None and not self.closed:
                self._task = asyncio.get_running_loop().create_task(self._run(), name="live-feed")
            yield
        finally:
            self.streams.dec()
            self._watchers.subtract(tenants)
            for tenant in tenants:
                if self._watchers[tenant] <= 0:
                    del self._watchers[tenant]
                    self._forget(tenant)

    async def wait(self, seen_generation: int, timeout_s: float) -> int:
        """The current generation once it is past `seen_generation`, or after the timeout."""
        tick = self._tick
        if self.generation == seen_generation and not self.closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await tick.wait()
        return self.generation

    def close(self) -> None:
        """End every stream (on shutdown: a stream never ends by itself)."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    def _forget(self, tenant: str) -> None:
        self.queues.pop(tenant, None)
        for key in [k for k in self.snapshots if k[0] == tenant]:
            del self.snapshots[key]
            self._content.pop(key, None)

    async def _run(self) -> None:
        seen: int | None = None
        last_refresh = time.monotonic()
        try:
            while self._watchers and not self.closed:
                try:
                    version = self.backend.change_count()
                except Exception:  # e.g. a store read failing: keep the streams, retry
                    log.exception("live feed: the backend's change count failed")
                    await asyncio.sleep(1.0)
                    continue
                seen = version if seen is None else seen
                now = time.monotonic()
                refresh = now - last_refresh >= self.refresh_s
                if version == seen and not refresh:
                    await asyncio.sleep(self.poll_s)
                    continue
                seen = version
                if refresh:
                    last_refresh = now
                self._publish(list(self._watchers), force=refresh)
                await asyncio.sleep(self.min_gap_s)  # coalesce bursts of events
        finally:
            self._task = None

    def _publish(self, tenants: list[str], force: bool) -> None:
        started = time.perf_counter()
        now_ms = int(time.time() * 1000)
        generation = self.generation + 1
        changed = False
        for tenant in tenants:
            try:
                changed |= self._compute(tenant, generation, now_ms, force)
            except Exception:  # a failing read must not end every stream; retried next time
                log.exception("live snapshots of tenant %s failed", tenant)
        if changed:
            self.generation = generation
            self._wake()
        self.publish_seconds.observe(time.perf_counter() - started)

    def _compute(self, tenant: str, generation: int, now_ms: int, force: bool) -> bool:
        changed = False
        queues = tuple(self.backend.queues(tenant))
        if queues != self.queues.get(tenant):
            self.queues[tenant] = queues
            changed = True
        for queue in queues:
            view = live_view(self.backend, tenant, queue, now_ms)
            content = view.model_dump_json(exclude=_MOVING)
            key = (tenant, queue)
            if force or self._content.get(key) != content:
                self._content[key] = content
                self.snapshots[key] = Snapshot(generation, now_ms, view.model_dump_json())
                changed = True
        return changed


_MOVING: Any = {"as_of": True, "gauges": {"longest_wait_ms"}}


def feed_of(state: Any, backend: Backend, refresh_s: float) -> LiveFeed:
    """The app's live feed (`state` is `app.state`), made on first use."""
    feed: LiveFeed | None = getattr(state, "live_feed", None)
    if feed is None:
        feed = LiveFeed(backend, refresh_s, getattr(state, "registry", None))
        state.live_feed = feed
    return feed


def close_streams(state: Any) -> None:
    """End the app's live streams, if any (call when the server begins to shut down)."""
    feed: LiveFeed | None = getattr(state, "live_feed", None)
    if feed is not None:
        feed.close()
