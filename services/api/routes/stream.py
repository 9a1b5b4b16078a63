"""GET /v1/stream: live snapshots of a tenant's (or a floor's) queues as Server-Sent Events.

Events, in order: `hello` (the scope, the server clock and cadences), `tiles` (the queues
shown; again whenever the set changes), then `snapshot` (one queue's LiveView) whenever its
figures change, within a second (typically well under 100 ms in embedded mode), and for
every queue at least every refresh period. A `heartbeat` (the server clock) is sent whenever
nothing else was for the heartbeat period, so a client can tell a silent server from a dead
one, and keeps its estimate of the server clock (for the ticking longest wait) current.
Every event carries an `id` and the first a `retry`; a reconnecting client gets the whole
state again, so `Last-Event-ID` needs no replay. A stream opened with a wallboard link ends
with a `revoked` event within seconds of the link being revoked or expiring.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from ...kpi.windows import from_ms
from .. import links
from ..backend import Backend
from ..deps import LIVE_ROLES, ApiConfig, BackendDep, ConfigDep, authenticated, get_principal
from ..errors import ERROR_RESPONSES, ApiError
from ..livefeed import LiveFeed, feed_of

router = APIRouter(tags=["live"])

RETRY_MS = 1000
LINK_CHECK_S = 2.0  # how soon a revoked or expired link ends an open stream
_bearer = HTTPBearer(auto_error=False, description="An API key: `cp_<id>_<secret>`")


@dataclass(frozen=True)
class Viewer:
    """What a stream may show: tenants, optionally only some queue ids, and the link (if
    it was opened with one) whose revocation ends it."""

    tenants: tuple[str, ...]
    queues: frozenset[str] | None
    link_id: str | None = None
    expires_at_ms: int | None = None

    def shows(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues


class StreamHello(BaseModel):
    """The first event of a stream."""

    server_time: datetime = Field(description="the server clock when the stream opened")
    heartbeat_s: float
    refresh_s: float
    tenants: list[str]
    queues: list[str] | None = Field(description="only these queue ids; null: every queue")
    link_id: str | None
    expires_at: datetime | None


class TileRef(BaseModel):
    tenant_id: str
    queue_id: str


class StreamTiles(BaseModel):
    """The queues a stream shows, in display order (tenant, then queue)."""

    tiles: list[TileRef]


class StreamEnd(BaseModel):
    reason: str


class StreamHeartbeat(BaseModel):
    server_time: datetime


def link_viewer(backend: Backend, config: ApiConfig, token: str) -> Viewer:
    """The scope of a wallboard link token, or 401 (the same answer for a forged, expired
    or revoked link)."""
    now_ms = int(time.time() * 1000)
    claims = links.verify(config.link_secret, token, now_ms)
    if claims is None or not links.accepts(backend.get_link(claims.id), claims, now_ms):
        raise ApiError(401, "unauthenticated", "the wallboard link is invalid, expired or revoked")
    queues = None if claims.q is None else frozenset(claims.q)
    return Viewer(tuple(claims.ten), queues, claims.id, claims.exp)


async def get_viewer(
    request: Request,
    backend: BackendDep,
    config: ConfigDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    token: Annotated[
        str | None, Query(description="a signed wallboard link token, instead of a key")
    ] = None,
    tenants: Annotated[
        list[str] | None,
        Query(alias="tenant", description="admin keys only: the tenant(s) to show"),
    ] = None,
    queues: Annotated[str | None, Query(description="comma-separated queue ids")] = None,
) -> Viewer:
    """The viewer of a link token, else of an API key (admin keys name tenants). A
    dependency, so that a refusal is an HTTP error before the stream starts; `async`, so
    that it reads the store on the event loop (see routes/links.py)."""
    wanted = None if queues is None else frozenset(q for q in queues.split(",") if q)
    if token is not None:
        viewer = link_viewer(backend, config, token)
        if wanted is not None:
            narrowed = wanted if viewer.queues is None else wanted & viewer.queues
            viewer = Viewer(viewer.tenants, narrowed, viewer.link_id, viewer.expires_at_ms)
        return viewer
    who = authenticated(request, get_principal(backend, credentials))
    if who.role not in LIVE_ROLES:
        raise ApiError(403, "forbidden", f"a {who.role} key may not read live figures")
    if who.queues is not None:  # a teamlead key granted some queues only
        wanted = who.queues if wanted is None else wanted & who.queues
    if who.tenant_id is None:
        if not tenants:
            raise ApiError(422, "tenant_required", "an admin key must name ?tenant=")
        return Viewer(tuple(dict.fromkeys(tenants)), wanted)
    if tenants and set(tenants) != {who.tenant_id}:
        raise ApiError(403, "forbidden", "the tenant comes from the API key")
    return Viewer((who.tenant_id,), wanted)


def _event(feed: LiveFeed, name: str, model: BaseModel) -> ServerSentEvent:
    return ServerSentEvent(
        event=name, raw_data=model.model_dump_json(), id=f"{feed.boot_id}-{feed.generation}"
    )


@router.get(
    "/v1/stream",
    response_class=EventSourceResponse,
    responses={
        **ERROR_RESPONSES,
        200: {
            "description": "`hello`, `tiles`, `snapshot` (a LiveView), `heartbeat` and"
            " `revoked` events"
        },
    },
)
async def stream(
    request: Request,
    backend: BackendDep,
    config: ConfigDep,
    viewer: Annotated[Viewer, Depends(get_viewer)],
) -> AsyncIterable[ServerSentEvent]:
    """Live snapshots pushed as they change (see the module docstring for the events).
    Browsers' `EventSource` can pass a wallboard link as `?token=`; other clients send an
    API key (`Authorization: Bearer`)."""
    feed = feed_of(request.app.state, backend, config.stream_refresh_s)
    with feed.watch(viewer.tenants):
        hello = StreamHello(
            server_time=from_ms(int(time.time() * 1000)),
            heartbeat_s=config.stream_heartbeat_s,
            refresh_s=config.stream_refresh_s,
            tenants=list(viewer.tenants),
            queues=None if viewer.queues is None else sorted(viewer.queues),
            link_id=viewer.link_id,
            expires_at=None if viewer.expires_at_ms is None else from_ms(viewer.expires_at_ms),
        )
        first = _event(feed, "hello", hello)
        yield ServerSentEvent(event=first.event, raw_data=first.raw_data, id=first.id,
                              retry=RETRY_MS)  # fmt: skip
        tiles: list[TileRef] | None = None
        sent: dict[tuple[str, str], int] = {}
        seen = -1
        checked = last_sent = time.monotonic()
        while not feed.closed:
            shown = [
                TileRef(tenant_id=t, queue_id=q)
                for t in viewer.tenants
                for q in feed.queues.get(t, ())
                if viewer.shows(q)
            ]
            if shown != tiles:
                tiles = shown
                last_sent = time.monotonic()
                yield _event(feed, "tiles", StreamTiles(tiles=shown))
            for tile in shown:
                key = (tile.tenant_id, tile.queue_id)
                snapshot = feed.snapshots.get(key)
                if snapshot is not None and sent.get(key) != snapshot.generation:
                    sent[key] = snapshot.generation
                    last_sent = time.monotonic()
                    yield ServerSentEvent(
                        event="snapshot", raw_data=snapshot.body,
                        id=f"{feed.boot_id}-{snapshot.generation}",
                    )  # fmt: skip
            heartbeat_due = last_sent + config.stream_heartbeat_s - time.monotonic()
            seen = await feed.wait(seen, max(0.0, heartbeat_due))
            now = time.monotonic()
            if now - last_sent >= config.stream_heartbeat_s:
                last_sent = now
                beat = StreamHeartbeat(server_time=from_ms(int(time.time() * 1000)))
                yield _event(feed, "heartbeat", beat)
            if viewer.link_id is not None and now - checked >= LINK_CHECK_S:
                checked = now
                if not _link_usable(backend, viewer):
                    yield _event(
                        feed, "revoked", StreamEnd(reason="the link was revoked or has expired")
                    )
                    return


def _link_usable(backend: Backend, viewer: Viewer) -> bool:
    assert viewer.link_id is not None
    link = backend.get_link(viewer.link_id)
    return link is not None and link.usable(int(time.time() * 1000))
