"""Alert channels against real local servers: SMTP (aiosmtpd, plain and STARTTLS + AUTH),
signed webhooks, Slack and Teams payloads, Debian's Alertmanager; retries with backoff."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.alerts.channels import Channels, DeliveryError
from services.alerts.dispatch import Dispatcher, backoff_s
from services.alerts.metrics import AlertMetrics
from services.alerts.settings import AlertSettings
from services.store.alerts import AlertStore, Batch
from tests.alerting import receiver, sample_delivery, self_signed, smtp_server

SECRET = "s3cret-for-tests"


def settings(**fields: object) -> AlertSettings:
    return AlertSettings(**fields)  # type: ignore[arg-type]


async def test_email_over_plain_smtp() -> None:
    with smtp_server() as (mailbox, port):
        s = settings(
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_starttls=False,
            smtp_from="CallPulse <alerts@callpulse.test>",
        )
        async with httpx.AsyncClient() as client:
            await Channels(s, client).deliver(sample_delivery("email", "lead@acme.test"))
    [envelope] = mailbox.messages
    assert envelope.rcpt_tos == ["lead@acme.test"]
    message = email.message_from_bytes(envelope.original_content or b"")
    assert message["Subject"] == "[CRITICAL] FIRING: SL (15 min) 71.4% < 80.0% on acme/sales"
    assert message["Message-ID"] == "<7.al_test0001@callpulse>"
    body = message.get_payload(decode=True).decode()  # type: ignore[union-attr]
    assert "Where: acme/sales" in body and "http://callpulse.test/v1/alerts/al_test0001" in body


async def test_email_with_starttls_and_auth(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with smtp_server(tls=(cert, key), users={"callpulse": "pw-ok"}) as (mailbox, port):
        base = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": True,
            "smtp_ca_file": cert,
            "smtp_username": "callpulse",
        }
        async with httpx.AsyncClient() as client:
            good = Channels(settings(**base, smtp_password=SecretStr("pw-ok")), client)
            await good.deliver(sample_delivery("email", "lead@acme.test"))
            with pytest.raises(DeliveryError, match="Authentication"):
                bad = Channels(settings(**base, smtp_password=SecretStr("wrong")), client)
                await bad.deliver(sample_delivery("email", "lead@acme.test"))
            # without STARTTLS the server refuses (it requires TLS before anything else)
            with pytest.raises(DeliveryError):
                plain = settings(
                    **(base | {"smtp_starttls": False}), smtp_password=SecretStr("pw-ok")
                )
                await Channels(plain, client).deliver(sample_delivery("email", "x@acme.test"))
    assert [m.rcpt_tos for m in mailbox.messages] == [["lead@acme.test"]]


async def test_generic_webhook_is_signed() -> None:
    with receiver() as r:
        async with httpx.AsyncClient() as client:
            channels = Channels(settings(webhook_secret=SecretStr(SECRET)), client)
            await channels.deliver(sample_delivery("webhook", f"{r.url}/hook", delivery_id=42))
            # unsigned webhooks are refused rather than sent
            with pytest.raises(DeliveryError, match="webhook_secret"):
                await Channels(settings(), client).deliver(
                    sample_delivery("webhook", f"{r.url}/hook")
                )
    [req] = r.on("/hook")
    timestamp = req.headers["x-callpulse-timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + req.body, hashlib.sha256)
    assert req.headers["x-callpulse-signature"] == "sha256=" + expected.hexdigest()
    assert abs(int(timestamp) - time.time()) < 60
    body = req.json()
    assert body["delivery_id"] == 42 and req.headers["x-callpulse-delivery"] == "42"
    assert body["notice"] == "firing"
    assert set(body["alert"]) == {
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
    assert body["alert"]["value"] == 71.4 and body["alert"]["queue_id"] == "sales"


async def test_slack_and_teams_payloads() -> None:
    with receiver() as r:
        async with httpx.AsyncClient() as client:
            channels = Channels(settings(), client)
            await channels.deliver(sample_delivery("slack", f"{r.url}/slack"))
            await channels.deliver(
                sample_delivery(
                    "teams",
                    f"{r.url}/teams",
                    kind="resolved",
                    resolved_at_ms=int(time.time() * 1000),
                )
            )
    slack = r.on("/slack")[0].json()
    assert slack["text"].startswith("[CRITICAL] FIRING: SL (15 min)")
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "context"]
    assert "*Where:* acme/sales" in slack["blocks"][1]["text"]["text"]
    teams = r.on("/teams")[0].json()
    assert teams["type"] == "message"
    [attachment] = teams["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["body"][0]["color"] == "Good"
    assert card["body"][0]["text"].startswith("[CRITICAL] RESOLVED:")
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Where"] == "acme/sales" and "Resolved" in facts


async def test_alertmanager_receives_firing_and_resolution(tmp_path: Path) -> None:
    from tests.alerting import alertmanager

    with receiver() as hook, alertmanager(tmp_path, hook.url) as am:
        async with httpx.AsyncClient() as client:
            channels = Channels(settings(), client)
            await channels.deliver(sample_delivery("alertmanager", am))
            alerts = (await client.get(f"{am}/api/v2/alerts")).json()
            [alert] = alerts
            assert alert["labels"] == {
                "alertname": "sales-sl",
                "alert_id": "al_test0001",
                "severity": "critical",
                "tenant": "acme",
                "queue": "sales",
            }
            assert alert["status"]["state"] == "active"
            assert alert["annotations"]["summary"].startswith("SL (15 min) 71.4%")
            firing = hook.wait_for("/am", 1)[0].json()
            assert firing["status"] == "firing"
            resolved_at = int(time.time() * 1000) - 1000
            await channels.deliver(
                sample_delivery("alertmanager", am, kind="resolved", resolved_at_ms=resolved_at)
            )
            notes = hook.wait_for("/am", 2)
            assert notes[-1].json()["status"] == "resolved"
            assert notes[-1].json()["alerts"][0]["labels"]["alert_id"] == "al_test0001"
            assert (await client.get(f"{am}/api/v2/alerts?active=true")).json() == []


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 2.0, 30.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


async def test_retries_with_backoff_then_delivery_then_give_up(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "store.db")
    clock = [1000.0]
    metrics = AlertMetrics(CollectorRegistry())
    s = settings(retry_base_s=10.0, retry_max_s=60.0, max_attempts=3)
    with receiver() as r:
        r.status = 503
        row = sample_delivery("slack", f"{r.url}/slack")
        gone = sample_delivery("slack", "http://127.0.0.1:9/nothing-listens")
        store.commit(
            Batch(
                outbox=[
                    msgspec.structs.replace(row, next_attempt_ms=1_000_000),
                    msgspec.structs.replace(
                        gone, alert_id="al_other", recipient_id="r2", next_attempt_ms=1_000_000
                    ),
                ]
            )
        )
        async with httpx.AsyncClient() as client:
            dispatcher = Dispatcher(store, Channels(s, client), s, metrics, lambda: clock[0])
            assert await dispatcher.run_once() == 0  # both fail: attempt 1
            clock[0] += 9.9
            assert dispatcher.due(int(clock[0] * 1000)) == []  # not before 10 s
            clock[0] += 0.2
            r.status = 200
            assert await dispatcher.run_once() == 1  # attempt 2: the receiver is back
            clock[0] += 20.1
            assert await dispatcher.run_once() == 0  # attempt 3 of the dead one: given up
    assert store.outbox_counts() == {"pending": 0, "failed": 1}
    assert len(r.on("/slack")) == 1
    assert metrics.deliveries.labels("slack", "retry")._value.get() == 3
    assert metrics.deliveries.labels("slack", "failed")._value.get() == 1
    assert metrics.deliveries.labels("slack", "delivered")._value.get() == 1
    store.close()


def test_webhook_payload_round_trips_as_json() -> None:
    row = sample_delivery("webhook", "http://x.test")
    assert json.loads(row.payload)["alert"]["id"] == "al_test0001"
