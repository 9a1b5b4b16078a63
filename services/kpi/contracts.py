"""SLA contracts and the KPI formulas of KPI-DEFINITIONS.md, derived from counters at read time."""

from __future__ import annotations

from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from .counters import WAIT_EDGES_S, Counters, count_within

Variant = Literal[
    "answered",
    "offered",
    "abandon_within_ignored",
    "abandon_within_met",
    "short_abandon_excluded",
    "short_abandon_met",
    "with_flowouts",
]
VARIANTS: Final[tuple[str, ...]] = Variant.__args__  # type: ignore[attr-defined]


class ContractError(ValueError):
    """A contract field is invalid; the message names the field and the reason."""


class Contract(msgspec.Struct, kw_only=True, frozen=True):
    """One version of a client queue's SLA contract, in force from `effective_from_ms`.

    `queue_id` None is the tenant's default. `inclusive` True means "within T" is `<= T`.
    Version 0 is the built-in default used where a tenant has no contract.
    """

    tenant_id: str
    queue_id: str | None = None
    version: int = 1
    effective_from_ms: int = 0
    threshold_s: int = 20
    target_pct: float = 80.0
    variant: Variant = "answered"
    short_abandon_s: int = 5
    inclusive: bool = True
    interval_min: Literal[15, 30, 60] = 30
    timezone: str = "UTC"
    #: (weekday 0 = Monday, start minute, end minute) of local wall-clock time, [start, end);
    #: empty means every hour counts. Periods and attainment use only intervals that start
    #: inside business hours.
    business_hours: tuple[tuple[int, int, int], ...] = ()
    #: A survey is satisfied when score >= this percentage of its scale (80: 4 of 5, 8 of 10).
    csat_satisfied_pct: float = 80.0
    #: Repeat-contact window of FCR, hours; a contact's FCR is final only after it.
    fcr_window_h: int = 72

    def __post_init__(self) -> None:
        if self.threshold_s not in WAIT_EDGES_S:
            raise ContractError(f"threshold_s: {self.threshold_s} is not one of {WAIT_EDGES_S}")
        if self.short_abandon_s not in WAIT_EDGES_S:
            raise ContractError(
                f"short_abandon_s: {self.short_abandon_s} is not one of {WAIT_EDGES_S}"
            )
        if self.short_abandon_s > self.threshold_s:
            raise ContractError("short_abandon_s: must not exceed threshold_s")
        if not 0 <= self.target_pct <= 100:
            raise ContractError("target_pct: must be between 0 and 100")
        if self.version < 0:
            raise ContractError("version: must be 0 (built-in default) or more")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory
            raise ContractError(f"timezone: {self.timezone!r} is not an IANA zone") from None
        for day, start, end in self.business_hours:
            if not (0 <= day <= 6 and 0 <= start < end <= 1440):
                raise ContractError(
                    f"business_hours: ({day}, {start}, {end}) needs weekday 0-6 and"
                    " 0 <= start < end <= 1440 minutes"
                )
        if not 0 < self.csat_satisfied_pct <= 100:
            raise ContractError("csat_satisfied_pct: must be above 0 and at most 100")
        if not 1 <= self.fcr_window_h <= 24 * 90:
            raise ContractError("fcr_window_h: must be between 1 and 2160 hours")


class Ratio(msgspec.Struct, frozen=True):
    """A derived figure with the counts it came from; `value` is None on a zero denominator."""

    value: float | None
    numerator: int
    denominator: int


def ratio(numerator: int, denominator: int) -> Ratio:
    return Ratio(numerator / denominator if denominator else None, numerator, denominator)


class ServiceLevel(msgspec.Struct, frozen=True):
    """An SL figure in percent with everything needed to audit it."""

    value_pct: float | None
    numerator: int
    denominator: int
    variant: str
    threshold_s: int
    inclusive: bool
    target_pct: float
    met: bool | None
    contract_version: int


class Components(msgspec.Struct, frozen=True):
    """The SL inputs of KPI-DEFINITIONS.md for one contract's T and short-abandon threshold."""

    answered: int
    answered_within: int
    abandoned: int
    abandoned_within: int
    short_abandons: int
    flowed_out: int


