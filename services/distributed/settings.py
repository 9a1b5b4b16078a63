"""Settings of the distributed mode, one frozen object per service (env prefix CALLPULSE_).

Durations: `_s` seconds, `_ms` milliseconds. `database_url` is the schema owner (migrations,
the aggregator, admin writes); `api_database_url` is the API role without table ownership
(reads of ingest and API replicas). Both are libpq connection strings or URLs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..bus.kafka import DEFAULT_DLQ_TOPIC, DEFAULT_EVENTS_TOPIC, DEFAULT_SNAPSHOTS_TOPIC


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CALLPULSE_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    events_topic: str = DEFAULT_EVENTS_TOPIC
    snapshots_topic: str = DEFAULT_SNAPSHOTS_TOPIC
    dlq_topic: str = DEFAULT_DLQ_TOPIC


class MigrateSettings(BaseSettings):
    """`callpulse migrate`."""

    model_config = SettingsConfigDict(env_prefix="CALLPULSE_", frozen=True, extra="ignore")

    database_url: SecretStr = SecretStr("postgresql://callpulse@127.0.0.1:5432/callpulse")
    timescale: Literal["auto", "on", "off"] = "auto"
    api_role: str = "callpulse_api"
    bucket_retention_days: int = Field(default=400, ge=1)
    leg_retention_days: int = Field(default=90, ge=1)
    snapshot_retention_days: int = Field(default=14, ge=1)
    compress_after_days: int = Field(default=7, ge=1)


class IngestSettings(_Base):
    """`callpulse ingest` (and the ingest route of `callpulse api`)."""

    api_database_url: SecretStr = SecretStr("postgresql://callpulse_api@127.0.0.1:5432/callpulse")
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_events_per_request: int = Field(default=10_000, ge=1)
    caller_key_secret: SecretStr | None = None
    ack_timeout_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    message_max_events: int = Field(default=500, ge=1)
    linger_ms: int = Field(default=2, ge=0)
    rate_limit_per_s: float = Field(default=200.0, gt=0)
    rate_limit_burst: int = Field(default=400, ge=1)
    ingest: bool = True


class AggregatorSettings(_Base):
    """`callpulse aggregator` (one Faust worker; run several with the same group id)."""

    database_url: SecretStr = SecretStr("postgresql://callpulse@127.0.0.1:5432/callpulse")
    group_id: str = "callpulse-aggregator"
    batch_max_messages: int = Field(default=2000, ge=1)
    batch_within_s: float = Field(
        default=0.01, gt=0, description="longest wait for a batch to fill before applying it"
    )
    flush_interval_s: float = Field(default=0.5, gt=0)
    evict_interval_s: float = Field(default=10.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    max_pending_records: int = Field(default=200_000, ge=1)
    allowed_lateness_s: int = Field(default=120, ge=0)
    correction_horizon_s: int = Field(default=7200, ge=60)
    stale_leg_s: int = Field(default=4 * 3600, ge=60)
    session_timeout_s: float = Field(default=30.0, gt=0)
    broker_heartbeat_s: float = Field(default=3.0, gt=0)
    commit_interval_s: float = Field(default=2.8, gt=0)
    stuck_rebalance_s: float = Field(default=120.0, gt=0)
    web_port: int | None = Field(
        default=None, ge=0, le=65535, description="Faust's web server (off)"
    )
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address of the /metrics server (0.0.0.0 inside a container network)",
    )


class ApiSettings(IngestSettings):
    """`callpulse api` in distributed mode (stateless; run several)."""

    port: int = Field(default=8000, ge=0, le=65535)
    stale_after_s: float = Field(default=5.0, gt=0)
    pool_size: int = Field(default=8, ge=1)
    stale_leg_s: int = Field(default=4 * 3600, ge=60)
    rate_limit_per_s: float = Field(default=20.0, gt=0)
    rate_limit_burst: int = Field(default=60, ge=1)
