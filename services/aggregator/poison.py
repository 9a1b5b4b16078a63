"""Dead-letter records: why a record was set aside, where it came from, and a redacted body.

A poison record may come from any producer, so nothing in it is trusted to be free of
personal data: only a short allow-list of identifying fields is kept, and even in those,
six or more digits in a row, also when spaced or punctuated as phone numbers are written
("+44 20 7946 0958", "(020) 7946-0958"), are masked: a phone number hiding in a call id.
A well-formed `occurred_at` timestamp is kept as it is. Everything
else, caller numbers and keys included, is replaced by "<redacted>". A body that is not
JSON at all is reduced to its length and SHA-256.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import msgspec

_KEEP: Final = frozenset(
    {"schema_version", "event_id", "event_type", "occurred_at", "tenant_id", "source",
     "queue_id", "call_id", "visit", "agent_id", "team_id", "state", "reason", "priority"}
)  # fmt: skip
_DIGITS: Final = re.compile(r"\d(?:[ ().\-/]{0,3}\d){5,}")
_TIMESTAMP: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})?"
)
REDACTED: Final = "<redacted>"


class DeadLetter(msgspec.Struct, kw_only=True):
    """One dead-lettered event (or whole message when `index` is -1)."""

    topic: str
    partition: int
    offset: int
    index: int
    reason: str
    path: str
    body: Any
    body_sha256: str
    body_bytes: int


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _DIGITS.sub(lambda m: "#" * len(m.group(0)), value)[:256]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return REDACTED


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, str) and _TIMESTAMP.fullmatch(value) is not None


def redact(raw: bytes) -> Any:
    """The allow-listed fields of a JSON object (masked), else a placeholder."""
    try:
        decoded = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return REDACTED
    if isinstance(decoded, dict):
        return {
            k: (v if k == "occurred_at" and _is_timestamp(v) else _mask(v))
            if k in _KEEP else REDACTED
            for k, v in decoded.items()
        }  # fmt: skip
    if isinstance(decoded, list):
        return [redact(msgspec.json.encode(item)) for item in decoded[:1000]]
    return REDACTED


def dead_letter(
    topic: str, partition: int, offset: int, index: int, raw: bytes, reason: str, path: str
) -> bytes:
    """The JSON value of a dead-letter record."""
    return msgspec.json.encode(
        DeadLetter(
            topic=topic, partition=partition, offset=offset, index=index,
            reason=_mask(reason), path=path, body=redact(raw),
            body_sha256=hashlib.sha256(raw).hexdigest(), body_bytes=len(raw),
        )
    )  # fmt: skip
