"""schemathesis against the OpenAPI document, in-process (ASGI), with an admin key and a
client key: no 5xx, no undocumented status, content type or header, no response that
violates its declared schema. Bounded: a few examples per operation and key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import create_app
from services.api.backend import Backend
from services.api.deps import ApiConfig
from services.api.limits import RateLimiter
from services.embedded.runtime import Embedded
from services.embedded.settings import EmbeddedSettings
from services.kpi.contracts import Contract
from services.store.keys import new_key
from tests.legs import Leg, leg_events, survey

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 12

# Ingest also takes NDJSON (a string body): send it as text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@dataclass
class Api:
    embedded: Embedded
    admin: dict[str, str]
    client: dict[str, str]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    embedded = Embedded(EmbeddedSettings(data_dir=data, correction_horizon_s=40 * 86_400))
    embedded.app.state.limiter = RateLimiter(1e9, 10**9)
    store = embedded.store
    store.put_contract(Contract(tenant_id="fz", version=1, timezone="Asia/Kathmandu"))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    legs = [
        Leg("fz", f"c{n}", ("sales", "care")[n % 2], now - timedelta(minutes=13 * n),
            ("answered", "abandoned")[n % 5 == 0], (n % 30) * 1000, caller=f"+1{n % 7}")
        for n in range(300)
    ]  # fmt: skip
    events = [e for leg in legs for e in leg_events(leg)]
    events += [survey("fz", f"s{n}", now - timedelta(hours=n), n % 6, 5, "sales") for n in range(9)]
    embedded.log.append([(e["tenant_id"], e["event_id"], msgspec.json.encode(e)) for e in events])
    while embedded.aggregator.lag():
        embedded.aggregator.step()
    embedded.aggregator.flush(force_checkpoint=True)
    keys = {}
    for tenant, role in ((None, "admin"), ("fz", "client")):
        token, record = new_key(tenant, role, "fuzz", int(time.time() * 1000))
        store.put_key(record)
        keys[role] = {"Authorization": f"Bearer {token}"}
    yield Api(embedded, keys["admin"], keys["client"])
    store.close()
    embedded.log.close()


def _document() -> dict[str, Any]:
    """The OpenAPI document of the app (it does not depend on the backend or the data)."""
    app = create_app(cast(Backend, None), ApiConfig(), CollectorRegistry())
    return app.openapi()


# Loaded at import (schemathesis' lazy fixture loader does not run under this pytest); the
# calls go to the module fixture's app, in-process.
schema = schemathesis.openapi.from_dict(_document())


@schema.exclude(path="/v1/stream").parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
def test_no_server_error_and_no_schema_violation(case: schemathesis.Case, api: Api) -> None:
    for headers in (api.client, api.admin):
        case.call_and_validate(headers=headers, checks=CHECKS, app=api.embedded.app, timeout=20)
