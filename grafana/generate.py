"""Write the checked-in Grafana 11 dashboards and alert rules from one description.

    .venv/bin/python grafana/generate.py          # rewrite grafana/dashboards/*.json and
                                                  # grafana/provisioning/alerting/rules.yaml
    .venv/bin/python grafana/generate.py --check  # exit 1 if the checked-in files differ

The output is deterministic (no timestamps, stable ids), so the files in the repository are
exactly what this script writes; tests/test_grafana_boards.py fails when they drift.

Every SQL figure comes from the reporting functions of `services/store/pg_reporting.py`
(the API's formulas in SQL: each queue's contract, threshold, variant and `<`/`<=`, local
intervals in the contract's zone). "Now" is `$__timeTo()`: the end of the dashboard's time
range, which is the current time for the relative ranges the boards use, and the
evaluation time for alert rules. Template variables are interpolated with
`${var:sqlstring}` (each value quoted, quotes doubled), so a tenant or queue name cannot
break out of its literal.
"""

# The SQL is text for Grafana to run under its read-only role, not built from input here.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent
DASHBOARDS = ROOT / "dashboards"
ALERT_RULES = ROOT / "provisioning" / "alerting" / "rules.yaml"

PG = {"type": "grafana-postgresql-datasource", "uid": "callpulse-pg"}
PROM = {"type": "prometheus", "uid": "callpulse-prom"}
EXPR = {"type": "__expr__", "uid": "__expr__"}
SCHEMA_VERSION = 39  # Grafana 11.0-11.2 dashboards (later 11.x migrate it on load)
TAGS = ["callpulse"]
STATES = ("available", "on_call", "wrapup", "aux", "offline")

Json = dict[str, Any]

# -- SQL snippets ------------------------------------------------------------------------------

NOW = "$__timeTo()::timestamptz"
TENANT = "${tenant:sqlstring}"
QUEUES = "${queue:sqlstring}"
TEAM = "${team:sqlstring}"
#: The end of the current minute (the API's live windows end there).
MINUTE_END = f"date_bin('1 minute', {NOW}, timestamptz 'epoch') + interval '1 minute'"


def today_start(contract: str) -> str:
    """Local midnight of today in the zone of contract row `contract`."""
    return f"local_day_start(({NOW} AT TIME ZONE {contract}.timezone)::date, {contract}.timezone)"


def queues_of(tenant: str = TENANT) -> str:
    return f"tenant_queues({tenant}) q"


def live(window: str, columns: str) -> str:
    """One live window per selected queue, as the API's /v1/queues/{q}/live computes it."""
    return f"""SELECT q.queue_id AS queue, {columns}
FROM {queues_of()}
CROSS JOIN LATERAL queue_live({TENANT}, q.queue_id, $__timeTo()) w
WHERE q.queue_id IN ({QUEUES}) AND w.window_name = '{window}'
ORDER BY q.queue_id"""


SQL_GAUGES = f"""SELECT q.queue_id AS queue,
       coalesce(g.calls_waiting, 0) AS calls_waiting,
       CASE WHEN g.oldest_queued_at_ms IS NULL THEN 0
            ELSE greatest(0, epoch_ms($__timeTo()) - g.oldest_queued_at_ms)::float8 / 1000
       END AS longest_wait_s
FROM {queues_of()}
LEFT JOIN LATERAL (
    SELECT s.calls_waiting, s.oldest_queued_at_ms FROM queue_snapshots s
    WHERE s.tenant_id = {TENANT} AND s.queue_id = q.queue_id AND s.at <= $__timeTo()
    ORDER BY s.at DESC LIMIT 1) g ON true
WHERE q.queue_id IN ({QUEUES})
ORDER BY q.queue_id"""

SQL_AGENTS_BY_STATE = f"""SELECT st.state, count(a.agent_id) AS agents
FROM unnest(ARRAY['{"', '".join(STATES)}']) WITH ORDINALITY AS st(state, ord)
LEFT JOIN agents a ON a.tenant_id = {TENANT} AND a.state = st.state
    AND a.queues::jsonb ?| ARRAY[{QUEUES}]
GROUP BY st.state, st.ord
ORDER BY st.ord"""

SQL_TODAY_TABLE = live(
    "today",
    """w.offered, w.answered, w.abandoned, w.flowed_out, w.sl_pct, w.target_pct, w.variant,
       w.answered - coalesce(hist_within(w.hist_answered, 0, true), 0) AS waited,
       CASE WHEN w.answered > 0 THEN w.wait_answered_ms::float8 / w.answered / 1000 END
           AS asa_s,
       CASE WHEN w.handled > 0
            THEN (w.talk_ms + w.hold_ms + w.wrap_ms)::float8 / w.handled / 1000 END AS aht_s,
       CASE WHEN w.offered > 0 THEN 100.0::float8 * w.abandoned / w.offered END AS abandon_pct""",
)

SQL_INTERVALS_TODAY = f"""SELECT i.start_at AS "time", q.queue_id AS metric, i.sl_pct
FROM {queues_of()}
CROSS JOIN LATERAL contract_at({TENANT}, q.queue_id, $__timeTo()) c
CROSS JOIN LATERAL queue_intervals({TENANT}, q.queue_id, {today_start("c")}, $__timeTo()) i
WHERE q.queue_id IN ({QUEUES})
ORDER BY 1, 2"""

SQL_TEAM_AGENTS = f"""SELECT a.agent_id AS agent, a.state,
       a.time_in_state_ms::float8 / 1000 AS time_in_state_s, a.handled,
       a.aht_ms / 1000 AS aht_s, a.team_aht_ms / 1000 AS team_aht_s, a.aht_vs_team_pct,
       a.occupancy * 100 AS occupancy_pct, a.team_occupancy * 100 AS team_occupancy_pct,
       a.occupancy_vs_team_pts
FROM contract_at({TENANT}, NULL, $__timeTo()) c
CROSS JOIN LATERAL team_agents({TENANT}, {TEAM}, {today_start("c")}, {MINUTE_END},
                               $__timeTo()) a
ORDER BY a.agent_id"""

