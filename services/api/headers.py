"""Security headers on every answer: no sniffing, no framing, no referrer, no caching.

The wallboard and team pages set their own, stricter-for-scripts policy (`routes/pages.py`);
a header a route already set is never replaced. The API answers are JSON that no browser
should render, frame or keep: `default-src 'none'`. The interactive API docs (`/docs`,
`/redoc`) load Swagger UI and ReDoc from their CDN with an inline script, so they get only
`frame-ancestors 'none'`.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"
DOCS_CSP: Final = "frame-ancestors 'none'"
DOCS_PATHS: Final = ("/docs", "/redoc")

_COMMON: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Figures are per tenant and a key's answers must not sit in a shared cache.
    (b"cache-control", b"no-store"),
)


class SecurityHeaders:
    """ASGI middleware adding the headers of `_COMMON` and a Content-Security-Policy to
    every HTTP response that does not carry them already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"].startswith(DOCS_PATHS) else API_CSP
        wanted = (*_COMMON, (b"content-security-policy", csp.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in wanted if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
