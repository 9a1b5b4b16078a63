"""The simulator's exceptions: one root, one subclass per kind of failure a user can fix."""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of every error the simulator raises on purpose."""


class ScenarioError(SimulatorError):
    """A scenario file that cannot be read or does not describe a valid centre.

    The message names the file and the field (e.g. `tenants[0].queues[1].talk.mean`).
    """


class SinkError(SimulatorError):
    """Events could not be delivered (HTTP refusal, retries exhausted, closed stream)."""
