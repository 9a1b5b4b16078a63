"""Settings of alert evaluation and delivery (env prefix CALLPULSE_ALERTS_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AlertSettings(BaseSettings):
    """Durations: `_s` seconds. Secrets are `SecretStr` and never logged."""

    model_config = SettingsConfigDict(env_prefix="CALLPULSE_ALERTS_", frozen=True)

    enabled: bool = True
    #: A TOML file of `[[rules]]` and `[[recipients]]`, loaded at start (file-managed:
    #: read-only through the API; removing one from the file removes it at the next start).
    rules_file: Path | None = None
    #: Rules are evaluated whenever the pipeline applied new events (polled every `poll_s`)
    #: and at least every `tick_s` (time-driven figures such as the longest wait).
    tick_s: float = Field(default=1.0, gt=0)
    poll_s: float = Field(default=0.1, gt=0)
    dispatch_interval_s: float = Field(default=0.25, gt=0)
    #: Failed deliveries are retried after retry_base_s * 2^(attempt-1), at most
    #: retry_max_s apart, and given up (state "failed", visible) after max_attempts.
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=12, ge=1)
    send_timeout_s: float = Field(default=10.0, gt=0)
    #: Public base URL of the API, for links in notices.
    public_url: str = "http://127.0.0.1:8000"

    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True  # upgrade with STARTTLS (port 587); off for plain SMTP
    smtp_ssl: bool = False  # implicit TLS (port 465) instead of STARTTLS
    smtp_ca_file: Path | None = None  # trust this CA (e.g. a private relay's) for TLS
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "CallPulse <callpulse@localhost>"

    #: Signs generic webhooks: X-CallPulse-Signature: sha256=HMAC(secret, timestamp + "." + body).
    webhook_secret: SecretStr | None = None
    #: Alertmanager wants firing alerts re-sent; they expire after 4 x this without news.
    alertmanager_resend_s: float = Field(default=60.0, gt=0)
