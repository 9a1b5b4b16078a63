"""Memory: RSS per open leg, per retained queue-day of buckets, and a 1-million-event replay
through the embedded mode (peak RSS of a child process)."""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from services.kpi.centre import Centre, Settings
from services.kpi.counters import Counters
from services.kpi.events import CallQueued

from .table import Row


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def per_open_leg(n: int) -> float:
    """Bytes of RSS per waiting leg (queued, no outcome yet)."""
    centre = Centre(Settings(correction_horizon_ms=10**12))
    t0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
    events = [
        CallQueued(schema_version="1.0", event_id=f"e{i}", occurred_at=t0 + timedelta(seconds=i),
                   tenant_id="t", source="bench", call_id=f"c{i}", queue_id=f"q{i % 20}")
        for i in range(n)
    ]  # fmt: skip
    gc.collect()
    before = _rss_kib()
    for e in events:
        centre.apply(e, int(e.occurred_at.timestamp() * 1000))
    gc.collect()
    return (_rss_kib() - before) * 1024 / n


def per_queue_day(queues: int) -> float:
    """Bytes of RSS per queue-day of in-memory bucket counters (1,440 minutes)."""
    gc.collect()
    before = _rss_kib()
    buckets = {("t", f"q{q}", m): Counters() for q in range(queues) for m in range(1440)}
    gc.collect()
    used = (_rss_kib() - before) * 1024 / queues
    del buckets
    return used


REPLAY = """
import asyncio, resource, sys, tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.kpi.events import encode_event
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario

target = int(sys.argv[1])
with tempfile.TemporaryDirectory() as d:
    e = Embedded(EmbeddedSettings(data_dir=Path(d)))
    scenario = load_scenario("scenarios/large.toml")
    start = datetime(2026, 11, 2, tzinfo=UTC)
    batch, sent = [], 0
    async def main():
        global batch, sent
        for ev in simulate(scenario, 1, start, timedelta(days=30)):
            batch.append(ev)
            if len(batch) == 5000:
                await e.backend.ingest(batch); sent += len(batch); batch = []
                e.aggregator.step(); e.aggregator.flush(force_checkpoint=sent % 50000 == 0)
                if sent >= target:
                    break
    asyncio.run(main())
    print(sent, len(e.aggregator.centre.legs), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def replay_peak(events: int) -> tuple[int, int, float]:
    """(events replayed, legs held at the end, peak RSS MiB) of a child process."""
    out = subprocess.run([sys.executable, "-c", REPLAY, str(events)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    sent, legs, peak_kib = (int(x) for x in out.stdout.split())
    return sent, legs, peak_kib / 1024


def measure(quick: bool) -> list[Row]:
    leg = per_open_leg(20_000 if quick else 200_000)
    day = per_queue_day(5 if quick else 50)
    sent, legs, peak = replay_peak(20_000 if quick else 1_000_000)
    return [
        Row("memory", "RSS per open leg", "bytes", leg),
        Row("memory", "RSS per retained queue-day of buckets (in memory)", "bytes", day),
        Row("memory", f"peak RSS, {sent:,}-event embedded replay", "MiB", peak,
            note=f"{legs:,} legs held at the end (horizon 2 h)"),
    ]  # fmt: skip
