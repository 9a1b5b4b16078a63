"""Freshness of the embedded mode: POST /v1/events returning -> the change visible on the live
endpoint, p50/p95/p99, while a large simulated centre loads the same process.

Run: .venv/bin/python -m bench.freshness [--probes 200] [--speed 20] (also part of bench.run)
Starts `callpulse run` in a temporary data dir, feeds scenarios/large.toml at `--speed` times
real time from a second thread, and probes with a call queued on a probe queue: the time
from the POST's 202 until `calls_waiting` of that queue shows it (polled every 2 ms).
Target: p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from services.kpi.events import SCHEMA_VERSION, encode_event
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario

from .servers import callpulse
from .table import Row

ROOT = Path(__file__).resolve().parents[1]


def load(url: str, headers: dict[str, str], speed: float, stop: threading.Event) -> int:
    """Post the large scenario paced at `speed` x real time; returns events sent."""
    scenario = load_scenario(ROOT / "scenarios" / "large.toml")
    origin = datetime.now(UTC) - timedelta(minutes=5)
    began = time.monotonic()
    sent = 0
    batch: list[bytes] = []
    with httpx.Client(timeout=10) as client:
        for event in simulate(scenario, 3, origin, timedelta(hours=48)):
            due = (event.occurred_at - origin).total_seconds() / speed
            batch.append(encode_event(event))
            wait = due - (time.monotonic() - began)
            if wait > 0 or len(batch) >= 200:
                client.post(f"{url}/v1/events", content=b"[" + b",".join(batch) + b"]",
                            headers=headers)  # fmt: skip
                sent += len(batch)
                batch = []
                if wait > 0:
                    time.sleep(min(wait, 0.05))
            if stop.is_set():
                return sent
    return sent


def probe(
    url: str,
    headers: dict[str, str],
    n: int,
    live_url: str | None = None,
    queue: str = "probe-q",
    poll_s: float = 0.002,
    timeout_s: float = 60,
) -> float:
    """Seconds from a probe call's 202 until the live endpoint counts it waiting: the n-th
    probe (from 0) of `queue`, posted to `url`, read from `live_url` (default `url`)."""
    now = datetime.now(UTC)
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": f"probe-{queue}-{n}",
        "event_type": "call.queued", "occurred_at": now.isoformat(), "tenant_id": "probe",
        "source": "bench", "call_id": f"probe-{queue}-{n}", "queue_id": queue,
    }  # fmt: skip
    with httpx.Client(timeout=10) as client:
        client.post(f"{url}/v1/events", json=[event], headers=headers).raise_for_status()
        accepted = time.perf_counter()
        while True:
            live = client.get(f"{live_url or url}/v1/queues/{queue}/live",
                              params={"tenant": "probe"}, headers=headers)  # fmt: skip
            if live.status_code == 200 and live.json()["gauges"]["calls_waiting"] > n:
                return time.perf_counter() - accepted
            if time.perf_counter() - accepted > timeout_s:
                raise TimeoutError(f"probe {n} of {queue} not visible: {live.text[:300]}")
            time.sleep(poll_s)


def freshness(probes: int, speed: float) -> tuple[list[float], float]:
    """(probe latencies in ms, background events/s) against a fresh `callpulse run`."""
    with callpulse() as (url, key, _):
        headers = {"Authorization": f"Bearer {key}"}
        stop = threading.Event()
        sent: list[int] = []
        loader = threading.Thread(target=lambda: sent.append(load(url, headers, speed, stop)))
        loader.start()
        time.sleep(2)
        began = time.monotonic()
        samples = []
        for n in range(probes):
            samples.append(probe(url, headers, n) * 1000)
            time.sleep(0.05)
        elapsed = time.monotonic() - began
        stop.set()
        loader.join()
    return samples, sent[0] / (elapsed + 2)


def measure(quick: bool) -> list[Row]:
    samples, load_rate = freshness(20 if quick else 200, 20.0)
    q = statistics.quantiles(samples, n=100)
    note = f"large centre at 20x real time, {load_rate:.0f} events/s of background load"
    return [
        Row("freshness", f"embedded POST -> live endpoint, {name}", "ms", value,
            baseline=250.0 if name == "p99" else None, baseline_name="target 250 ms",
            target=1.0 if name == "p99" else None, higher_is_better=False, note=note)
        for name, value in (("p50", q[49]), ("p95", q[94]), ("p99", q[98]))
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--speed", type=float, default=20.0)
    args = parser.parse_args()
    samples, load_rate = freshness(args.probes, args.speed)
    q = statistics.quantiles(samples, n=100)
    print(f"background load: large.toml at {args.speed}x real time, {load_rate:.0f} events/s")
    print(f"freshness over {len(samples)} probes (ms): p50 {q[49]:.1f}  p95 {q[94]:.1f}  "
          f"p99 {q[98]:.1f}  max {max(samples):.1f}   target p99 < 250")  # fmt: skip


if __name__ == "__main__":
    main()
