"""Micro-benchmark: the core's cost per event next to decoding the same bytes.

Run: .venv/bin/python -m bench.core [--legs N] [--repeat R]
Prints, for one realistic event mix measured in the same run: json.loads per event,
msgspec decode+validate per event, and Centre.apply per event (already decoded), each as the
median of R repeats with min/max, and the ratio core / json.loads (target <= 1).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec

from services.kpi.centre import Centre
from services.kpi.events import SCHEMA_VERSION, decode_event
from services.kpi.leg import at_ms


def event_mix(legs: int, seed: int = 1) -> list[bytes]:
    """A realistic stream: per leg queued, answered or abandoned, sometimes hold, end,
    wrap-up; agent state changes in between; time-ordered, as JSON bytes."""
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 23, 8, tzinfo=UTC)
    out: list[tuple[float, dict[str, object]]] = []
    n = 0

    def add(t: float, kind: str, tenant: str, **fields: object) -> None:
        nonlocal n
        n += 1
        out.append(
            (
                t,
                {
                    "schema_version": SCHEMA_VERSION,
                    "event_id": f"bench-{n}",
                    "event_type": kind,
                    "occurred_at": (t0 + timedelta(seconds=t)).isoformat(),
                    "tenant_id": tenant,
                    "source": "bench",
                    **fields,
                },
            )
        )

    for leg in range(legs):
        t = leg * 0.5
        call: dict[str, object] = {
            "tenant": f"tenant-{leg % 3}",
            "call_id": f"call-{leg}",
            "queue_id": f"queue-{leg % 12}",
        }
        agent = f"agent-{rng.randrange(200)}"
        add(t, "call.queued", priority=rng.randrange(3), **call)
        t += rng.expovariate(1 / 20)
        if rng.random() < 0.08:
            add(t, "call.abandoned", **call)
            continue
        add(t, "call.answered", agent_id=agent, **call)
        if rng.random() < 0.2:
            add(t + 30, "call.hold_started", **call)
            add(t + 60, "call.hold_ended", **call)
        t += rng.expovariate(1 / 180) + 60
        add(t, "call.ended", **call)
        add(t + rng.expovariate(1 / 30), "call.wrapup_ended", **call)
        if rng.random() < 0.3:
            add(
                t,
                "agent.state_changed",
                tenant=call["tenant"],
                agent_id=agent,
                team_id="team-1",
                state="wrapup",
                queues=[call["queue_id"]],
            )
    out.sort(key=lambda pair: pair[0])
    return [msgspec.json.encode(body) for _, body in out]


def per_event_us(fn: Callable[[], None], count: int, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) / count * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--legs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    raw = event_mix(args.legs)
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