SQL_TEAM_STATES = f"""SELECT st.state, count(a.agent_id) AS agents
FROM unnest(ARRAY['{"', '".join(STATES)}']) WITH ORDINALITY AS st(state, ord)
LEFT JOIN agents a ON a.tenant_id = {TENANT} AND a.team_id = {TEAM} AND a.state = st.state
GROUP BY st.state, st.ord
ORDER BY st.ord"""

SQL_TEAM_HOURLY = f"""SELECT $__timeGroupAlias(b.bucket, '1h'),
       sum(b.handled) AS handled,
       sum(b.talk_ms + b.hold_ms + b.wrap_ms)::float8 / nullif(sum(b.handled), 0) / 1000
           AS aht_s
FROM agent_buckets b
JOIN agents a ON a.tenant_id = b.tenant_id AND a.agent_id = b.agent_id
WHERE b.tenant_id = {TENANT} AND a.team_id = {TEAM} AND $__timeFilter(b.bucket)
GROUP BY 1
ORDER BY 1"""

SQL_WAITING_SERIES = f"""SELECT $__timeGroupAlias(at, $__interval), queue_id AS metric,
       max(calls_waiting) AS calls_waiting
FROM queue_snapshots
WHERE tenant_id = {TENANT} AND queue_id IN ({QUEUES}) AND $__timeFilter(at)
GROUP BY 1, 2
ORDER BY 1"""


def intervals(columns: str) -> str:
    """Contract intervals over the dashboard's range, per selected queue."""
    return f"""SELECT i.start_at AS "time", q.queue_id AS metric, {columns}
FROM {queues_of()}
CROSS JOIN LATERAL queue_intervals({TENANT}, q.queue_id, $__timeFrom(), $__timeTo()) i
WHERE q.queue_id IN ({QUEUES})
ORDER BY 1, 2"""


_SECTION_COLUMNS = """s.contract_versions::text AS contract_versions, s.variant, s.threshold_s,
       CASE WHEN s.inclusive THEN '<=' ELSE '<' END AS within, s.target_pct, s.sl_pct,
       s.sl_numerator, s.sl_denominator, s.attainment_pct, s.intervals_met,
       s.intervals_measured, s.intervals_counted, s.offered, s.answered, s.abandoned,
       s.timezone, s.interval_min"""

SQL_ATTAINMENT = f"""SELECT q.queue_id AS queue, {_SECTION_COLUMNS}
FROM {queues_of()}
CROSS JOIN LATERAL queue_section({TENANT}, q.queue_id, $__timeFrom(), $__timeTo()) s
WHERE q.queue_id IN ({QUEUES})
UNION ALL
SELECT '(all queues)', {_SECTION_COLUMNS}
FROM queue_section({TENANT}, NULL, $__timeFrom(), $__timeTo()) s
ORDER BY 1"""

SQL_DAILY = f"""SELECT q.queue_id AS queue, d.day::text AS day, s.sl_pct, s.target_pct,
       s.attainment_pct, s.intervals_met, s.intervals_measured, s.offered, s.answered
FROM {queues_of()}
CROSS JOIN LATERAL contract_at({TENANT}, q.queue_id, $__timeFrom()) c
CROSS JOIN LATERAL (
    SELECT ($__timeFrom()::timestamptz AT TIME ZONE c.timezone)::date + k AS day
    FROM generate_series(0, ($__timeTo()::timestamptz AT TIME ZONE c.timezone)::date
                            - ($__timeFrom()::timestamptz AT TIME ZONE c.timezone)::date) k) d
CROSS JOIN LATERAL queue_section({TENANT}, q.queue_id, local_day_start(d.day, c.timezone),
                                 local_day_start(d.day + 1, c.timezone)) s
WHERE q.queue_id IN ({QUEUES})
ORDER BY 1, 2"""

SQL_INTERVAL_TABLE = f"""SELECT q.queue_id AS queue, i.start_at AS interval_start, i.offered,
       i.answered, i.abandoned, i.flowed_out, i.sl_pct, i.sl_numerator, i.sl_denominator,
       i.target_pct, i.sl_met, i.contract_version, i.in_business_hours
FROM {queues_of()}
CROSS JOIN LATERAL queue_intervals({TENANT}, q.queue_id, $__timeFrom(), $__timeTo()) i
WHERE q.queue_id IN ({QUEUES})
ORDER BY 1, 2"""

TENANTS = "${tenant:sqlstring}"
TZ = "${tz:sqlstring}"

SQL_CLIENTS = f"""SELECT t.tenant_id AS client, s.offered, s.answered, s.abandoned, s.sl_pct,
       s.target_pct, s.variant, s.threshold_s, s.attainment_pct, s.intervals_met,
       s.intervals_measured, s.contract_versions::text AS contract_versions
FROM unnest(ARRAY[{TENANTS}]) AS t(tenant_id)
CROSS JOIN LATERAL queue_section(t.tenant_id, NULL, $__timeFrom(), $__timeTo(), {TZ}) s
ORDER BY 1"""

SQL_FLOOR = f"""SELECT s.offered, s.answered, s.abandoned, s.sl_pct, s.target_pct,
       s.attainment_pct
FROM queue_section(NULL, NULL, $__timeFrom(), $__timeTo(), {TZ}) s"""

