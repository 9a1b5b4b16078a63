"""Period figures behind summaries, reports and roll-ups: one computation, several routes.

A *section* is one queue (or a roll-up of queues) over one period in one zone:
- the period is cut into the contract's local-clock intervals (15/30/60 min); intervals
  that start outside the contract's business hours (if it names any) do not count;
- each interval is judged under the contract in force at its start (or the pinned version);
- the period figure is the sum of the counted intervals' counters under the contract in
  force at the period's start (or the pinned version), so interval totals always add up to
  the day and period totals;
- attainment is the share of counted intervals whose SL met their contract's target.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from ..kpi.contracts import Contract, contract_at, service_level
from ..kpi.counters import Counters, merged
from ..kpi.periods import (
    attainment,
    in_business_hours,
    local_days,
    local_label,
    span_intervals,
)
from ..kpi.quality import Contact, SurveyScore, contacts, csat, fcr
from ..kpi.windows import Span, day_span, from_ms
from .backend import Backend
from .errors import ApiError
from .views import RatioView, WindowView, window_view

ContractAt = Callable[[int], Contract]
Rows = Literal["interval", "day"] | None


class AttainmentView(BaseModel):
    """SLA attainment: the share of intervals whose SL met the target."""

    value_pct: float | None = Field(description="met / measured, percent; null if none measured")
    met: int
    measured: int = Field(description="intervals with a defined SL (non-zero denominator)")
    intervals: int = Field(description="intervals counted (inside business hours)")
    interval_min: int


class FcrView(BaseModel):
    """First-contact resolution by repeat contact (same caller key, same tenant)."""

    value: float | None = Field(description="resolved / (resolved + repeated); null if none")
    numerator: int
    denominator: int
    contacts: int = Field(description="contacts with a caller key that started in the period")
    resolved: int
    repeated: int
    pending: int = Field(description="window still open and no repeat yet: not final")
    window_h: int


class QualityView(BaseModel):
    """CSAT (surveys completed in the period) and FCR (contacts started in it)."""

    csat: RatioView = Field(description="satisfied surveys / surveys")
    csat_satisfied_pct: float = Field(description="satisfied: score >= this % of the scale")
    fcr: FcrView


class ReportRow(BaseModel):
    """One interval or one local day of a report."""

    label: str = Field(description="local start, e.g. 2026-03-08T03:00-04:00")
    in_business_hours: bool
    figures: WindowView
    attainment: AttainmentView | None = Field(description="day rows: the day's intervals")


class Section(BaseModel):
    """One queue (or, `queue_id` null, a roll-up of the tenant's queues) over a period."""

    queue_id: str | None
    timezone: str
    start: datetime
    end: datetime
    figures: WindowView = Field(description="the period total under the period's contract")
    attainment: AttainmentView
    contract_versions: list[int] = Field(description="contract versions of the intervals")
    quality: QualityView | None = None
    rows: list[ReportRow] = []


# -- contracts -------------------------------------------------------------------------------


def tenant_default(contracts: list[Contract], tenant: str, at_ms: int) -> Contract:
    """The tenant's default contract in force at an instant (built-in version 0 if none)."""
    found = contract_at([c for c in contracts if c.queue_id is None], "", at_ms)
    return found if found is not None else Contract(tenant_id=tenant, version=0)


def queue_contract(contracts: list[Contract], tenant: str, queue: str, at_ms: int) -> Contract:
    """The queue's contract in force at an instant: its own, else the tenant's, else v0."""
    found = contract_at(contracts, queue, at_ms)
    return found if found is not None else Contract(tenant_id=tenant, version=0)


def pinned_contract(
    contracts: list[Contract], queue: str | None, version: int
) -> Contract:  # fmt: skip
    """Contract `version` for a queue (its own, else the tenant default's), or for the
    tenant (default contracts only); 404 when there is none."""
    own = [c for c in contracts if c.version == version and c.queue_id == queue]
    default = [c for c in contracts if c.version == version and c.queue_id is None]
    found = own or default
    if not found:
        where = "this tenant" if queue is None else f"queue {queue!r}"
        raise ApiError(404, "not_found", f"no contract version {version} for {where}")
    return found[0]


def contract_lookup(
    contracts: list[Contract], tenant: str, queue: str | None, pinned: int | None
) -> ContractAt:
    """A function instant -> contract for a queue (None: the tenant's roll-up)."""
    if pinned is not None:
        fixed = pinned_contract(contracts, queue, pinned)
        return lambda _: fixed
    if queue is None:
        return lambda at: tenant_default(contracts, tenant, at)
    return lambda at: queue_contract(contracts, tenant, queue, at)


# -- sections ----------------------------------------------------------------------------------


def interval_totals(buckets: dict[int, Counters], spans: list[Span]) -> list[Counters]:
    """The summed buckets of each span (spans sorted and disjoint)."""
    minutes = sorted(buckets)
    out = []
    for start, end in spans:
        lo, hi = bisect_left(minutes, start), bisect_left(minutes, end)
        out.append(merged([buckets[m] for m in minutes[lo:hi]]))
    return out


TotalsOf = Callable[[list[Span]], list[Counters]]


def combined(maps: list[dict[int, Counters]]) -> TotalsOf:
    """Interval totals of several queues together: each queue's intervals, then summed
    across the queues (not minute by minute: a month has 43 200 minutes per queue)."""

    def totals(spans: list[Span]) -> list[Counters]:
        per_queue = [interval_totals(m, spans) for m in maps]
        if not per_queue:
            return [Counters() for _ in spans]
        return [merged(list(column)) for column in zip(*per_queue, strict=True)]

    return totals


def _attainment_view(levels: list, interval_min: int) -> AttainmentView:  # type: ignore[type-arg]
    a = attainment(levels)
    return AttainmentView(
        value_pct=a.value_pct, met=a.met, measured=a.measured, intervals=a.intervals,
        interval_min=interval_min,
    )  # fmt: skip


def section(
    queue: str | None, buckets: dict[int, Counters] | TotalsOf, span: Span,
    contract_at_ms: ContractAt, rows: Rows = None,
) -> Section:  # fmt: skip
    """Figures of one queue (its buckets by minute) or of a roll-up (a function giving the
    totals of intervals) over `span`; see the module docstring."""
    grid = contract_at_ms(span[0])
    tz, length = grid.timezone, grid.interval_min
    spans = span_intervals(span, tz, length)
    totals = buckets(spans) if callable(buckets) else interval_totals(buckets, spans)
    contracts = [contract_at_ms(s[0]) for s in spans]
    counted = [in_business_hours(s[0], c) for s, c in zip(spans, contracts, strict=True)]
    levels = [
        service_level(t, c)
        for t, c, ok in zip(totals, contracts, counted, strict=True)
        if ok
    ]  # fmt: skip
    whole = merged([t for t, ok in zip(totals, counted, strict=True) if ok])
    out_rows: list[ReportRow] = []
    if rows == "interval":
        out_rows = [
            ReportRow(
                label=local_label(s[0], tz), in_business_hours=ok,
                figures=window_view("interval", s, t, c), attainment=None,
            )
            for s, t, c, ok in zip(spans, totals, contracts, counted, strict=True)
        ]  # fmt: skip
    elif rows == "day":
        for day in local_days(span, tz):
            d_span = day_span(day, tz)
            idx = [i for i, s in enumerate(spans) if d_span[0] <= s[0] < d_span[1]]
            day_total = merged([totals[i] for i in idx if counted[i]])
            day_levels = [service_level(totals[i], contracts[i]) for i in idx if counted[i]]
            out_rows.append(
                ReportRow(
                    label=day.isoformat(),
                    in_business_hours=any(counted[i] for i in idx),
                    figures=window_view("day", d_span, day_total, contract_at_ms(d_span[0])),
                    attainment=_attainment_view(day_levels, length),
                )
            )
    return Section(
        queue_id=queue,
        timezone=tz,
        start=from_ms(span[0]),
        end=from_ms(span[1]),
        figures=window_view("period", span, whole, grid),
        attainment=_attainment_view(levels, length),
        contract_versions=sorted({c.version for c in contracts}),
        rows=out_rows,
    )


# -- quality -----------------------------------------------------------------------------------

DAY_MS = 86_400_000


class QualityInputs:
    """The surveys and contacts of one tenant around a period, fetched once per request."""

    def __init__(self, backend: Backend, tenant: str, span: Span, window_h: int) -> None:
        self.span = span
        self.surveys = backend.surveys(tenant, span[0], span[1])
        # A call's first leg may lie before the period; a repeat up to a window after it.
        legs = backend.contact_legs(tenant, span[0] - DAY_MS, span[1] + window_h * 3_600_000)
        self.contacts: list[Contact] = contacts(legs)

    def view(
        self, contract: Contract, queues: list[str] | None, span: Span, now_ms: int
    ) -> QualityView:  # fmt: skip
        """Quality of some queues (None: the whole tenant, surveys without a queue too)."""
        wanted = None if queues is None else set(queues)
        scores = [
            SurveyScore(s.score, s.scale_max)
            for s in self.surveys
            if span[0] <= s.at_ms < span[1] and (wanted is None or s.queue_id in wanted)
        ]
        c = csat(scores, contract.csat_satisfied_pct)
        f = fcr(self.contacts, span[0], span[1], contract.fcr_window_h, now_ms, wanted)
        num, den = f.resolved, f.resolved + f.repeated
        return QualityView(
            csat=RatioView(value=c.value, numerator=c.numerator, denominator=c.denominator),
            csat_satisfied_pct=contract.csat_satisfied_pct,
            fcr=FcrView(
                value=num / den if den else None, numerator=num, denominator=den,
                contacts=f.contacts, resolved=f.resolved, repeated=f.repeated,
                pending=f.pending, window_h=f.window_h,
            ),
        )  # fmt: skip
