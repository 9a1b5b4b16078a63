"""Erlang C: the M/M/N queue (Poisson arrivals, exponential handle times, N agents, callers
who never abandon, first come first served), in pure Python.

With arrival rate λ (calls/s) and average handle time AHT (s), the offered traffic is
A = λ·AHT Erlang. For N > A agents:

- P(wait) = probability that a call has to queue (Erlang C formula);
- SL(t) = P(wait ≤ t) = 1 - P(wait)·exp(-(N - A)·t / AHT);
- ASA = mean wait = P(wait)·AHT / (N - A) seconds, over all calls;
- occupancy = A / N.

Golden fixture (KPI-DEFINITIONS.md #3): 100 calls per 30 min, AHT 180 s, 14 agents →
A = 10, P(wait) = 0.1741319, SL(20 s) = 0.88835, ASA = 7.836 s, occupancy 0.714.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErlangC:
    """Steady-state figures of an M/M/N queue."""

    arrival_rate: float
    """λ, calls per second."""
    aht: float
    """Average handle time, seconds."""
    agents: int
    """N, agents serving the queue."""

    @property
    def traffic(self) -> float:
        """A = λ·AHT, in Erlang."""
        return self.arrival_rate * self.aht

    @property
    def p_wait(self) -> float:
        """Probability that a call waits at all (Erlang C), in [0, 1]."""
        n, a = self.agents, self.traffic
        # Erlang B by its stable recursion B(k) = A·B(k-1) / (k + A·B(k-1)), then C from B.
        b = 1.0
        for k in range(1, n + 1):
            b = a * b / (k + a * b)
        return n * b / (n - a * (1 - b))

    def service_level(self, threshold: float) -> float:
        """SL(t): share of calls answered within `threshold` seconds (wait ≤ t)."""
        if threshold < 0:
            return 0.0
        n, a = self.agents, self.traffic
        return 1 - self.p_wait * math.exp(-(n - a) * threshold / self.aht)

    @property
    def asa(self) -> float:
        """Average speed of answer over all calls, seconds."""
        return self.p_wait * self.aht / (self.agents - self.traffic)

    @property
    def occupancy(self) -> float:
        """A / N: the share of logged-on agent time spent handling calls."""
        return self.traffic / self.agents


def erlang_c(arrival_rate: float, aht: float, agents: int) -> ErlangC:
    """Erlang C figures for `arrival_rate` calls/s, `aht` seconds and `agents` agents.

    Raises ValueError unless the queue is stable (agents > traffic) and the inputs positive.
    """
    if arrival_rate <= 0 or aht <= 0:
        raise ValueError("arrival rate and AHT must be positive")
    if agents <= arrival_rate * aht:
        raise ValueError(
            f"unstable queue: {agents} agents for {arrival_rate * aht:.3f} Erlang of traffic "
            "(Erlang C needs more agents than Erlangs)"
        )
    return ErlangC(arrival_rate=arrival_rate, aht=aht, agents=agents)