SQL_OPS_QUEUES = f"""SELECT t.tenant_id AS client, q.queue_id AS queue, s.offered, s.answered,
       s.abandoned, s.sl_pct, s.target_pct, s.variant, s.threshold_s,
       CASE WHEN s.inclusive THEN '<=' ELSE '<' END AS within, s.attainment_pct
FROM unnest(ARRAY[{TENANTS}]) AS t(tenant_id)
CROSS JOIN LATERAL tenant_queues(t.tenant_id) q
CROSS JOIN LATERAL queue_section(t.tenant_id, q.queue_id, $__timeFrom(), $__timeTo()) s
ORDER BY 1, 2"""

SQL_OPS_VOLUME = f"""SELECT $__timeGroupAlias(bucket, '1h'), tenant_id AS metric,
       sum(offered) AS offered
FROM queue_buckets
WHERE tenant_id IN ({TENANTS}) AND $__timeFilter(bucket)
GROUP BY 1, 2
ORDER BY 1"""

SQL_OPS_SL = f"""SELECT h.time, h.tenant_id AS metric, f.value_pct AS sl_pct
FROM (
    SELECT $__timeGroupAlias(bucket, '1h'), tenant_id,
           hist_sum(hist_answered) AS ha, hist_sum(hist_abandoned) AS hb,
           sum(answered)::bigint AS a, sum(abandoned)::bigint AS b,
           sum(flowed_out)::bigint AS fo
    FROM queue_buckets
    WHERE tenant_id IN ({TENANTS}) AND $__timeFilter(bucket)
    GROUP BY 1, 2) h
CROSS JOIN LATERAL contract_at(h.tenant_id, NULL, $__timeTo()) c
CROSS JOIN LATERAL sl_figures(h.ha, h.hb, h.a, h.b, h.fo, c.variant, c.threshold_s,
                              c.short_abandon_s, c.inclusive, c.target_pct) f
ORDER BY 1, 2"""

SQL_OPS_WAITING = f"""SELECT t.tenant_id AS client,
       coalesce(sum(g.calls_waiting), 0) AS calls_waiting,
       coalesce(max(CASE WHEN g.oldest_queued_at_ms IS NOT NULL THEN
           greatest(0, epoch_ms($__timeTo()) - g.oldest_queued_at_ms)::float8 / 1000 END), 0)
           AS longest_wait_s
FROM unnest(ARRAY[{TENANTS}]) AS t(tenant_id)
CROSS JOIN LATERAL tenant_queues(t.tenant_id) q
LEFT JOIN LATERAL (
    SELECT s.calls_waiting, s.oldest_queued_at_ms FROM queue_snapshots s
    WHERE s.tenant_id = t.tenant_id AND s.queue_id = q.queue_id AND s.at <= $__timeTo()
    ORDER BY s.at DESC LIMIT 1) g ON true
GROUP BY t.tenant_id
ORDER BY 1"""

SQL_PARTITIONS = """SELECT topic, partition, applied_offset,
       extract(epoch FROM ($__timeTo()::timestamptz - updated_at)) AS since_write_s,
       (epoch_ms($__timeTo()) - max_seen_ms)::float8 / 1000 AS event_time_age_s
FROM aggregator_partitions
ORDER BY topic, partition"""

# -- template variables ---------------------------------------------------------------------

SQL_VAR_TENANT = """SELECT tenant_id FROM tenants
UNION SELECT tenant_id FROM known_queues
UNION SELECT tenant_id FROM contracts
ORDER BY 1"""
SQL_VAR_QUEUE = f"SELECT queue_id FROM tenant_queues({TENANT})"
SQL_VAR_TEAM = f"SELECT DISTINCT team_id FROM agents WHERE tenant_id = {TENANT} ORDER BY 1"
ZONES = (
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Manila",
    "Australia/Sydney",
)


def query_var(name: str, label: str, sql: str, *, multi: bool = False) -> Json:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PG,
        "definition": sql,
        "query": sql,
        "refresh": 1,  # on dashboard load
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


def tz_var() -> Json:
    return {
        "name": "tz",
        "label": "Report zone",
        "type": "custom",
        "query": ",".join(ZONES),
        "current": {"selected": True, "text": "UTC", "value": "UTC"},
        "options": [{"selected": z == "UTC", "text": z, "value": z} for z in ZONES],
        "multi": False,
        "includeAll": False,
        "hide": 0,
        "skipUrlSync": False,
    }


# -- panels ---------------------------------------------------------------------------------


def thresholds(*steps: tuple[str, float | None]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def sql_target(sql: str, fmt: str = "table", ref: str = "A") -> Json:
    return {
        "refId": ref,
        "datasource": PG,
        "editorMode": "code",
        "format": fmt,
        "rawQuery": True,
        "rawSql": sql,
    }


def prom_target(expr: str, legend: str, ref: str) -> Json:
    return {
        "refId": ref,
        "datasource": PROM,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
    }


class Board:
    """Panels laid out left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def add(self, panel: Json, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    description: str = "",
    unit: str | None = None,
    decimals: int | None = None,
    steps: Json | None = None,
    options: Json | None = None,
    overrides: list[Json] | None = None,
    min_: float | None = None,
    max_: float | None = None,
) -> Json:
    defaults: Json = {"mappings": []}
    if unit is not None:
        defaults["unit"] = unit
    if decimals is not None:
        defaults["decimals"] = decimals
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    defaults["thresholds"] = steps or thresholds(("green", None))
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 2,
            "fillOpacity": 10,
            "spanNulls": False,
            "showPoints": "auto",
        }
    ds = targets[0]["datasource"]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": ds,
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }


def stat_options(field: str, color_mode: str = "background") -> Json:
    """One big number per row of the result (each named by the row's text columns)."""
    return {
        "reduceOptions": {"values": True, "calcs": ["lastNotNull"], "fields": f"/^{field}$/"},
        "orientation": "auto",
        "textMode": "value_and_name",
        "colorMode": color_mode,
        "graphMode": "none",
        "justifyMode": "center",
        "wideLayout": True,
        "showPercentChange": False,
    }


def table_options() -> Json:
    return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}


def by_name(name: str, **props: Any) -> Json:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": k.replace("_", "."), "value": v} for k, v in props.items()],
    }


