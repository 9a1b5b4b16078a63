"""The wallboard and the team-lead view in Debian's Chromium (Playwright), against real
`callpulse run` processes: the numbers on the tiles are the API's, the longest wait ticks
between events, the page recovers from a server restart by itself, a revoked link stops
working, and the team view's AHT equals a computation made here from the events sent.

Screenshots go to artifacts/ (git-ignored)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.kpi.contracts import Contract
from services.store.sqlite import SqliteStore
from tests.conftest import Process, free_port
from tests.factories import event_dict
from tests.wallboard_support import (
    ARTIFACTS,
    CHROMIUM,
    Centre,
    average,
    bearer,
    chromium,
    create_link,
    fraction,
    key_on,
    parse_clock,
    percent,
    post_events,
    small_team,
    wait_until,
)

TILE_FIELDS = """tile => Object.fromEntries(
  [...tile.querySelectorAll('[data-field]')].map(e => [e.dataset.field, e.textContent]))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # A missing browser fails loudly: scripts/test.sh installs Debian's package.
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One server for the tests that do not restart it. Snapshots are re-sent only every
    30 s, so that between events nothing arrives unless something changed."""
    p = Process(tmp_path_factory.mktemp("board") / "data", free_port())
    p.start(env={"CALLPULSE_STREAM_REFRESH_S": "30", "CALLPULSE_STREAM_HEARTBEAT_S": "1"})
    yield p
    p.kill(signal.SIGTERM)


def open_board(browser: Any, url: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.errors = errors
    return page


def tiles_ready(page: Any, count: int) -> bool:
    return bool(page.evaluate(f"document.querySelectorAll('.tile[data-as-of]').length >= {count}"))


def status(page: Any) -> str:
    return str(page.get_attribute("#status", "data-status"))


def outside_interval_edge() -> None:
    """Tiles and API are compared on the current interval: not across its boundary."""
    now = datetime.now(UTC)
    if now.minute % 15 == 14 and now.second >= 45:
        time.sleep(61 - now.second)


def as_of(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def half_hour(at: datetime) -> datetime:
    """The start of the UTC half hour containing `at` (the tiles' 30-min interval)."""
    return at.replace(minute=at.minute // 30 * 30, second=0, microsecond=0)


def test_tiles_show_the_api_numbers_and_the_longest_wait_ticks(
    board: Process, browser: Any
) -> None:
    admin = key_on(board.data_dir, None, "admin")
    store = SqliteStore(board.data_dir / "store.db")
    store.put_contract(Contract(tenant_id="wb", queue_id="sales", threshold_s=30,
                                target_pct=90, variant="offered", version=1))  # fmt: skip
    store.close()
    now = datetime.now(UTC).replace(microsecond=0)
    c = Centre("wb", now)
    for n, agent in enumerate(("w1", "w2", "w3", "w4")):
        c.agent(agent, "wt", now - timedelta(minutes=9), "available", ["claims", "sales"])
        if n == 3:
            c.agent(agent, "wt", now - timedelta(minutes=1), "aux", ["claims", "sales"])
    for minute, wait, agent, talk in ((8, 5, "w1", 95.5), (7, 25, "w2", 61.2), (6, 14, "w1", 50)):
        c.call("claims", now - timedelta(minutes=minute), wait, agent, talk, 0, 12.3)
    c.call("claims", now - timedelta(minutes=5), 41)  # abandoned
    c.call("sales", now - timedelta(minutes=4), 33, "w3", 120, 10, 20)
    c.agent("w2", "wt", now - timedelta(seconds=20), "on_call", ["claims", "sales"])
    c.waiting("claims", now - timedelta(seconds=40))
    c.waiting("claims", now - timedelta(seconds=15))
    post_events(board.url, admin, c.events)
    board.wait_caught_up()
    outside_interval_edge()
    link = create_link(board.url, admin, ["wb"], label="test floor")
    page = open_board(browser, board.url + link["url"], viewport={"width": 1920, "height": 1080})
    wait_until(lambda: tiles_ready(page, 2), 10, "two tiles with data")
    wait_until(lambda: status(page) == "live", 5, "the live status")

    for queue in ("claims", "sales"):
        tile = page.locator(f'.tile[data-queue="{queue}"]')
        shown = tile.evaluate(TILE_FIELDS)
        api = httpx.get(f"{board.url}/v1/queues/{queue}/live?tenant=wb", headers=bearer(admin),
                        timeout=10).json()  # fmt: skip
        read_at = time.time()
        windows = {w["name"]: w for w in api["windows"]}
        expected = {
            "interval.sl": percent(windows["interval"]["service_level"]["value_pct"]),
            "today.sl": percent(windows["today"]["service_level"]["value_pct"]),
            "waiting": str(api["gauges"]["calls_waiting"]),
        }
        for state in ("available", "on_call", "wrapup", "aux"):
            expected[f"agents.{state}"] = str(api["gauges"]["agents"][state])
        for name in ("interval", "today"):
            w = windows[name]
            expected[f"{name}.asa"] = average(w["asa_ms"]["value"])
            expected[f"{name}.aht"] = average(w["aht_ms"]["value"])
            expected[f"{name}.abandon"] = fraction(w["abandon_rate"]["value"])
        assert {k: shown[k] for k in expected} == expected, queue
        oldest = api["gauges"]["oldest_queued_at"]
        if oldest is None:
            assert shown["longest"] == "0:00"
        else:
            waited_ms = read_at * 1000 - datetime.fromisoformat(oldest).timestamp() * 1000
            assert abs(parse_clock(shown["longest"]) - waited_ms / 1000) <= 1.5
    # the independent view of the same events agrees with both (the windows are those of the
    # tile's snapshot, taken after `now`: the outside_interval_edge wait may cross a boundary)
    claims, claims_as_of = page.locator('.tile[data-queue="claims"]').evaluate(
        f"tile => [({TILE_FIELDS})(tile), tile.dataset.asOf]"
    )
    assert claims["waiting"] == "2" and claims["agents.aux"] == "1"
    if (now - timedelta(minutes=10)).date() == as_of(claims_as_of).date():  # all calls today
        assert claims["today.aht"] == average(c.aht_ms(["w1", "w2"]))
    level, sales_as_of = page.locator('.tile[data-queue="sales"]').evaluate(
        "tile => [tile.querySelector('.tile-level').textContent, tile.dataset.asOf]"
    )
    answered = now - timedelta(minutes=4) + timedelta(seconds=33)
    if half_hour(answered) == half_hour(as_of(sales_as_of)):
        # the sales call, answered after 33 s against 30 s, counts in the tile's interval
        assert level is not None and "Missed" in level  # a word and an icon, not a colour

    # Between events nothing arrives, and the longest wait still counts up on screen.
    before = page.evaluate("window.__callpulse.snapshots")
    first = parse_clock(
        page.locator('.tile[data-queue="claims"] [data-field="longest"]').text_content()
    )
    time.sleep(3.2)
    later = parse_clock(
        page.locator('.tile[data-queue="claims"] [data-field="longest"]').text_content()
    )
    assert page.evaluate("window.__callpulse.snapshots") == before  # no event arrived
    assert 2 <= later - first <= 4
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "wallboard-1080p.png"))

    root_1080 = page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    page.set_viewport_size({"width": 3840, "height": 2160})  # a 4K TV at 100 %
    wait_until(lambda: page.evaluate("window.__callpulse.scale") > 1.5, 5, "tiles scaled up")
    assert page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    page.screenshot(path=str(ARTIFACTS / "wallboard-4k.png"))
    assert page.errors == []

    # 200 % zoom on a 1080p screen: half the CSS pixels, twice the device pixels each.
    zoomed = open_board(browser, board.url + link["url"] + "&rotate=2&per_page=1",
                        viewport={"width": 960, "height": 540}, device_scale_factor=2)  # fmt: skip
    wait_until(lambda: tiles_ready(zoomed, 1), 10, "tiles at 200 %")
    # A second screen joins later and gets the cached snapshot: its clock comes from the
    # stream (hello, heartbeats), so its longest wait is right all the same.
    longest = zoomed.locator('.tile[data-queue="claims"] [data-field="longest"]')
    oldest = min(e["occurred_at"] for e in c.events if e.get("call_id", "").startswith("wait"))
    waited_s = time.time() - datetime.fromisoformat(oldest).timestamp()
    assert abs(parse_clock(str(longest.text_content())) - waited_s) <= 1.5
    assert zoomed.evaluate("document.documentElement.scrollWidth <= innerWidth")
    zoomed.screenshot(path=str(ARTIFACTS / "wallboard-zoom200.png"))
    first_page = zoomed.text_content("#page-indicator")
    assert first_page == "Page 1 of 2"  # one tile per page asked for; pages rotate
    wait_until(lambda: zoomed.text_content("#page-indicator") == "Page 2 of 2", 5, "rotation")
    sl = zoomed.locator('.tile:not([hidden]) [data-field="interval.sl"]')
    box = sl.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 540
    root_zoomed = zoomed.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)")
    assert root_zoomed * 2 > root_1080 * 1.3  # text grows with zoom (device pixels)
    zoomed.screenshot(path=str(ARTIFACTS / "wallboard-zoom200.png"))
    assert zoomed.errors == []


