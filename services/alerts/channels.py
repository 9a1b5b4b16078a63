"""Delivery channels: email (SMTP), generic signed webhooks, Slack, Microsoft Teams and
Alertmanager's API v2. Each takes one outbox row and either returns or raises
`DeliveryError` (the dispatcher then retries with backoff).

Idempotency: every request carries the outbox row id (`X-CallPulse-Delivery` header,
`delivery_id` in generic webhooks, the email's Message-ID) so a receiver can drop the
rare duplicate of a notice sent just before a crash and re-sent after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import httpx

from ..store.alerts import Delivery
from .errors import AlertError
from .settings import AlertSettings

SIGNATURE_HEADER = "X-CallPulse-Signature"
TIMESTAMP_HEADER = "X-CallPulse-Timestamp"
DELIVERY_HEADER = "X-CallPulse-Delivery"

_WORDS = {"firing": "FIRING", "resolved": "RESOLVED", "repeat": "STILL FIRING"}


class DeliveryError(AlertError):
    """A channel could not take a notice (network, refusal, misconfiguration)."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The generic webhook signature: hex HMAC-SHA256 of `timestamp + "." + body`."""
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def title(payload: dict[str, Any]) -> str:
    alert = payload["alert"]
    return f"[{alert['severity'].upper()}] {_WORDS[payload['notice']]}: {alert['summary']}"


def _facts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    alert = payload["alert"]
    where = "/".join(x for x in (alert["tenant_id"], alert["queue_id"], alert["team_id"]) if x)
    facts = [
        ("Where", where or "floor"),
        ("Severity", alert["severity"]),
        ("Value", "n/a" if alert["value"] is None else f"{alert['value']:g}"),
        ("Threshold", "n/a" if alert["threshold"] is None else f"{alert['threshold']:g}"),
        ("Started", alert["started_at"]),
    ]
    if alert["resolved_at"]:
        facts.append(("Resolved", alert["resolved_at"]))
    if alert["acknowledged_by"]:
        facts.append(("Acknowledged by", alert["acknowledged_by"]))
    facts.append(("Alert", alert["id"]))
    return facts


def generic_body(delivery: Delivery, payload: dict[str, Any]) -> dict[str, Any]:
    return {"delivery_id": delivery.delivery_id, **payload}


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the notification fallback) and blocks."""
    facts = "\n".join(f"*{name}:* {value}" for name, value in _facts(payload))
    return {
        "text": title(payload),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title(payload)[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{payload['url']}|Open in CallPulse>"}],
            },
        ],
    }


def teams_body(payload: dict[str, Any]) -> dict[str, Any]:
    """A Microsoft Teams (Workflows) webhook message carrying an Adaptive Card."""
    good = payload["notice"] == "resolved"
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "size": "Large",
                "weight": "Bolder",
                "wrap": True,
                "color": "Good" if good else "Attention",
                "text": title(payload),
            },
            {
                "type": "FactSet",
                "facts": [{"title": name, "value": value} for name, value in _facts(payload)],
            },
        ],
        "actions": [
            {"type": "Action.OpenUrl", "title": "Open in CallPulse", "url": payload["url"]}
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def alertmanager_body(payload: dict[str, Any], now: datetime, resend_s: float) -> list[Any]:
    """Alertmanager API v2 `postableAlerts`: labels identify the alert (one per CallPulse
    alert id); a resolution carries `endsAt` = the resolution instant; a firing alert
    expires after 4 re-send periods unless re-sent (see `Dispatcher.keep_alive`)."""
    alert = payload["alert"]
    labels = {"alertname": alert["rule_id"], "alert_id": alert["id"], "severity": alert["severity"]}
    for name in ("tenant_id", "queue_id", "team_id"):
        if alert[name]:
            labels[name.removesuffix("_id")] = alert[name]
    if alert["resolved_at"]:
        ends = alert["resolved_at"]
    else:
        ends = (now + timedelta(seconds=4 * resend_s)).isoformat()
    return [
        {
            "labels": labels,
            "annotations": {
                "summary": alert["summary"],
                "value": "" if alert["value"] is None else f"{alert['value']:g}",
                "threshold": "" if alert["threshold"] is None else f"{alert['threshold']:g}",
            },
            "startsAt": payload["fired_at"] or alert["started_at"],
            "endsAt": ends,
            "generatorURL": payload["url"],
        }
    ]


class Channels:
    """Sends outbox rows; one instance per dispatcher, sharing one HTTP client."""

    def __init__(self, settings: AlertSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client

    async def deliver(self, delivery: Delivery) -> None:
        payload = json.loads(delivery.payload)
        match delivery.channel:
            case "email":
                await asyncio.to_thread(self._send_email, delivery, payload)
            case "webhook":
                await self._post(delivery, generic_body(delivery, payload), signed=True)
            case "slack":
                await self._post(delivery, slack_body(payload))
            case "teams":
                await self._post(delivery, teams_body(payload))
            case "alertmanager":
                await self.post_alertmanager(delivery.address, payload, delivery.delivery_id)
            case other:
                raise DeliveryError(f"unknown channel {other!r}")

    async def post_alertmanager(
        self, base_url: str, payload: dict[str, Any], delivery_id: int
    ) -> None:
        body = alertmanager_body(payload, datetime.now(UTC), self.settings.alertmanager_resend_s)
        url = base_url.rstrip("/") + "/api/v2/alerts"
        await self._request(url, json.dumps(body).encode(), {DELIVERY_HEADER: str(delivery_id)})

    async def _post(self, delivery: Delivery, body: Any, signed: bool = False) -> None:
        raw = json.dumps(body, separators=(",", ":")).encode()
        headers = {DELIVERY_HEADER: str(delivery.delivery_id)}
        if signed:
            secret = self.settings.webhook_secret
            if secret is None:
                raise DeliveryError("webhook_secret is not configured; refusing to send unsigned")
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = "sha256=" + sign(
                secret.get_secret_value().encode(), timestamp, raw
            )
        await self._request(delivery.address, raw, headers)

    async def _request(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            response = await self.client.post(
                url, content=body, headers={"Content-Type": "application/json", **headers},
                timeout=self.settings.send_timeout_s,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}")

    def _send_email(self, delivery: Delivery, payload: dict[str, Any]) -> None:
        """Send one email (blocking; runs in a worker thread)."""
        s = self.settings
        if s.smtp_host is None:
            raise DeliveryError("smtp_host is not configured")
        message = EmailMessage()
        message["Subject"] = title(payload)
        message["From"] = s.smtp_from
        message["To"] = delivery.address
        message["Date"] = format_datetime(datetime.now(UTC))
        # The same id on a retry, so mail clients fold a duplicate into the original.
        message["Message-ID"] = f"<{delivery.delivery_id}.{delivery.alert_id}@callpulse>"
        message[DELIVERY_HEADER] = str(delivery.delivery_id)
        lines = [title(payload), ""]
        lines += [f"{name}: {value}" for name, value in _facts(payload)]
        lines += ["", payload["url"]]
        message.set_content("\n".join(lines))
        context = ssl.create_default_context(cafile=s.smtp_ca_file)
        try:
            smtp: smtplib.SMTP
            if s.smtp_ssl:
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s,
                                        context=context)  # fmt: skip
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.send_timeout_s)
            with smtp:
                if s.smtp_starttls and not s.smtp_ssl:
                    smtp.starttls(context=context)
                if s.smtp_username is not None:
                    password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                    smtp.login(s.smtp_username, password)
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}") from exc
