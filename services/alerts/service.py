"""The alert service of one process: the store, the engine, the dispatcher and the
Prometheus collectors, wired to an API backend; `run()` is its asyncio task.

Evaluation runs whenever the pipeline applied new events (`Backend.change_count` moved;
polled every `poll_s`) and at least every `tick_s`. Delivery runs right after an
evaluation that produced notices, and every `dispatch_interval_s` for retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from ..api.backend import Backend
from ..api.kpi_metrics import KpiCollector, PipelineCollector
from ..kpi.alerts import Output, Recipient, Rule
from ..store.alerts import AlertStore
from .channels import Channels
from .dispatch import Dispatcher
from .engine import AlertEngine
from .metrics import AlertMetrics, OutboxCollector
from .rules_file import load_rules_file
from .settings import AlertSettings
from .source import MetricSource

log = logging.getLogger(__name__)


class AlertService:
    """Alerts of one process (embedded mode: next to the aggregator and the API)."""

    def __init__(
        self, backend: Backend, db_path: Path, settings: AlertSettings,
        registry: CollectorRegistry, clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.backend = backend
        self.settings = settings
        self.clock = clock
        self.store = AlertStore(db_path)
        self.metrics = AlertMetrics(registry)
        registry.register(OutboxCollector(self.store))
        self.engine = AlertEngine(
            self.store, MetricSource(backend), self.metrics, settings.public_url
        )
        self.dispatcher: Dispatcher | None = None
        self._wake = asyncio.Event()
        if settings.rules_file is not None:
            self.load_file(settings.rules_file)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def load_file(self, path: Path) -> None:
        """Make the file's rules and recipients the file-managed ones (raises
        `AlertConfigError` with the entry and field at fault)."""
        rules, recipients = load_rules_file(path)
        removed = self.store.replace_file_rules(rules, recipients, self.now_ms())
        log.info("alert file %s: %d rules, %d recipients (%d removed)", path, len(rules),
                 len(recipients), len(removed))  # fmt: skip

    # -- rules and recipients (API) ---------------------------------------------------

    def put_rule(self, rule: Rule) -> None:
        self.store.put_rule(rule, "api", self.now_ms())

    def delete_rule(self, rule_id: str) -> None:
        """Remove a rule; its open alerts resolve (and recipients who were told hear so)."""
        self.engine.remove_rule(rule_id, self.now_ms())
        self.store.delete_rule(rule_id)
        self._wake.set()

    def put_recipient(self, recipient: Recipient) -> None:
        self.store.put_recipient(recipient, "api", self.now_ms())

    # -- the task ------------------------------------------------------------------------

    def evaluate(self, now_ms: int | None = None) -> list[Output]:
        """Evaluate every rule now (or at `now_ms`); wakes the dispatcher if needed."""
        started = time.perf_counter()
        outputs = self.engine.evaluate(self.now_ms() if now_ms is None else now_ms)
        self.metrics.evaluation_seconds.observe(time.perf_counter() - started)
        if outputs:
            self._wake.set()
        return outputs

    async def run(self) -> None:
        """Evaluate and deliver until cancelled."""
        async with httpx.AsyncClient() as client:
            self.dispatcher = Dispatcher(
                self.store, Channels(self.settings, client), self.settings, self.metrics,
                self.clock,
            )  # fmt: skip
            await asyncio.gather(self._evaluating(), self._dispatching(self.dispatcher))

    async def _evaluating(self) -> None:
        last_change: int | None = None
        last_at = 0.0
        while True:
            change = self.backend.change_count()
            now = time.monotonic()
            if change != last_change or now - last_at >= self.settings.tick_s:
                last_change, last_at = change, now
                try:
                    self.evaluate()
                except Exception:  # e.g. the store is locked: the next round tries again
                    log.exception("alert evaluation failed")
            await asyncio.sleep(self.settings.poll_s)

    async def _dispatching(self, dispatcher: Dispatcher) -> None:
        while True:
            self._wake.clear()
            try:
                await dispatcher.run_once()
                await dispatcher.keep_alive()
            except Exception:  # a store error: the rows stay in the outbox for next time
                log.exception("alert dispatch failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.dispatch_interval_s):
                    await self._wake.wait()

    def close(self) -> None:
        self.store.close()


def attach_alerts(
    app: FastAPI, backend: Backend, registry: CollectorRegistry, db_path: Path,
    settings: AlertSettings | None = None, clock: Callable[[], float] = time.time,
) -> AlertService | None:  # fmt: skip
    """Register the KPI and pipeline collectors, and (unless disabled) the alert service
    as `app.state.alerts` for the alert routes. Settings default to the environment."""
    settings = settings or AlertSettings()
    registry.register(KpiCollector(backend, clock))
    registry.register(PipelineCollector(backend, clock))
    service = (
        AlertService(backend, db_path, settings, registry, clock) if settings.enabled else None
    )
    app.state.alerts = service
    return service
