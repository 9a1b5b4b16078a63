"""Wallboard links, the live stream (SSE) and the team figures over HTTP, without a browser.

Team figures are compared with AHT and occupancy computed in the test from the events sent;
the stream is read from a real `callpulse run` process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest

from services.api import links
from services.store.links import WallboardLink
from tests.conftest import Process, Service
from tests.wallboard_support import bearer, create_link, key_on, post_events, small_team

# -- signed links ----------------------------------------------------------------------------


def _link(**fields: Any) -> WallboardLink:
    base: dict[str, Any] = {
        "link_id": "abc", "tenants": ["t1"], "created_at_ms": 0, "expires_at_ms": 10_000,
    }  # fmt: skip
    return WallboardLink(**(base | fields))


def test_link_tokens_verify_only_unaltered_and_unexpired() -> None:
    secret = b"s" * 32
    link = _link(queues=["q1"])
    token = links.sign(secret, link)
    claims = links.verify(secret, token, now_ms=5_000)
    assert claims is not None and claims.ten == ["t1"] and claims.q == ["q1"]
    assert links.accepts(link, claims, 5_000)
    assert links.verify(secret, token, now_ms=10_000) is None  # expired
    assert links.verify(b"x" * 32, token, now_ms=5_000) is None  # another server's secret
    assert links.verify(b"", token, now_ms=5_000) is None  # links disabled
    prefix, payload, signature = token.split(".")
    forged = _link(tenants=["t1", "t2"], expires_at_ms=10**13)
    forged_payload = links.sign(b"attacker", forged).split(".")[1]
    assert links.verify(secret, f"{prefix}.{forged_payload}.{signature}", 5_000) is None
    assert links.verify(secret, f"{prefix}.{payload}.{signature[:-2]}xx", 5_000) is None
    assert links.verify(secret, "not a token", 5_000) is None
    revoked = msgspec.structs.replace(link, revoked_at_ms=4_000)
    assert not links.accepts(revoked, claims, 5_000)
    assert not links.accepts(None, claims, 5_000)
    widened = msgspec.structs.replace(link, queues=None)  # the stored scope changed
    assert not links.accepts(widened, claims, 5_000)


async def test_who_may_manage_links(service: Service) -> None:
    post = service.client.post
    admin = service.key(None, "admin")
    client = service.key("ta", "client")
    wallboard = service.key("ta", "wallboard")
    r = await post("/v1/wallboard-links", json={}, headers=wallboard)
    assert r.status_code == 403
    r = await post("/v1/wallboard-links", json={"tenants": ["tb"]}, headers=client)
    assert r.status_code == 403
    r = await post("/v1/wallboard-links", json={}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "tenant_required"
    r = await post("/v1/wallboard-links", json={"label": "lobby"}, headers=client)
    assert r.status_code == 201, r.text
    own = r.json()
    assert own["link"]["tenants"] == ["ta"] and own["url"].startswith("/wallboard?token=wb1.")
    floor = (
        await post("/v1/wallboard-links", json={"tenants": ["ta", "tb"]}, headers=admin)
    ).json()
    listed = (await service.client.get("/v1/wallboard-links", headers=client)).json()["links"]
    assert [x["link_id"] for x in listed] == [own["link"]["link_id"]]  # not the floor link
    everything = (await service.client.get("/v1/wallboard-links", headers=admin)).json()
    assert len(everything["links"]) == 2
    floor_id = floor["link"]["link_id"]
    r = await service.client.delete(f"/v1/wallboard-links/{floor_id}", headers=client)
    assert r.status_code == 404  # a tenant key cannot touch a floor link
    r = await service.client.delete(f"/v1/wallboard-links/{floor_id}", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "revoked"


async def test_pages_carry_security_headers(service: Service) -> None:
    for path in ("/wallboard", "/team", "/static/wallboard.js", "/static/live.css"):
        r = await service.client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert (await service.client.get("/wallboard")).headers["cache-control"] == "no-store"
    for bad in ("/static/..%2Fapp.py", "/static/missing.js", "/static/team.html"):
        assert (await service.client.get(bad)).status_code == 404, bad


# -- team figures ------------------------------------------------------------------------------


async def test_team_figures_equal_an_independent_computation(service: Service) -> None:
    c = small_team("tf")
    admin = service.key(None, "admin")
    r = await service.client.post("/v1/events", json=c.events, headers=admin)
    assert r.status_code == 202 and r.json()["accepted"] == len(c.events)
    await service.settle()
    lead = service.key("tf", "teamlead")
    r = await service.client.get("/v1/teams/t1/agents?window=rolling_30m", headers=lead)
    assert r.status_code == 200, r.text
    view = r.json()
    as_of = datetime.fromisoformat(view["as_of"])
    start = datetime.fromisoformat(view["start"])
    agents = {a["agent_id"]: a for a in view["agents"]}
    assert sorted(agents) == ["a1", "a2", "a3"]
    for agent, figures in agents.items():
        assert figures["handled"] == len(c.handle_ms[agent])
        assert figures["aht_ms"]["value"] == pytest.approx(c.aht_ms([agent]), abs=1e-6)
        assert figures["occupancy"]["value"] == pytest.approx(
            c.occupancy([agent], start, as_of), abs=1e-9
        )
    team = ["a1", "a2", "a3"]
    assert view["team"]["aht_ms"]["value"] == pytest.approx(c.aht_ms(team), abs=1e-6)
    assert view["team"]["occupancy"]["value"] == pytest.approx(
        c.occupancy(team, start, as_of), abs=1e-9
    )
    assert view["team"]["handled"] == 5
    assert agents["a3"]["outliers"] == ["aht_high", "occupancy_high"]
    assert agents["a2"]["state"] == "aux" and agents["a2"]["reason"] == "lunch"
    aux_since = c.now - timedelta(minutes=2)  # read some time after: counted up to as_of
    assert agents["a2"]["time_in_state_ms"] == (as_of - aux_since) // timedelta(milliseconds=1)
    assert agents["a2"]["time_in_state_ms"] >= 120_000
    assert view["team"]["agents_by_state"]["aux"] == 1
    assert view["queues"] == ["sales"]
    # who may read it
    get = service.client.get
    assert (await get("/v1/teams/nobody/agents", headers=lead)).status_code == 404
    client = service.key("tf", "client")
    assert (await get("/v1/teams/t1/agents", headers=client)).status_code == 403
    other = service.key("elsewhere", "teamlead")
    assert (await get("/v1/teams/t1/agents", headers=other)).status_code == 404


# -- the live stream from a real process -------------------------------------------------------


def read_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Server-Sent Events of a streaming response (comment lines, if any, as `comment`)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            event[name] = value[1:] if value.startswith(" ") else value


@pytest.fixture
def server(process: Callable[[str], Process]) -> Process:
    p = process("stream")
    p.start(env={"CALLPULSE_STREAM_REFRESH_S": "1", "CALLPULSE_STREAM_HEARTBEAT_S": "0.5"})
    return p


def test_stream_pushes_changes_and_ends_when_the_link_is_revoked(server: Process) -> None:
    admin = key_on(server.data_dir, None, "admin")
    now = datetime.now(UTC)
    post_events(server.url, admin, [_queued("st", "q1", "first", now - timedelta(seconds=5))])
    created = create_link(server.url, admin, ["st"])
    url = f"{server.url}/v1/stream?token={created['token']}"
    with httpx.stream("GET", url, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_events(response)
        hello = next(events)
        assert hello["event"] == "hello" and hello["retry"] == "1000" and "id" in hello
        assert json.loads(hello["data"])["tenants"] == ["st"]
        tiles = next(events)
        assert json.loads(tiles["data"])["tiles"] == [{"tenant_id": "st", "queue_id": "q1"}]
        snapshot = next(events)
        assert snapshot["event"] == "snapshot"
        assert json.loads(snapshot["data"])["gauges"]["calls_waiting"] == 1
        posted = time.monotonic()
        post_events(server.url, admin, [_queued("st", "q1", "second", datetime.now(UTC))])
        for event in events:
            snapshot = json.loads(event["data"]) if event.get("event") == "snapshot" else {}
            if snapshot.get("gauges", {}).get("calls_waiting") == 2:
                break
        assert time.monotonic() - posted < 1.0  # pushed within a second of the change
        r = httpx.delete(
            f"{server.url}/v1/wallboard-links/{created['link']['link_id']}",
            headers=bearer(admin), timeout=10,
        )  # fmt: skip
        assert r.status_code == 200
        names = [event.get("event") for event in events]
        assert names[-1] == "revoked"  # and the server ended the stream
    assert "heartbeat" in names  # sent while nothing changed (the link check takes ~2 s)
    again = httpx.get(url, timeout=10)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "unauthenticated"


def test_stream_refuses_what_a_key_may_not_see(server: Process) -> None:
    client = key_on(server.data_dir, "mine", "client")
    ingest = key_on(server.data_dir, "mine", "ingest")
    get = httpx.get
    assert get(f"{server.url}/v1/stream", timeout=5).status_code == 401
    assert get(f"{server.url}/v1/stream?token=wb1.x.y", timeout=5).status_code == 401
    r = get(f"{server.url}/v1/stream?tenant=other", headers=bearer(client), timeout=5)
    assert r.status_code == 403
    assert get(f"{server.url}/v1/stream", headers=bearer(ingest), timeout=5).status_code == 403


def _queued(tenant: str, queue: str, call: str, at: datetime) -> dict[str, Any]:
    from tests.factories import event_dict

    return event_dict("call.queued", at, tenant_id=tenant, call_id=call, queue_id=queue)
