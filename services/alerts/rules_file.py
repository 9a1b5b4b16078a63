"""The alert configuration file: TOML with `[[rules]]` and `[[recipients]]` tables whose
fields are those of the API bodies (see `services.kpi.alerts.Rule` and `Recipient`).

    [[rules]]
    rule_id = "sales-sl"
    tenant_id = "acme"
    queue_id = "sales"
    metric = "sl_rolling"        # percent over the last window_min minutes
    window_min = 15
    op = "<"
    threshold = 80.0
    clear_threshold = 85.0       # hysteresis: resolved only at 85 % or more
    for_s = 120
    severity = "critical"
    repeat_s = 1800
    quiet_hours = { start = "22:00", end = "07:00" }   # the queue contract's zone

    [[recipients]]
    recipient_id = "sales-leads"
    tenant_id = "acme"
    queue_id = "sales"
    channel = "email"
    address = "sales-leads@example.com"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

import msgspec

from ..kpi.alerts import AlertRuleError, Recipient, Rule
from .errors import AlertError

T = TypeVar("T", Rule, Recipient)


class AlertConfigError(AlertError, ValueError):
    """The alert file cannot be read; the message names the file, the entry and the field."""


def load_rules_file(path: Path) -> tuple[list[Rule], list[Recipient]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AlertConfigError(f"{path}: {exc}") from None
    unknown = set(data) - {"rules", "recipients"}
    if unknown:
        raise AlertConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    rules = [_convert(path, "rules", i, item, Rule) for i, item in enumerate(data.get("rules", []))]
    recipients = [
        _convert(path, "recipients", i, item, Recipient)
        for i, item in enumerate(data.get("recipients", []))
    ]
    for kind, ids in (("rules", [r.rule_id for r in rules]),
                      ("recipients", [r.recipient_id for r in recipients])):  # fmt: skip
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise AlertConfigError(f"{path}: duplicate {kind} ids {duplicates}")
    return rules, recipients


def _convert(path: Path, kind: str, index: int, item: object, type_: type[T]) -> T:
    try:
        return msgspec.convert(item, type_)
    except (msgspec.ValidationError, AlertRuleError) as exc:
        raise AlertConfigError(f"{path}: {kind}[{index}]: {exc}") from None
