"""Alerts for team leads: the alerts, their acknowledgement, rules, recipients and the
delivery log. The tenant comes from the key; an admin key names it with `?tenant=`
(`?tenant=*`: every tenant and the floor-wide alerts). A teamlead key restricted to some
queues or teams sees and manages only those (and the tenant-wide alerts).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ...alerts.service import AlertService
from ...alerts.views import AlertsView, AlertView, alert_view
from ...kpi.alerts import MAX_DURATION_S, AlertRuleError, Recipient, Rule
from ...kpi.windows import from_ms
from ...store.alerts import AlertRecord
from ..deps import Principal, PrincipalDep, Scope, ScopeDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse

router = APIRouter(tags=["alerts"])

READ_ROLES = ("admin", "teamlead", "wallboard")  # the wallboard's team view shows alerts
MANAGE_ROLES = ("admin", "teamlead")
EVERY_TENANT = "*"
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    503: {"model": ErrorResponse, "description": "alerting is not enabled in this process"},
}


def _service(request: Request) -> AlertService:
    service: AlertService | None = getattr(request.app.state, "alerts", None)
    if service is None:
        raise ApiError(503, "alerts_disabled", "alerting is not enabled in this process")
    return service


def _require(who: Principal, roles: tuple[str, ...]) -> None:
    if who.role not in roles:
        raise ApiError(403, "forbidden", f"a {who.role} key may not do this")


def _every(scope: Scope) -> bool:
    """An admin asking for every tenant (and the floor) with ?tenant=*."""
    return scope.principal.tenant_id is None and scope.tenant_id == EVERY_TENANT


def _covers(who: Principal, tenant: str | None, queue: str | None, team: str | None) -> bool:
    """Whether a key may see something about this tenant / queue / team."""
    if who.tenant_id is None:
        return True
    if tenant != who.tenant_id:
        return False
    if queue is not None and who.queues is not None and queue not in who.queues:
        return False
    return not (team is not None and who.teams is not None and team not in who.teams)


# -- alerts ------------------------------------------------------------------------------


class HistoryView(BaseModel):
    kind: Literal["pending", "firing", "resolved", "cancelled", "acknowledged"]
    at: datetime
    value: float | None
    detail: str


class AlertDetailView(BaseModel):
    alert: AlertView
    history: list[HistoryView]


@router.get("/v1/alerts", response_model=AlertsView, responses=RESPONSES)
def get_alerts(
    request: Request,
    scope: ScopeDep,
    state: Annotated[Literal["open", "all"], Query(description="open: pending and firing")] = (
        "open"
    ),
    queue: Annotated[str | None, Query(description="only this queue's alerts")] = None,
    team: Annotated[str | None, Query(description="only this team's alerts")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> AlertsView:
    """The tenant's alerts, newest breach first."""
    _require(scope.principal, READ_ROLES)
    store = _service(request).store
    every = _every(scope)
    # Fetch generously: a restricted teamlead key's filter below may drop many.
    records = store.alerts(scope.tenant_id, state == "open", 10_000, every_tenant=every)
    who = scope.principal
    chosen = [
        r for r in records
        if (every or _covers(who, r.tenant_id, r.queue_id, r.team_id))
        and (queue is None or r.queue_id == queue) and (team is None or r.team_id == team)
    ]  # fmt: skip
    return AlertsView(alerts=[alert_view(r) for r in chosen[:limit]])


def _visible_alert(service: AlertService, who: Principal, alert_id: str) -> AlertRecord:
    record = service.store.alert(alert_id)
    if record is None or not (
        (record.tenant_id is None and who.tenant_id is None)
        or (record.tenant_id is not None
            and _covers(who, record.tenant_id, record.queue_id, record.team_id))
    ):  # fmt: skip
        raise ApiError(404, "not_found", f"no alert {alert_id!r} for this key")
    return record


