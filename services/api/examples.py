"""OpenAPI examples, computed by the same serializers as real answers (so they cannot drift
from the response models): one half-hour of a queue under an `offered` contract."""

from __future__ import annotations

from typing import Any

from ..kpi.contracts import Contract
from ..kpi.counters import Counters, wait_bin
from ..kpi.windows import to_ms
from .reports import AttainmentView, FcrView, QualityView, ReportRow, Section
from .views import RatioView, WindowView, window_view

_CONTRACT = Contract(tenant_id="acme", queue_id="claims", version=3, variant="offered",
                     threshold_s=20, target_pct=80, timezone="Europe/London")  # fmt: skip


def _counters() -> Counters:
    c = Counters(offered=200, answered=180, abandoned=12, flowed_out=4, handled=176,
                 transferred=9, wait_answered_ms=2_430_000, max_wait_answered_ms=95_000,
                 wait_abandoned_ms=410_000, max_wait_abandoned_ms=120_000,
                 talk_ms=31_680_000, hold_ms=1_200_000, wrap_ms=5_280_000)  # fmt: skip
    for wait_s, n in ((0, 40), (8, 80), (15, 40), (30, 15), (90, 5)):
        c.hist_answered[wait_bin(wait_s * 1000)] += n
    for wait_s, n in ((3, 4), (12, 4), (45, 4)):
        c.hist_abandoned[wait_bin(wait_s * 1000)] += n
    return c


def _window(name: str, start: str, end: str) -> WindowView:
    from datetime import datetime

    span = (to_ms(datetime.fromisoformat(start)), to_ms(datetime.fromisoformat(end)))
    return window_view(name, span, _counters(), _CONTRACT)


def window_example() -> dict[str, Any]:
    return _window("interval", "2026-03-09T09:00:00+00:00", "2026-03-09T09:30:00+00:00").model_dump(
        mode="json"
    )


def section_example() -> dict[str, Any]:
    row = ReportRow(
        label="2026-03-09T09:00+00:00",
        in_business_hours=True,
        figures=_window("interval", "2026-03-09T09:00:00+00:00", "2026-03-09T09:30:00+00:00"),
        attainment=None,
    )
    section = Section(
        queue_id="claims",
        timezone="Europe/London",
        start=_window("day", "2026-03-09T00:00:00+00:00", "2026-03-10T00:00:00+00:00").start,
        end=_window("day", "2026-03-09T00:00:00+00:00", "2026-03-10T00:00:00+00:00").end,
        figures=_window("period", "2026-03-09T00:00:00+00:00", "2026-03-10T00:00:00+00:00"),
        attainment=AttainmentView(
            value_pct=75.0, met=18, measured=24, intervals=24, interval_min=30
        ),
        contract_versions=[3],
        quality=QualityView(
            csat=RatioView(value=0.82, numerator=41, denominator=50),
            csat_satisfied_pct=80.0,
            fcr=FcrView(
                value=0.78,
                numerator=117,
                denominator=150,
                contacts=162,
                resolved=117,
                repeated=33,
                pending=12,
                window_h=72,
            ),
        ),
        rows=[row],
    )
    return section.model_dump(mode="json")


def json_example(example: dict[str, Any], description: str = "") -> dict[str, Any]:
    """A `responses` entry for status 200 with an example."""
    out: dict[str, Any] = {"content": {"application/json": {"example": example}}}
    if description:
        out["description"] = description
    return out