def test_a_revoked_link_stops_working(board: Process, browser: Any) -> None:
    admin = key_on(board.data_dir, None, "admin")
    at = datetime.now(UTC) - timedelta(seconds=30)
    post_events(board.url, admin, [
        event_dict("call.queued", at, tenant_id="wr", call_id="c1", queue_id="q")
    ])  # fmt: skip
    link = create_link(board.url, admin, ["wr"])
    page = open_board(browser, board.url + link["url"])
    wait_until(lambda: tiles_ready(page, 1), 10, "the tile")
    r = httpx.delete(f"{board.url}/v1/wallboard-links/{link['link']['link_id']}",
                     headers=bearer(admin), timeout=10)  # fmt: skip
    assert r.status_code == 200
    wait_until(lambda: status(page) == "denied", 8, "the open page to give up the link")
    assert "no longer works" in str(page.text_content("#notice"))
    assert page.locator(".tile.is-stale").count() == 1  # what is left is marked stale
    page.reload()
    wait_until(lambda: status(page) == "denied", 8, "a reloaded page to refuse the link")
    assert page.locator(".tile").count() == 0
    assert httpx.get(f"{board.url}/v1/stream?token={link['token']}", timeout=5).status_code == 401
    assert page.errors == []


def test_team_view_shows_aht_equal_to_an_independent_computation(
    board: Process, browser: Any
) -> None:
    admin = key_on(board.data_dir, None, "admin")
    c = small_team("wt")
    post_events(board.url, admin, c.events)
    board.wait_caught_up()
    lead = key_on(board.data_dir, "wt", "teamlead")
    page = open_board(browser, f"{board.url}/team?team=t1&window=rolling_30m",
                      viewport={"width": 1600, "height": 1000})  # fmt: skip
    page.fill("#login-key", lead)
    page.click("#login button[type=submit]")
    wait_until(lambda: page.locator("#agents tbody tr").count() == 3, 10, "three agent rows")
    for agent in ("a1", "a2", "a3"):
        row = page.locator(f'#agents tr[data-agent="{agent}"]')
        assert row.locator('[data-field="aht"]').text_content() == average(c.aht_ms([agent]))
        assert row.locator('[data-field="handled"]').text_content() == str(len(c.handle_ms[agent]))
    team = ["a1", "a2", "a3"]
    assert page.text_content('[data-field="team.aht"]') == average(c.aht_ms(team))
    shown_occupancy = float(str(page.text_content('[data-field="team.occupancy"]')).rstrip("%"))
    start = datetime.now(UTC) - timedelta(minutes=30)
    start = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    independent = c.occupancy(team, start, datetime.now(UTC))
    assert independent is not None and abs(shown_occupancy - independent * 100) < 0.3
    a3 = page.locator('#agents tr[data-agent="a3"] td.outlier')
    assert a3.count() == 2 and "High" in str(a3.first.text_content())  # flagged in words
    a2_state = page.locator('#agents tr[data-agent="a2"] [data-field="state"]').text_content()
    assert a2_state is not None and "Aux" in a2_state and "lunch" in a2_state
    wait_until(lambda: tiles_ready(page, 1), 10, "the team's queue tile")
    time_in_state = page.locator('#agents tr[data-agent="a2"] [data-field="time_in_state"]')
    assert parse_clock(str(time_in_state.text_content())) >= 119
    ARTIFACTS.mkdir(exist_ok=True)
    wait_until(lambda: status(page) == "live", 5, "the live status")
    page.screenshot(path=str(ARTIFACTS / "team.png"), full_page=True)
    assert page.errors == []