@router.get("/v1/alerts/{alert_id}", response_model=AlertDetailView, responses=RESPONSES)
def get_alert(request: Request, alert_id: str, who: PrincipalDep) -> AlertDetailView:
    """One alert with its history (pending, firing, resolved, acknowledged, ...)."""
    _require(who, READ_ROLES)
    service = _service(request)
    record = _visible_alert(service, who, alert_id)
    history = [
        HistoryView(kind=h.kind, at=from_ms(h.at_ms), value=h.value, detail=h.detail)  # type: ignore[arg-type]
        for h in service.store.history(alert_id)
    ]
    return AlertDetailView(alert=alert_view(record), history=history)


@router.post("/v1/alerts/{alert_id}/acknowledge", response_model=AlertView, responses=RESPONSES)
def post_acknowledge(request: Request, alert_id: str, who: PrincipalDep) -> AlertView:
    """A team lead takes the alert on: recorded with the key's label (or id) and the
    instant; repeat notices stop. The first acknowledgement stands."""
    _require(who, MANAGE_ROLES)
    service = _service(request)
    _visible_alert(service, who, alert_id)
    key = request.app.state.backend.get_key(who.key_id)
    name = key.label if key is not None and key.label else who.key_id
    record = service.engine.acknowledge(alert_id, name, service.now_ms())
    assert record is not None
    return alert_view(record)


# -- rules -------------------------------------------------------------------------------


class QuietHoursBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(description="local wall-clock HH:MM")
    end: str = Field(description="local wall-clock HH:MM; <= start: ends the next day")
    days: list[int] = Field(
        [0, 1, 2, 3, 4, 5, 6], description="weekdays a period starts on, 0 = Mon"
    )


class RuleBody(BaseModel):
    """An alert rule. Units: sl_* and *_pct percent, *_s seconds, the rest counts; ratio
    metrics cover the rolling `window_min` minutes, sl_interval(_projected) the current
    interval of the queue's contract. Unknown fields are refused (a typo is not ignored)."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str | None = Field(None, description="default: the path id, or generated")
    tenant_id: str | None = Field(None, description="admin keys only; others: the key's tenant")
    scope: Literal["queue", "team", "tenant", "floor"] = "queue"
    queue_id: str | None = Field(None, description="scope queue: null = each queue")
    team_id: str | None = Field(None, description="scope team: null = each team")
    metric: Literal[
        "sl_rolling", "sl_interval", "sl_interval_projected", "calls_waiting", "longest_wait_s",
        "asa_s", "aht_s", "abandon_rate_pct", "agents_available", "occupancy_pct",
        "pipeline_staleness_s",
    ]  # fmt: skip
    window_min: Literal[5, 15, 30, 60] = 15
    op: Literal["<", "<=", ">", ">="]
    threshold: float | None = Field(None, description="null: the contract's SL target")
    clear_threshold: float | None = Field(None, description="hysteresis: resolve only here")
    for_s: int = Field(0, ge=0, le=MAX_DURATION_S, description="seconds a breach lasts to fire")
    min_count: int = Field(1, ge=1, le=1_000_000, description="least denominator judged on")
    severity: Literal["info", "warning", "critical"] = "warning"
    cooldown_s: int = Field(0, ge=0, le=MAX_DURATION_S, description="no new firing before")
    repeat_s: int = Field(
        0, ge=0, le=MAX_DURATION_S, description="re-notify while firing, unacknowledged; 0: never"
    )
    quiet_hours: QuietHoursBody | None = None
    timezone: str | None = Field(None, description="for quiet hours; default: contract zone")
    summary: str = ""
    enabled: bool = True


class RuleView(RuleBody):
    rule_id: str
    source: Literal["api", "file"]


class RulesView(BaseModel):
    rules: list[RuleView]


def _rule_view(rule: Rule, source: str) -> RuleView:
    data: dict[str, Any] = msgspec.to_builtins(rule)
    data["source"] = source
    return RuleView(**data)


def _own(who: Principal, tenant: str | None, queue: str | None, team: str | None) -> bool:
    """Whether a key may manage something of this tenant / queue / team."""
    if who.tenant_id is None:
        return True
    if tenant != who.tenant_id:
        return False
    if who.queues is not None or who.teams is not None:
        # a restricted team lead manages only what is inside its grants
        return (queue is not None and who.queues is not None and queue in who.queues) or (
            team is not None and who.teams is not None and team in who.teams
        )
    return True


def _to_rule(body: RuleBody, who: Principal, rule_id: str) -> Rule:
    data = body.model_dump()
    data["rule_id"] = rule_id
    if who.tenant_id is not None:
        if data["tenant_id"] not in (None, who.tenant_id):
            raise ApiError(403, "forbidden", "the tenant comes from the API key")
        if body.scope == "floor":
            raise ApiError(403, "forbidden", "only an admin key may manage floor rules")
        data["tenant_id"] = who.tenant_id
    try:
        rule = msgspec.convert(data, Rule)
    except (msgspec.ValidationError, AlertRuleError) as exc:
        raise ApiError(422, "invalid_rule", str(exc)) from None
    if not _own(who, rule.tenant_id, rule.queue_id, rule.team_id):
        raise ApiError(403, "forbidden", "this key may not manage rules of that queue or team")
    return rule


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def _visible_rule(service: AlertService, who: Principal, rule_id: str) -> tuple[Rule, str]:
    found = service.store.rule(rule_id)
    if found is None or not _own_or_read(who, found[0]):
        raise ApiError(404, "not_found", f"no alert rule {rule_id!r} for this key")
    return found


def _own_or_read(who: Principal, rule: Rule) -> bool:
    if who.tenant_id is None:
        return True
    return rule.tenant_id == who.tenant_id and _covers(
        who, rule.tenant_id, rule.queue_id, rule.team_id
    )


@router.get("/v1/alert-rules", response_model=RulesView, responses=RESPONSES)
def list_rules(request: Request, scope: ScopeDep) -> RulesView:
    """The tenant's rules (admin with ?tenant=*: every rule, floor rules included)."""
    _require(scope.principal, MANAGE_ROLES)
    service = _service(request)
    every = _every(scope)
    rules = service.store.rules(scope.tenant_id, every_tenant=every)
    views = []
    for rule in rules:
        if every or _own_or_read(scope.principal, rule):
            found = service.store.rule(rule.rule_id)
            views.append(_rule_view(rule, found[1] if found else "api"))
    return RulesView(rules=views)


