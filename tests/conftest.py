"""Shared fixtures: free ports, an in-process embedded service, a `callpulse run` process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.kpi.contracts import Contract
from services.store.keys import new_key
from tests.kafka import kafka  # noqa: F401  (fixture: the mock Kafka broker)
from tests.pg import pg_server, pg_url  # noqa: F401  (fixtures: a real PostgreSQL)

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """An embedded service running inside the test's event loop."""

    embedded: Embedded
    client: httpx.AsyncClient

    def key(self, tenant: str | None, role: str) -> dict[str, str]:
        token, record = new_key(tenant, role, "test", int(time.time() * 1000))
        self.embedded.store.put_key(record)
        return {"Authorization": f"Bearer {token}"}

    def contract(self, **fields: object) -> None:
        self.embedded.store.put_contract(Contract(**fields))  # type: ignore[arg-type]

    async def settle(self) -> None:
        """Wait until the aggregator applied and flushed everything appended so far."""
        aggregator = self.embedded.aggregator
        for _ in range(500):
            if aggregator.lag() == 0:
                aggregator.flush()
                return
            aggregator.wake.set()
            await asyncio.sleep(0.01)
        raise AssertionError("the aggregator did not catch up")


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    settings = EmbeddedSettings(
        data_dir=tmp_path / "data", max_body_bytes=4 * 1024 * 1024, flush_interval_ms=20,
        correction_horizon_s=40 * 86_400,
    )  # fmt: skip
    embedded = Embedded(settings)
    task = asyncio.create_task(embedded.aggregator.run())
    transport = httpx.ASGITransport(app=embedded.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Service(embedded, client)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if embedded.alerts is not None:
        embedded.alerts.close()
    embedded.store.close()
    embedded.log.close()


@dataclass
class Process:
    """A `callpulse run` child process."""

    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "run",
             "--data-dir", str(self.data_dir), "--port", str(self.port), *args],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"callpulse run exited: {self.proc.stdout.read()!r}")  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503):
                    return
            time.sleep(0.05)
        raise AssertionError("callpulse run did not come up")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=20)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
        self.proc = None

    def wait_caught_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = httpx.get(f"{self.url}/healthz", timeout=5).json()
            if health["lag_events"] == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"still behind: {health}")


@pytest.fixture
def process(tmp_path: Path) -> Iterator[Callable[[str], Process]]:
    started: list[Process] = []

    def make(name: str) -> Process:
        p = Process(tmp_path / name, free_port())
        started.append(p)
        return p

    yield make
    for p in started:
        p.kill(signal.SIGTERM)