SL_STEPS = thresholds(("red", None), ("orange", 70), ("green", 80))
VS_TARGET_STEPS = thresholds(("red", None), ("green", 0))


def dashboard(
    uid: str,
    title: str,
    description: str,
    board: Board,
    variables: list[Json],
    *,
    refresh: str,
    time_from: str,
    time_to: str = "now",
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "weekStart": "monday",
        "time": {"from": time_from, "to": time_to},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "title": "CallPulse",
                "includeVars": False,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": variables},
        "panels": board.panels,
    }


def tenant_queue_vars(*, team: bool = False) -> list[Json]:
    out = [
        query_var("tenant", "Client", SQL_VAR_TENANT),
        query_var("queue", "Queue", SQL_VAR_QUEUE, multi=True),
    ]
    if team:
        out.append(query_var("team", "Team", SQL_VAR_TEAM))
    return out


# -- the boards -----------------------------------------------------------------------------


def wallboard() -> Json:
    b = Board()
    b.add(
        panel(
            "stat",
            "Service level today",
            [
                sql_target(
                    live(
                        "today",
                        """w.sl_pct, w.target_pct,
       w.sl_numerator, w.sl_denominator, w.threshold_s, w.contract_version""",
                    )
                )
            ],
            description="Since local midnight in each queue's contract zone, with the contract's "
            "formula, threshold and <=/< (the API's `today` window). Empty when no call counts.",
            unit="percent",
            decimals=1,
            steps=SL_STEPS,
            options=stat_options("sl_pct"),
            min_=0,
            max_=100,
        ),
        12,
        7,
    )
    b.add(
        panel(
            "stat",
            "Against target today (points)",
            [sql_target(live("today", "w.sl_pct - w.target_pct AS sl_vs_target_pts"))],
            description="SL today minus the contract's target: green at or above target.",
            unit="none",
            decimals=1,
            steps=VS_TARGET_STEPS,
            options=stat_options("sl_vs_target_pts"),
        ),
        12,
        7,
    )
    b.add(
        panel(
            "stat",
            "Calls waiting",
            [sql_target(SQL_GAUGES)],
            description="From the aggregator's latest snapshot of each queue.",
            unit="none",
            decimals=0,
            steps=thresholds(("green", None), ("orange", 5), ("red", 10)),
            options=stat_options("calls_waiting"),
        ),
        8,
        6,
    )
    b.add(
        panel(
            "stat",
            "Longest wait now",
            [sql_target(SQL_GAUGES)],
            description="The oldest caller still waiting; keeps ticking between events.",
            unit="s",
            decimals=0,
            steps=thresholds(("green", None), ("orange", 60), ("red", 180)),
            options=stat_options("longest_wait_s"),
        ),
        8,
        6,
    )
    b.add(
        panel(
            "stat",
            "Service level, last 30 minutes",
            [sql_target(live("rolling_30m", "w.sl_pct, w.target_pct"))],
            unit="percent",
            decimals=1,
            steps=SL_STEPS,
            options=stat_options("sl_pct"),
            min_=0,
            max_=100,
        ),
        8,
        6,
    )
    b.add(
        panel(
            "bargauge",
            "Agents by state",
            [sql_target(SQL_AGENTS_BY_STATE)],
            description="Agents serving the selected queues, by current state.",
            unit="none",
            decimals=0,
            steps=thresholds(("blue", None)),
            options={
                "reduceOptions": {"values": True, "calcs": ["lastNotNull"], "fields": "/^agents$/"},
                "orientation": "horizontal",
                "displayMode": "basic",
                "showUnfilled": True,
                "valueMode": "color",
                "namePlacement": "auto",
                "sizing": "auto",
                "minVizHeight": 16,
                "minVizWidth": 8,
                "maxVizHeight": 300,
            },
        ),
        8,
        8,
    )
    b.add(
        panel(
            "table",
            "Today by queue",
            [sql_target(SQL_TODAY_TABLE)],
            options=table_options(),
            overrides=[
                by_name(
                    "sl_pct",
                    unit="percent",
                    decimals=1,
                    thresholds=SL_STEPS,
                    custom_cellOptions={"type": "color-background"},
                ),
                by_name("target_pct", unit="percent", decimals=0),
                by_name("asa_s", unit="s", decimals=1),
                by_name("aht_s", unit="s", decimals=0),
                by_name("abandon_pct", unit="percent", decimals=1),
            ],
        ),
        16,
        8,
    )
    b.add(
        panel(
            "timeseries",
            "Service level per interval today",
            [sql_target(SQL_INTERVALS_TODAY, "time_series")],
            description="Each interval of the contract (15/30/60 min, local clock) under the "
            "contract in force at its start.",
            unit="percent",
            decimals=1,
            min_=0,
            max_=100,
        ),
        24,
        8,
    )
    return dashboard(
        "callpulse-wallboard",
        "CallPulse / Floor wallboard",
        "Kiosk board for the floor TV (open with ?kiosk). Big numbers, colours at thresholds.",
        b,
        tenant_queue_vars(),
        refresh="5s",
        time_from="now-12h",
    )