@router.post(
    "/v1/alert-rules",
    status_code=201,
    response_model=RuleView,
    responses={**RESPONSES, 409: {"description": "the id exists"}},
)
def create_rule(request: Request, body: RuleBody, who: PrincipalDep) -> RuleView:
    """Create a rule; it is evaluated from the next update or tick on."""
    _require(who, MANAGE_ROLES)
    service = _service(request)
    rule = _to_rule(body, who, body.rule_id or _new_id("rule"))
    if service.store.rule(rule.rule_id) is not None:
        raise ApiError(409, "conflict", f"alert rule {rule.rule_id!r} exists; PUT to change it")
    service.put_rule(rule)
    return _rule_view(rule, "api")


@router.get("/v1/alert-rules/{rule_id}", response_model=RuleView, responses=RESPONSES)
def get_rule(request: Request, rule_id: str, who: PrincipalDep) -> RuleView:
    _require(who, MANAGE_ROLES)
    rule, source = _visible_rule(_service(request), who, rule_id)
    return _rule_view(rule, source)


@router.put(
    "/v1/alert-rules/{rule_id}",
    response_model=RuleView,
    responses={**RESPONSES, 409: {"description": "managed by the rules file"}},
)
def put_rule(request: Request, rule_id: str, body: RuleBody, who: PrincipalDep) -> RuleView:
    """Replace a rule (or create it under this id). An open alert of the rule carries on
    under the new thresholds."""
    _require(who, MANAGE_ROLES)
    service = _service(request)
    if body.rule_id not in (None, rule_id):
        raise ApiError(422, "invalid_rule", "rule_id: differs from the path")
    found = service.store.rule(rule_id)
    if found is not None:
        _visible_rule(service, who, rule_id)
        if found[1] == "file":
            raise ApiError(409, "managed_by_file", "this rule comes from the rules file")
    rule = _to_rule(body, who, rule_id)
    service.put_rule(rule)
    return _rule_view(rule, "api")


