"""Caller pseudonyms: caller numbers never leave an importer in clear.

A caller number (Asterisk caller id, the Anonymous Bank `customer_id`) is either dropped or
replaced by `caller_key` = hex HMAC-SHA256 of the number under a per-tenant secret
(`--caller-key-secret` or the `CALLPULSE_CALLER_KEY_SECRET` environment variable). With no
secret the number is dropped. The same number under the same secret always gives the same
key, which is what repeat-contact (FCR) figures need; without the secret the key cannot be
reversed by enumerating the (small) space of phone numbers, which a plain hash could.
Numbers are keyed as written after trimming white space: sources must format a caller's
number the same way for their keys to match. Rotating the secret starts a new key space.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

#: Caller-id values that identify nobody; they never get a key.
ANONYMOUS: Final = frozenset({"", "0", "unknown", "<unknown>", "anonymous", "restricted", "none"})


def caller_key(secret: bytes | None, number: str) -> str | None:
    """HMAC-SHA256 hex of `number` under `secret`; None without a secret or a real number."""
    number = number.strip()
    if secret is None or number.lower() in ANONYMOUS:
        return None
    return hmac.new(secret, number.encode(), hashlib.sha256).hexdigest()
