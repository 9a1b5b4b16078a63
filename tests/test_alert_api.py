"""Alerts through the embedded service: the /v1/alerts contract, acknowledgement, rules and
recipients management, routing, and the engine over live figures (flapping, delivery)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import SecretStr

from services.alerts.channels import Channels
from services.alerts.dispatch import Dispatcher
from services.alerts.service import AlertService
from services.alerts.settings import AlertSettings
from tests.alerting import receiver
from tests.conftest import Service
from tests.factories import event

ALERT_KEYS = {
    "id",
    "rule_id",
    "tenant_id",
    "queue_id",
    "team_id",
    "severity",
    "state",
    "summary",
    "value",
    "threshold",
    "started_at",
    "resolved_at",
    "acknowledged_by",
    "acknowledged_at",
}
_calls = itertools.count()


def alerts_of(service: Service) -> AlertService:
    svc = service.embedded.alerts
    assert svc is not None
    return svc


async def queue_calls(service: Service, tenant: str, queue: str, n: int) -> list[str]:
    """`n` calls enter the queue a second ago (they are waiting now)."""
    at = datetime.now(UTC) - timedelta(seconds=1)
    ids = [f"call-{next(_calls)}" for _ in range(n)]
    await service.embedded.backend.ingest(
        [event("call.queued", at, tenant_id=tenant, call_id=c, queue_id=queue) for c in ids]
    )
    await service.settle()
    return ids


async def answer(service: Service, tenant: str, queue: str, calls: list[str]) -> None:
    at = datetime.now(UTC)
    await service.embedded.backend.ingest(
        [
            event("call.answered", at, tenant_id=tenant, call_id=c, queue_id=queue, agent_id="a1")
            for c in calls
        ]
    )
    await service.settle()


def rule(**fields: Any) -> dict[str, Any]:
    return {"metric": "calls_waiting", "op": ">=", "threshold": 3.0, **fields}


async def test_alert_lifecycle_through_the_api(service: Service) -> None:
    client, svc = service.client, alerts_of(service)
    lead = service.key("t-life", "teamlead")
    r = await client.post(
        "/v1/alert-rules",
        headers=lead,
        json=rule(rule_id="waiting", queue_id="q1", severity="critical", summary="call in help"),
    )
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "t-life" and r.json()["source"] == "api"
    calls = await queue_calls(service, "t-life", "q1", 3)
    svc.evaluate()

    r = await client.get("/v1/alerts", headers=lead)
    assert r.status_code == 200
    [alert] = r.json()["alerts"]
    assert set(alert) == ALERT_KEYS
    assert alert["state"] == "firing" and alert["severity"] == "critical"
    assert (alert["rule_id"], alert["tenant_id"], alert["queue_id"], alert["team_id"]) == (
        "waiting",
        "t-life",
        "q1",
        None,
    )
    assert (alert["value"], alert["threshold"]) == (3.0, 3.0)
    assert alert["summary"] == "Calls waiting 3 >= 3 on t-life/q1: call in help"
    assert alert["resolved_at"] is None and alert["acknowledged_by"] is None

    # acknowledge: teamlead of the tenant yes (once), other tenants and clients no
    other = service.key("t-other", "teamlead")
    path = f"/v1/alerts/{alert['id']}/acknowledge"
    assert (await client.post(path, headers=other)).status_code == 404
    client_key = service.key("t-life", "client")
    assert (await client.post(path, headers=client_key)).status_code == 403
    assert (await client.get("/v1/alerts", headers=client_key)).status_code == 403
    acked = await client.post(path, headers=lead)
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "test"
    again = await client.post(path, headers=service.key(None, "admin"))
    assert again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]
    assert (await client.get("/v1/alerts", headers=other)).json() == {"alerts": []}
    wallboard = service.key("t-life", "wallboard")
    assert len((await client.get("/v1/alerts", headers=wallboard)).json()["alerts"]) == 1
    admin = service.key(None, "admin")
    assert (await client.get("/v1/alerts", headers=admin)).status_code == 422
    assert len((await client.get("/v1/alerts?tenant=t-life", headers=admin)).json()["alerts"]) == 1

    # the calls are answered: resolved, no longer open, kept in the history
    await answer(service, "t-life", "q1", calls)
    svc.evaluate()
    assert (await client.get("/v1/alerts", headers=lead)).json() == {"alerts": []}
    [done] = (await client.get("/v1/alerts?state=all", headers=lead)).json()["alerts"]
    assert done["id"] == alert["id"] and done["state"] == "resolved"
    assert done["resolved_at"] is not None and done["value"] == 0.0
    detail = (await client.get(f"/v1/alerts/{alert['id']}", headers=lead)).json()
    assert [h["kind"] for h in detail["history"]] == [
        "pending",
        "firing",
        "acknowledged",
        "resolved",
    ]


async def test_rules_and_recipients_are_managed_per_tenant(service: Service) -> None:
    client = service.client
    lead = service.key("t-rules", "teamlead")
    bad = await client.post(
        "/v1/alert-rules", headers=lead, json=rule(op="<", threshold=80, clear_threshold=70)
    )
    assert bad.status_code == 422 and "clear_threshold" in bad.json()["error"]["message"]
    typo = await client.post("/v1/alert-rules", headers=lead, json=rule(threshhold=3))
    assert typo.status_code == 422
    foreign = await client.post("/v1/alert-rules", headers=lead, json=rule(tenant_id="t-x"))
    assert foreign.status_code == 403
    floor = await client.post("/v1/alert-rules", headers=lead, json=rule(scope="floor"))
    assert floor.status_code == 403
    made = await client.post("/v1/alert-rules", headers=lead, json=rule(queue_id="q"))
    assert made.status_code == 201
    rule_id = made.json()["rule_id"]
    assert (
        await client.post("/v1/alert-rules", headers=lead, json=rule(rule_id=rule_id))
    ).status_code == 409
    changed = await client.put(
        f"/v1/alert-rules/{rule_id}", headers=lead, json=rule(queue_id="q", threshold=5)
    )
    assert changed.status_code == 200 and changed.json()["threshold"] == 5
    assert (
        await client.get(f"/v1/alert-rules/{rule_id}", headers=service.key("t-y", "teamlead"))
    ).status_code == 404
    listed = (await client.get("/v1/alert-rules", headers=lead)).json()["rules"]
    assert [r["rule_id"] for r in listed] == [rule_id]

    hook = await client.post(
        "/v1/alert-recipients",
        headers=lead,
        json={"channel": "slack", "address": "https://hooks.slack.test/services/T0/B0/XYZ"},
    )
    assert hook.status_code == 201, hook.text
    # a webhook URL is a credential: shown masked
    assert hook.json()["address"] == "https://hooks.slack.test/…"
    mail = await client.post(
        "/v1/alert-recipients", headers=lead, json={"channel": "email", "address": "not-mail"}
    )
    assert mail.status_code == 422

    deleted = await client.delete(f"/v1/alert-rules/{rule_id}", headers=lead)
    assert deleted.status_code == 204
    assert (await client.get("/v1/alert-rules", headers=lead)).json() == {"rules": []}


async def test_file_rules_are_read_only_through_the_api(service: Service, tmp_path: Any) -> None:
    svc = alerts_of(service)
    path = tmp_path / "alerts.toml"
    path.write_text(
        '[[rules]]\nrule_id = "file-rule"\ntenant_id = "t-file"\nqueue_id = "q"\n'
        'metric = "sl_rolling"\nop = "<"\nthreshold = 80.0\nclear_threshold = 85.0\n'
        'quiet_hours = { start = "22:00", end = "07:00" }\n'
        '[[recipients]]\nrecipient_id = "leads"\ntenant_id = "t-file"\n'
        'channel = "email"\naddress = "leads@t-file.test"\n'
    )
    svc.load_file(path)
    lead = service.key("t-file", "teamlead")
    got = (await service.client.get("/v1/alert-rules/file-rule", headers=lead)).json()
    assert got["source"] == "file" and got["quiet_hours"]["start"] == "22:00"
    put = await service.client.put(
        "/v1/alert-rules/file-rule", headers=lead, json=rule(queue_id="q")
    )
    assert put.status_code == 409
    assert (
        await service.client.delete("/v1/alert-rules/file-rule", headers=lead)
    ).status_code == 409
    # removing it from the file removes it
    path.write_text("")
    svc.load_file(path)
    assert (await service.client.get("/v1/alert-rules", headers=lead)).json() == {"rules": []}
    path.write_text('[[rules]]\nrule_id = "x"\ntenant_id = "t"\nmetric = "nope"\nop = "<"\n')
    with pytest.raises(ValueError, match=r"rules\[0\].*metric"):
        svc.load_file(path)


async def test_flapping_live_metric_sends_one_alert_and_one_resolution(service: Service) -> None:
    """Calls waiting goes 3, 2, 3, 2, ... around a threshold of 3: with a clearing threshold
    of 1 the team lead hears once that it fired and once that it resolved; the same history
    without hysteresis (a control rule) would have sent a storm."""
    client, svc = service.client, alerts_of(service)
    admin = service.key(None, "admin")
    q = "?tenant=t-flap"
    calm = rule(rule_id="calm", queue_id="q", clear_threshold=1.0, severity="critical")
    stormy = rule(rule_id="stormy", queue_id="q", severity="info")
    for body in (calm, stormy):
        assert (
            await client.post(
                f"/v1/alert-rules{q}", headers=admin, json={**body, "tenant_id": "t-flap"}
            )
        ).status_code == 201
    with receiver() as r:
        for rid, path, severity in (
            ("calm-hook", "/calm", "critical"),
            ("storm-hook", "/storm", "info"),
        ):
            made = await client.post(
                f"/v1/alert-recipients{q}",
                headers=admin,
                json={
                    "recipient_id": rid,
                    "tenant_id": "t-flap",
                    "channel": "webhook",
                    "address": r.url + path,
                    "min_severity": severity,
                },
            )
            assert made.status_code == 201, made.text
        waiting = await queue_calls(service, "t-flap", "q", 2)
        for _ in range(5):
            waiting += await queue_calls(service, "t-flap", "q", 1)
            svc.evaluate()  # 3 waiting
            await answer(service, "t-flap", "q", [waiting.pop(0)])
            svc.evaluate()  # 2 waiting
        await answer(service, "t-flap", "q", waiting)
        svc.evaluate()  # nobody waits
        settings = AlertSettings(webhook_secret=SecretStr("k"))
        async with httpx.AsyncClient() as http:
            dispatcher = Dispatcher(svc.store, Channels(settings, http), settings, svc.metrics)
            while await dispatcher.run_once():
                pass
        calm_notes = [x.json()["notice"] for x in r.on("/calm")]
        storm_notes = [
            x.json()["notice"] for x in r.on("/storm") if x.json()["alert"]["rule_id"] == "stormy"
        ]
    assert calm_notes == ["firing", "resolved"]
    # the control rule fired and resolved five times (the critical-only recipient never
    # heard of it: routing by severity)
    assert storm_notes == ["firing", "resolved"] * 5
    deliveries = (
        await client.get(f"/v1/alert-deliveries{q}&state=delivered", headers=admin)
    ).json()["deliveries"]
    assert len(deliveries) == 2 + 2 + 10


async def test_metrics_show_alert_and_kpi_figures(service: Service) -> None:
    svc = alerts_of(service)
    lead = service.key("t-prom", "teamlead")
    await service.client.post("/v1/alert-rules", headers=lead, json=rule(queue_id="q"))
    await queue_calls(service, "t-prom", "q", 4)
    svc.evaluate()
    text = (await service.client.get("/metrics")).text
    assert 'callpulse_kpi_calls_waiting{queue="q",tenant="t-prom"} 4.0' in text
    assert 'callpulse_alerts_open_alerts{severity="warning",state="firing"} 1.0' in text
    assert 'callpulse_alerts_transitions_total{kind="firing"} 1.0' in text
    assert "callpulse_pipeline_lag_events 0.0" in text
    # bounded labels: no call or agent id anywhere
    assert "call-" not in text and '"a1"' not in text


async def test_team_rules_watch_agents(service: Service) -> None:
    svc = alerts_of(service)
    now = datetime.now(UTC).replace(microsecond=0)
    now_ms = int(now.timestamp() * 1000)

    def change(agent: str, team: str, state: str, minutes_ago: int) -> Any:
        return event("agent.state_changed", now - timedelta(minutes=minutes_ago),
                     tenant_id="t-team", agent_id=agent, team_id=team, state=state,
                     queues=["q"])  # fmt: skip

    await service.embedded.backend.ingest([
        change("a1", "blue", "available", 20), change("a1", "blue", "on_call", 10),
        change("a2", "blue", "available", 20), change("a2", "blue", "wrapup", 5),
        change("a3", "red", "available", 20),
    ])  # fmt: skip
    await service.settle()
    lead = service.key("t-team", "teamlead")
    for body in (
        {"rule_id": "few", "scope": "team", "metric": "agents_available", "op": "<",
         "threshold": 1.0},
        {"rule_id": "busy", "scope": "team", "team_id": "blue", "metric": "occupancy_pct",
         "window_min": 60, "op": ">", "threshold": 60.0},
    ):  # fmt: skip
        assert (
            await service.client.post("/v1/alert-rules", headers=lead, json=body)
        ).status_code == 201
    svc.evaluate(now_ms)
    alerts = (await service.client.get("/v1/alerts", headers=lead)).json()["alerts"]
    got = {(a["rule_id"], a["team_id"]): a["value"] for a in alerts}
    # blue: nobody available (red has a3); occupancy of blue over the hour: a1 600 s busy
    # of 1200, a2 300 s busy of 1200 -> 900 / 2400 = 37.5 %... below 60: no alert
    assert got == {("few", "blue"): 0.0}
    found = svc.store.rule("busy")
    assert found is not None
    busy = svc.engine.source.sample(found[0], svc.engine.source.targets(found[0])[0], now_ms)
    assert busy.value == 100 * 900 / 2400


async def test_tenant_and_floor_rules(service: Service) -> None:
    svc = alerts_of(service)
    at = datetime.now(UTC) - timedelta(minutes=3)
    events = []
    for n, (queue, wait) in enumerate([("q1", 5), ("q1", 5), ("q2", 60), ("q2", 60)]):
        c = {"tenant_id": "t-sum", "queue_id": queue, "call_id": f"sum-{n}"}
        answered = at + timedelta(seconds=wait)
        events += [
            event("call.queued", at, **c),
            event("call.answered", answered, agent_id="a", **c),
        ]
    await service.embedded.backend.ingest(events)
    await service.settle()
    admin = service.key(None, "admin")
    sl = {"metric": "sl_rolling", "op": "<", "threshold": 80.0}
    for body in ({**sl, "rule_id": "tenant-sl", "scope": "tenant", "tenant_id": "t-sum"},
                 {**sl, "rule_id": "floor-sl", "scope": "floor"}):  # fmt: skip
        made = await service.client.post("/v1/alert-rules?tenant=t-sum", headers=admin, json=body)
        assert made.status_code == 201, made.text
    svc.evaluate()
    lead = service.key("t-sum", "teamlead")
    [tenant_alert] = (await service.client.get("/v1/alerts", headers=lead)).json()["alerts"]
    assert (tenant_alert["rule_id"], tenant_alert["value"]) == ("tenant-sl", 50.0)
    everything = (await service.client.get("/v1/alerts?tenant=*", headers=admin)).json()["alerts"]
    floor = [a for a in everything if a["rule_id"] == "floor-sl"]
    assert [(a["tenant_id"], a["state"]) for a in floor] == [(None, "firing")]
    assert (
        await service.client.get(f"/v1/alerts/{floor[0]['id']}", headers=lead)
    ).status_code == 404
    # removing a rule resolves its open alert
    gone = await service.client.delete("/v1/alert-rules/tenant-sl", headers=lead)
    assert gone.status_code == 204
    detail = (await service.client.get(f"/v1/alerts/{tenant_alert['id']}", headers=lead)).json()
    assert detail["alert"]["state"] == "resolved"
    assert detail["history"][-1] == {**detail["history"][-1], "kind": "resolved",
                                     "detail": "rule removed"}  # fmt: skip


async def test_quiet_hours_follow_the_tenants_zone(service: Service) -> None:
    """Quiet hours around the current New York wall-clock time hold the notice back for a
    tenant whose contract is in New York; the same hours read in UTC do not."""
    svc = alerts_of(service)
    service.contract(tenant_id="t-ny", timezone="America/New_York")
    ny_now = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    start = (ny_now - timedelta(minutes=30)).strftime("%H:%M")
    end = (ny_now + timedelta(minutes=30)).strftime("%H:%M")
    lead = service.key("t-ny", "teamlead")
    quiet = {"start": start, "end": end}
    for rid, tz in (("ny-quiet", None), ("utc-quiet", "UTC")):
        body = rule(rule_id=rid, queue_id="q", quiet_hours=quiet, timezone=tz)
        assert (
            await service.client.post("/v1/alert-rules", headers=lead, json=body)
        ).status_code == 201
    await service.client.post(
        "/v1/alert-recipients", headers=lead, json={"channel": "email", "address": "l@ny.test"}
    )
    await queue_calls(service, "t-ny", "q", 3)
    svc.evaluate()
    states = {a["rule_id"]: a["state"] for a in
              (await service.client.get("/v1/alerts", headers=lead)).json()["alerts"]}  # fmt: skip
    assert states == {"ny-quiet": "firing", "utc-quiet": "firing"}
    pending = svc.store.undelivered()
    assert [(svc.store.alert(d.alert_id).rule_id, d.kind) for d in pending] == [  # type: ignore[union-attr]
        ("utc-quiet", "firing")
    ]


async def test_a_failed_commit_loses_no_notice(service: Service, monkeypatch: Any) -> None:
    svc = alerts_of(service)
    lead = service.key("t-commit", "teamlead")
    await service.client.post("/v1/alert-rules", headers=lead, json=rule(queue_id="q"))
    await service.client.post(
        "/v1/alert-recipients", headers=lead, json={"channel": "email", "address": "l@c.test"}
    )
    await queue_calls(service, "t-commit", "q", 3)
    real_commit = svc.store.commit

    def locked(batch: Any) -> None:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(svc.store, "commit", locked)
    with pytest.raises(RuntimeError):
        svc.evaluate()
    monkeypatch.setattr(svc.store, "commit", real_commit)
    svc.evaluate()
    assert [d.kind for d in svc.store.undelivered()] == ["firing"]
    [alert] = (await service.client.get("/v1/alerts", headers=lead)).json()["alerts"]
    assert alert["state"] == "firing"