def team_lead() -> Json:
    b = Board()
    aht_steps = thresholds(("green", None), ("orange", 15), ("red", 25))
    b.add(
        panel(
            "table",
            "Agents against the team average (today)",
            [sql_target(SQL_TEAM_AGENTS)],
            description="An agent belongs to the team of its latest state change; today is the "
            "tenant's local day (default contract zone). AHT = (talk + hold + wrap-up) / handled, "
            "occupancy = (on call + wrap-up) / (on call + wrap-up + available); team figures are "
            "sums divided. The API's /v1/teams/{team}/agents.",
            options=table_options(),
            overrides=[
                by_name("time_in_state_s", unit="s", decimals=0),
                by_name("aht_s", unit="s", decimals=0),
                by_name("team_aht_s", unit="s", decimals=0),
                by_name(
                    "aht_vs_team_pct",
                    unit="percent",
                    decimals=0,
                    thresholds=aht_steps,
                    custom_cellOptions={"type": "color-text"},
                ),
                by_name("occupancy_pct", unit="percent", decimals=0),
                by_name("team_occupancy_pct", unit="percent", decimals=0),
                by_name("occupancy_vs_team_pts", decimals=1),
            ],
        ),
        16,
        10,
    )
    b.add(
        panel(
            "bargauge",
            "Team by state",
            [sql_target(SQL_TEAM_STATES)],
            unit="none",
            decimals=0,
            steps=thresholds(("blue", None)),
            options={
                "reduceOptions": {"values": True, "calcs": ["lastNotNull"], "fields": "/^agents$/"},
                "orientation": "horizontal",
                "displayMode": "basic",
                "showUnfilled": True,
                "valueMode": "color",
                "namePlacement": "auto",
                "sizing": "auto",
                "minVizHeight": 16,
                "minVizWidth": 8,
                "maxVizHeight": 300,
            },
        ),
        8,
        10,
    )
    b.add(
        panel(
            "timeseries",
            "Service level per interval",
            [sql_target(intervals("i.sl_pct"), "time_series")],
            unit="percent",
            decimals=1,
            min_=0,
            max_=100,
        ),
        12,
        8,
    )
    b.add(
        panel(
            "timeseries",
            "Calls waiting",
            [sql_target(SQL_WAITING_SERIES, "time_series")],
            unit="none",
            decimals=0,
        ),
        12,
        8,
    )
    b.add(
        panel(
            "timeseries",
            "Offered and answered per interval",
            [sql_target(intervals("i.offered, i.answered"), "time_series")],
            unit="none",
            decimals=0,
        ),
        12,
        8,
    )
    b.add(
        panel(
            "timeseries",
            "Team: handled and AHT per hour",
            [sql_target(SQL_TEAM_HOURLY, "time_series")],
            description="Handle time counts in the hour wrap-up ended.",
            overrides=[by_name("aht_s", unit="s", custom_axisPlacement="right")],
        ),
        12,
        8,
    )
    return dashboard(
        "callpulse-team",
        "CallPulse / Team lead",
        "Agents against the team average, queue trends.",
        b,
        tenant_queue_vars(team=True),
        refresh="30s",
        time_from="now-8h",
    )


def sla_report() -> Json:
    b = Board()
    b.add(
        panel(
            "timeseries",
            "Interval service level against target",
            [sql_target(intervals("i.sl_pct, i.target_pct"), "time_series")],
            description="Intervals of each queue's contract (local clock of its zone), each "
            "under the contract version in force at its start.",
            unit="percent",
            decimals=1,
            min_=0,
            max_=100,
        ),
        24,
        9,
    )
    b.add(
        panel(
            "table",
            "SLA attainment by contract",
            [sql_target(SQL_ATTAINMENT)],
            description="The period is the sum of its intervals inside business hours under the "
            "contract in force at its start; attainment is the share of measured intervals "
            "(non-zero denominator) that met their target. '(all queues)' uses the client's "
            "default contract, as the API's roll-up.",
            options=table_options(),
            overrides=[
                by_name("sl_pct", unit="percent", decimals=1),
                by_name("target_pct", unit="percent", decimals=0),
                by_name(
                    "attainment_pct",
                    unit="percent",
                    decimals=1,
                    thresholds=thresholds(("red", None), ("orange", 80), ("green", 95)),
                    custom_cellOptions={"type": "color-background"},
                ),
            ],
        ),
        24,
        8,
    )
    b.add(
        panel(
            "table",
            "Daily attainment",
            [sql_target(SQL_DAILY)],
            description="Local days of each queue's contract zone.",
            options=table_options(),
            overrides=[
                by_name("sl_pct", unit="percent", decimals=1),
                by_name("attainment_pct", unit="percent", decimals=1),
            ],
        ),
        12,
        10,
    )
    b.add(
        panel(
            "table",
            "Intervals",
            [sql_target(SQL_INTERVAL_TABLE)],
            description="Every interval with its numerator and denominator (Inspect > Data > "
            "Download CSV for an export).",
            options=table_options(),
            overrides=[by_name("sl_pct", unit="percent", decimals=1)],
        ),
        12,
        10,
    )
    return dashboard(
        "callpulse-sla",
        "CallPulse / Client SLA report",
        "Interval service level against each contract's target, and attainment. Intervals "
        "whose start lies in the time range count; for whole local days set the dashboard's "
        "time zone to the client's contract zone.",
        b,
        tenant_queue_vars(),
        refresh="",
        time_from="now/d",
        time_to="now/d",
    )


