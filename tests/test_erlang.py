"""Erlang C (services/simulator/erlang.py): the golden fixture and an independent formula."""

from __future__ import annotations

import math

import pytest

from services.simulator.erlang import erlang_c


def test_golden_fixture_3() -> None:
    """KPI-DEFINITIONS.md #3: 100 calls / 30 min, AHT 180 s, 14 agents, T = 20 s."""
    figures = erlang_c(arrival_rate=100 / 1800, aht=180, agents=14)
    assert figures.traffic == pytest.approx(10.0)
    assert round(figures.p_wait, 7) == 0.1741319
    assert round(figures.service_level(20), 5) == 0.88835
    assert round(figures.asa, 3) == 7.836
    assert round(figures.occupancy, 3) == 0.714


def textbook_p_wait(traffic: float, agents: int) -> float:
    """Erlang C by its closed form with factorials (a different computation from the code's
    Erlang B recursion)."""
    top = traffic**agents / math.factorial(agents) * agents / (agents - traffic)
    bottom = sum(traffic**k / math.factorial(k) for k in range(agents)) + top
    return top / bottom


@pytest.mark.parametrize(
    ("calls_per_hour", "aht", "agents"),
    [(200, 180, 14), (60, 300, 6), (1000, 240, 70), (10, 600, 2), (500, 30, 5)],
)
def test_matches_the_closed_form(calls_per_hour: float, aht: float, agents: int) -> None:
    figures = erlang_c(calls_per_hour / 3600, aht, agents)
    traffic = calls_per_hour * aht / 3600
    p_wait = textbook_p_wait(traffic, agents)
    assert figures.p_wait == pytest.approx(p_wait, rel=1e-9)
    assert figures.asa == pytest.approx(p_wait * aht / (agents - traffic), rel=1e-9)
    assert figures.service_level(0) == pytest.approx(1 - p_wait, rel=1e-9)
    assert figures.service_level(1e9) == pytest.approx(1.0)
    assert figures.service_level(-1) == 0.0


def test_one_agent_is_m_m_1() -> None:
    """M/M/1: P(wait) = rho, mean wait = rho / (mu - lambda)."""
    figures = erlang_c(arrival_rate=0.5, aht=1.2, agents=1)
    assert figures.p_wait == pytest.approx(0.6)
    assert figures.asa == pytest.approx(0.6 / (1 / 1.2 - 0.5))


@pytest.mark.parametrize(("rate", "aht", "agents"), [(1, 10, 10), (1, 10, 9), (0, 10, 3)])
def test_unstable_or_empty_inputs_are_refused(rate: float, aht: float, agents: int) -> None:
    with pytest.raises(ValueError):
        erlang_c(rate, aht, agents)
