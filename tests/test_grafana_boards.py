"""The Grafana boards and alert rules against the real schema, the Python core and the API.

- The checked-in JSON/YAML is what grafana/generate.py writes; it is well-formed Grafana 11
  provisioning; every data source uid, dashboard uid, contact point and template variable
  a file refers to exists.
- Every SQL query (panels, template variables, alert rules) is expanded as Grafana would
  (tests/grafana_support.py) and executed on a database created by `callpulse migrate`'s
  plain PostgreSQL path, as Grafana's read-only role, in both renderings of `$__timeGroup`
  (plain, and TimescaleDB's `time_bucket` through a stand-in); it returns rows for the
  seeded data and every column its panel names. The TimescaleDB path's statements and the
  TimescaleDB rendering are parsed (pglast); with DATABASE_URL naming a TimescaleDB server
  they are executed there too (the only test that may skip).
- The reporting functions agree with the Python core (golden fixtures of
  KPI-DEFINITIONS.md, histogram thresholds, local intervals on DST days and odd offsets).
- For a simulated day and a half written through the product's store, the panels show the
  API's figures: live windows, gauges, intervals, period sections and attainment, the
  floor roll-up and the team view, integer for integer (SL values bit for bit).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import Any, cast

import httpx
import pglast
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from services.api.app import create_app
from services.api.deps import ApiConfig
from services.bus.snapshots import AgentLive, QueueLive, encode_snapshot, snapshot_key
from services.distributed.backend import DistributedBackend, LiveSnapshots
from services.kpi.centre import Centre, Settings
from services.kpi.contracts import VARIANTS, Contract, Variant, service_level
from services.kpi.counters import HIST_BINS, WAIT_EDGES_S, Counters, count_within, wait_bin
from services.kpi.leg import at_ms
from services.kpi.periods import in_business_hours, span_intervals
from services.kpi.windows import day_span, to_ms
from services.simulator.engine import simulate
from services.simulator.scenario import load_scenario
from services.store import pg_reporting, pg_schema
from services.store.keys import new_key
from services.store.postgres import PartitionWrite, PartitionWriter, PostgresStore, migrate
from tests.distributed import with_user
from tests.grafana_support import (
    GRAFANA,
    ROOT,
    Query,
    alert_rules,
    dashboards,
    datasource_uids,
    expand,
    provisioning,
    referenced_columns,
    sql_queries,
)
from tests.pg import PgServer

NOW = datetime(2026, 11, 20, 15, 37, 30, tzinfo=UTC)  # a Friday
HISTORY = timedelta(hours=30)
SETTINGS = Settings(correction_horizon_ms=40 * 86_400_000)
GRAFANA_ROLE = pg_schema.SchemaOptions().grafana_role
TIME_BUCKET = (
    "CREATE OR REPLACE FUNCTION time_bucket(w interval, ts timestamptz) RETURNS timestamptz"
    " LANGUAGE sql IMMUTABLE AS $$ SELECT date_bin(w, ts, timestamptz 'epoch') $$"
)
CONTRACTS = (
    Contract(
        tenant_id="acme-insurance",
        version=1,
        variant="offered",
        threshold_s=20,
        target_pct=80.0,
        interval_min=30,
        timezone="Europe/London",
    ),
    Contract(
        tenant_id="acme-insurance",
        queue_id="claims",
        version=1,
        variant="abandon_within_ignored",
        threshold_s=30,
        inclusive=False,
        target_pct=85.0,
        interval_min=15,
        timezone="Asia/Kolkata",
    ),
    Contract(
        tenant_id="acme-insurance",
        queue_id="claims",
        version=2,
        effective_from_ms=to_ms(NOW - timedelta(hours=6, minutes=7)),
        variant="short_abandon_excluded",
        threshold_s=20,
        short_abandon_s=5,
        target_pct=75.0,
        interval_min=30,
        timezone="Asia/Kathmandu",
    ),
    Contract(
        tenant_id="acme-insurance",
        queue_id="sales",
        version=1,
        variant="with_flowouts",
        threshold_s=15,
        inclusive=False,
        target_pct=70.0,
        interval_min=60,
        timezone="America/New_York",
        business_hours=tuple((d, 480, 1200) for d in range(5)),
    ),
    Contract(
        tenant_id="globex-telco",
        queue_id="billing",
        version=3,
        variant="abandon_within_met",
        threshold_s=10,
        target_pct=80.0,
        interval_min=15,
        timezone="America/Chicago",
    ),
    Contract(
        tenant_id="globex-telco",
        queue_id="tech-support",
        version=1,
        variant="short_abandon_met",
        threshold_s=45,
        short_abandon_s=10,
        target_pct=90.0,
        interval_min=30,
        timezone="Australia/Lord_Howe",
    ),
)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the files ----------------------------------------------------------------------------


def test_checked_in_files_are_what_the_generator_writes() -> None:
    for path, text in _generator().rendered().items():
        assert path.read_text(encoding="utf-8") == text, f"{path}: run grafana/generate.py"


def test_dashboards_are_well_formed_and_refer_to_what_exists() -> None:
    uids = datasource_uids()
    assert uids == {"callpulse-pg": "grafana-postgresql-datasource", "callpulse-prom": "prometheus"}
    boards = dashboards()
    assert set(boards) == {
        "wallboard.json",
        "team-lead.json",
        "sla-report.json",
        "operations.json",
        "pipeline.json",
    }
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    kinds = {"stat", "table", "timeseries", "bargauge"}
    for name, board in boards.items():
        assert board["schemaVersion"] >= 39 and board["title"].startswith("CallPulse / ")
        assert 1 <= len(board["uid"]) <= 40
        names = {v["name"] for v in board["templating"]["list"]}
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            where = f"{name}: {panel['title']}"
            assert panel["type"] in kinds, where
            g = panel["gridPos"]
            assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24 and g["h"] >= 1, where
            assert panel["datasource"]["uid"] in uids, where
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs)), where
            for t in panel["targets"]:
                assert uids[t["datasource"]["uid"]] == t["datasource"]["type"], where
                text = t.get("rawSql") or t.get("expr")
                assert text, where
                used = {m for m in _template_names(text) if not m.startswith("__")}
                assert used <= names, (where, used - names)
            for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]:
                assert isinstance(step["value"], int | float), where
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                assert var["datasource"]["uid"] in uids
                assert set(_template_names(var["query"])) <= names - {var["name"]}


def _template_names(text: str) -> list[str]:
    import re

    return [a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text)]


def test_alerting_provisioning_is_consistent() -> None:
    uids = datasource_uids()
    panels = {(b["uid"], p["id"]) for b in dashboards().values() for p in b["panels"]}
    rules = alert_rules()
    assert len({r["uid"] for r in rules}) == len(rules)
    kinds = {r["labels"]["rule_type"] for r in rules}
    # Mirrors of the product's rule types (services/kpi/alerts.py METRICS).
    from services.kpi.alerts import METRICS

    assert kinds <= set(METRICS)
    assert {
        "sl_rolling",
        "calls_waiting",
        "longest_wait_s",
        "aht_s",
        "pipeline_staleness_s",
    } <= kinds
    for rule in rules:
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs
        assert (rule["dashboardUid"], rule["panelId"]) in panels, rule["uid"]
        for d in rule["data"]:
            assert d["datasourceUid"] in uids or d["datasourceUid"] == "__expr__"
            if d["datasourceUid"] == "__expr__":
                assert d["model"]["expression"] in refs
    docs = provisioning("alerting")
    points = {cp["name"] for doc in docs for cp in doc.get("contactPoints", [])}
    receivers = {
        r["uid"] for doc in docs for cp in doc.get("contactPoints", []) for r in cp["receivers"]
    }
    assert len(receivers) == 3 and points == {
        "callpulse-team-leads",
        "callpulse-chat",
        "callpulse-alertmanager",
    }
    (policy,) = [p for doc in docs for p in doc.get("policies", [])]

    def routes_of(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("routes", []):
            yield from routes_of(child)

    used = {r["receiver"] for r in routes_of(policy)}
    assert used == points
    dash_provider = provisioning("dashboards")[0]["providers"][0]
    assert dash_provider["type"] == "file"


def test_prometheus_panels_use_metrics_the_code_exports() -> None:
    """Every metric a PromQL query names is registered by the code (bucket/sum/count series
    of histograms included), and every query is valid PromQL (promtool)."""
    import re
    import subprocess
    import tempfile

    exported = _exported_metrics()
    exprs = [
        t["expr"]
        for b in dashboards().values()
        for p in b["panels"]
        for t in p["targets"]
        if t["datasource"]["uid"] == "callpulse-prom"
    ]
    exprs += [
        d["model"]["expr"]
        for r in alert_rules()
        for d in r["data"]
        if d["datasourceUid"] == "callpulse-prom"
    ]
    assert exprs
    for expr in exprs:
        for metric in re.findall(r"\b(callpulse_\w+|up)\b", expr):
            assert metric in exported, (metric, expr)
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"panel:{i}", "expr": e.replace("$__rate_interval", "5m")}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    import yaml

    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        yaml.safe_dump(rules, f)
    done = subprocess.run(
        ["promtool", "check", "rules", f.name], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _exported_metrics() -> set[str]:
    from services.aggregator.metrics import AggregatorMetrics
    from services.alerts.metrics import AlertMetrics
    from services.api.metrics import IngestMetrics

    registry = CollectorRegistry()
    AggregatorMetrics(registry)
    IngestMetrics(registry)
    AlertMetrics(registry)
    names = {"up"}
    for family in registry.collect():
        for sample in family.samples:
            names.add(sample.name)
    # Collectors that read a backend at scrape time: their families, from the source.
    import re

    for module in ("services/api/kpi_metrics.py", "services/alerts/metrics.py"):
        text = (ROOT / module).read_text(encoding="utf-8")
        names.update(re.findall(r'GaugeMetricFamily\(\s*"(callpulse_\w+)"', text))
    return names


def test_the_expander_renders_macros_as_grafanas_macro_engine_does() -> None:
    """Expected strings from Grafana's own tests of pkg/tsdb/grafana-postgresql-datasource."""
    start = datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
    end = start + timedelta(minutes=5)

    def x(sql: str, timescale: bool = False) -> str:
        return expand(sql, start=start, end=end, variables={}, timescale=timescale)

    assert x("WHERE $__timeFilter(time_column)") == (
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    )
    assert x("select $__timeFrom()") == "select '2018-04-12T18:00:00Z'"
    assert x("select $__timeTo()") == "select '2018-04-12T18:05:00Z'"
    assert x("SELECT $__timeGroup(time_column,'5m')") == (
        "SELECT floor(extract(epoch from time_column)/300)*300"
    )
    assert x("SELECT $__timeGroupAlias(time_column , '5m')") == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"'
    )
    assert x("SELECT $__timeGroup(time_column,'5m'), value") == (
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    )
    assert x("GROUP BY $__timeGroup(time_column , '12d')", timescale=True) == (
        "GROUP BY time_bucket('1036800.000s',time_column)"
    )
    assert x("GROUP BY $__timeGroup(time_column,'20ms')", timescale=True) == (
        "GROUP BY time_bucket('0.020s',time_column)"
    )
    half = datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC)
    assert expand("$__timeFrom()", start=half, end=end, variables={}) == "'1960-02-01T07:00:00.5Z'"
    # Template variables: multi-value quoted and joined, single values with quotes doubled.
    v = {"queue": ["a", "o'k"], "tenant": "t'1"}
    sql = "${queue:sqlstring} $queue [[queue]] '$tenant' ${tenant:sqlstring} ${tenant}"
    assert expand(sql, start=start, end=end, variables=v) == (
        "'a','o''k' 'a','o''k' 'a','o''k' 't''1' 't''1' t''1"
    )
    with pytest.raises(KeyError):
        x("SELECT $team")
    with pytest.raises(ValueError, match="not handled"):
        x("SELECT $__unixEpochNanoFrom()")


