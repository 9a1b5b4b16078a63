"""Helpers for the wallboard and team-view tests: keys and links on a data dir, a small call
centre of known figures, the page's number formats written independently, and Chromium."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx

from services.store.keys import new_key
from services.store.sqlite import SqliteStore
from tests.factories import event_dict

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def key_on(data_dir: Path, tenant: str | None, role: str) -> str:
    """A new API key written straight into a data dir's store (the server may be running)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(data_dir / "store.db")
    try:
        token, record = new_key(tenant, role, "test", int(time.time() * 1000))
        store.put_key(record)
    finally:
        store.close()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_link(base_url: str, admin: str, tenants: list[str], **extra: Any) -> dict[str, Any]:
    r = httpx.post(
        f"{base_url}/v1/wallboard-links", json={"tenants": tenants, **extra},
        headers=bearer(admin), timeout=10,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def post_events(base_url: str, key: str, events: list[dict[str, Any]]) -> None:
    r = httpx.post(f"{base_url}/v1/events", json=events, headers=bearer(key), timeout=10)
    assert r.status_code == 202, r.text
    assert not r.json()["rejected"], r.text


# -- a small centre with figures known in advance --------------------------------------------


@dataclass
class Centre:
    """Events of one tenant, and what they mean, computed here without the product's code."""

    tenant: str
    now: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    # per agent: handle times (ms) of the calls whose wrap-up ended
    handle_ms: dict[str, list[int]] = field(default_factory=dict)
    # per agent: [(instant, state)] in time order
    states: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    teams: dict[str, str] = field(default_factory=dict)
    _n: int = 0

    def agent(self, agent: str, team: str, at: datetime, state: str, queues: list[str]) -> None:
        self.teams[agent] = team
        self.states.setdefault(agent, []).append((at, state))
        self.events.append(
            event_dict("agent.state_changed", at, tenant_id=self.tenant, agent_id=agent,
                       team_id=team, state=state, queues=queues)
        )  # fmt: skip

    def call(self, queue: str, at: datetime, wait_s: float, agent: str | None = None,
             talk_s: float = 0, hold_s: float = 0, wrap_s: float = 0) -> None:  # fmt: skip
        """A call queued at `at`: answered after `wait_s` by `agent` (talk, hold and wrap-up
        follow), or abandoned after `wait_s` without an agent."""
        self._n += 1
        c = {"tenant_id": self.tenant, "call_id": f"call-{self._n}", "queue_id": queue}
        self.events.append(event_dict("call.queued", at, **c))
        answered = at + timedelta(seconds=wait_s)
        if agent is None:
            self.events.append(event_dict("call.abandoned", answered, **c))
            return
        self.events.append(event_dict("call.answered", answered, agent_id=agent, **c))
        hold_at = answered + timedelta(seconds=talk_s / 2)
        if hold_s:
            self.events.append(event_dict("call.hold_started", hold_at, **c))
            self.events.append(
                event_dict("call.hold_ended", hold_at + timedelta(seconds=hold_s), **c)
            )
        ended = answered + timedelta(seconds=talk_s + hold_s)
        self.events.append(event_dict("call.ended", ended, **c))
        wrapped = ended + timedelta(seconds=wrap_s)
        self.events.append(event_dict("call.wrapup_ended", wrapped, **c))
        self.handle_ms.setdefault(agent, []).append(
            round((wrapped - answered).total_seconds() * 1000)
        )

    def waiting(self, queue: str, at: datetime) -> None:
        self._n += 1
        c = {"tenant_id": self.tenant, "call_id": f"wait-{self._n}", "queue_id": queue}
        self.events.append(event_dict("call.queued", at, **c))

    # independent figures ------------------------------------------------------------------

    def aht_ms(self, agents: list[str]) -> float | None:
        times = [t for a in agents for t in self.handle_ms.get(a, [])]
        return sum(times) / len(times) if times else None

    def occupancy(self, agents: list[str], start: datetime, now: datetime) -> float | None:
        """(on call + wrap-up) / (on call + wrap-up + available) time in [start, now]."""
        busy = avail = 0.0
        for a in agents:
            changes = self.states.get(a, [])
            for i, (at, state) in enumerate(changes):
                end = changes[i + 1][0] if i + 1 < len(changes) else now
                lo, hi = max(at, start), min(end, now)
                ms = max(0.0, (hi - lo).total_seconds() * 1000)
                if state in ("on_call", "wrapup"):
                    busy += ms
                elif state == "available":
                    avail += ms
        return busy / (busy + avail) if busy + avail else None


def small_team(tenant: str) -> Centre:
    """Three agents of team `t1` (one an AHT outlier) and one of `t2`, in the last 20 min."""
    now = datetime.now(UTC).replace(microsecond=0)
    c = Centre(tenant, now)
    start = now - timedelta(minutes=20)
    for agent, team in (("a1", "t1"), ("a2", "t1"), ("a3", "t1"), ("b1", "t2")):
        c.agent(agent, team, start, "available", ["sales"])
    # (agent, minutes after start, wait s, talk s, hold s, wrap s)
    calls = [
        ("a1", 1, 5, 100.4, 0, 20.1), ("a1", 6, 12, 80.25, 15.5, 10),
        ("a2", 2, 3, 140.7, 0, 30.3), ("a2", 9, 25, 60, 0, 5.125),
        ("a3", 3, 8, 610.5, 40, 60), ("b1", 4, 2, 50, 0, 5),
    ]  # fmt: skip
    for agent, minute, wait, talk, hold, wrap in calls:
        at = start + timedelta(minutes=minute)
        answered = at + timedelta(seconds=wait)
        c.call("sales", at, wait, agent, talk, hold, wrap)
        c.agent(agent, c.teams[agent], answered, "on_call", ["sales"])
        ended = answered + timedelta(seconds=talk + hold)
        c.agent(agent, c.teams[agent], ended, "wrapup", ["sales"])
        c.agent(agent, c.teams[agent], ended + timedelta(seconds=wrap), "available", ["sales"])
    c.agent("a2", "t1", now - timedelta(minutes=2), "aux", ["sales"])
    c.events[-1]["reason"] = "lunch"
    return c


# -- the page's formats, written again ------------------------------------------------------


def _clock(total_s: int) -> str:
    h, rest = divmod(max(0, total_s), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def average(ms: float | None) -> str:
    """ASA/AHT as the page shows them: nearest second (halves up), m:ss."""
    return "—" if ms is None else _clock(math.floor(ms / 1000 + 0.5))


def elapsed(ms: float) -> str:
    return _clock(math.floor(ms / 1000))


def percent(pct: float | None) -> str:
    """One decimal, halves away from zero on the exact binary value (like toFixed)."""
    if pct is None:
        return "—"
    return f"{Decimal(pct).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def fraction(value: float | None) -> str:
    return "—" if value is None else percent(value * 100)


def parse_clock(text: str) -> int:
    """Seconds of an m:ss or h:mm:ss text."""
    total = 0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return total


# -- Chromium ----------------------------------------------------------------------------------


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def wait_until(check: Any, timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