def test_the_page_recovers_from_server_restarts(
    process: Callable[[str], Process], browser: Any
) -> None:
    p = process("restart")
    env = {"CALLPULSE_STREAM_HEARTBEAT_S": "1"}
    p.start(env=env)
    admin = key_on(p.data_dir, None, "admin")
    start = datetime.now(UTC) - timedelta(seconds=20)
    post_events(p.url, admin, [
        event_dict("call.queued", start, tenant_id="wx", call_id="c0", queue_id="q")
    ])  # fmt: skip
    link = create_link(p.url, admin, ["wx"])
    page = open_board(browser, p.url + link["url"])
    waiting = page.locator('[data-field="waiting"]')
    wait_until(lambda: waiting.text_content() == "1", 10, "the first figures")
    for n, sig in enumerate((signal.SIGTERM, signal.SIGKILL), start=1):
        stopping = time.monotonic()
        p.kill(sig)
        assert time.monotonic() - stopping < 5  # open streams do not hold a shutdown up
        wait_until(lambda: status(page) == "stale", 10, "the page to show stale data")
        assert page.locator(".tile.is-stale .tile-stale").is_visible()
        if sig == signal.SIGKILL:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "wallboard-stale.png"))
        p.start(env=env)
        wait_until(lambda: status(page) == "live", 15, "the page to reconnect by itself")
        post_events(p.url, admin, [
            event_dict("call.queued", datetime.now(UTC), tenant_id="wx", call_id=f"c{n}",
                       queue_id="q")
        ])  # fmt: skip
        wait_until(lambda n=n: waiting.text_content() == str(n + 1), 5, "figures after restart")
    assert page.evaluate("window.__callpulse.connects") == 3
    assert not page.locator(".tile.is-stale").count()
    assert page.errors == []


