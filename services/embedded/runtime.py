"""`callpulse run`: ingest, aggregation and the API in one asyncio process, no external service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from ..aggregator.embedded import AggregatorConfig, EmbeddedAggregator
from ..aggregator.metrics import AggregatorMetrics
from ..alerts.service import attach_alerts
from ..api.app import create_app
from ..api.deps import ApiConfig
from ..api.livefeed import close_streams
from ..bus.sqlite_log import EventLog
from ..kpi.centre import Settings as CoreSettings
from ..kpi.events import Event
from ..store.sqlite import SqliteStore
from .backend import EmbeddedBackend
from .settings import EmbeddedSettings

if TYPE_CHECKING:
    from ..simulator.scenario import Scenario

log = logging.getLogger(__name__)

DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "demo.toml"


def _secret(configured: SecretStr | None, path: Path) -> bytes:
    """A configured secret, else one generated once and kept (mode 0600) at `path`."""
    if configured is not None:
        return configured.get_secret_value().encode()
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip().encode()


def caller_secret(settings: EmbeddedSettings) -> bytes:
    """The caller-key HMAC secret: from settings, else one generated once per data dir."""
    return _secret(settings.caller_key_secret, settings.data_dir / "caller-key.secret")


def link_secret(settings: EmbeddedSettings) -> bytes:
    """The secret wallboard links are signed with: from settings, else one per data dir."""
    return _secret(settings.link_secret, settings.data_dir / "wallboard-link.secret")


def open_store(settings: EmbeddedSettings) -> SqliteStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(settings.data_dir / "store.db")


class _Server(uvicorn.Server):
    """Uvicorn re-raises a captured SIGTERM/SIGINT once serving stops, which would end the
    process before the aggregator's last checkpoint; here the signal only stops serving and
    `Embedded.serve` shuts the rest down in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


class Embedded:
    """The wired parts of one embedded process."""

    def __init__(self, settings: EmbeddedSettings) -> None:
        self.settings = settings
        self.failed = False
        self.store = open_store(settings)
        self.log = EventLog(settings.data_dir / "log.db")
        self.registry = CollectorRegistry()
        core = CoreSettings(
            allowed_lateness_ms=settings.allowed_lateness_s * 1000,
            correction_horizon_ms=settings.correction_horizon_s * 1000,
        )
        self.aggregator = EmbeddedAggregator(
            self.log,
            self.store,
            AggregatorConfig(
                core=core,
                flush_interval_s=settings.flush_interval_ms / 1000,
                checkpoint_interval_s=settings.checkpoint_interval_s,
            ),
            AggregatorMetrics(self.registry),
        )
        self.backend = EmbeddedBackend(
            self.log, self.store, self.aggregator, settings.stale_after_s
        )
        self.app = create_app(
            self.backend,
            ApiConfig(
                max_body_bytes=settings.max_body_bytes,
                max_events_per_request=settings.max_events_per_request,
                caller_key_secret=caller_secret(settings),
                stale_after_s=settings.stale_after_s,
                link_secret=link_secret(settings),
                stream_heartbeat_s=settings.stream_heartbeat_s,
                stream_refresh_s=settings.stream_refresh_s,
                rate_limit_per_s=settings.rate_limit_per_s,
                rate_limit_burst=settings.rate_limit_burst,
            ),
            self.registry,
        )
        # Alert evaluation and delivery (a task in `serve`), KPI and pipeline collectors.
        self.alerts = attach_alerts(
            self.app, self.backend, self.registry, settings.data_dir / "store.db"
        )

    async def serve(self, traffic: Iterator[Event] | None = None) -> None:
        """Run until SIGINT/SIGTERM; the aggregator checkpoints on the way out."""
        server = _Server(
            uvicorn.Config(
                self.app, host=self.settings.host, port=self.settings.port,
                log_level="warning", access_log=False,
                # Live streams (SSE) never end by themselves: cut them after this on shutdown.
                timeout_graceful_shutdown=2,
            )
        )  # fmt: skip
        aggregating = asyncio.create_task(self.aggregator.run(), name="aggregator")
        alerting = asyncio.create_task(self.alerts.run(), name="alerts") if self.alerts else None
        ending = asyncio.create_task(self._end_streams_on_exit(server), name="end-streams")
        feeding = None
        if traffic is not None:
            feeding = asyncio.create_task(self.feed(traffic), name="simulator")

        def stop_on_failure(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("%s failed; shutting down", task.get_name(), exc_info=task.exception())
                self.failed = True
                server.should_exit = True

        for task in (aggregating, feeding, alerting):
            if task is not None:
                task.add_done_callback(stop_on_failure)
        try:
            await server.serve()
        finally:
            for task in (ending, feeding, alerting, aggregating):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.alerts is not None:
                self.alerts.close()
            self.store.close()
            self.log.close()

    async def _end_streams_on_exit(self, server: uvicorn.Server) -> None:
        """Live streams (SSE) never end by themselves: end them once shutdown begins, so
        uvicorn's wait for open connections is short."""
        while not server.should_exit:
            await asyncio.sleep(0.1)
        close_streams(self.app.state)

    async def feed(self, traffic: Iterator[Event]) -> None:
        """Ingest simulated events as their instants come; past ones at once."""
        batch: list[Event] = []
        for event in traffic:
            delay = event.occurred_at.timestamp() - time.time()
            if delay > 0:
                if batch:
                    await self.backend.ingest(batch)
                    batch = []
                await asyncio.sleep(delay)
            batch.append(event)
            if len(batch) >= 1000:
                await self.backend.ingest(batch)
                batch = []
                await asyncio.sleep(0)


def demo_traffic(scenario: Scenario, warm_up: timedelta = timedelta(hours=2)) -> Iterator[Event]:
    """A scenario from `warm_up` ago onwards, so figures show at once."""
    from ..simulator.engine import simulate

    start = datetime.now(UTC).replace(microsecond=0) - warm_up
    return simulate(scenario, seed=int(start.timestamp()), start=start,
                    duration=timedelta(days=3650))  # fmt: skip
