"""Ingest over HTTP: events/s into the embedded mode (`callpulse run`) and into Kafka
(`callpulse ingest` against the librdkafka mock broker, answering after the broker's
acknowledgement) with batches of 1, 100 and 1000 events, next to a trivial FastAPI endpoint
that only reads the body (target >= 50 % at 1000). The three servers are measured in turn,
round after round, with the same 8 concurrent keep-alive clients."""

from __future__ import annotations

import asyncio
import itertools
import time

import httpx

from .core import event_mix
from .servers import callpulse, trivial
from .table import Row, Samples

_runs = itertools.count()


def _bodies(raw: list[bytes], batch: int, count: int) -> list[bytes]:
    """`count` request bodies of `batch` events each, with event ids never sent before."""
    run = next(_runs)
    out = []
    for i in range(count):
        events = [
            raw[(i * batch + j) % len(raw)].replace(
                b'"event_id":"', f'"event_id":"r{run}-{i}-{j}-'.encode(), 1
            )
            for j in range(batch)
        ]
        out.append(b"[" + b",".join(events) + b"]")
    return out


async def _blast(url: str, headers: dict[str, str], bodies: list[bytes], workers: int) -> float:
    """Events per second for posting every body with `workers` concurrent clients."""
    queue = list(reversed(bodies))
    sent = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while queue:
            body = queue.pop()
            r = await client.post(f"{url}/v1/events", content=body, headers=headers)
            assert r.status_code == 202, r.text
            sent += body.count(b'"event_id"')

    async with httpx.AsyncClient(timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(workers)))
        return sent / (time.perf_counter() - started)


def measure(quick: bool) -> list[Row]:
    from . import infra

    raw = event_mix(0.5)
    sizes = {1: 50 if quick else 1000, 100: 5 if quick else 150, 1000: 2 if quick else 40}
    times = 1 if quick else 3
    results: dict[tuple[str, int], Samples] = {}
    with (
        callpulse() as (url, key, _),
        trivial() as base,
        infra.stack("ingest") as (dist, admin),
    ):
        targets = (
            ("ours", url, key), ("kafka", dist.url("ingest"), admin), ("trivial", base, key),
        )  # fmt: skip
        for batch, count in sizes.items():
            for _ in range(times):
                for name, target_url, token in targets:
                    headers = {"Authorization": f"Bearer {token}",
                               "Content-Type": "application/json"}  # fmt: skip
                    bodies = _bodies(raw, batch, count)
                    s = results.setdefault((name, batch), Samples())
                    s.values.append(asyncio.run(_blast(target_url, headers, bodies, 8)))
    rows = []
    for name, what in (("ours", "embedded"), ("kafka", "Kafka (distributed)")):
        rows += [
            Row("ingest", f"{what} ingest, batches of {batch}", "events/s",
                results[(name, batch)].median, results[("trivial", batch)].median,
                "trivial FastAPI body reader", target=0.5 if batch == 1000 else None,
                spread=results[(name, batch)].spread,
                baseline_spread=results[("trivial", batch)].spread)
            for batch in sizes
        ]  # fmt: skip
    return rows
