"""Settings of `callpulse import` read from the environment (prefix `CALLPULSE_`)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ImportSettings(BaseSettings):
    """Secrets the import command takes from the environment; options override them.

    `CALLPULSE_CALLER_KEY_SECRET`: the tenant's secret for caller keys (see `pseudonym`).
    `CALLPULSE_API_KEY`: the bearer key for `--url`.
    """

    model_config = SettingsConfigDict(env_prefix="CALLPULSE_", frozen=True, extra="ignore")

    caller_key_secret: SecretStr | None = None
    api_key: SecretStr | None = None
