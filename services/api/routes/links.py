"""Wallboard links: create, list and revoke the signed URLs TVs open without a login."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

import msgspec
from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from ...kpi.windows import from_ms
from ...store.links import WallboardLink
from .. import links
from ..deps import BackendDep, ConfigDep, Principal, PrincipalDep
from ..errors import ERROR_RESPONSES, ApiError

router = APIRouter(tags=["wallboard"])

# The routes are `async`: they run on the event loop, like the embedded aggregator's writes,
# so the store's one SQLite connection is never used from two threads at once.

CREATE_ROLES = ("admin", "client", "teamlead")
DAY_S = 86_400


class LinkRequest(BaseModel):
    """A new link. Tenant keys may only name their own tenant (the default); an admin key
    names one tenant (a client board) or several (a floor)."""

    tenants: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        None, min_length=1, max_length=50
    )
    queues: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        None, min_length=1, max_length=200, description="only these queue ids; default: all"
    )
    label: str = Field("", max_length=200, description="where the TV is, e.g. 'floor 2 east'")
    expires_in_s: int = Field(90 * DAY_S, ge=60, le=366 * DAY_S)


class LinkView(BaseModel):
    link_id: str
    tenants: list[str]
    queues: list[str] | None
    label: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    status: Literal["active", "expired", "revoked"]


class CreatedLink(BaseModel):
    """The link's token is shown once; the server keeps only what revocation needs."""

    link: LinkView
    token: str
    url: str = Field(description="path and query of the wallboard page; prefix the API's origin")


class LinkList(BaseModel):
    links: list[LinkView]


def link_view(link: WallboardLink, now_ms: int) -> LinkView:
    if link.revoked_at_ms is not None and link.revoked_at_ms <= now_ms:
        status: Literal["active", "expired", "revoked"] = "revoked"
    else:
        status = "active" if now_ms < link.expires_at_ms else "expired"
    return LinkView(
        link_id=link.link_id,
        tenants=link.tenants,
        queues=link.queues,
        label=link.label,
        created_at=from_ms(link.created_at_ms),
        expires_at=from_ms(link.expires_at_ms),
        revoked_at=None if link.revoked_at_ms is None else from_ms(link.revoked_at_ms),
        status=status,
    )


def _may_manage(who: Principal) -> None:
    if who.role not in CREATE_ROLES:
        raise ApiError(403, "forbidden", f"a {who.role} key may not manage wallboard links")


def _owns(who: Principal, link: WallboardLink) -> bool:
    return who.tenant_id is None or link.tenants == [who.tenant_id]


@router.post(
    "/v1/wallboard-links", status_code=201, response_model=CreatedLink, responses=ERROR_RESPONSES
)
async def create_link(
    body: LinkRequest, who: PrincipalDep, backend: BackendDep, config: ConfigDep
) -> CreatedLink:
    """A signed wallboard link, valid until it expires or is revoked."""
    _may_manage(who)
    if not config.link_secret:
        raise ApiError(503, "unavailable", "wallboard links are not configured on this server")
    if who.tenant_id is None:
        if not body.tenants:
            raise ApiError(422, "tenant_required", "an admin key must name the link's tenants")
        tenants = list(dict.fromkeys(body.tenants))
    else:
        if body.tenants is not None and body.tenants != [who.tenant_id]:
            raise ApiError(403, "forbidden", "the tenant comes from the API key")
        tenants = [who.tenant_id]
    now_ms = int(time.time() * 1000)
    queues = None if body.queues is None else sorted(set(body.queues))
    link, token = links.new_link(
        config.link_secret, tenants, queues, now_ms, body.expires_in_s * 1000, body.label,
        who.key_id,
    )  # fmt: skip
    backend.put_link(link)
    return CreatedLink(
        link=link_view(link, now_ms), token=token, url=f"/wallboard?{urlencode({'token': token})}"
    )


@router.get("/v1/wallboard-links", response_model=LinkList, responses=ERROR_RESPONSES)
async def list_links(who: PrincipalDep, backend: BackendDep) -> LinkList:
    """The links of the key's tenant (an admin key: every link), without their tokens."""
    _may_manage(who)
    now_ms = int(time.time() * 1000)
    found = [link for link in backend.links(who.tenant_id) if _owns(who, link)]
    return LinkList(links=[link_view(link, now_ms) for link in found])


@router.delete("/v1/wallboard-links/{link_id}", response_model=LinkView, responses=ERROR_RESPONSES)
async def revoke_link(
    link_id: Annotated[str, Path(max_length=64)], who: PrincipalDep, backend: BackendDep
) -> LinkView:
    """Revoke a link: TVs showing it stop within seconds and it can never be used again."""
    _may_manage(who)
    link = backend.get_link(link_id)
    if link is None or not _owns(who, link):
        raise ApiError(404, "not_found", f"no wallboard link {link_id!r}")
    now_ms = int(time.time() * 1000)
    if link.revoked_at_ms is None:
        link = msgspec.structs.replace(link, revoked_at_ms=now_ms)
        backend.put_link(link)
    return link_view(link, now_ms)
