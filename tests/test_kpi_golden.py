"""KPI-DEFINITIONS.md golden fixtures 1 and 2, through the whole core (events -> counters -> SL)."""

import pytest

from services.kpi.centre import Centre
from services.kpi.contracts import Components, Contract, service_level, sl_fraction
from services.kpi.counters import merged
from services.kpi.leg import at_ms
from tests.factories import event


def feed(waits: list[tuple[str, float]], tenant: str) -> Centre:
    """One leg per (outcome, wait seconds), all queued at the same instant."""
    centre = Centre()
    for n, (outcome, wait) in enumerate(waits):
        common = {"tenant_id": tenant, "call_id": f"c{n}", "queue_id": "sales"}
        evs = [event("call.queued", 0, **common)]
        if outcome == "answered":
            evs.append(event("call.answered", wait, agent_id="a1", **common))
        else:
            evs.append(event("call.abandoned", wait, **common))
        for ev in evs:
            centre.apply(ev, at_ms(ev))
    return centre


def sl(centre: Centre, variant: str) -> float:
    total = merged(list(centre.queue_buckets.values()))
    contract = Contract(tenant_id="t", threshold_s=20, short_abandon_s=5, variant=variant)  # type: ignore[arg-type]
    result = service_level(total, contract)
    assert result.value_pct is not None
    return round(result.value_pct, 1)


ICMI = (
    [("answered", 12.0)] * 860  # within T
    + [("answered", 20.0)] * 0
    + [("answered", 45.0)] * 140  # after T
    + [("abandoned", 3.0)] * 10  # short abandons (< 5 s), within T
    + [("abandoned", 15.0)] * 10  # within T, not short
    + [("abandoned", 50.0)] * 40  # after T
)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("answered", 86.0),
        ("offered", 81.1),
        ("abandon_within_ignored", 82.7),
        ("abandon_within_met", 83.0),
        ("short_abandon_excluded", 81.9),
        ("short_abandon_met", 82.1),
    ],
)
def test_icmi_fixture(variant: str, expected: float) -> None:
    assert sl(feed(ICMI, "icmi"), variant) == expected


CISCO = [("answered", 10.0)] * 70 + [("abandoned", 8.0)] * 10 + [("answered", 30.0)] * 20


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("abandon_within_ignored", 77.8), ("offered", 70.0), ("abandon_within_met", 80.0)],
)
def test_cisco_fixture(variant: str, expected: float) -> None:
    assert sl(feed(CISCO, "cisco"), variant) == expected


def test_icmi_components_directly() -> None:
    c = Components(
        answered=1000,
        answered_within=860,
        abandoned=60,
        abandoned_within=20,
        short_abandons=10,
        flowed_out=0,
    )
    got = {
        v: round(100 * n / d, 1) for v in ("answered", "offered") for n, d in [sl_fraction(v, c)]
    }
    assert got == {"answered": 86.0, "offered": 81.1}


@pytest.mark.parametrize(("inclusive", "expected"), [(True, 2), (False, 1)])
def test_wait_exactly_on_threshold_respects_the_comparison(inclusive: bool, expected: int) -> None:
    centre = feed([("answered", 20.0), ("answered", 19.999), ("answered", 20.001)], "edge")
    total = merged(list(centre.queue_buckets.values()))
    contract = Contract(tenant_id="t", threshold_s=20, inclusive=inclusive)
    assert service_level(total, contract).numerator == expected


def test_empty_denominator_is_null_not_zero_or_hundred() -> None:
    centre = feed([("abandoned", 3.0)], "empty")
    total = merged(list(centre.queue_buckets.values()))
    result = service_level(total, Contract(tenant_id="t", variant="answered"))
    assert (result.value_pct, result.denominator, result.met) == (None, 0, None)
    flowouts = service_level(total, Contract(tenant_id="t", variant="short_abandon_excluded"))
    assert flowouts.value_pct is None  # the only abandon was short: excluded


def test_with_flowouts_counts_flowouts_as_misses() -> None:
    centre = Centre()
    for n, kind in enumerate(["answered", "flowed_out", "flowed_out", "answered"]):
        common = {"tenant_id": "f", "call_id": f"c{n}", "queue_id": "q"}
        evs = [event("call.queued", 0, **common)]
        if kind == "answered":
            evs.append(event("call.answered", 5, agent_id="a", **common))
        else:
            evs.append(event("call.flowed_out", 60, reason="timeout", **common))
        for ev in evs:
            centre.apply(ev, at_ms(ev))
    total = merged(list(centre.queue_buckets.values()))
    result = service_level(total, Contract(tenant_id="f", variant="with_flowouts"))
    assert (result.numerator, result.denominator) == (2, 4)


def test_contract_rejects_a_threshold_off_the_histogram_edges() -> None:
    with pytest.raises(ValueError, match="threshold_s: 22"):
        Contract(tenant_id="t", threshold_s=22)
