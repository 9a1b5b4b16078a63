"""Micro-benchmark: the core's cost per event next to decoding the same bytes.

Run: .venv/bin/python -m bench.core [--hours H] [--repeat R]
Prints, for one realistic event mix measured in the same run: json.loads per event,
msgspec decode+validate per event, and Centre.apply per event (already decoded), each as the
median of R repeats with min/max, and the ratio core / json.loads (target <= 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.kpi.centre import Centre
from services.kpi.events import decode_event, encode_event
from services.kpi.leg import at_ms
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario

from .table import Row


def event_mix(hours: float, seed: int = 1) -> list[bytes]:
    """A realistic stream: the simulator's large centre (five tenants, 450 agents, holds,
    transfers, abandons, agent state changes around every call), as wire JSON bytes."""
    scenario = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "large.toml")
    start = datetime(2026, 11, 23, 8, tzinfo=UTC)
    return [encode_event(e) for e in simulate(scenario, seed, start, timedelta(hours=hours))]


def per_event_us(fn: Callable[[], None], count: int, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / count * 1e6)
    return times


def measure(quick: bool) -> list[Row]:
    """The core's cost per event next to json.loads of the same bytes (target <= 1x)."""
    raw = event_mix(0.3 if quick else 3.0)
    events = [decode_event(b) for b in raw]
    stamps = [at_ms(e) for e in events]  # type: ignore[arg-type]

    def loads() -> None:
        for b in raw:
            json.loads(b)

    def core() -> None:
        centre = Centre()
        apply = centre.apply
        for ev, ms in zip(events, stamps, strict=True):
            apply(ev, ms)  # type: ignore[arg-type]

    times = 1 if quick else 5
    ours = per_event_us(core, len(raw), times)
    base = per_event_us(loads, len(raw), times)
    return [
        Row("core", "core cost per event vs json.loads of its bytes", "µs/event",
            statistics.median(ours), statistics.median(base), "json.loads", target=1.0,
            higher_is_better=False, spread=(min(ours), max(ours)),
            baseline_spread=(min(base), max(base)),
            note=f"{len(raw)} events of the large scenario"),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=float, default=3.0, help="simulated hours of traffic")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    raw = event_mix(args.hours)
    events = [decode_event(b) for b in raw]
    stamps = [at_ms(e) for e in events]  # type: ignore[arg-type]

    def loads() -> None:
        for b in raw:
            json.loads(b)

    def decode() -> None:
        for b in raw:
            decode_event(b)

    def core() -> None:
        centre = Centre()
        apply = centre.apply
        for ev, ms in zip(events, stamps, strict=True):
            apply(ev, ms)  # type: ignore[arg-type]

    def core_with_time() -> None:
        centre = Centre()
        for ev in events:
            centre.apply(ev, at_ms(ev))  # type: ignore[arg-type]

    mean_bytes = statistics.mean(len(b) for b in raw)
    print(
        f"{len(raw)} events, mean {mean_bytes:.0f} bytes, median of {args.repeat} runs (us/event)"
    )
    rows = {
        "json.loads (stdlib)": per_event_us(loads, len(raw), args.repeat),
        "msgspec decode + validate": per_event_us(decode, len(raw), args.repeat),
        "core: Centre.apply": per_event_us(core, len(raw), args.repeat),
        "core: apply + timestamp": per_event_us(core_with_time, len(raw), args.repeat),
    }
    base = statistics.median(rows["json.loads (stdlib)"])
    print(f"{'path':28} {'median':>8} {'min':>8} {'max':>8} {'x json.loads':>13}")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:28} {med:8.2f} {min(times):8.2f} {max(times):8.2f} {med / base:13.2f}")
    print("target: core / json.loads <= 1.00")


if __name__ == "__main__":
    main()
