"""Benchmark: the live endpoint next to a trivial FastAPI endpoint, same server, same run.

Run: .venv/bin/python -m bench.api_live [--seconds 3] [--rounds 3] [--concurrency 8]

A throwaway embedded data dir is filled with a day of calls (3 tenants x 8 queues, one leg
every 5 s per tenant, so "today" reads evicted buckets from SQLite and the last two hours
from memory). A server process (`callpulse run`'s app under uvicorn, one worker, loopback)
then serves:

- `GET /v1/queues/q1/live` with a client key: authentication (SQLite key lookup + hash),
  the per-key rate limiter (set above the offered load, so it admits every request but is
  still paid for), the access log, the contract lookup, gauges and six windows with SL;
- `GET /bench/constant`: an `async def` FastAPI route returning a constant body of the same
  size (pre-serialised bytes: the cheapest thing FastAPI can answer).

A second process (this one) offers a bounded, closed-loop load: N keep-alive connections,
each sending its next request when the previous answer is complete. Meanwhile it sends live
calls through ingest (20 requests a second by default), so the live state keeps changing as
in a working centre. Rounds alternate between the endpoints (after a warm-up); the report
gives, per endpoint, the median throughput over the rounds, the p50/p99 latency over all
requests, and the ratio live / trivial throughput (target: at least 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIVE = "/v1/queues/q1/live"
CONSTANT = "/bench/constant"


def prepare(data_dir: Path, hours: float = 24.0) -> tuple[str, str]:
    """Fill a data dir with `hours` of legs; returns a client and an ingest key of tenant-0."""
    import msgspec

    from services.embedded.runtime import Embedded
    from services.embedded.settings import EmbeddedSettings
    from services.kpi.contracts import Contract
    from services.kpi.events import SCHEMA_VERSION
    from services.store.keys import new_key

    embedded = Embedded(EmbeddedSettings(data_dir=data_dir))
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=hours)
    records = []
    n = 0
    for step in range(int(hours * 3600) // 5):
        at = start + timedelta(seconds=5 * step)
        for t in range(3):
            tenant, queue = f"tenant-{t}", f"q{(step + t) % 8}"
            call = {"tenant_id": tenant, "call_id": f"c{step}", "queue_id": queue}
            wait = (step * 7 + t) % 60
            outcome = "call.abandoned" if step % 11 == 0 else "call.answered"
            extra = {} if outcome == "call.abandoned" else {"agent_id": f"a{step % 40}"}
            for kind, when, fields in (("call.queued", at, {}),
                                       (outcome, at + timedelta(seconds=wait), extra)):  # fmt: skip
                n += 1
                event = {"schema_version": SCHEMA_VERSION, "event_id": f"e{n}",
                         "event_type": kind, "occurred_at": when.isoformat(), "source": "bench",
                         **call, **fields}  # fmt: skip
                records.append((when, tenant, f"e{n}", msgspec.json.encode(event)))
    records.sort(key=lambda r: r[0])
    embedded.log.append([r[1:] for r in records])
    for t, zone in enumerate(("Europe/London", "America/New_York", "Asia/Kathmandu")):
        embedded.store.put_contract(
            Contract(tenant_id=f"tenant-{t}", version=1, timezone=zone, variant="offered")
        )
    aggregator = embedded.aggregator
    while aggregator.lag():
        aggregator.step()
        aggregator.flush(force_checkpoint=True)
    token, record = new_key("tenant-0", "client", "bench", int(time.time() * 1000))
    embedded.store.put_key(record)
    ingest, record = new_key("tenant-0", "ingest", "bench", int(time.time() * 1000))
    embedded.store.put_key(record)
    embedded.store.close()
    embedded.log.close()
    return token, ingest


def serve(data_dir: Path, port: int) -> None:
    """The server process: the embedded app plus the trivial endpoint, under uvicorn."""
    import logging

    from fastapi.responses import Response

    from services.api.limits import RateLimiter
    from services.api.routes.live import live_view
    from services.embedded.runtime import Embedded
    from services.embedded.settings import EmbeddedSettings

    logging.basicConfig(level=logging.WARNING)
    embedded = Embedded(EmbeddedSettings(data_dir=data_dir, port=port))
    embedded.app.state.limiter = RateLimiter(1e9, 10**9)  # admit all; still paid for
    size = len(
        live_view(embedded.backend, "tenant-0", "q1", int(time.time() * 1000)).model_dump_json()
    )
    body = b'{"pad":"' + b"x" * (size - 10) + b'"}'

    async def constant() -> Response:
        return Response(body, media_type="application/json")

    embedded.app.add_api_route(CONSTANT, constant, methods=["GET"], include_in_schema=False)
    asyncio.run(embedded.serve())


async def _connection(
    port: int, request: bytes, until: float, latencies: list[float], errors: list[int]
) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                errors.append(status)
            done += 1
    finally:
        writer.close()
    return done


async def load(port: int, path: str, token: str, seconds: float, concurrency: int
               ) -> tuple[float, list[float], list[int]]:  # fmt: skip
    """(requests per second, latencies in s, non-200 statuses) of one closed-loop round."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    until = started + seconds
    counts = await asyncio.gather(
        *(_connection(port, request, until, latencies, errors) for _ in range(concurrency))
    )
    return sum(counts) / (time.perf_counter() - started), latencies, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Comparison:
    """One run of the benchmark: per endpoint path, the body size, each round's requests per
    second, every request's latency (s) and the count of non-200 answers."""

    sizes: dict[str, int] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=lambda: {LIVE: [], CONSTANT: []})
    latencies: dict[str, list[float]] = field(default_factory=lambda: {LIVE: [], CONSTANT: []})
    errors: dict[str, int] = field(default_factory=lambda: {LIVE: 0, CONSTANT: 0})

    def ratio(self) -> float:
        """Median live throughput / median constant throughput (target >= 0.5)."""
        return statistics.median(self.rates[LIVE]) / statistics.median(self.rates[CONSTANT])


