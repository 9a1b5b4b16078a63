"""GET /v1/teams/{team_id}/agents: a team's agents against the team average (team-lead view)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ...kpi.agents import AgentFigures, Change, team_figures
from ...kpi.contracts import Ratio
from ...kpi.counters import AGENT_STATES, AgentCounters, StateTime
from ...kpi.windows import from_ms, interval_at, rolling, today
from ..backend import Backend
from ..deps import BackendDep, ScopeDep, contract_for
from ..errors import ERROR_RESPONSES, ApiError
from ..views import RatioView

router = APIRouter(tags=["teams"])

TEAM_ROLES = ("admin", "teamlead")
Window = Literal["today", "interval", "rolling_15m", "rolling_30m", "rolling_60m"]
Outlier = Literal["aht_high", "aht_low", "occupancy_high", "occupancy_low"]


class TeamAgentView(BaseModel):
    """One agent now (state, time in it) and over the window, next to the team average."""

    agent_id: str
    state: str | None
    reason: str | None = Field(description="the aux reason (break, lunch, ...), if any")
    state_since: datetime | None
    time_in_state_ms: int | None = Field(description="at `as_of`; keeps growing until it changes")
    queues: list[str]
    handled: int
    aht_ms: RatioView = Field(description="(talk + hold + wrap-up) / handled, in the window")
    occupancy: RatioView = Field(
        description="(on call + wrap-up) / (on call + wrap-up + available) time, in the window"
    )
    aht_vs_team_pct: float | None = Field(description="how far above (+) or below (-) the team")
    occupancy_vs_team_pts: float | None = Field(description="percentage points from the team")
    outliers: list[Outlier]


class TeamSummaryView(BaseModel):
    """The team as a whole: sums divided (every call and millisecond weighs the same)."""

    agents: int
    agents_by_state: dict[str, int]
    handled: int
    aht_ms: RatioView
    occupancy: RatioView


class OutlierRule(BaseModel):
    aht_pct: float = Field(description="an agent's AHT further than this % from the team's")
    occupancy_pts: float = Field(description="occupancy further than this many points")


class TeamView(BaseModel):
    tenant_id: str
    team_id: str
    as_of: datetime
    timezone: str
    window: Window
    start: datetime
    end: datetime
    team: TeamSummaryView
    outlier_rule: OutlierRule
    agents: list[TeamAgentView]
    queues: list[str] = Field(description="the queues the team's agents serve")


def _ratio(r: Ratio) -> RatioView:
    return RatioView(value=r.value, numerator=r.numerator, denominator=r.denominator)


def _span(window: str, now_ms: int, tz: str, interval_min: int) -> tuple[int, int]:
    if window == "today":
        return today(now_ms, tz)
    if window == "interval":
        return interval_at(now_ms, tz, interval_min)
    return rolling(now_ms, int(window.removeprefix("rolling_").removesuffix("m")))


def _outliers(
    f: AgentFigures, rule: OutlierRule
) -> tuple[float | None, float | None, list[Outlier]]:
    found: list[Outlier] = []
    aht_pct = occ_pts = None
    if f.aht_ms.value is not None and f.team_aht_ms.value:
        aht_pct = (f.aht_ms.value / f.team_aht_ms.value - 1) * 100
        if aht_pct > rule.aht_pct:
            found.append("aht_high")
        elif aht_pct < -rule.aht_pct:
            found.append("aht_low")
    if f.occupancy.value is not None and f.team_occupancy.value is not None:
        occ_pts = (f.occupancy.value - f.team_occupancy.value) * 100
        if occ_pts > rule.occupancy_pts:
            found.append("occupancy_high")
        elif occ_pts < -rule.occupancy_pts:
            found.append("occupancy_low")
    return aht_pct, occ_pts, found


def team_view(
    backend: Backend, tenant: str, team_id: str, window: Window, now_ms: int, rule: OutlierRule
) -> TeamView | None:
    """The team's figures at `now_ms`, or None when no agent's latest state names the team.

    An agent belongs to the team of its latest state change; its counters over the window
    count for that team. Time in state adds the open segment since the latest change."""
    members = {a: c for a, c in backend.agents(tenant).items() if c.team_id == team_id}
    if not members:
        return None
    contract = contract_for(backend, tenant, "", now_ms)  # the tenant's default: its zone
    start, end = _span(window, now_ms, contract.timezone, contract.interval_min)
    counters = backend.agent_counters(tenant, start, end)
    times = backend.state_times(tenant, start, end)
    inputs: dict[str, tuple[str, Change | None, AgentCounters, StateTime]] = {}
    for agent, change in members.items():
        in_state = StateTime()
        in_state.merge(times.get(agent, StateTime()))
        open_ms = min(now_ms, end) - max(change.at, start)
        if open_ms > 0:
            in_state.add(change.state, open_ms)
        inputs[agent] = (team_id, change, counters.get(agent, AgentCounters()), in_state)
    figures = team_figures(inputs)
    team_counters = AgentCounters()
    for _, _, c, _ in inputs.values():
        team_counters.merge(c)
    by_state = dict.fromkeys(AGENT_STATES, 0)
    agents = []
    for f in figures:
        change = members[f.agent_id]
        by_state[change.state] += 1
        aht_pct, occ_pts, found = _outliers(f, rule)
        agents.append(
            TeamAgentView(
                agent_id=f.agent_id,
                state=f.state,
                reason=change.reason,
                state_since=from_ms(change.at),
                time_in_state_ms=max(0, now_ms - change.at),
                queues=list(change.queues),
                handled=f.handled,
                aht_ms=_ratio(f.aht_ms),
                occupancy=_ratio(f.occupancy),
                aht_vs_team_pct=aht_pct,
                occupancy_vs_team_pts=occ_pts,
                outliers=found,
            )
        )
    first = figures[0]
    return TeamView(
        tenant_id=tenant,
        team_id=team_id,
        as_of=from_ms(now_ms),
        timezone=contract.timezone,
        window=window,
        start=from_ms(start),
        end=from_ms(end),
        team=TeamSummaryView(
            agents=len(members),
            agents_by_state=by_state,
            handled=team_counters.handled,
            aht_ms=_ratio(first.team_aht_ms),
            occupancy=_ratio(first.team_occupancy),
        ),
        outlier_rule=rule,
        agents=agents,
        queues=sorted({q for c in members.values() for q in c.queues}),
    )


@router.get("/v1/teams/{team_id}/agents", response_model=TeamView, responses=ERROR_RESPONSES)
async def get_team_agents(
    team_id: Annotated[str, Path(min_length=1, max_length=128)],
    scope: ScopeDep,
    backend: BackendDep,
    window: Annotated[Window, Query(description="the tenant's local day, interval, or rolling")] = (
        "today"
    ),
    aht_outlier_pct: Annotated[float, Query(gt=0, le=1000)] = 25.0,
    occupancy_outlier_pts: Annotated[float, Query(gt=0, le=100)] = 15.0,
) -> TeamView:
    """The team's agents with state and time in state, handled, AHT and occupancy over the
    window, each against the team average; outliers beyond the given margins are flagged.
    Handle time counts in the minute wrap-up ended. For team-lead and admin keys."""
    if scope.principal.role not in TEAM_ROLES:
        raise ApiError(403, "forbidden", f"a {scope.principal.role} key may not read team figures")
    granted = scope.principal.teams  # a teamlead key may be limited to some teams
    rule = OutlierRule(aht_pct=aht_outlier_pct, occupancy_pts=occupancy_outlier_pts)
    view = team_view(backend, scope.tenant_id, team_id, window, int(time.time() * 1000), rule)
    if view is None or (granted is not None and team_id not in granted):
        raise ApiError(404, "not_found", f"no agent of team {team_id!r} for this tenant")
    return view