# -- the schema ---------------------------------------------------------------------------


def test_the_reporting_statements_are_on_both_paths_and_parse() -> None:
    options = pg_schema.SchemaOptions()
    plain = pg_schema.statements(options, timescale=False)
    for columnstore in (True, False):
        ts = pg_schema.statements(options, timescale=True, columnstore_api=columnstore)
        functions = pg_reporting.functions(options.schema)
        for statement in functions:
            assert statement in plain and statement in ts
            pglast.parse_sql(statement)
        grants = pg_reporting.grafana_access(
            options.schema,
            options.grafana_role,
            timescale=True,
            rollups=tuple(f"queue_buckets_{n}" for n, _ in pg_schema.ROLLUPS),
        )
        for statement in grants:
            assert statement in ts
            pglast.parse_sql(statement)
        assert not any("POLICY" in s for s in grants)  # no row-level security there
        # Functions come after the tables and rollups they read, grants after the role.
        assert ts.index(functions[0]) > max(
            i for i, s in enumerate(ts) if "queue_buckets_1d" in s and "CREATE" in s
        )


# -- a database shared by this module ---------------------------------------------------


@dataclass
class Seeded:
    url: str
    grafana_url: str
    api_url: str
    centre: Centre


def _seed(url: str) -> Centre:
    scenario = load_scenario(ROOT / "scenarios" / "demo.toml")
    centre = Centre(SETTINGS)
    for event in simulate(scenario, 5, NOW - HISTORY, HISTORY):
        centre.apply(event, at_ms(event))
    writer = PartitionWriter(url, "events", SETTINGS)
    try:
        claim = asyncio.run(writer.claim(0))
        queues = {(t, q) for t, q, _ in centre.queue_buckets}
        part = PartitionWrite(
            0, claim.generation, 1, centre, set(centre.legs), set(centre.timelines), set(), queues
        )
        asyncio.run(writer.write([part]))
    finally:
        asyncio.run(writer.close())
    store = PostgresStore(url, pool_size=1)
    try:
        for contract in CONTRACTS:
            store.put_contract(contract)
    finally:
        store.close()
    return centre