def compare(seconds: float, rounds: int, concurrency: int, traffic_per_s: float,
            hours: float = 24.0) -> Comparison:  # fmt: skip
    """Prepare a data dir with `hours` of calls, serve it from a second process and measure
    both endpoints in alternating rounds (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        t0 = time.perf_counter()
        token, ingest = prepare(data_dir, hours)
        print(f"prepared {hours:g} h of calls in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.api_live", "--serve", str(data_dir), "--port",
             str(port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        try:
            return asyncio.run(run(port, token, ingest, seconds, rounds, concurrency,
                                   traffic_per_s))  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections")
    parser.add_argument(
        "--traffic-per-s", type=float, default=20.0,
        help="ingest requests per second during the measurement (0: an idle centre)",
    )  # fmt: skip
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return
    c = compare(args.seconds, args.rounds, args.concurrency, args.traffic_per_s)
    print(f"{args.concurrency} connections, {args.rounds} rounds of {args.seconds:.0f} s each,"
          f" {args.traffic_per_s:g} ingest requests/s meanwhile (2 events each),"
          f" {os.cpu_count()} cores shared with the load generator")  # fmt: skip
    print(f"{'endpoint':<22}{'bytes':>7}{'req/s (median)':>16}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}")  # fmt: skip
    for path, name in ((CONSTANT, "trivial constant"), (LIVE, "live (q1)")):
        rates, latencies = c.rates[path], c.latencies[path]
        print(f"{name:<22}{c.sizes[path]:>7}{statistics.median(rates):>16.0f}"
              f"{1000 * percentile(latencies, 0.5):>9.2f}{1000 * percentile(latencies, 0.99):>9.2f}"
              f"{c.errors[path]:>8}")  # fmt: skip
    print(f"live / trivial throughput: {c.ratio():.2f} (target >= 0.50)")


async def traffic(port: int, token: str, per_s: float) -> None:
    """Live calls while the endpoints are measured: `per_s` ingest requests a second, each
    a queued and an answered event of tenant-0 (every request moves the live state)."""
    from services.kpi.events import SCHEMA_VERSION

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    try:
        while True:
            n += 1
            now = datetime.now(UTC)
            ids = f'"tenant_id":"tenant-0","call_id":"live{n}","queue_id":"q{n % 8}"'
            common = f'"schema_version":"{SCHEMA_VERSION}","source":"bench",{ids}'
            body = (
                f'[{{{common},"event_id":"lq{n}","event_type":"call.queued",'
                f'"occurred_at":"{(now - timedelta(seconds=9)).isoformat()}"}},'
                f'{{{common},"event_id":"la{n}","event_type":"call.answered","agent_id":"a1",'
                f'"occurred_at":"{now.isoformat()}"}}]'
            ).encode()
            writer.write(
                f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )  # fmt: skip
            head = await reader.readuntil(b"\r\n\r\n")
            assert head[9:12] == b"202", head
            length = next(int(line[15:]) for line in head.split(b"\r\n")
                          if line[:15].lower() == b"content-length:")  # fmt: skip
            await reader.readexactly(length)
            await asyncio.sleep(1 / per_s)
    finally:
        writer.close()


async def run(port: int, token: str, ingest: str, seconds: float, rounds: int,
              concurrency: int, traffic_per_s: float) -> Comparison:  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    result = Comparison()
    for path in (LIVE, CONSTANT):
        rps, lat, errors = await load(port, path, token, 1.0, concurrency)  # warm-up
        assert not errors, (path, errors[:5])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())  # fmt: skip
        raw = await reader.read()
        result.sizes[path] = len(raw.split(b"\r\n\r\n", 1)[1])
        writer.close()
    feeding = None
    if traffic_per_s > 0:
        feeding = asyncio.create_task(traffic(port, ingest, traffic_per_s))
    for _ in range(rounds):
        for path in (CONSTANT, LIVE):
            rps, lat, errors = await load(port, path, token, seconds, concurrency)
            result.rates[path].append(rps)
            result.latencies[path] += lat
            result.errors[path] += len(errors)
    if feeding is not None:
        feeding.cancel()
    return result


if __name__ == "__main__":
    main()
