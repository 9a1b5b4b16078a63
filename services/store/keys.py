"""API keys: random secrets shown once, stored as SHA-256 hashes, with roles and expiry.

A key reads `cp_<key_id>_<secret>`; the id finds the row, the secret's hash is compared in
constant time. Secrets carry 256 bits of entropy, so a plain SHA-256 (no slow KDF) suffices.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final, Literal

import msgspec

Role = Literal["admin", "client", "teamlead", "wallboard", "ingest"]
ROLES: Final = ("admin", "client", "teamlead", "wallboard", "ingest")


class ApiKey(msgspec.Struct, frozen=True):
    """A stored key. `tenant_id` None means every tenant (admin keys only)."""

    key_id: str
    key_hash: str
    tenant_id: str | None
    role: str
    label: str
    created_at_ms: int
    expires_at_ms: int | None = None
    revoked_at_ms: int | None = None

    def usable(self, now_ms: int) -> bool:
        if self.revoked_at_ms is not None and self.revoked_at_ms <= now_ms:
            return False
        return self.expires_at_ms is None or now_ms < self.expires_at_ms


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    tenant_id: str | None, role: str, label: str, now_ms: int, expires_at_ms: int | None = None
) -> tuple[str, ApiKey]:
    """(the key to show once, the record to store)."""
    if role not in ROLES:
        raise ValueError(f"role: {role!r} is not one of {ROLES}")
    if role != "admin" and tenant_id is None:
        raise ValueError(f"tenant: a {role} key needs a tenant")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id, _hash(secret), tenant_id, role, label, now_ms, expires_at_ms)
    return f"cp_{key_id}_{secret}", record


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a presented key, or None if it is not shaped like one."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "cp" or not key_id or not secret:
        return None
    return key_id, secret


def matches(record: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(record.key_hash, _hash(secret))