def operations() -> Json:
    b = Board()
    b.add(
        panel(
            "stat",
            "Floor total",
            [sql_target(SQL_FLOOR)],
            description="Every client together under the built-in contract (answered, T = 20 s, "
            "<=, 80 %), intervals in the report zone: the API's /v1/floor/summary total.",
            unit="percent",
            decimals=1,
            steps=SL_STEPS,
            options={
                **stat_options("sl_pct"),
                "reduceOptions": {
                    "values": False,
                    "calcs": ["lastNotNull"],
                    "fields": "/^sl_pct$/",
                },
            },
        ),
        6,
        6,
    )
    b.add(
        panel(
            "stat",
            "Calls waiting now",
            [sql_target(SQL_OPS_WAITING)],
            unit="none",
            decimals=0,
            steps=thresholds(("green", None), ("orange", 10), ("red", 25)),
            options=stat_options("calls_waiting"),
        ),
        18,
        6,
    )
    b.add(
        panel(
            "table",
            "Clients",
            [sql_target(SQL_CLIENTS)],
            description="Each client's queues together under its default contract (intervals in "
            "the report zone), as the API's floor summary.",
            options=table_options(),
            overrides=[
                by_name(
                    "sl_pct",
                    unit="percent",
                    decimals=1,
                    thresholds=SL_STEPS,
                    custom_cellOptions={"type": "color-background"},
                ),
                by_name("attainment_pct", unit="percent", decimals=1),
            ],
        ),
        24,
        8,
    )
    b.add(
        panel(
            "table",
            "Queues",
            [sql_target(SQL_OPS_QUEUES)],
            description="Each queue under its own contract and zone.",
            options=table_options(),
            overrides=[
                by_name(
                    "sl_pct",
                    unit="percent",
                    decimals=1,
                    thresholds=SL_STEPS,
                    custom_cellOptions={"type": "color-background"},
                ),
                by_name("attainment_pct", unit="percent", decimals=1),
            ],
        ),
        24,
        10,
    )
    b.add(
        panel(
            "timeseries",
            "Offered per hour by client",
            [sql_target(SQL_OPS_VOLUME, "time_series")],
            unit="none",
            decimals=0,
        ),
        12,
        8,
    )
    b.add(
        panel(
            "timeseries",
            "Service level per hour by client",
            [sql_target(SQL_OPS_SL, "time_series")],
            description="Hourly (UTC) under each client's default contract in force now.",
            unit="percent",
            decimals=1,
            min_=0,
            max_=100,
        ),
        12,
        8,
    )
    return dashboard(
        "callpulse-operations",
        "CallPulse / BPO operations",
        "Roll-up across clients.",
        b,
        [query_var("tenant", "Clients", SQL_VAR_TENANT, multi=True), tz_var()],
        refresh="1m",
        time_from="now/d",
        time_to="now/d",
    )


RATE = "$__rate_interval"


def pipeline() -> Json:
    b = Board()

    def prom(
        title: str,
        exprs: list[tuple[str, str]],
        unit: str,
        description: str = "",
        kind: str = "timeseries",
        w: int = 12,
        h: int = 8,
        steps: Json | None = None,
    ) -> None:
        refs = "ABCDEFGH"
        targets = [prom_target(e, legend, refs[i]) for i, (e, legend) in enumerate(exprs)]
        options = {}
        if kind == "stat":
            options = {
                "reduceOptions": {"values": False, "calcs": ["lastNotNull"], "fields": ""},
                "textMode": "value_and_name",
                "colorMode": "background",
                "graphMode": "area",
                "justifyMode": "center",
                "orientation": "auto",
            }
        b.add(
            panel(
                kind,
                title,
                targets,
                description=description,
                unit=unit,
                steps=steps,
                options=options,
            ),
            w,
            h,
        )

    prom(
        "Processes up",
        [('sum by (job) (up{job="callpulse"})', "{{job}}")],
        "none",
        "CallPulse processes Prometheus can scrape.",
        kind="stat",
        w=6,
        h=5,
        steps=thresholds(("red", None), ("green", 1)),
    )
    prom(
        "Live figures stale",
        [("max(callpulse_pipeline_stale)", "stale")],
        "none",
        "1 while figures are stale (pipeline behind or store failing).",
        kind="stat",
        w=6,
        h=5,
        steps=thresholds(("green", None), ("red", 1)),
    )
    prom(
        "Lag (events)",
        [("sum(callpulse_pipeline_lag_events)", "lag")],
        "none",
        "Events accepted but not yet applied.",
        kind="stat",
        w=6,
        h=5,
        steps=thresholds(("green", None), ("orange", 1000), ("red", 10000)),
    )
    prom(
        "Silent queues",
        [("max(callpulse_pipeline_stale_queues)", "queues")],
        "none",
        "Queues with calls in the last hour but none in the last 15 minutes.",
        kind="stat",
        w=6,
        h=5,
        steps=thresholds(("green", None), ("orange", 1)),
    )
    prom(
        "Ingest",
        [
            (f"sum(rate(callpulse_ingest_events_total[{RATE}]))", "accepted"),
            (f"sum(rate(callpulse_ingest_duplicate_events_total[{RATE}]))", "duplicates"),
            (f"sum(rate(callpulse_ingest_rejected_events_total[{RATE}]))", "rejected"),
        ],
        "ops",
    )
    prom(
        "Aggregation",
        [
            (f"sum(rate(callpulse_aggregator_events_total[{RATE}]))", "applied"),
            (f"sum(rate(callpulse_aggregator_quarantined_events_total[{RATE}]))", "quarantined"),
            (f"sum(rate(callpulse_aggregator_poison_records_total[{RATE}]))", "poison"),
        ],
        "ops",
    )
    prom(
        "Event to figures delay",
        [
            (
                "histogram_quantile(0.5, sum by (le) (rate("
                f"callpulse_aggregator_event_delay_seconds_bucket[{RATE}])))",
                "p50",
            ),
            (
                "histogram_quantile(0.95, sum by (le) (rate("
                f"callpulse_aggregator_event_delay_seconds_bucket[{RATE}])))",
                "p95",
            ),
        ],
        "s",
        "Wall clock at apply minus event time of the newest event of each batch.",
    )
    prom(
        "Store writes",
        [
            (
                "histogram_quantile(0.99, sum by (le) (rate("
                f"callpulse_store_write_duration_seconds_bucket[{RATE}])))",
                "write p99",
            ),
            (
                "histogram_quantile(0.99, sum by (le) (rate("
                f"callpulse_aggregator_batch_duration_seconds_bucket[{RATE}])))",
                "batch p99",
            ),
        ],
        "s",
    )
    prom(
        "Store rows and errors",
        [
            (f"sum(rate(callpulse_store_rows_written_total[{RATE}]))", "rows/s"),
            (f"sum(increase(callpulse_store_write_errors_total[{RATE}]))", "errors"),
        ],
        "none",
    )
    prom(
        "Alert deliveries",
        [
            (
                f"sum by (channel, outcome) (increase(callpulse_alerts_deliveries_total[{RATE}]))",
                "{{channel}} {{outcome}}",
            ),
            ("sum(callpulse_alerts_outbox_pending_deliveries)", "pending"),
            ("sum(callpulse_alerts_outbox_failed_deliveries)", "failed"),
        ],
        "none",
    )
    prom(
        "Queue activity age",
        [
            (
                "max by (tenant, queue) (callpulse_pipeline_queue_activity_age_seconds)",
                "{{tenant}}/{{queue}}",
            ),
        ],
        "s",
        "Seconds since the last minute with calls, per queue.",
    )
    b.add(
        panel(
            "table",
            "Aggregator partitions (store)",
            [sql_target(SQL_PARTITIONS)],
            description="Each events-topic partition's last store write and the age of its "
            "newest event time, read from PostgreSQL (works without Prometheus).",
            options=table_options(),
            overrides=[
                by_name("since_write_s", unit="s", decimals=0),
                by_name("event_time_age_s", unit="s", decimals=0),
            ],
        ),
        12,
        8,
    )
    return dashboard(
        "callpulse-pipeline",
        "CallPulse / Pipeline health",
        "Ingest, aggregation, store writes and alert delivery (Prometheus), and partition "
        "progress (PostgreSQL).",
        b,
        [],
        refresh="30s",
        time_from="now-3h",
    )