@router.delete(
    "/v1/alert-rules/{rule_id}",
    status_code=204,
    response_class=Response,
    responses={**RESPONSES, 409: {"description": "managed by the rules file"}},
)
def delete_rule(request: Request, rule_id: str, who: PrincipalDep) -> Response:
    """Delete a rule; its open alerts are resolved."""
    _require(who, MANAGE_ROLES)
    service = _service(request)
    _, source = _visible_rule(service, who, rule_id)
    if source == "file":
        raise ApiError(409, "managed_by_file", "this rule comes from the rules file")
    service.delete_rule(rule_id)
    return Response(status_code=204)


# -- recipients --------------------------------------------------------------------------


class RecipientBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipient_id: str | None = None
    tenant_id: str | None = Field(None, description="admin keys only; null: every tenant")
    queue_id: str | None = Field(None, description="null: any queue")
    team_id: str | None = Field(None, description="null: any team")
    min_severity: Literal["info", "warning", "critical"] = "warning"
    channel: Literal["email", "webhook", "slack", "teams", "alertmanager"]
    address: str = Field(description="email address, or the webhook / Alertmanager URL")
    enabled: bool = True


class RecipientView(RecipientBody):
    recipient_id: str
    source: Literal["api", "file"]


class RecipientsView(BaseModel):
    recipients: list[RecipientView]


def _masked(recipient: Recipient) -> str:
    """Webhook URLs are credentials (Slack's and Teams' are): show only their host."""
    if recipient.channel == "email":
        return recipient.address
    parts = urlsplit(recipient.address)
    if (parts.path.strip("/"), parts.query) == ("", ""):
        return recipient.address
    return f"{parts.scheme}://{parts.hostname}/…"  # user:password@ in netloc is dropped too


def _recipient_view(recipient: Recipient, source: str) -> RecipientView:
    data: dict[str, Any] = msgspec.to_builtins(recipient)
    data["address"] = _masked(recipient)
    data["source"] = source
    return RecipientView(**data)


def _to_recipient(body: RecipientBody, who: Principal, recipient_id: str) -> Recipient:
    data = body.model_dump()
    data["recipient_id"] = recipient_id
    if who.tenant_id is not None:
        if data["tenant_id"] not in (None, who.tenant_id):
            raise ApiError(403, "forbidden", "the tenant comes from the API key")
        data["tenant_id"] = who.tenant_id
    try:
        recipient = msgspec.convert(data, Recipient)
    except (msgspec.ValidationError, AlertRuleError) as exc:
        raise ApiError(422, "invalid_recipient", str(exc)) from None
    if not _own(who, recipient.tenant_id, recipient.queue_id, recipient.team_id):
        raise ApiError(403, "forbidden", "this key may not route alerts of that queue or team")
    return recipient


def _visible_recipient(service: AlertService, who: Principal, rid: str) -> tuple[Recipient, str]:
    found = service.store.recipient(rid)
    if found is None or not (
        who.tenant_id is None
        or (found[0].tenant_id == who.tenant_id
            and _covers(who, found[0].tenant_id, found[0].queue_id, found[0].team_id))
    ):  # fmt: skip
        raise ApiError(404, "not_found", f"no alert recipient {rid!r} for this key")
    return found


@router.get("/v1/alert-recipients", response_model=RecipientsView, responses=RESPONSES)
def list_recipients(request: Request, scope: ScopeDep) -> RecipientsView:
    """Who is told about the tenant's alerts (webhook URLs are shown masked)."""
    _require(scope.principal, MANAGE_ROLES)
    service = _service(request)
    every = _every(scope)
    views = []
    for r in service.store.recipients(scope.tenant_id, every_tenant=every):
        if every or _covers(scope.principal, r.tenant_id, r.queue_id, r.team_id):
            found = service.store.recipient(r.recipient_id)
            views.append(_recipient_view(r, found[1] if found else "api"))
    return RecipientsView(recipients=views)


