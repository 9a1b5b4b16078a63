"""Signed wallboard links as stored: scope, expiry and revocation of each link.

The link itself (the signed token in the URL) is made and checked in `services.api.links`;
the store only keeps what is needed to revoke a link before it expires.
"""

from __future__ import annotations

import msgspec


class WallboardLink(msgspec.Struct, frozen=True, kw_only=True):
    """One wallboard link: the tenants (one: a client board; several: a floor) and, if
    given, the only queues it shows. Instants are epoch milliseconds."""

    link_id: str
    tenants: list[str]
    queues: list[str] | None = None
    label: str = ""
    created_by: str = ""
    created_at_ms: int
    expires_at_ms: int
    revoked_at_ms: int | None = None

    def usable(self, now_ms: int) -> bool:
        if self.revoked_at_ms is not None and self.revoked_at_ms <= now_ms:
            return False
        return now_ms < self.expires_at_ms