BOARDS = {
    "wallboard.json": wallboard,
    "team-lead.json": team_lead,
    "sla-report.json": sla_report,
    "operations.json": operations,
    "pipeline.json": pipeline,
}

# -- alert rules (Grafana-managed) ----------------------------------------------------------

SQL_ALERT_SL = """SELECT q.tenant_id AS tenant, q.queue_id AS queue,
       w.sl_pct - w.target_pct AS sl_vs_target_pts
FROM known_queues q
CROSS JOIN LATERAL queue_live(q.tenant_id, q.queue_id, $__timeTo()) w
WHERE w.window_name = 'rolling_30m' AND w.sl_denominator >= 10"""


def _gauge_alert_sql(value: str) -> str:
    """One gauge per queue from its latest snapshot (of the last 4 hours: older ones belong
    to a queue nobody is calling, whose waiting legs the API treats as lost)."""
    return f"""SELECT g.tenant_id AS tenant, g.queue_id AS queue, {value}
FROM known_queues q
CROSS JOIN LATERAL (
    SELECT s.tenant_id, s.queue_id, s.calls_waiting, s.oldest_queued_at_ms
    FROM queue_snapshots s
    WHERE s.tenant_id = q.tenant_id AND s.queue_id = q.queue_id
      AND s.at <= $__timeTo() AND s.at > $__timeTo()::timestamptz - interval '4 hours'
    ORDER BY s.at DESC LIMIT 1) g"""


SQL_ALERT_WAITING = _gauge_alert_sql("g.calls_waiting")
SQL_ALERT_LONGEST = _gauge_alert_sql("""CASE WHEN g.oldest_queued_at_ms IS NULL THEN 0
            ELSE greatest(0, epoch_ms($__timeTo()) - g.oldest_queued_at_ms)::float8 / 1000
       END AS longest_wait_s""")

SQL_ALERT_AHT = """SELECT r.tenant_id AS tenant, r.queue_id AS queue,
       (r.aht_ms / b.aht_ms - 1) * 100 AS aht_drift_pct
FROM (
    SELECT tenant_id, queue_id,
           sum(talk_ms + hold_ms + wrap_ms)::float8 / sum(handled) AS aht_ms
    FROM queue_buckets
    WHERE bucket >= $__timeTo()::timestamptz - interval '60 minutes'
      AND bucket < $__timeTo()::timestamptz
    GROUP BY tenant_id, queue_id HAVING sum(handled) >= 10) r
JOIN (
    SELECT tenant_id, queue_id,
           sum(talk_ms + hold_ms + wrap_ms)::float8 / sum(handled) AS aht_ms
    FROM queue_buckets_1h
    WHERE bucket >= $__timeTo()::timestamptz - interval '7 days'
      AND bucket < date_bin('1 hour', $__timeTo()::timestamptz, timestamptz 'epoch')
                   - interval '1 hour'
    GROUP BY tenant_id, queue_id HAVING sum(handled) >= 50) b
USING (tenant_id, queue_id)"""

SQL_ALERT_STALE = """SELECT topic, extract(epoch FROM ($__timeTo()::timestamptz - max(updated_at)))
       AS since_last_write_s
FROM aggregator_partitions
GROUP BY topic"""


def _threshold(ref: str, source: str, op: str, value: float) -> Json:
    return {
        "refId": ref,
        "datasourceUid": "__expr__",
        "relativeTimeRange": {"from": 0, "to": 0},
        "model": {
            "refId": ref,
            "type": "threshold",
            "datasource": EXPR,
            "expression": source,
            "conditions": [{"type": "query", "evaluator": {"type": op, "params": [value]}}],
        },
    }


