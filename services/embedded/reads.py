"""Fast bucket reads for the embedded backend's live paths.

- In-memory buckets of one queue are found by direct lookups minute by minute when the
  range is shorter than the number of buckets held (a rolling window), else by one scan.
- The sum of the *stored* buckets before `evicted_until_ms` is cached: those buckets can no
  longer change (an event that would touch them is quarantined), so "today" costs one
  SQLite read per queue and eviction, not one per request.
- The core is changed by the aggregator on its event loop, between awaits. A reader on
  another thread (a plain `def` route runs in the thread pool) reads it through `on_loop`,
  so it never sees a bucket half way through an event.
- A window's sum is memoised under the state it was read from: (aggregator offset,
  `evicted_until_ms`). The core changes only by applying log records (which moves the
  offset), so a hit is exactly what a recomputation would give; requests between two
  batches of events (every wallboard and client poll of a busy second) share the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from ..kpi.centre import QKey
from ..kpi.counters import Counters, merged
from ..kpi.leg import MINUTE_MS
from ..store.sqlite import SqliteStore

T = TypeVar("T")
MAX_CACHED = 4096
QUEUES_TTL_S = 1.0  # how old a cached queue list may be (membership is checked fresh)


def memory_buckets(
    buckets: dict[QKey, Counters], tenant_id: str, queue_id: str, start_ms: int, end_ms: int
) -> dict[int, Counters]:
    """In-memory buckets of one queue whose minute lies in [start_ms, end_ms)."""
    if end_ms <= start_ms:
        return {}
    first = -(-start_ms // MINUTE_MS) * MINUTE_MS  # the first minute start >= start_ms
    if (end_ms - first) // MINUTE_MS <= len(buckets):
        found = {}
        for minute in range(first, end_ms, MINUTE_MS):
            c = buckets.get((tenant_id, queue_id, minute))
            if c is not None:
                found[minute] = c
        return found
    # list() copies the items in one step: safe against the aggregator adding buckets.
    return {
        m: c
        for (t, q, m), c in list(buckets.items())
        if t == tenant_id and q == queue_id and start_ms <= m < end_ms
    }


class StoredSums:
    """Cache of summed stored buckets over [start_ms, split_ms), split <= evicted_until."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str, int, int], Counters] = {}

    def get(
        self, store: SqliteStore, tenant_id: str, queue_id: str, start_ms: int, split_ms: int
    ) -> Counters:
        """The sum (a shared object: callers must not change it)."""
        key = (tenant_id, queue_id, start_ms, split_ms)
        found = self._sums.get(key)
        if found is None:
            found = merged(
                list(store.queue_buckets(tenant_id, queue_id, start_ms, split_ms).values())
            )
            if len(self._sums) >= MAX_CACHED:
                self._sums.clear()
            self._sums[key] = found
        return found


class Memo:
    """A bounded dict: cleared whole when full (keys carry the state version, so old
    entries are never wrong, only useless)."""

    def __init__(self, size: int = MAX_CACHED) -> None:
        self.size = size
        self._items: dict[tuple[object, ...], Counters] = {}

    def get(self, key: tuple[object, ...]) -> Counters | None:
        return self._items.get(key)

    def put(self, key: tuple[object, ...], value: Counters) -> None:
        if len(self._items) >= self.size:
            self._items.clear()
        self._items[key] = value


def on_loop(loop: asyncio.AbstractEventLoop | None, read: Callable[[], T]) -> T:
    """`read()` on the aggregator's loop (directly when already there or when no loop runs)."""
    if loop is None or not loop.is_running():
        return read()
    try:
        if asyncio.get_running_loop() is loop:
            return read()
    except RuntimeError:  # no loop in this thread: a worker thread
        pass

    async def call() -> T:
        return read()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=60)


def copied(buckets: dict[int, Counters]) -> dict[int, Counters]:
    """Copies of in-memory buckets (the core keeps changing the originals)."""
    return {m: merged([c]) for m, c in buckets.items()}
