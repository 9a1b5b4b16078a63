"""The embedded aggregator: consume the SQLite log, drive the core, upsert the store.

Crash safety: the store write that carries a checkpoint (log offset + core state) also
carries every dirty bucket up to that offset, in one transaction. After a SIGKILL the
process restores the last checkpoint and replays the log from its offset; replayed events
recompute the same absolute bucket values, so nothing is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from ..bus.sqlite_log import EventLog
from ..kpi.centre import QUARANTINED, Centre, Settings
from ..kpi.events import EventError, SurveyCompleted, decode_event
from ..kpi.leg import at_ms
from ..store.sqlite import SqliteStore
from ..store.tenancy import SurveyRecord
from .metrics import AggregatorMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AggregatorConfig:
    """Batching and checkpoint cadence (seconds) and the core's event-time tolerances."""

    core: Settings
    batch_size: int = 5000
    flush_interval_s: float = 0.2
    checkpoint_interval_s: float = 5.0


class EmbeddedAggregator:
    """One consumer of the log; owns the `Centre` the API reads live figures from."""

    def __init__(
        self, log_: EventLog, store: SqliteStore, config: AggregatorConfig,
        metrics: AggregatorMetrics,
    ) -> None:  # fmt: skip
        self.log = log_
        self.store = store
        self.config = config
        self.metrics = metrics
        saved = store.load_checkpoint()
        if saved is None:
            self.offset = 0
            self.centre = Centre(config.core)
        else:
            self.offset, state = saved
            self.centre = Centre.restore(state, config.core)
            # The count lives in the checkpoint: a restart continues it from there (the
            # replay of the log past the checkpoint counts those events again, once).
            metrics.quarantined.inc(self.centre.stats.quarantined)
        self.wake = asyncio.Event()
        self.last_flush = time.monotonic()
        self.last_checkpoint = time.monotonic()
        self.store_error: str | None = None
        self.processed_wall_ms = 0
        # Surveys are stored as they are (the core does not aggregate them); written before
        # the checkpoint that covers their offsets, so a crash replays what was not written.
        self.pending_surveys: list[SurveyRecord] = []
        # The loop `run` drives the core on: readers in other threads read the core there.
        self.loop: asyncio.AbstractEventLoop | None = None

    def lag(self) -> int:
        """Events in the log not yet applied."""
        return self.log.end_offset() - self.offset

    def step(self) -> int:
        """Apply the next batch from the log to the core; returns how many records."""
        started = time.perf_counter()
        records = self.log.read(self.offset, self.config.batch_size)
        centre = self.centre
        occurred = None
        for offset, body in records:
            event = decode_event(body)
            if isinstance(event, EventError):
                # Only validated events reach the log; a record that no longer decodes
                # (e.g. written by a newer version) is counted and passed over.
                log.error("log record %d does not decode: %s", offset, event.reason)
                self.metrics.poison.inc()
                continue
            if isinstance(event, SurveyCompleted):
                self.pending_surveys.append(survey_record(event))
            occurred = at_ms(event)
            if centre.apply(event, occurred) == QUARANTINED:
                self.metrics.quarantined.inc()
        if records:
            self.offset = records[-1][0]
            self.metrics.applied.inc(len(records))
            self.processed_wall_ms = int(time.time() * 1000)
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            if occurred is not None:  # event time (source clock) to applied, last of the batch
                self.metrics.event_delay_seconds.observe(
                    max(0, self.processed_wall_ms - occurred) / 1000
                )
        return len(records)

    def flush(self, force_checkpoint: bool = False) -> None:
        """Write dirty state (and a checkpoint when due); keep it dirty if the store fails."""
        now = time.monotonic()
        due = force_checkpoint or now - self.last_checkpoint >= self.config.checkpoint_interval_s
        checkpoint = (self.offset, self.centre.checkpoint()) if due else None
        started = time.perf_counter()
        try:
            self.store.tenancy.put_surveys(self.pending_surveys)
            self.pending_surveys = []
            rows = self.store.write(self.centre, checkpoint)
        except Exception as exc:  # the store may fail in many ways; the state stays dirty
            self.store_error = f"{type(exc).__name__}: {exc}"
            self.metrics.store_errors.inc()
            log.warning("store write failed, will retry: %s", self.store_error)
            return
        self.store_error = None
        self.metrics.store_write_seconds.observe(time.perf_counter() - started)
        self.metrics.rows_written.inc(rows)
        self.centre.clear_dirty()
        self.last_flush = now
        if checkpoint is not None:
            self.last_checkpoint = now
            self.centre.evict()

    async def run(self) -> None:
        """Consume until cancelled; flush at most every flush interval, checkpoint on exit."""
        self.loop = asyncio.get_running_loop()
        try:
            while True:
                applied = self.step()
                if time.monotonic() - self.last_flush >= self.config.flush_interval_s:
                    self.flush()
                if applied < self.config.batch_size:
                    self.wake.clear()
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.flush_interval_s):
                            await self.wake.wait()
                else:
                    await asyncio.sleep(0)  # let the API answer between full batches
        finally:
            self.step()
            self.flush(force_checkpoint=True)


def survey_record(event: SurveyCompleted) -> SurveyRecord:
    """The stored form of a survey, counted at the instant it was completed."""
    return SurveyRecord(
        tenant_id=event.tenant_id, event_id=event.event_id, call_id=event.call_id,
        queue_id=event.queue_id, agent_id=event.agent_id, at_ms=at_ms(event),
        score=event.score, scale_max=event.scale_max,
    )  # fmt: skip
