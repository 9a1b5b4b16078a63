"""Memory: bytes per open leg, per queue-day of buckets (Python heap, tracemalloc), RSS per
retained queue-day of the core's state, and the RSS of a child process replaying 1 million
events through the embedded mode."""

from __future__ import annotations

import gc
import subprocess
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.kpi.centre import Centre, Settings
from services.kpi.counters import Counters
from services.kpi.events import CallQueued

from .table import Row


def _heap() -> int:
    """Bytes currently allocated by Python (tracemalloc): unlike an RSS delta, not hidden by
    memory the allocator kept from earlier benchmarks in this process."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def per_open_leg(n: int) -> float:
    """Bytes of RSS per waiting leg (queued, no outcome yet)."""
    centre = Centre(Settings(correction_horizon_ms=10**12))
    t0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
    events = [
        CallQueued(schema_version="1.0", event_id=f"e{i}", occurred_at=t0 + timedelta(seconds=i),
                   tenant_id="t", source="bench", call_id=f"c{i}", queue_id=f"q{i % 20}")
        for i in range(n)
    ]  # fmt: skip
    tracemalloc.start()
    before = _heap()
    for e in events:
        centre.apply(e, int(e.occurred_at.timestamp() * 1000))
    used = _heap() - before
    tracemalloc.stop()
    return used / n


def per_queue_day(queues: int) -> float:
    """Bytes per queue-day (1,440 one-minute buckets) of bucket counters held in memory."""
    tracemalloc.start()
    before = _heap()
    buckets = {("t", f"q{q}", m): Counters() for q in range(queues) for m in range(1440)}
    used = _heap() - before
    tracemalloc.stop()
    del buckets
    return used / queues


REPLAY = """
import asyncio, sys, tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

target = int(sys.argv[1])
samples = []
with tempfile.TemporaryDirectory() as d:
    e = Embedded(EmbeddedSettings(data_dir=Path(d)))
    scenario = load_scenario("scenarios/large.toml")
    start = datetime(2026, 11, 2, tzinfo=UTC)
    async def main():
        batch, sent = [], 0
        for ev in simulate(scenario, 1, start, timedelta(days=30)):
            batch.append(ev)
            if len(batch) == 5000:
                await e.backend.ingest(batch)
                sent += len(batch)
                batch = []
                e.aggregator.step()
                e.aggregator.flush(force_checkpoint=sent % 50000 == 0)
                if sent % 50000 == 0:
                    samples.append(rss_mib())
                if sent >= target:
                    return sent
        return sent
    sent = asyncio.run(main())
    half = samples[len(samples) // 2]
    print(sent, len(e.aggregator.centre.legs), half, max(samples), samples[-1])
"""


RETAINED = """
import sys
from datetime import UTC, datetime, timedelta
from services.kpi.centre import Centre, Settings
from services.kpi.leg import at_ms
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

hours, horizon_h = float(sys.argv[1]), float(sys.argv[2])
centre = Centre(Settings(correction_horizon_ms=int(horizon_h * 3_600_000)))
scenario = load_scenario("scenarios/large.toml")
start = datetime(2026, 11, 2, tzinfo=UTC)
before = rss_bytes()
for n, event in enumerate(simulate(scenario, 1, start, timedelta(hours=hours))):
    centre.apply(event, at_ms(event))
    if n % 20000 == 0:
        centre.clear_dirty()
        centre.evict()
centre.clear_dirty()
centre.evict()
queues = len({(t, q) for t, q, _ in centre.queue_buckets})
agents = len(centre.timelines)
changes = sum(len(t.changes) for t in centre.timelines.values())
print(rss_bytes() - before, queues, agents, len(centre.legs), len(centre.queue_buckets),
      len(centre.agent_buckets), changes)
"""


def retained_rss(hours: float) -> tuple[float, list[int]]:
    """(RSS bytes per retained queue-day, what the keeping child held: queues, agents, legs,
    queue and agent buckets, agent state changes): two child processes feed
    `hours` of the large centre through the core, one keeping everything (a horizon longer
    than the run), one with the default 2 h horizon; the difference is the memory of
    keeping `hours - 2` hours more of every queue's buckets, legs and agent buckets."""

    def child(horizon_h: float) -> list[int]:
        out = subprocess.run([sys.executable, "-c", RETAINED, str(hours), str(horizon_h)],
                             capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])  # fmt: skip
        return [int(x) for x in out.stdout.split()]

    keep, *held = child(hours + 1)
    evicting = child(2)[0]
    return (keep - evicting) / (held[0] * (hours - 2) / 24), held


def replay_rss(events: int) -> tuple[int, int, float, float, float]:
    """(events replayed, legs held at the end, RSS MiB half-way, max and at the end) of a
    child process feeding the simulator's large centre through the embedded mode. RSS is
    sampled every 50,000 events (the simulator shares the process and its memory)."""
    out = subprocess.run([sys.executable, "-c", REPLAY, str(events)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    sent, legs, half, peak, last = out.stdout.split()
    return int(sent), int(legs), float(half), float(peak), float(last)


def measure(quick: bool) -> list[Row]:
    leg = per_open_leg(20_000 if quick else 200_000)
    day = per_queue_day(5 if quick else 50)
    hours = 4.0 if quick else 12.0
    retained, (queues, agents, kept, q_buckets, a_buckets, changes) = retained_rss(hours)
    sent, legs, half, peak, last = replay_rss(100_000 if quick else 1_000_000)
    return [
        Row("memory", "heap per open leg", "bytes", leg),
        Row("memory", "heap per queue-day of buckets held in memory", "bytes", day,
            note="the store keeps history; memory holds the 2 h horizon"),
        Row("memory", "RSS per retained queue-day of core state", "bytes", retained,
            note=f"(RSS keeping {hours:g} h of the large centre - RSS keeping the default"
                 f" 2 h) / ({queues} queues x {hours - 2:g} h); kept: {kept:,} legs,"
                 f" {q_buckets:,} queue and {a_buckets:,} agent buckets, {changes:,} state"
                 f" changes of {agents} agents"),
        Row("memory", f"RSS at the end of a {sent:,}-event embedded replay", "MiB", last,
            baseline=half, baseline_name="RSS half-way", target=1.25, higher_is_better=False,
            note=f"max {peak:.0f} MiB; {legs:,} legs held at the end (horizon 2 h)"),
    ]  # fmt: skip
