"""Erlang C through the whole embedded pipeline: simulated events -> HTTP ingest -> log ->
aggregation -> store -> the intervals API. SL(20 s), P(wait) and ASA read back from the API
must agree with Erlang C within 3 standard errors.

The standard error is computed by batch means: the run (after a one-hour warm-up) is cut
into 20 equal batches of hourly intervals; each batch gives a ratio from the API's own
numerators and denominators; SE = stdev(batch ratios) / sqrt(20).
"""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from services.kpi.events import encode_event
from services.simulator.engine import simulate
from services.simulator.erlang import erlang_c
from services.simulator.scenario import load_scenario, parse_scenario
from tests.conftest import ROOT, Service

START = datetime(2026, 6, 1, tzinfo=UTC)
HOURS = 241  # one warm-up hour + 20 batches of 12 hours
BATCHES = 20


async def run_through_api(service: Service, text: str | None) -> list[dict[str, object]]:
    scenario = (
        load_scenario(ROOT / "scenarios" / "erlang-c.toml")
        if text is None
        else parse_scenario(text)
    )
    service.contract(tenant_id="erlang", queue_id="mm14", threshold_s=20, timezone="UTC")
    admin = service.key(None, "admin")
    chunk: list[bytes] = []
    for event in simulate(scenario, 5, START, timedelta(hours=HOURS)):
        chunk.append(encode_event(event))
        if len(chunk) == 5000:
            await post(service, chunk, admin)
            chunk = []
    await post(service, chunk, admin)
    await service.settle()
    r = await service.client.get(
        "/v1/queues/mm14/intervals",
        params={"tenant": "erlang", "from": (START + timedelta(hours=1)).isoformat(),
                "to": (START + timedelta(hours=HOURS)).isoformat(), "interval": "60m"},
        headers=admin,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    hours: list[dict[str, object]] = r.json()["intervals"]
    assert len(hours) == HOURS - 1
    return hours


async def post(service: Service, chunk: list[bytes], headers: dict[str, str]) -> None:
    if chunk:
        r = await service.client.post("/v1/events", content=b"[" + b",".join(chunk) + b"]",
                                      headers=headers)  # fmt: skip
        assert r.status_code == 202 and not r.json()["rejected"], r.text


def batch_means(hours: list[dict], num: object, den: object) -> tuple[float, float]:  # type: ignore[type-arg]
    """(overall ratio, its standard error by batch means)."""
    size = len(hours) // BATCHES
    ratios = []
    total_n = total_d = 0.0
    for b in range(BATCHES):
        part = hours[b * size : (b + 1) * size]
        n = sum(num(h) for h in part)  # type: ignore[operator]
        d = sum(den(h) for h in part)  # type: ignore[operator]
        ratios.append(n / d)
        total_n += n
        total_d += d
    return total_n / total_d, statistics.stdev(ratios) / math.sqrt(BATCHES)


HEAVIER = (
    (ROOT / "scenarios" / "erlang-c.toml")
    .read_text()
    .replace("rate_per_hour = 200", "rate_per_hour = 250")
)


@pytest.mark.parametrize(("text", "calls_per_hour"), [(None, 200), (HEAVIER, 250)])
async def test_erlang_c_through_the_pipeline(
    service: Service, text: str | None, calls_per_hour: int
) -> None:
    hours = await run_through_api(service, text)
    theory = erlang_c(calls_per_hour / 3600, 180, 14)
    sl, sl_se = batch_means(
        hours,
        lambda h: h["service_level"]["numerator"],
        lambda h: h["service_level"]["denominator"],
    )
    p_wait, p_se = batch_means(
        hours, lambda h: h["waited"]["numerator"], lambda h: h["waited"]["denominator"]
    )
    asa, asa_se = batch_means(
        hours, lambda h: h["asa_ms"]["numerator"] / 1000, lambda h: h["asa_ms"]["denominator"]
    )
    print(
        f"{calls_per_hour}/h: SL(20s) {sl:.4f}±{sl_se:.4f} vs {theory.service_level(20):.4f}; "
        f"P(wait) {p_wait:.4f}±{p_se:.4f} vs {theory.p_wait:.4f}; "
        f"ASA {asa:.2f}±{asa_se:.2f} s vs {theory.asa:.2f} s"
    )
    assert abs(sl - theory.service_level(20)) < 3 * sl_se
    assert abs(p_wait - theory.p_wait) < 3 * p_se
    assert abs(asa - theory.asa) < 3 * asa_se
    answered = sum(h["answered"] for h in hours)  # type: ignore[misc]
    assert (
        abs(answered / (HOURS - 1) - calls_per_hour)
        < 4 * math.sqrt(calls_per_hour / (HOURS - 1)) * 1.5
    )
