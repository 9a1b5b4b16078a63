"""The alert as the API shows it and notices carry it (one serializer for both)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..kpi.windows import from_ms
from ..store.alerts import AlertRecord


class AlertView(BaseModel):
    """One alert. `started_at` is when the breach began (the alert was pending from then);
    `value` is the metric's latest value while open, its value at resolution after."""

    id: str
    rule_id: str
    tenant_id: str | None = Field(description="null for floor (all-tenant) alerts")
    queue_id: str | None
    team_id: str | None
    severity: Literal["info", "warning", "critical"]
    state: Literal["pending", "firing", "resolved"]
    summary: str
    value: float | None
    threshold: float | None
    started_at: datetime
    resolved_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None


class AlertsView(BaseModel):
    alerts: list[AlertView]


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def alert_view(record: AlertRecord) -> AlertView:
    return AlertView(
        id=record.alert_id,
        rule_id=record.rule_id,
        tenant_id=record.tenant_id,
        queue_id=record.queue_id,
        team_id=record.team_id,
        severity=record.severity,  # type: ignore[arg-type]
        state=record.state,  # type: ignore[arg-type]
        summary=record.summary,
        value=record.value,
        threshold=record.threshold,
        started_at=from_ms(record.started_at_ms),
        resolved_at=_dt(record.resolved_at_ms),
        acknowledged_by=record.acknowledged_by,
        acknowledged_at=_dt(record.acknowledged_at_ms),
    )


def notice_payload(
    kind: str, due_ms: int, record: AlertRecord, public_url: str, rule: dict[str, Any]
) -> dict[str, Any]:
    """What every channel formats a notice from (stored in the outbox as JSON, so a retry
    after a restart sends exactly the same content)."""
    return {
        "notice": kind,
        "due_at": from_ms(due_ms).isoformat(),
        "fired_at": None if record.fired_at_ms is None else from_ms(record.fired_at_ms).isoformat(),
        "alert": alert_view(record).model_dump(mode="json"),
        "rule": rule,
        "url": f"{public_url.rstrip('/')}/v1/alerts/{record.alert_id}",
    }
