"""Signed wallboard links: a TV opens `/wallboard?token=...` and needs no login.

A token reads `wb1.<payload>.<signature>`: the payload (base64url JSON) names the link id,
its tenants, the queues it is limited to (if any) and its expiry (epoch ms); the signature
is HMAC-SHA256 over `wb1.<payload>` with the server's link secret. A token is accepted only
if the signature matches, it has not expired, and the stored link it names is neither
revoked nor expired and has the same scope. Revoking the stored link ends every TV using it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import msgspec

from ..store.links import WallboardLink

PREFIX = "wb1"


class Claims(msgspec.Struct, frozen=True):
    """What a token states about its link (short names keep URLs short)."""

    id: str
    ten: list[str]
    exp: int
    q: list[str] | None = None


_claims = msgspec.json.Decoder(Claims)
_encode = msgspec.json.Encoder()


def new_link_id() -> str:
    return secrets.token_hex(8)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: bytes, signed: str) -> str:
    return _b64(hmac.new(secret, signed.encode(), hashlib.sha256).digest())


def new_link(
    secret: bytes, tenants: list[str], queues: list[str] | None, now_ms: int,
    expires_in_ms: int, label: str = "", created_by: str = "",
) -> tuple[WallboardLink, str]:  # fmt: skip
    """A new link to store, and its token (shown once; the store keeps no token)."""
    link = WallboardLink(
        link_id=new_link_id(), tenants=tenants, queues=queues, label=label,
        created_by=created_by, created_at_ms=now_ms, expires_at_ms=now_ms + expires_in_ms,
    )  # fmt: skip
    return link, sign(secret, link)


def sign(secret: bytes, link: WallboardLink) -> str:
    """The token of a link."""
    if not secret:
        raise ValueError("no link secret configured")
    claims = Claims(id=link.link_id, ten=link.tenants, exp=link.expires_at_ms, q=link.queues)
    signed = f"{PREFIX}.{_b64(_encode.encode(claims))}"
    return f"{signed}.{_signature(secret, signed)}"


def verify(secret: bytes, token: str, now_ms: int) -> Claims | None:
    """The claims of a well-signed, unexpired token; None otherwise (never says why, so a
    forger learns nothing). The stored link must still be checked (`accepts`)."""
    if not secret or token.count(".") != 2:
        return None
    prefix, payload, signature = token.split(".")
    if prefix != PREFIX:
        return None
    if not hmac.compare_digest(_signature(secret, f"{prefix}.{payload}"), signature):
        return None
    try:
        claims = _claims.decode(_unb64(payload))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return claims if now_ms < claims.exp else None


def accepts(link: WallboardLink | None, claims: Claims, now_ms: int) -> bool:
    """Whether the stored link still honours a verified token's claims."""
    return (
        link is not None
        and link.usable(now_ms)
        and link.link_id == claims.id
        and link.tenants == claims.ten
        and link.queues == claims.q
        and link.expires_at_ms == claims.exp
    )
