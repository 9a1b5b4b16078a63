"""Crash safety of `callpulse run`: SIGKILL at random points while a recorded event file is
replayed over HTTP; after restarts, every stored bucket and leg equals an uninterrupted
run's, and both equal a batch recomputation from the deduplicated events."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from services.kpi.events import encode_event
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario
from services.store.sqlite import SqliteStore
from tests.conftest import ROOT, Process
from tests.oracle import batch, nonzero

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def recorded_events() -> list[bytes]:
    """40 minutes of the large centre (450 agents), as the wire bytes a source would send."""
    scenario = load_scenario(ROOT / "scenarios" / "large.toml")
    return [encode_event(e) for e in simulate(scenario, 11, START, timedelta(minutes=40))]


def admin_key(data_dir: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", "--role", "admin",
         "--data-dir", data_dir],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip()


def replay(proc: Process, events: list[bytes], key: str, on_batch: Callable[[int], None]) -> None:
    """Post in batches of 200; a batch is re-sent until acknowledged (at-least-once)."""
    headers = {"Authorization": f"Bearer {key}"}
    for n, i in enumerate(range(0, len(events), 200)):
        body = b"[" + b",".join(events[i : i + 200]) + b"]"
        while True:
            try:
                r = httpx.post(f"{proc.url}/v1/events", content=body, headers=headers, timeout=10)
                if r.status_code == 202:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        on_batch(n)


def stored(data_dir: Path) -> tuple[dict[Any, Any], dict[Any, Any], list[Any]]:
    store = SqliteStore(data_dir / "store.db")
    try:
        legs = sorted(msgspec.structs.astuple(r) for r in store.all_legs())
        return store.all_queue_buckets(), store.all_agent_buckets(), legs
    finally:
        store.close()


def test_sigkill_at_random_points_loses_and_doubles_nothing(
    process: Callable[[str], Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same caller-key secret for both runs, so their hashed caller keys compare equal.
    monkeypatch.setenv("CALLPULSE_CALLER_KEY_SECRET", "test-secret")
    events = recorded_events()
    assert len(events) > 5000
    rng = random.Random(2026)

    calm = process("calm")
    calm.data_dir.mkdir(parents=True)
    calm_key = admin_key(str(calm.data_dir))
    calm.start()
    replay(calm, events, calm_key, lambda n: None)
    calm.wait_caught_up()
    calm.kill(signal.SIGTERM)

    crashy = process("crashy")
    crashy.data_dir.mkdir(parents=True)
    key = admin_key(str(crashy.data_dir))
    crashy.start()
    batches = (len(events) + 199) // 200
    kill_after = sorted(rng.sample(range(1, batches - 1), 6))
    kills: list[float] = []
    lock = threading.Lock()

    def maybe_kill(n: int) -> None:
        if kill_after and n == kill_after[0]:
            kill_after.pop(0)
            with lock:
                time.sleep(rng.random() * 0.05)  # land anywhere in the aggregator's cycle
                crashy.kill(signal.SIGKILL)
                started = time.monotonic()
                crashy.start()
                kills.append(time.monotonic() - started)

    replay(crashy, events, key, maybe_kill)
    crashy.wait_caught_up()
    crashy.kill(signal.SIGTERM)
    assert len(kills) == 6
    print(f"6 SIGKILLs; restart to healthy took {max(kills):.2f} s at most")

    calm_q, calm_a, calm_legs = stored(calm.data_dir)
    crash_q, crash_a, crash_legs = stored(crashy.data_dir)
    assert crash_q == calm_q
    assert crash_a == calm_a
    assert crash_legs == calm_legs

    wire = [msgspec.json.decode(e) for e in events]
    oracle_q, oracle_a = batch(wire)
    assert nonzero(crash_q) == nonzero(oracle_q)
    assert nonzero(crash_a) == nonzero(oracle_a)
