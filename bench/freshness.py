"""Freshness of the embedded mode: POST /v1/events returning -> the change visible on the live
endpoint, p50/p95/p99, while a large simulated centre loads the same process.

Run: .venv/bin/python -m bench.freshness [--probes 200] [--speed 20]
Starts `callpulse run` in a temporary data dir, feeds scenarios/large.toml at `--speed` times
real time from a second thread, and probes with a call queued on a probe queue: the time
from the POST's 202 until `calls_waiting` of that queue shows it (polled every 2 ms).
Target: p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from services.kpi.events import SCHEMA_VERSION, encode_event
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def start(data_dir: str, port: int) -> tuple[subprocess.Popen[bytes], str]:
    key = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "create", "--role", "admin",
         "--data-dir", data_dir], cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "run",
         "--data-dir", data_dir, "--port", str(port)], cwd=ROOT,
    )  # fmt: skip
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, key
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit("callpulse run did not start")


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


def probe(url: str, headers: dict[str, str], n: int) -> float:
    """Seconds from a probe call's 202 until the live endpoint counts it waiting."""
    now = datetime.now(UTC)
    event = {
        "schema_version": SCHEMA_VERSION, "event_id": f"probe-{n}", "event_type": "call.queued",
        "occurred_at": now.isoformat(), "tenant_id": "probe", "source": "bench",
        "call_id": f"probe-{n}", "queue_id": "probe-q",
    }  # fmt: skip
    with httpx.Client(timeout=10) as client:
        client.post(f"{url}/v1/events", json=[event], headers=headers).raise_for_status()
        accepted = time.perf_counter()
        while True:
            live = client.get(f"{url}/v1/queues/probe-q/live", params={"tenant": "probe"},
                              headers=headers)  # fmt: skip
            if live.status_code == 200 and live.json()["gauges"]["calls_waiting"] > n:
                return time.perf_counter() - accepted
            time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--speed", type=float, default=20.0)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        proc, key = start(data_dir, args.port)
        url = f"http://127.0.0.1:{args.port}"
        headers = {"Authorization": f"Bearer {key}"}
        stop = threading.Event()
        sent: list[int] = []
        loader = threading.Thread(target=lambda: sent.append(load(url, headers, args.speed, stop)))
        loader.start()
        time.sleep(2)
        began = time.monotonic()
        samples = []
        for n in range(args.probes):
            samples.append(probe(url, headers, n) * 1000)
            time.sleep(0.05)
        elapsed = time.monotonic() - began
        stop.set()
        loader.join()
        proc.terminate()
        proc.wait()
    q = statistics.quantiles(samples, n=100)
    print(f"background load: large.toml at {args.speed}x real time, "
          f"{sent[0] / (elapsed + 2):.0f} events/s")  # fmt: skip
    print(f"freshness over {len(samples)} probes (ms): p50 {q[49]:.1f}  p95 {q[94]:.1f}  "
          f"p99 {q[98]:.1f}  max {max(samples):.1f}   target p99 < 250")  # fmt: skip


if __name__ == "__main__":
    main()