@pytest.fixture(scope="module")
def seeded(pg_server: PgServer) -> Iterator[Seeded]:
    with pg_server.database() as url:
        assert migrate(url, timescale=False) == "postgresql"
        centre = _seed(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(TIME_BUCKET)  # TimescaleDB's time_bucket, for the second rendering
        yield Seeded(url, with_user(url, GRAFANA_ROLE), with_user(url, "callpulse_api"), centre)


def _variables(board: str) -> dict[str, Any]:
    tenant: Any = (
        ["acme-insurance", "globex-telco"] if board == "operations.json" else ("acme-insurance")
    )
    return {
        "tenant": tenant,
        "queue": ["claims", "sales"],
        "team": "acme-late",
        "tz": "Europe/London",
    }


def _run(conn: psycopg.Connection[Any], sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = conn.execute(sql.encode())
    assert cur.description is not None
    return [c.name for c in cur.description], cur.fetchall()


@pytest.mark.parametrize("timescale", [False, True], ids=["plain", "time_bucket"])
def test_every_query_runs_as_grafana_and_returns_its_columns(
    seeded: Seeded, timescale: bool
) -> None:
    queries = list(sql_queries())
    assert len(queries) >= 30
    with psycopg.connect(seeded.grafana_url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'Pacific/Chatham'")  # results must not depend on it
        for q in queries:
            sql = expand(
                q.sql,
                start=NOW - HISTORY,
                end=NOW,
                variables=_variables(q.board),
                timescale=timescale,
                interval="5m",
            )
            try:
                columns, rows = _run(conn, sql)
            except psycopg.Error as exc:
                raise AssertionError(f"{q.where}: {exc}\n{sql}") from exc
            assert rows, f"{q.where} returned nothing for the seeded data"
            assert len(columns) == len(set(columns)), (q.where, columns)
            if q.fmt == "time_series":
                assert "time" in columns, q.where
                times = [r[columns.index("time")] for r in rows]
                assert times == sorted(times), f"{q.where}: time series must be sorted"
            if q.panel is not None:
                missing = referenced_columns(q.panel) - set(columns)
                assert not missing, f"{q.where} refers to missing columns {missing}"
            if q.where.startswith("alert rule"):
                numeric = [
                    c
                    for c, v in zip(columns, rows[0], strict=True)
                    if isinstance(v, int | float | Decimal) and not isinstance(v, bool)
                ]
                assert len(numeric) == 1, f"{q.where}: one value column, labels as text"


def test_the_timescale_rendering_of_every_query_parses() -> None:
    for q in sql_queries():
        sql = expand(
            q.sql,
            start=NOW - HISTORY,
            end=NOW,
            variables=_variables(q.board),
            timescale=True,
            interval="5m",
        )
        pglast.parse_sql(sql)


def test_grafana_role_reads_what_the_boards_need_and_nothing_secret(seeded: Seeded) -> None:
    with psycopg.connect(seeded.grafana_url, autocommit=True) as conn:
        tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM queue_buckets")}
        assert tenants == {"acme-insurance", "globex-telco"}  # every tenant, no RLS filter
        # JIT would compile every board query (hundreds of ms for a query of a few ms).
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        for forbidden in (
            "SELECT * FROM api_keys",
            "SELECT caller_key FROM legs",
            "SELECT checkpoint FROM aggregator_partitions",
            "DELETE FROM contracts",
            "UPDATE queue_buckets SET offered = 0",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)


# -- the formulas against the core --------------------------------------------------------


def _hist(counts: dict[int, int]) -> list[int]:
    """A histogram with `counts[wait_ms]` legs at each wait."""
    h = [0] * HIST_BINS
    for wait_ms, n in counts.items():
        h[wait_bin(wait_ms)] += n
    return h


def test_sl_in_sql_reproduces_the_golden_fixtures(seeded: Seeded) -> None:
    # ICMI sample: A = 1000, A_T = 860, B = 60 (B_T = 20), S = 10 (S_thr = 5 s), T = 20 s.
    ha = _hist({5_000: 860, 40_000: 140})
    hb = _hist({2_000: 10, 10_000: 10, 60_000: 40})
    expected = {
        "answered": 86.0,
        "offered": 81.1,
        "abandon_within_ignored": 82.7,
        "abandon_within_met": 83.0,
        "short_abandon_excluded": 81.9,
        "short_abandon_met": 82.1,
    }
    with psycopg.connect(seeded.grafana_url) as conn:
        for variant, pct in expected.items():
            (value,) = conn.execute(
                "SELECT value_pct FROM sl_figures(%s, %s, 1000, 60, 0, %s, 20, 5, true, 80)",
                (ha, hb, variant),
            ).fetchone() or (None,)
            assert round(value, 1) == pct, variant
        # Cisco: 70 answered within T, 10 abandoned within T, 20 answered late.
        ha, hb = _hist({1_000: 70, 90_000: 20}), _hist({1_000: 10})
        for variant, pct in (
            ("abandon_within_ignored", 77.8),
            ("offered", 70.0),
            ("abandon_within_met", 80.0),
        ):
            row = conn.execute(
                "SELECT value_pct FROM sl_figures(%s, %s, 90, 10, 0, %s, 20, 5, true, 80)",
                (ha, hb, variant),
            ).fetchone()
            assert row is not None and round(row[0], 1) == pct, variant
        assert conn.execute(
            "SELECT value_pct, met FROM sl_figures(%s, %s, 0, 0, 0, 'answered', 20, 5, true, 80)",
            ([0] * HIST_BINS,) * 2,
        ).fetchone() == (None, None)


def test_sl_in_sql_matches_the_core_for_random_counters(seeded: Seeded) -> None:
    rng = random.Random(7)
    with psycopg.connect(seeded.grafana_url) as conn:
        for _ in range(60):
            ha = [rng.randrange(0, 30) for _ in range(HIST_BINS)]
            hb = [rng.choice((0, 0, rng.randrange(0, 9))) for _ in range(HIST_BINS)]
            c = Counters(
                answered=sum(ha),
                abandoned=sum(hb),
                flowed_out=rng.randrange(5),
                hist_answered=ha,
                hist_abandoned=hb,
            )
            t = rng.choice(WAIT_EDGES_S[1:])
            contract = Contract(
                tenant_id="x",
                variant=cast(Variant, rng.choice(VARIANTS)),
                threshold_s=t,
                short_abandon_s=rng.choice([e for e in WAIT_EDGES_S if e <= t]),
                inclusive=rng.random() < 0.5,
                target_pct=rng.choice((70.0, 80.0, 82.5)),
            )
            want = service_level(c, contract)
            got = conn.execute(
                "SELECT numerator, denominator, value_pct, met FROM sl_figures(%s, %s, %s, %s,"
                " %s, %s, %s, %s, %s, %s)",
                (
                    ha,
                    hb,
                    c.answered,
                    c.abandoned,
                    c.flowed_out,
                    contract.variant,
                    t,
                    contract.short_abandon_s,
                    contract.inclusive,
                    contract.target_pct,
                ),
            ).fetchone()
            assert got == (want.numerator, want.denominator, want.value_pct, want.met)
            for edge in WAIT_EDGES_S:
                for inclusive in (True, False):
                    (n,) = conn.execute(
                        "SELECT hist_within(%s, %s, %s)", (ha, edge, inclusive)
                    ).fetchone() or (None,)
                    assert n == count_within(ha, edge, inclusive)
        assert conn.execute("SELECT hist_within(%s, 7, true)", (ha,)).fetchone() == (None,)


ZONES = (
    "America/New_York",
    "Europe/London",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
    "Pacific/Apia",
    "UTC",
)
DAYS = (
    date(2026, 3, 8),
    date(2026, 3, 29),
    date(2026, 4, 5),
    date(2026, 9, 6),
    date(2026, 10, 4),
    date(2026, 10, 25),
    date(2026, 11, 1),
    date(2026, 11, 20),
)


def test_local_intervals_match_the_core_on_dst_days_and_odd_offsets(seeded: Seeded) -> None:
    with psycopg.connect(seeded.grafana_url) as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        for tz in ZONES:
            for day in DAYS:
                span = (day_span(day, tz)[0], day_span(day + timedelta(days=2), tz)[1])
                lo, hi = (datetime.fromtimestamp(ms / 1000, UTC) for ms in span)
                start = conn.execute("SELECT local_day_start(%s, %s)", (day, tz)).fetchone()
                assert start is not None and to_ms(start[0]) == span[0], (tz, day)
                for length in (15, 30, 60):
                    want = span_intervals(span, tz, length)
                    rows = conn.execute(
                        "SELECT start_at, end_at FROM local_intervals(%s, %s, %s, %s)",
                        (lo, hi, tz, length),
                    ).fetchall()
                    got = [(to_ms(a), to_ms(b)) for a, b in rows]
                    assert got == want, (tz, day, length)
                hours = ((day.weekday(), 0, 90), ((day.weekday() + 1) % 7, 600, 1440))
                contract = Contract(tenant_id="x", timezone=tz, business_hours=hours)
                rows = conn.execute(
                    "SELECT start_at, in_business_hours(start_at, %s, %s::jsonb)"
                    " FROM local_intervals(%s, %s, %s, 30)",
                    (tz, _json(hours), lo, hi, tz),
                ).fetchall()
                assert [b for _, b in rows] == [
                    in_business_hours(to_ms(a), contract) for a, _ in rows
                ], (tz, day)


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


# -- the panels against the API -----------------------------------------------------------


class _Clock:
    """Stands in for the `time` module of the API's routes: the pinned `NOW`."""

    @staticmethod
    def time() -> float:
        return NOW.timestamp()


@dataclass
class Api:
    client: httpx.AsyncClient
    store: PostgresStore
    owner: PostgresStore

    def key(self, tenant: str | None, role: str) -> dict[str, str]:
        token, record = new_key(tenant, role, "grafana-test", to_ms(NOW) - 60_000)
        self.owner.put_key(record)
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, headers: dict[str, str], **params: Any) -> Any:
        response = await self.client.get(path, headers=headers, params=params)
        assert response.status_code == 200, (path, response.text)
        return response.json()


@pytest.fixture
async def api(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    from services.api.routes import live as live_routes
    from services.api.routes import reports as report_routes
    from services.api.routes import teams as team_routes

    monkeypatch.setattr(live_routes, "time", _Clock)
    monkeypatch.setattr(team_routes, "time", _Clock)
    monkeypatch.setattr(report_routes, "_now_ms", lambda: to_ms(NOW))
    snapshots = LiveSnapshots("127.0.0.1:1", "unused")
    centre = seeded.centre
    for tenant, queue in {(t, q) for t, q, _ in centre.queue_buckets}:
        waiting = sorted(
            leg.queued.at for leg in centre.waiting_legs(tenant, queue) if leg.queued is not None
        )
        live = QueueLive(
            tenant_id=tenant,
            queue_id=queue,
            waiting_since_ms=waiting,
            as_of_ms=centre.max_seen_ms,
            published_ms=to_ms(NOW),
        )
        snapshots.apply(snapshot_key(live), encode_snapshot(live))
    for (tenant, agent), timeline in centre.timelines.items():
        if timeline.current is not None:
            a = AgentLive(
                tenant_id=tenant, agent_id=agent, change=timeline.current, published_ms=to_ms(NOW)
            )
            snapshots.apply(snapshot_key(a), encode_snapshot(a))
    store = PostgresStore(seeded.api_url, pool_size=2)
    owner = PostgresStore(seeded.url, pool_size=1)
    backend = DistributedBackend(store, snapshots, None, "events", 5.0, 4 * 3_600_000)
    config = ApiConfig(rate_limit_per_s=1e6, rate_limit_burst=1_000_000, max_intervals=100_000)
    app = create_app(backend, config, CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Api(client, store, owner)
    store.close()
    owner.close()


def _panel(board: str, title: str) -> Query:
    for q in sql_queries():
        if q.board == board and q.panel is not None and q.panel["title"] == title:
            return q
    raise AssertionError(f"no panel {title!r} in {board}")


def _rows(
    seeded: Seeded,
    q: Query,
    variables: dict[str, Any],
    start: datetime = NOW - HISTORY,
    end: datetime = NOW,
) -> list[dict[str, Any]]:
    sql = expand(q.sql, start=start, end=end, variables=variables)
    with psycopg.connect(seeded.grafana_url) as conn:
        columns, rows = _run(conn, sql)
    return [dict(zip(columns, r, strict=True)) for r in rows]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


QUEUES = {"acme-insurance": ("claims", "sales"), "globex-telco": ("billing", "tech-support")}


async def test_wallboard_shows_the_live_api(seeded: Seeded, api: Api) -> None:
    board = "wallboard.json"
    compared = 0
    for tenant, queues in QUEUES.items():
        headers = api.key(tenant, "client")
        v = {"tenant": tenant, "queue": list(queues)}
        today = {r["queue"]: r for r in _rows(seeded, _panel(board, "Service level today"), v)}
        rolling = {
            r["queue"]: r for r in _rows(seeded, _panel(board, "Service level, last 30 minutes"), v)
        }
        table = {r["queue"]: r for r in _rows(seeded, _panel(board, "Today by queue"), v)}
        gauges = {r["queue"]: r for r in _rows(seeded, _panel(board, "Calls waiting"), v)}
        for queue in queues:
            live = await api.get(f"/v1/queues/{queue}/live", headers)
            windows = {w["name"]: w for w in live["windows"]}
            w = windows["today"]
            sl = w["service_level"]
            assert today[queue]["sl_pct"] == sl["value_pct"]
            assert (
                today[queue]["sl_numerator"],
                today[queue]["sl_denominator"],
                table[queue]["variant"],
                today[queue]["threshold_s"],
                today[queue]["contract_version"],
            ) == (
                sl["numerator"],
                sl["denominator"],
                sl["variant"],
                sl["threshold_s"],
                sl["contract_version"],
            )
            assert rolling[queue]["sl_pct"] == windows["rolling_30m"]["service_level"]["value_pct"]
            row = table[queue]
            assert (row["offered"], row["answered"], row["abandoned"], row["flowed_out"]) == (
                w["offered"],
                w["answered"],
                w["abandoned"],
                w["flowed_out"],
            )
            assert row["waited"] == w["waited"]["numerator"]
            _close(row["asa_s"], w["asa_ms"]["value"], 1000)
            _close(row["aht_s"], w["aht_ms"]["value"], 1000)
            _close(row["abandon_pct"], w["abandon_rate"]["value"], 0.01)
            g = live["gauges"]
            assert gauges[queue]["calls_waiting"] == g["calls_waiting"]
            assert round(float(gauges[queue]["longest_wait_s"]) * 1000) == g["longest_wait_ms"]
            one = {"tenant": tenant, "queue": [queue]}
            states = {
                r["state"]: r["agents"]
                for r in _rows(seeded, _panel(board, "Agents by state"), one)
            }
            assert states == g["agents"]
            compared += w["offered"] + g["calls_waiting"]
    assert compared > 200  # the comparison saw real traffic, not empty windows


def _close(sql_value: Any, api_value: float | None, scale: float) -> None:
    if api_value is None:
        assert sql_value is None
    else:
        assert sql_value == pytest.approx(api_value / scale, rel=1e-12)


async def test_interval_panels_show_the_api_intervals(seeded: Seeded, api: Api) -> None:
    q = _panel("sla-report.json", "Intervals")
    series = _panel("sla-report.json", "Interval service level against target")
    start = NOW - HISTORY
    checked = 0
    for tenant, queues in QUEUES.items():
        headers = api.key(tenant, "client")
        v = {"tenant": tenant, "queue": list(queues)}
        rows = _rows(seeded, q, v, start, NOW)
        points = _rows(seeded, series, v, start, NOW)
        for queue in queues:
            mine = [r for r in rows if r["queue"] == queue]
            length = {
                r["interval_min"]
                for r in _rows(
                    seeded, _panel("sla-report.json", "SLA attainment by contract"), v, start, NOW
                )
                if r["queue"] == queue
            }
            (interval_min,) = length
            body = await api.get(
                f"/v1/queues/{queue}/intervals",
                headers,
                **{
                    "from": start.isoformat(),
                    "to": NOW.isoformat(),
                    "interval": f"{interval_min}m",
                },
            )
            want = body["intervals"]
            assert len(mine) == len(want) > 20, queue
            for r, w in zip(mine, want, strict=True):
                sl = w["service_level"]
                assert r["interval_start"] == _instant(w["start"])
                assert (r["offered"], r["answered"], r["abandoned"], r["flowed_out"]) == (
                    w["offered"],
                    w["answered"],
                    w["abandoned"],
                    w["flowed_out"],
                )
                assert (
                    r["sl_pct"],
                    r["sl_numerator"],
                    r["sl_denominator"],
                    r["sl_met"],
                    r["target_pct"],
                    r["contract_version"],
                ) == (
                    sl["value_pct"],
                    sl["numerator"],
                    sl["denominator"],
                    sl["met"],
                    sl["target_pct"],
                    sl["contract_version"],
                )
                checked += w["offered"]
            assert [(p["time"], p["sl_pct"]) for p in points if p["metric"] == queue] == [
                (r["interval_start"], r["sl_pct"]) for r in mine
            ]
    versions = {
        r["contract_version"]
        for r in _rows(seeded, q, {"tenant": "acme-insurance", "queue": ["claims"]}, start, NOW)
    }
    assert versions == {1, 2}  # the contract change inside the range is honoured
    assert checked > 500


async def test_sla_report_shows_the_api_summaries(seeded: Seeded, api: Api) -> None:
    q = _panel("sla-report.json", "SLA attainment by contract")
    for tenant, queues in QUEUES.items():
        headers = api.key(tenant, "client")
        summary = await api.get("/v1/summary", headers, period="yesterday")
        sections = {s["queue_id"]: s for s in summary["queues"]}
        sections["(all queues)"] = summary["rollup"]
        for name, section in sections.items():
            start, end = _instant(section["start"]), _instant(section["end"])
            rows = _rows(seeded, q, {"tenant": tenant, "queue": list(queues)}, start, end)
            (row,) = [r for r in rows if r["queue"] == name]
            f, a = section["figures"], section["attainment"]
            sl = f["service_level"]
            assert (row["offered"], row["answered"], row["abandoned"]) == (
                f["offered"],
                f["answered"],
                f["abandoned"],
            ), name
            assert (
                row["sl_pct"],
                row["sl_numerator"],
                row["sl_denominator"],
                row["target_pct"],
                row["variant"],
                row["threshold_s"],
            ) == (
                sl["value_pct"],
                sl["numerator"],
                sl["denominator"],
                sl["target_pct"],
                sl["variant"],
                sl["threshold_s"],
            ), name
            assert (
                row["attainment_pct"],
                row["intervals_met"],
                row["intervals_measured"],
                row["intervals_counted"],
            ) == (a["value_pct"], a["met"], a["measured"], a["intervals"]), name
            assert (
                row["contract_versions"]
                == "{" + ",".join(map(str, section["contract_versions"])) + "}"
            )
            assert row["timezone"] == section["timezone"]
    # Business hours count: the sales contract's Friday/Thursday hours leave intervals out.
    sales = _rows(
        seeded, q, {"tenant": "acme-insurance", "queue": ["sales"]}, NOW - timedelta(days=1), NOW
    )
    (row,) = [r for r in sales if r["queue"] == "sales"]
    assert 0 < row["intervals_counted"] < 24


async def test_operations_roll_up_shows_the_floor_summary(seeded: Seeded, api: Api) -> None:
    headers = api.key(None, "admin")
    floor = await api.get("/v1/floor/summary", headers, period="today", tz="Europe/London")
    total = floor["total"]
    start, end = _instant(total["start"]), _instant(total["end"])
    v = {"tenant": list(QUEUES), "tz": "Europe/London"}
    clients = {
        r["client"]: r for r in _rows(seeded, _panel("operations.json", "Clients"), v, start, end)
    }
    assert set(clients) == {t["tenant_id"] for t in floor["tenants"]} == set(QUEUES)
    for t in floor["tenants"]:
        f, a = t["summary"]["figures"], t["summary"]["attainment"]
        row = clients[t["tenant_id"]]
        assert (
            row["offered"],
            row["answered"],
            row["abandoned"],
            row["sl_pct"],
            row["target_pct"],
            row["variant"],
        ) == (
            f["offered"],
            f["answered"],
            f["abandoned"],
            f["service_level"]["value_pct"],
            f["service_level"]["target_pct"],
            f["service_level"]["variant"],
        )
        assert (row["attainment_pct"], row["intervals_met"], row["intervals_measured"]) == (
            a["value_pct"],
            a["met"],
            a["measured"],
        )
    (row,) = _rows(seeded, _panel("operations.json", "Floor total"), v, start, end)
    f = total["figures"]
    assert (row["offered"], row["answered"], row["sl_pct"], row["attainment_pct"]) == (
        f["offered"],
        f["answered"],
        f["service_level"]["value_pct"],
        total["attainment"]["value_pct"],
    )
    assert f["offered"] > 100


async def test_team_lead_board_shows_the_team_view(seeded: Seeded, api: Api) -> None:
    q = _panel("team-lead.json", "Agents against the team average (today)")
    seen = 0
    for tenant, team in (("acme-insurance", "acme-late"), ("globex-telco", "billing-day")):
        headers = api.key(tenant, "teamlead")
        view = await api.get(f"/v1/teams/{team}/agents", headers, window="today")
        rows = {r["agent"]: r for r in _rows(seeded, q, {"tenant": tenant, "team": team})}
        assert set(rows) == {a["agent_id"] for a in view["agents"]}
        for a in view["agents"]:
            r = rows[a["agent_id"]]
            assert (r["state"], r["handled"]) == (a["state"], a["handled"])
            assert round(float(r["time_in_state_s"]) * 1000) == a["time_in_state_ms"]
            _close(r["aht_s"], a["aht_ms"]["value"], 1000)
            _close(r["occupancy_pct"], a["occupancy"]["value"], 0.01)
            _close(r["aht_vs_team_pct"], a["aht_vs_team_pct"], 1)
            _close(r["occupancy_vs_team_pts"], a["occupancy_vs_team_pts"], 1)
            _close(r["team_aht_s"], view["team"]["aht_ms"]["value"], 1000)
            _close(r["team_occupancy_pct"], view["team"]["occupancy"]["value"], 0.01)
            seen += a["handled"]
    assert seen > 20


def test_alert_rules_fire_on_the_seeded_data_where_the_api_breaches(seeded: Seeded) -> None:
    """The SL rule's value is SL minus target over 30 minutes: its sign says breach."""
    (rule,) = [r for r in alert_rules() if r["uid"] == "callpulse-sl-below-target"]
    sql = expand(
        rule["data"][0]["model"]["rawSql"], start=NOW - timedelta(minutes=10), end=NOW, variables={}
    )
    with psycopg.connect(seeded.grafana_url) as conn:
        columns, rows = _run(conn, sql)
        assert columns == ["tenant", "queue", "sl_vs_target_pts"]
        for tenant, queue, pts in rows:
            row = conn.execute(
                "SELECT sl_pct, target_pct, sl_denominator FROM queue_live(%s, %s, %s)"
                " WHERE window_name = 'rolling_30m'",
                (tenant, queue, NOW),
            ).fetchone()
            assert row is not None and row[2] >= 10 and pts == row[0] - row[1]


# -- TimescaleDB itself ---------------------------------------------------------------------


def test_on_a_real_timescaledb(pg_server: PgServer, pg_url: str) -> None:
    """Runs only against a TimescaleDB server named by DATABASE_URL (README: "Tests against
    TimescaleDB"); the plain path and the parsed TimescaleDB rendering ran above."""
    if not pg_server.external or not pg_server.has_timescaledb():
        pytest.skip(
            "needs DATABASE_URL naming a PostgreSQL server with the timescaledb "
            "extension; the plain path ran above"
        )
    assert migrate(pg_url) == "timescaledb"
    _seed(pg_url)
    with contextlib.closing(
        psycopg.connect(with_user(pg_url, GRAFANA_ROLE), autocommit=True)
    ) as conn:
        for q in sql_queries():
            sql = expand(
                q.sql,
                start=NOW - HISTORY,
                end=NOW,
                variables=_variables(q.board),
                timescale=True,
                interval="5m",
            )
            columns, rows = _run(conn, sql)
            assert rows, q.where
            if q.panel is not None:
                assert referenced_columns(q.panel) <= set(columns), q.where
