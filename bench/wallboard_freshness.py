"""Freshness of the wallboard, measured in the browser: from an event's POST to the tile
showing it (not a timed test; run it by hand or in CI's benchmark job).

Run: .venv/bin/python -m bench.wallboard_freshness [--samples N] [--simulate]

Starts `callpulse run` (with `--simulate`: the demo centre's traffic alongside), opens the
wallboard in Debian's Chromium (headless, via Playwright), and repeats: POST one event that
changes a tile's "calls waiting", then wait for the tile to change. The page records, with
the same system clock as this script, the instant the tile's text changed (a
MutationObserver) and the next animation frame after it (about when it is painted).
Prints p50 / p95 / max of POST-to-DOM and POST-to-frame, and the POST round trip alone.
Target: p95 under 500 ms in embedded mode.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from services.store.keys import new_key
from services.store.sqlite import SqliteStore

from .servers import callpulse

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

OBSERVE = """() => {
  window.__changes = [];
  const target = document.querySelector('.tile[data-queue="bench-q"] [data-field="waiting"]');
  new MutationObserver(() => {
    const at = Date.now();
    const text = target.textContent;
    requestAnimationFrame(() => window.__changes.push(
      {text, at, frame: performance.timeOrigin + performance.now()}));
  }).observe(target, {childList: true, characterData: true, subtree: true});
}"""


def _event(kind: str, call: str) -> dict[str, Any]:
    return {
        "schema_version": "1.0", "event_id": f"{call}-{kind}", "event_type": kind,
        "occurred_at": datetime.now(UTC).isoformat(), "tenant_id": "bench", "source": "bench",
        "call_id": call, "queue_id": "bench-q",
    }  # fmt: skip


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):6.1f}   p95 {p95:6.1f}   max {ordered[-1]:6.1f}"


def _until(page: Any, expression: str, timeout_s: float = 10) -> None:
    """Poll the page from here (the page's CSP forbids Playwright's in-page eval); the
    instants measured are taken in the page, so polling adds nothing to them."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        time.sleep(0.005)


def measure(samples: int, simulate: bool) -> None:
    from playwright.sync_api import sync_playwright

    args = ("--simulate",) if simulate else ()
    with callpulse(*args) as (url, admin, data_dir):
        store = SqliteStore(data_dir / "store.db")
        token, record = new_key("bench", "ingest", "bench", int(time.time() * 1000))
        store.put_key(record)
        store.close()
        ingest = {"Authorization": f"Bearer {token}"}
        link = httpx.post(
            f"{url}/v1/wallboard-links", json={"tenants": ["bench"]},
            headers={"Authorization": f"Bearer {admin}"}, timeout=10,
        ).json()  # fmt: skip
        client = httpx.Client(timeout=10)
        client.post(f"{url}/v1/events", json=[_event("call.queued", "base")], headers=ingest)
        dom: list[float] = []
        frame: list[float] = []
        post_ms: list[float] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.goto(url + link["url"])
            _until(
                page,
                """document.querySelector(
                '.tile[data-queue="bench-q"] [data-field="waiting"]')?.textContent === '1'""",
            )
            page.evaluate(OBSERVE)
            for n in range(samples):
                time.sleep(random.uniform(0.2, 0.5))
                kind = "call.queued" if n % 2 == 0 else "call.abandoned"
                expected = "2" if n % 2 == 0 else "1"
                seen = page.evaluate("window.__changes.length")
                sent = time.time() * 1000
                r = client.post(
                    f"{url}/v1/events", json=[_event(kind, f"c{n // 2}")], headers=ingest
                )
                post_ms.append(time.time() * 1000 - sent)
                assert r.status_code == 202, r.text
                _until(
                    page,
                    f"window.__changes.length > {seen} && "
                    f"window.__changes[window.__changes.length - 1].text === '{expected}'",
                )
                change = page.evaluate("window.__changes[window.__changes.length - 1]")
                dom.append(change["at"] - sent)
                frame.append(change["frame"] - sent)
            browser.close()
    mode = "embedded, with the demo traffic" if simulate else "embedded, idle otherwise"
    print(f"wallboard freshness ({mode}), {samples} events, milliseconds:")
    print(f"  POST -> tile text changed   {_quantiles(dom)}")
    print(f"  POST -> next frame          {_quantiles(frame)}")
    print(f"  POST round trip alone       {_quantiles(post_ms)}")
    p95 = sorted(frame)[min(len(frame) - 1, round(0.95 * (len(frame) - 1)))]
    print(f"  target p95 < 500 ms: {'met' if p95 < 500 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--simulate", action="store_true", help="run the demo traffic too")
    args = parser.parse_args()
    measure(args.samples, args.simulate)


if __name__ == "__main__":
    main()
