"""Settings of the embedded mode (env prefix CALLPULSE_; command-line flags override)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmbeddedSettings(BaseSettings):
    """Everything `callpulse run` reads. Durations: `_ms` milliseconds, `_s` seconds."""

    model_config = SettingsConfigDict(env_prefix="CALLPULSE_", frozen=True)

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(10_000, ge=1)
    flush_interval_ms: int = Field(200, ge=1)
    checkpoint_interval_s: float = Field(5.0, gt=0)
    allowed_lateness_s: int = Field(120, ge=0)
    correction_horizon_s: int = Field(7200, ge=60)
    stale_after_s: float = Field(5.0, gt=0)
    caller_key_secret: SecretStr | None = None
    link_secret: SecretStr | None = None  # wallboard links; default: one per data dir
    stream_heartbeat_s: float = Field(2.0, gt=0)
    stream_refresh_s: float = Field(5.0, gt=0)
    rate_limit_per_s: float = Field(20.0, gt=0)  # API requests per second per key
    rate_limit_burst: int = Field(60, ge=1)  # ... and at once after a pause