def components(counters: Counters, contract: Contract) -> Components:
    """Read A, A_T, B, B_T, S and F for a contract out of counters (histograms)."""
    return Components(
        answered=counters.answered,
        answered_within=count_within(
            counters.hist_answered, contract.threshold_s, contract.inclusive
        ),
        abandoned=counters.abandoned,
        abandoned_within=count_within(
            counters.hist_abandoned, contract.threshold_s, contract.inclusive
        ),
        short_abandons=count_within(counters.hist_abandoned, contract.short_abandon_s, False),
        flowed_out=counters.flowed_out,
    )


def sl_fraction(variant: str, c: Components) -> tuple[int, int]:
    """(numerator, denominator) of an SL variant; see the table in KPI-DEFINITIONS.md."""
    a, a_t, b, b_t, s, f = (
        c.answered,
        c.answered_within,
        c.abandoned,
        c.abandoned_within,
        c.short_abandons,
        c.flowed_out,
    )
    match variant:
        case "answered":
            return a_t, a
        case "offered":
            return a_t, a + b
        case "abandon_within_ignored":
            return a_t, a + b - b_t
        case "abandon_within_met":
            return a_t + b_t, a + b
        case "short_abandon_excluded":
            return a_t, a + b - s
        case "short_abandon_met":
            return a_t + s, a + b
        case "with_flowouts":
            return a_t, a + b + f
    raise ContractError(f"variant: {variant!r} is not one of {VARIANTS}")


def service_level(counters: Counters, contract: Contract) -> ServiceLevel:
    """SL in percent under a contract; `value_pct` None when the denominator is zero."""
    num, den = sl_fraction(contract.variant, components(counters, contract))
    value = 100.0 * num / den if den else None
    return ServiceLevel(
        value_pct=value,
        numerator=num,
        denominator=den,
        variant=contract.variant,
        threshold_s=contract.threshold_s,
        inclusive=contract.inclusive,
        target_pct=contract.target_pct,
        met=None if value is None else value >= contract.target_pct,
        contract_version=contract.version,
    )


def asa_ms(counters: Counters) -> Ratio:
    """Average speed of answer: queue wait of answered legs ÷ answered (ms)."""
    return ratio(counters.wait_answered_ms, counters.answered)


def aht_ms(counters: Counters) -> Ratio:
    """Average handle time: (talk + hold + wrap-up) ÷ handled (ms)."""
    return ratio(counters.talk_ms + counters.hold_ms + counters.wrap_ms, counters.handled)


def abandon_rate(counters: Counters) -> Ratio:
    """Abandoned ÷ offered."""
    return ratio(counters.abandoned, counters.offered)


def abandon_rate_without_short(counters: Counters, contract: Contract) -> Ratio:
    """(Abandoned - short abandons) ÷ (offered - short abandons)."""
    s = count_within(counters.hist_abandoned, contract.short_abandon_s, False)
    return ratio(counters.abandoned - s, counters.offered - s)


def transfer_rate(counters: Counters) -> Ratio:
    """Answered legs ended by a transfer ÷ answered."""
    return ratio(counters.transferred, counters.answered)


def wait_percentile_upper_s(hist: list[int], fraction: float) -> int | None:
    """Smallest histogram edge (s) with at least `fraction` of the waits at or below it.

    None for an empty histogram, or when the quantile lies above the last edge.
    """
    total = sum(hist)
    if total == 0:
        return None
    need = fraction * total
    running = 0
    for k, edge in enumerate(WAIT_EDGES_S):
        running += hist[2 * k] + hist[2 * k + 1]
        if running >= need:
            return edge
    return None


def contract_at(contracts: list[Contract], queue_id: str, at_ms: int) -> Contract | None:
    """The contract in force for a queue at an instant: the queue's own, else the tenant's.

    Among several in force, the latest `effective_from_ms` wins, then the highest version.
    """
    best: Contract | None = None
    for c in contracts:
        if c.effective_from_ms > at_ms or c.queue_id not in (queue_id, None):
            continue
        if best is None or (c.queue_id is not None, c.effective_from_ms, c.version) > (
            best.queue_id is not None,
            best.effective_from_ms,
            best.version,
        ):
            best = c
    return best