@router.post(
    "/v1/alert-recipients",
    status_code=201,
    response_model=RecipientView,
    responses={**RESPONSES, 409: {"description": "the id exists"}},
)
def create_recipient(request: Request, body: RecipientBody, who: PrincipalDep) -> RecipientView:
    _require(who, MANAGE_ROLES)
    service = _service(request)
    recipient = _to_recipient(body, who, body.recipient_id or _new_id("recipient"))
    if service.store.recipient(recipient.recipient_id) is not None:
        raise ApiError(409, "conflict", f"recipient {recipient.recipient_id!r} exists")
    service.put_recipient(recipient)
    return _recipient_view(recipient, "api")


@router.put(
    "/v1/alert-recipients/{recipient_id}",
    response_model=RecipientView,
    responses={**RESPONSES, 409: {"description": "managed by the rules file"}},
)
def put_recipient(
    request: Request, recipient_id: str, body: RecipientBody, who: PrincipalDep
) -> RecipientView:
    _require(who, MANAGE_ROLES)
    service = _service(request)
    if body.recipient_id not in (None, recipient_id):
        raise ApiError(422, "invalid_recipient", "recipient_id: differs from the path")
    found = service.store.recipient(recipient_id)
    if found is not None:
        _visible_recipient(service, who, recipient_id)
        if found[1] == "file":
            raise ApiError(409, "managed_by_file", "this recipient comes from the rules file")
    recipient = _to_recipient(body, who, recipient_id)
    service.put_recipient(recipient)
    return _recipient_view(recipient, "api")


@router.delete(
    "/v1/alert-recipients/{recipient_id}",
    status_code=204,
    response_class=Response,
    responses={**RESPONSES, 409: {"description": "managed by the rules file"}},
)
def delete_recipient(request: Request, recipient_id: str, who: PrincipalDep) -> Response:
    _require(who, MANAGE_ROLES)
    service = _service(request)
    _, source = _visible_recipient(service, who, recipient_id)
    if source == "file":
        raise ApiError(409, "managed_by_file", "this recipient comes from the rules file")
    service.store.delete_recipient(recipient_id)
    return Response(status_code=204)


# -- deliveries ----------------------------------------------------------------------------


class DeliveryView(BaseModel):
    delivery_id: int
    alert_id: str
    kind: Literal["firing", "resolved", "repeat"]
    recipient_id: str
    channel: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    due_at: datetime
    next_attempt_at: datetime | None = Field(description="pending deliveries only")
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None


class DeliveriesView(BaseModel):
    deliveries: list[DeliveryView]


@router.get("/v1/alert-deliveries", response_model=DeliveriesView, responses=RESPONSES)
def list_deliveries(
    request: Request,
    scope: ScopeDep,
    state: Literal["pending", "delivered", "failed", "all"] = "all",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> DeliveriesView:
    """The notices of the tenant's alerts and how their delivery went, newest first:
    failed ones (given up after every retry) carry the last error."""
    _require(scope.principal, MANAGE_ROLES)
    service = _service(request)
    rows = service.store.deliveries(scope.tenant_id, state, limit, every_tenant=_every(scope))
    return DeliveriesView(
        deliveries=[
            DeliveryView(
                delivery_id=d.delivery_id,
                alert_id=d.alert_id,
                kind=d.kind,  # type: ignore[arg-type]
                recipient_id=d.recipient_id,
                channel=d.channel,
                state=d.state,  # type: ignore[arg-type]
                attempts=d.attempts,
                due_at=from_ms(d.due_ms),
                next_attempt_at=from_ms(d.next_attempt_ms) if d.state == "pending" else None,
                delivered_at=None if d.delivered_at_ms is None else from_ms(d.delivered_at_ms),
                failed_at=None if d.failed_at_ms is None else from_ms(d.failed_at_ms),
                last_error=d.last_error,
            )
            for d in rows
        ]
    )
