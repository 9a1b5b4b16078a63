"""Wire the request protections into an app: per-key rate limits, body size limits, the
access log and the security headers (see `limits.py`, `audit.py` and `headers.py`)."""

from __future__ import annotations

from fastapi import FastAPI

from .audit import AccessLog, AuditMiddleware
from .backend import Backend
from .deps import ApiConfig
from .headers import SecurityHeaders
from .limits import BodyLimit, RateLimiter


def protect(app: FastAPI, backend: Backend, config: ApiConfig) -> None:
    app.state.limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
    app.state.access_log = AccessLog(backend)
    app.add_middleware(AuditMiddleware, access_log=app.state.access_log)
    app.add_middleware(BodyLimit, limit=config.max_request_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: refusals carry the headers too
