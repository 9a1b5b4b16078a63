"""The first README command's product: `callpulse run --simulate` shows live numbers fast."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx

from tests.conftest import Process


def test_simulated_centre_has_live_numbers_within_ten_seconds(
    process: Callable[[str], Process],
) -> None:
    demo = process("demo")
    began = time.monotonic()
    demo.start("--simulate")
    assert demo.proc is not None and demo.proc.stdout is not None
    key = None
    while key is None:
        line = demo.proc.stdout.readline().decode()
        assert line, "the process printed no key"
        found = re.search(r"admin key \(shown once\): (cp_\S+)", line)
        key = found.group(1) if found else None
    headers = {"Authorization": f"Bearer {key}"}
    offered = 0
    seen: set[str] = set()
    while time.monotonic() - began < 10 and not offered:
        # Two clients in London and New York: at any hour one of them has traffic.
        for tenant in ("acme-insurance", "globex-telco"):
            r = httpx.get(f"{demo.url}/v1/queues", params={"tenant": tenant},
                          headers=headers, timeout=5)  # fmt: skip
            assert r.status_code == 200, r.text
            queues = r.json()["queues"]
            seen |= {f"{tenant}/{q['queue_id']}" for q in queues}
            offered += sum(w["offered"] for q in queues for w in q["live"]["windows"]
                           if w["name"] == "rolling_60m")  # fmt: skip
        time.sleep(0.2)
    assert offered > 0, "no live numbers within 10 seconds"
    assert {"acme-insurance/claims", "acme-insurance/sales"} <= seen
