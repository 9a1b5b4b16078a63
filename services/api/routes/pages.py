"""The wallboard and team-lead pages: plain HTML, CSS and JS from `services/api/static`.

No build step. The pages themselves hold no data and need no key; they authenticate their
API calls with the wallboard link in their URL (wallboard) or a team lead's key (team view).
Every answer carries a strict Content-Security-Policy (own scripts and styles only, no
inline code, no framing) and `Referrer-Policy: no-referrer`, so a link's token never leaves
the page in a Referer header.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from ..errors import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[1] / "static"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*\.(js|css|svg)$")
_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "fullscreen=(self), camera=(), microphone=(), geolocation=()",
}


def _page(name: str) -> Response:
    body = (STATIC / name).read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/wallboard")
def wallboard() -> Response:
    """The wallboard: open `/wallboard?token=<link token>` (see POST /v1/wallboard-links).
    Display options: `rotate` (seconds per page, 0 = off), `per_page` (tiles per page),
    `warn` (points below target still shown as a warning), `title`."""
    return _page("wallboard.html")


@router.get("/team")
def team() -> Response:
    """The team-lead view: `/team?team=<team id>`; asks for a team-lead key once per tab."""
    return _page("team.html")


@router.get("/static/{name}")
def static(name: str) -> Response:
    if not _NAME.match(name) or not (STATIC / name).is_file():
        raise ApiError(404, "not_found", "no such file")
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    media_type = _TYPES[name.rsplit(".", 1)[1]]
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers=headers)
