"""Per-minute bucket counters: every component of KPI-DEFINITIONS.md, never a ratio.

Waits are integer milliseconds. Wait histograms have fixed edges so that "within T"
for any T on an edge, with `<` or `<=`, and percentiles come from counters alone:
bin 2k holds waits strictly between edge k-1 and edge k, bin 2k+1 waits exactly on
edge k, and the last bin waits above the last edge.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Final

import msgspec

#: Histogram edges in seconds. SLA thresholds and short-abandon thresholds must be one of these.
#: Edge 0 separates legs answered without any wait (P(wait) = 1 - count_within(0, <=) / A).
WAIT_EDGES_S: Final[tuple[int, ...]] = (
    0,
    1,
    2,
    3,
    5,
    10,
    15,
    20,
    25,
    30,
    40,
    45,
    60,
    90,
    120,
    180,
    240,
    300,
    600,
    900,
    1200,
    1800,
    3600,
)
_EDGES_MS: Final = tuple(e * 1000 for e in WAIT_EDGES_S)
HIST_BINS: Final = 2 * len(WAIT_EDGES_S) + 1


def wait_bin(wait_ms: int) -> int:
    """Histogram bin of a wait (see the module docstring for the layout)."""
    k = bisect_left(_EDGES_MS, wait_ms)
    if k < len(_EDGES_MS) and _EDGES_MS[k] == wait_ms:
        return 2 * k + 1
    return 2 * k


def count_within(hist: list[int], threshold_s: int, inclusive: bool) -> int:
    """Waits `<= threshold_s` (inclusive) or `< threshold_s` counted from a histogram."""
    try:
        k = WAIT_EDGES_S.index(threshold_s)
    except ValueError:
        raise ValueError(
            f"threshold {threshold_s} s is not a histogram edge; edges: {WAIT_EDGES_S}"
        ) from None
    return sum(hist[: 2 * k + (2 if inclusive else 1)])


def _empty_hist() -> list[int]:
    return [0] * HIST_BINS


class Counters(msgspec.Struct, kw_only=True, gc=False):
    """Components of one (tenant, queue, 1-minute UTC bucket). Sums of durations in ms.

    Attribution: `offered` counts at the leg's queue entry; answered/abandoned/flowed-out
    and their waits at the outcome's instant; handle time (`handled`, talk/hold/wrap-up)
    at the end of wrap-up; `transferred` at the transfer of an answered leg.
    """

    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    flowed_out: int = 0
    transferred: int = 0
    handled: int = 0
    wait_answered_ms: int = 0
    wait_abandoned_ms: int = 0
    max_wait_answered_ms: int = 0
    max_wait_abandoned_ms: int = 0
    talk_ms: int = 0
    hold_ms: int = 0
    wrap_ms: int = 0
    hist_answered: list[int] = msgspec.field(default_factory=_empty_hist)
    hist_abandoned: list[int] = msgspec.field(default_factory=_empty_hist)

    def merge(self, other: Counters) -> None:
        """Add another bucket's components into this one (sums add, maxima take the max)."""
        self.offered += other.offered
        self.answered += other.answered
        self.abandoned += other.abandoned
        self.flowed_out += other.flowed_out
        self.transferred += other.transferred
        self.handled += other.handled
        self.wait_answered_ms += other.wait_answered_ms
        self.wait_abandoned_ms += other.wait_abandoned_ms
        self.max_wait_answered_ms = max(self.max_wait_answered_ms, other.max_wait_answered_ms)
        self.max_wait_abandoned_ms = max(self.max_wait_abandoned_ms, other.max_wait_abandoned_ms)
        self.talk_ms += other.talk_ms
        self.hold_ms += other.hold_ms
        self.wrap_ms += other.wrap_ms
        for i, n in enumerate(other.hist_answered):
            self.hist_answered[i] += n
        for i, n in enumerate(other.hist_abandoned):
            self.hist_abandoned[i] += n

    def is_empty(self) -> bool:
        return self == _ZERO


_ZERO: Final = Counters()


def merged(buckets: list[Counters]) -> Counters:
    """The sum of several buckets as a new Counters (the same as `merge` one by one, but
    column by column in C loops: the live endpoints sum hundreds of buckets per request)."""
    if not buckets:
        return Counters()
    if len(buckets) == 1:
        one = buckets[0]
        return msgspec.structs.replace(
            one, hist_answered=list(one.hist_answered), hist_abandoned=list(one.hist_abandoned)
        )
    values: dict[str, Any] = {}
    for name, kind, column in zip(
        _FIELDS, _KINDS, zip(*map(msgspec.structs.astuple, buckets), strict=True), strict=True
    ):
        if kind == _HIST:
            values[name] = list(map(sum, zip(*column, strict=True)))
        elif kind == _MAX:
            values[name] = max(column)
        else:
            values[name] = sum(column)
    return Counters(**values)


_FIELDS: Final = Counters.__struct_fields__
_HIST, _MAX, _SUM = 0, 1, 2
_KINDS: Final = tuple(
    _HIST if f.startswith("hist_") else _MAX if f.startswith("max_") else _SUM for f in _FIELDS
)


class AgentCounters(msgspec.Struct, kw_only=True, gc=False):
    """Handle-time components of one (tenant, agent, 1-minute UTC bucket), ms.

    Same attribution as `Counters`: answered at the answer, handle time at the end of
    wrap-up, transfers at the transfer.
    """

    answered: int = 0
    handled: int = 0
    transferred: int = 0
    talk_ms: int = 0
    hold_ms: int = 0
    wrap_ms: int = 0

    def merge(self, other: AgentCounters) -> None:
        self.answered += other.answered
        self.handled += other.handled
        self.transferred += other.transferred
        self.talk_ms += other.talk_ms
        self.hold_ms += other.hold_ms
        self.wrap_ms += other.wrap_ms


AGENT_STATES: Final = ("available", "on_call", "wrapup", "aux", "offline")
STATE_FIELD: Final = {state: f"{state}_ms" for state in AGENT_STATES}


class StateTime(msgspec.Struct, kw_only=True, gc=False):
    """Milliseconds one agent (or a team) spent in each state over some span."""

    available_ms: int = 0
    on_call_ms: int = 0
    wrapup_ms: int = 0
    aux_ms: int = 0
    offline_ms: int = 0

    def merge(self, other: StateTime) -> None:
        self.available_ms += other.available_ms
        self.on_call_ms += other.on_call_ms
        self.wrapup_ms += other.wrapup_ms
        self.aux_ms += other.aux_ms
        self.offline_ms += other.offline_ms

    def add(self, state: str, ms: int) -> None:
        field = STATE_FIELD[state]
        setattr(self, field, getattr(self, field) + ms)