def _sql_query(sql: str, seconds: int = 600) -> Json:
    return {
        "refId": "A",
        "datasourceUid": PG["uid"],
        "relativeTimeRange": {"from": seconds, "to": 0},
        "model": {**sql_target(sql), "intervalMs": 60000, "maxDataPoints": 43200},
    }


def _prom_query(expr: str) -> Json:
    return {
        "refId": "A",
        "datasourceUid": PROM["uid"],
        "relativeTimeRange": {"from": 300, "to": 0},
        "model": {
            **prom_target(expr, "", "A"),
            "instant": True,
            "range": False,
            "intervalMs": 15000,
            "maxDataPoints": 43200,
        },
    }


def _rule(
    uid: str,
    title: str,
    data: list[Json],
    *,
    for_: str,
    severity: str,
    kind: str,
    summary: str,
    panel: tuple[str, str],
    no_data: str = "OK",
) -> Json:
    board = BOARDS[panel[0]]()
    (panel_id,) = [p["id"] for p in board["panels"] if p["title"] == panel[1]]
    return {
        "uid": uid,
        "title": title,
        "condition": "C",
        "data": data,
        "dashboardUid": board["uid"],
        "panelId": panel_id,
        "noDataState": no_data,
        "execErrState": "Error",
        "for": for_,
        "annotations": {"summary": summary},
        "labels": {"severity": severity, "rule_type": kind, "product": "callpulse"},
        "isPaused": False,
    }


def alert_rules() -> Json:
    """Grafana-managed rules mirroring CallPulse's own rule types (services/kpi/alerts.py):
    sl_rolling, calls_waiting, longest_wait_s, aht_s (as drift) and pipeline_staleness_s."""
    kpi = [
        _rule(
            "callpulse-sl-below-target",
            "Service level below target (30 min)",
            [_sql_query(SQL_ALERT_SL), _threshold("C", "A", "lt", 0)],
            for_="5m",
            severity="warning",
            kind="sl_rolling",
            panel=("wallboard.json", "Service level, last 30 minutes"),
            summary="SL of {{ $labels.tenant }}/{{ $labels.queue }} over 30 minutes is "
            "{{ $values.A }} points from its contract's target (at least 10 calls).",
        ),
        _rule(
            "callpulse-calls-waiting",
            "Calls waiting",
            [_sql_query(SQL_ALERT_WAITING), _threshold("C", "A", "gt", 10)],
            for_="2m",
            severity="warning",
            kind="calls_waiting",
            panel=("wallboard.json", "Calls waiting"),
            summary="{{ $values.A }} calls wait in {{ $labels.tenant }}/{{ $labels.queue }}.",
        ),
        _rule(
            "callpulse-longest-wait",
            "Longest wait",
            [_sql_query(SQL_ALERT_LONGEST), _threshold("C", "A", "gt", 180)],
            for_="1m",
            severity="critical",
            kind="longest_wait_s",
            panel=("wallboard.json", "Longest wait now"),
            summary="A caller has waited {{ $values.A }} s in "
            "{{ $labels.tenant }}/{{ $labels.queue }}.",
        ),
        _rule(
            "callpulse-aht-drift",
            "AHT drift (last hour against the previous 7 days)",
            [_sql_query(SQL_ALERT_AHT, 7 * 86_400), _threshold("C", "A", "gt", 25)],
            for_="15m",
            severity="warning",
            kind="aht_s",
            panel=("team-lead.json", "Team: handled and AHT per hour"),
            summary="AHT of {{ $labels.tenant }}/{{ $labels.queue }} over the last hour is "
            "{{ $values.A }} % above its 7-day level (at least 10 handled).",
        ),
    ]
    pipeline_rules = [
        _rule(
            "callpulse-pipeline-stale",
            "Live figures stale",
            [_prom_query("max(callpulse_pipeline_stale)"), _threshold("C", "A", "gt", 0)],
            for_="2m",
            severity="critical",
            kind="pipeline_staleness_s",
            panel=("pipeline.json", "Live figures stale"),
            summary="CallPulse reports its live figures stale (pipeline behind or store failing).",
        ),
        _rule(
            "callpulse-store-silent",
            "No aggregator write for 15 minutes",
            [_sql_query(SQL_ALERT_STALE), _threshold("C", "A", "gt", 900)],
            for_="5m",
            severity="warning",
            kind="pipeline_staleness_s",
            panel=("pipeline.json", "Aggregator partitions (store)"),
            summary="No partition of {{ $labels.topic }} was written for {{ $values.A }} s "
            "(aggregators down, or no events at all: mute during closed hours).",
        ),
    ]
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "callpulse-kpi",
                "folder": "CallPulse",
                "interval": "1m",
                "rules": kpi,
            },
            {
                "orgId": 1,
                "name": "callpulse-pipeline",
                "folder": "CallPulse",
                "interval": "1m",
                "rules": pipeline_rules,
            },
        ],
    }


# -- output ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]  # PyYAML has no type hints
    """Plain YAML: no anchors for shared dicts, SQL in literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def rendered() -> dict[Path, str]:
    """Every generated file and its exact text."""
    out = {
        DASHBOARDS / name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in BOARDS.items()
    }
    header = (
        "# Generated by grafana/generate.py from the same description as the dashboards;\n"
        "# edit that script, not this file. Grafana-managed rules mirroring CallPulse's own\n"
        "# rule types; contact points and notification policies are in this directory.\n"
    )
    out[ALERT_RULES] = header + yaml.dump(
        alert_rules(), Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files differ")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "differs" if args.check else "written"
        sys.stderr.write(f"{path.relative_to(ROOT.parent)}: {verb}\n")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
