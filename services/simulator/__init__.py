"""The call-centre simulator: scenarios in TOML, a seeded discrete-event engine, sinks.

`simulate(scenario, seed, start, duration)` yields schema-valid events in `occurred_at`
order; `callpulse simulate` sends them to NDJSON or the HTTP API, paced or not.
"""

from __future__ import annotations

from .engine import simulate
from .errors import ScenarioError, SimulatorError, SinkError
from .scenario import Scenario, load_scenario, parse_scenario

__all__ = [
    "Scenario",
    "ScenarioError",
    "SimulatorError",
    "SinkError",
    "load_scenario",
    "parse_scenario",
    "simulate",
]
