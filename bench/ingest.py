"""Ingest over HTTP: events/s into the embedded mode with batches of 1, 100 and 1000 events,
next to a trivial FastAPI endpoint that only reads the body (target >= 50 % at 1000)."""

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
    raw = event_mix(0.5)
    sizes = {1: 50 if quick else 1500, 100: 5 if quick else 150, 1000: 2 if quick else 40}
    times = 1 if quick else 3
    results: dict[tuple[str, int], Samples] = {}
    with callpulse() as (url, key, _), trivial() as base:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        for batch, count in sizes.items():
            for name, target_url in (("ours", url), ("trivial", base)):
                s = results.setdefault((name, batch), Samples())
                for _ in range(times):
                    bodies = _bodies(raw, batch, count)
                    s.values.append(asyncio.run(_blast(target_url, headers, bodies, 8)))
    return [
        Row("ingest", f"embedded ingest, batches of {batch}", "events/s",
            results[("ours", batch)].median, results[("trivial", batch)].median,
            "trivial FastAPI body reader", target=0.5 if batch == 1000 else None,
            spread=results[("ours", batch)].spread)
        for batch in sizes
    ]  # fmt: skip