def test_team_view_acknowledges_an_open_alert(board: Process, browser: Any) -> None:
    admin = key_on(board.data_dir, None, "admin")
    lead = key_on(board.data_dir, "wa", "teamlead")
    now = datetime.now(UTC)
    c = Centre("wa", now)
    c.agent("x1", "ta", now - timedelta(minutes=3), "available", ["support"])
    post_events(board.url, admin, c.events)
    rule = {
        "scope": "queue", "queue_id": "support", "metric": "calls_waiting", "op": ">=",
        "threshold": 1, "severity": "critical", "summary": "callers are waiting in support",
    }  # fmt: skip
    r = httpx.post(f"{board.url}/v1/alert-rules", json=rule, headers=bearer(lead), timeout=10)
    assert r.status_code == 201, r.text
    c.events.clear()
    c.waiting("support", now - timedelta(seconds=5))
    post_events(board.url, admin, c.events)

    def open_alerts() -> list[dict[str, Any]]:
        got = httpx.get(f"{board.url}/v1/alerts?state=open", headers=bearer(lead), timeout=10)
        return list(got.json()["alerts"])

    wait_until(open_alerts, 10, "the alert to fire", every_s=0.3)
    page = open_board(browser, f"{board.url}/team?team=ta")
    page.fill("#login-key", lead)
    page.click("#login button[type=submit]")
    row = page.locator("#alerts tbody tr")
    wait_until(lambda: row.count() == 1, 10, "the open alert on the page")
    assert "callers are waiting in support" in str(row.text_content())
    assert "critical" in str(row.locator(".severity").text_content())
    row.get_by_role("button", name="Acknowledge").click()
    wait_until(lambda: "✓" in str(row.text_content()), 10, "the acknowledgement on the page")
    (alert,) = open_alerts()
    assert alert["acknowledged_by"] == "test" and alert["acknowledged_at"] is not None
    assert page.errors == []
