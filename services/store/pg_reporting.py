"""Reporting in SQL: the KPI formulas of `services.kpi`, for Grafana, and Grafana's role.

Grafana's panels and alert rules read the store directly. So that a board shows the API's
figures integer for integer, the formulas live here once, as SQL functions mirroring:

- `contracts.py`: "within T" from the wait histograms (`hist_within`, `<` or `<=`), the SL
  variants (`sl_fraction`), SL in percent with its target (`sl_figures`), and the contract
  in force for a queue at an instant, else the tenant's default, else the built-in
  version 0 (`contract_at`);
- `windows.py` / `periods.py`: local-clock intervals of 15/30/60 minutes in the contract's
  IANA zone (a DST day has 46 or 50 half-hours; +05:30 and +05:45 zones), local midnight,
  business hours (`local_intervals`, `local_day_start`, `in_business_hours`);
- `api/reports.py`: each interval judged under the contract in force at its start; a
  period's figure is the sum of its counted intervals under the contract at the period's
  start; attainment is the share of measured intervals meeting their target
  (`queue_intervals`, `queue_section`); and the live windows (`queue_window`).

`p_queue` NULL means every queue of the tenant (judged under the tenant's default contract,
as the API's roll-up), `p_tenant` NULL every tenant (the floor, built-in contract); `p_tz`
replaces every contract's zone (the API's floor summary). Instants are `timestamptz`; no
function depends on the session's TimeZone. The functions read the 1-minute `queue_buckets`
with index range scans (a table on plain PostgreSQL, a hypertable on TimescaleDB), so they
are the same on both paths and exact for every zone.

Grafana's role (`grafana_role`) is the BPO's own, read-only and cross-tenant (operations
look across clients; clients get their figures from the API, never from Grafana). It reads
buckets, agents, snapshots, contracts and the tenant/queue registry; not API keys, legs
(caller keys) or the aggregator's state.
"""

# The statements are built from identifiers that `SchemaOptions` validated and from the
# code's own constants; no value from a request reaches them.
# ruff: noqa: S608

from __future__ import annotations

from typing import Final

from ..kpi.contracts import VARIANTS, Contract
from ..kpi.counters import WAIT_EDGES_S
from .records import SCALAR_COUNTER_FIELDS

#: (numerator, denominator) of each SL variant over a, a_t, b, b_t, s, f (KPI-DEFINITIONS).
VARIANT_SQL: Final = {
    "answered": ("a_t", "a"),
    "offered": ("a_t", "a + b"),
    "abandon_within_ignored": ("a_t", "a + b - b_t"),
    "abandon_within_met": ("a_t + b_t", "a + b"),
    "short_abandon_excluded": ("a_t", "a + b - s"),
    "short_abandon_met": ("a_t + s", "a + b"),
    "with_flowouts": ("a_t", "a + b + f"),
}
assert set(VARIANT_SQL) == set(VARIANTS), "an SL variant is missing from the SQL"

#: Tables Grafana reads (row-level security on the plain path needs a policy for it).
GRAFANA_TABLES: Final = (
    "queue_buckets",
    "agent_buckets",
    "state_segments",
    "agents",
    "known_queues",
    "queue_snapshots",
    "contracts",
)
GRAFANA_REGISTRY: Final = ("tenants", "queues")
#: Pipeline progress without the aggregator's state (column privileges).
GRAFANA_PARTITION_COLUMNS: Final = "topic, partition, applied_offset, max_seen_ms, updated_at"

_BUILTIN: Final = Contract(tenant_id="", version=0)
_MAX: Final = ("max_wait_answered_ms", "max_wait_abandoned_ms")
_COUNTERS: Final = ", ".join(f"{f} bigint" for f in SCALAR_COUNTER_FIELDS)
_FIGURES: Final = (
    "sl_numerator bigint, sl_denominator bigint, sl_pct double precision,"
    " target_pct double precision, sl_met boolean, contract_version integer, variant text,"
    " threshold_s integer, inclusive boolean"
)


def _sums(alias: str = "") -> str:
    return ", ".join(
        f"coalesce({'max' if f in _MAX else 'sum'}({alias}{f}), 0)::bigint AS {f}"
        for f in SCALAR_COUNTER_FIELDS
    )


def functions(schema: str) -> list[str]:
    """The reporting functions (idempotent; `CREATE OR REPLACE`, same on both paths)."""
    s = schema
    edges = ", ".join(str(e) for e in WAIT_EDGES_S)
    cases = " ".join(f"WHEN '{v}' THEN {n}" for v, (n, _) in VARIANT_SQL.items())
    dens = " ".join(f"WHEN '{v}' THEN {d}" for v, (_, d) in VARIANT_SQL.items())
    b = _BUILTIN
    t_cols = ", ".join(f"t.{f}" for f in SCALAR_COUNTER_FIELDS)
    t0_cols = ", ".join(f"coalesce(t.{f}, 0)::bigint" for f in SCALAR_COUNTER_FIELDS)
    fig = (
        "f.numerator, f.denominator, f.value_pct, c.target_pct, f.met, c.version, c.variant,"
        " c.threshold_s, c.inclusive"
    )
    sl = (
        f"{s}.sl_figures(t.hist_answered, t.hist_abandoned, t.answered, t.abandoned,"
        " t.flowed_out, c.variant, c.threshold_s, c.short_abandon_s, c.inclusive,"
        " c.target_pct)"
    )
    return [
        # -- counters and formulas ----------------------------------------------------------
        f"""CREATE OR REPLACE FUNCTION {s}.epoch_ms(at timestamptz) RETURNS bigint
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
            $$ SELECT floor(extract(epoch FROM at) * 1000)::bigint $$""",
        # Bin 2k holds waits strictly between edge k-1 and edge k, bin 2k+1 waits exactly
        # on edge k: "<= T" (T = edge k) sums bins 0..2k+1, "< T" bins 0..2k. NULL for a
        # threshold that is not an edge (contracts only allow edges).
        f"""CREATE OR REPLACE FUNCTION {s}.hist_within(hist bigint[], threshold_s integer,
                inclusive boolean) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
            $$ SELECT CASE WHEN e.k IS NULL THEN NULL ELSE
                   (SELECT coalesce(sum(x), 0)::bigint
                    FROM unnest(hist[1 : 2 * e.k - CASE WHEN inclusive THEN 0 ELSE 1 END]) x)
               END
               FROM (SELECT array_position(ARRAY[{edges}]::integer[], threshold_s) AS k) e $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.sl_fraction(variant text, a bigint, a_t bigint,
                b bigint, b_t bigint, s bigint, f bigint,
                OUT numerator bigint, OUT denominator bigint)
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
            $$ SELECT CASE variant {cases} END, CASE variant {dens} END $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.sl_figures(hist_answered bigint[],
                hist_abandoned bigint[], answered bigint, abandoned bigint, flowed_out bigint,
                variant text, threshold_s integer, short_abandon_s integer, inclusive boolean,
                target_pct double precision)
            RETURNS TABLE (numerator bigint, denominator bigint, value_pct double precision,
                           met boolean)
            LANGUAGE sql IMMUTABLE PARALLEL SAFE ROWS 1 AS
            $$ SELECT x.numerator, x.denominator,
                      CASE WHEN x.denominator <> 0
                           THEN 100.0::float8 * x.numerator / x.denominator END,
                      CASE WHEN x.denominator <> 0
                           THEN 100.0::float8 * x.numerator / x.denominator >= target_pct END
               FROM {s}.sl_fraction(variant, answered,
                   {s}.hist_within(hist_answered, threshold_s, inclusive), abandoned,
                   {s}.hist_within(hist_abandoned, threshold_s, inclusive),
                   {s}.hist_within(hist_abandoned, short_abandon_s, false), flowed_out) x $$""",
        # The queue's contract in force at an instant, else the tenant's default (stored
        # with queue_id ''), else the built-in version 0; the latest effective_from wins,
        # then the highest version. p_queue NULL: the tenant's default only.
        f"""CREATE OR REPLACE FUNCTION {s}.contract_at(p_tenant text, p_queue text,
                p_at timestamptz)
            RETURNS TABLE (version integer, threshold_s integer, target_pct double precision,
                           variant text, short_abandon_s integer, inclusive boolean,
                           interval_min integer, timezone text, business_hours jsonb)
            LANGUAGE sql STABLE PARALLEL SAFE ROWS 1 AS
            $$ SELECT x.version, x.threshold_s, x.target_pct, x.variant, x.short_abandon_s,
                      x.inclusive, x.interval_min, x.timezone, x.business_hours
               FROM (
                   SELECT coalesce((j.b->>'version')::integer, c.version) AS version,
                          coalesce((j.b->>'threshold_s')::integer, {b.threshold_s}) AS threshold_s,
                          coalesce((j.b->>'target_pct')::float8, {b.target_pct}) AS target_pct,
                          coalesce(j.b->>'variant', '{b.variant}') AS variant,
                          coalesce((j.b->>'short_abandon_s')::integer, {b.short_abandon_s})
                              AS short_abandon_s,
                          coalesce((j.b->>'inclusive')::boolean, {str(b.inclusive).lower()})
                              AS inclusive,
                          coalesce((j.b->>'interval_min')::integer, {b.interval_min})
                              AS interval_min,
                          coalesce(j.b->>'timezone', '{b.timezone}') AS timezone,
                          coalesce(j.b->'business_hours', '[]'::jsonb) AS business_hours,
                          c.queue_id <> '' AS own,
                          coalesce((j.b->>'effective_from_ms')::bigint, 0) AS effective
                   FROM {s}.contracts c CROSS JOIN LATERAL (SELECT c.body::jsonb AS b) j
                   WHERE c.tenant_id = p_tenant AND (c.queue_id = p_queue OR c.queue_id = '')
                     AND coalesce((j.b->>'effective_from_ms')::bigint, 0)
                         <= {s}.epoch_ms(p_at)
                   UNION ALL
                   SELECT {b.version}, {b.threshold_s}, {b.target_pct}, '{b.variant}',
                          {b.short_abandon_s}, {str(b.inclusive).lower()}, {b.interval_min},
                          '{b.timezone}', '[]'::jsonb, false, (-9223372036854775807 - 1)
               ) x
               ORDER BY x.own DESC, x.effective DESC, x.version DESC LIMIT 1 $$""",
        # -- local time ---------------------------------------------------------------------
        f"""CREATE OR REPLACE FUNCTION {s}.utc_offset(at timestamptz, tz text) RETURNS interval
            LANGUAGE sql STABLE PARALLEL SAFE AS
            $$ SELECT (at AT TIME ZONE tz) - (at AT TIME ZONE 'UTC') $$""",
        # The instants at which the local wall time `w` occurs: one, two (the repeated hour
        # after a fall-back) or none (skipped by a spring-forward gap). The offsets 15 hours
        # either side are those before and after any transition near `w`.
        f"""CREATE OR REPLACE FUNCTION {s}.local_instants(w timestamp, tz text)
            RETURNS SETOF timestamptz LANGUAGE sql STABLE PARALLEL SAFE ROWS 1 AS
            $$ SELECT DISTINCT c.i FROM (
                   SELECT (w - {s}.utc_offset(v.x, tz)) AT TIME ZONE 'UTC' AS i
                   FROM (VALUES ((w AT TIME ZONE 'UTC') - interval '15 hours'),
                                ((w AT TIME ZONE 'UTC') + interval '15 hours')) v(x)) c
               WHERE (c.i AT TIME ZONE tz) = w ORDER BY 1 $$""",
        # Local midnight as Python's zoneinfo reads it (fold 0): the earlier instant of a
        # repeated midnight; in a gap, midnight at the offset before the transition.
        f"""CREATE OR REPLACE FUNCTION {s}.local_day_start(d date, tz text) RETURNS timestamptz
            LANGUAGE sql STABLE PARALLEL SAFE AS
            $$ SELECT coalesce(
                   (SELECT min(i) FROM {s}.local_instants(d::timestamp, tz) i),
                   (d::timestamp - {s}.utc_offset(
                       (d::timestamp AT TIME ZONE 'UTC') - interval '15 hours', tz))
                   AT TIME ZONE 'UTC') $$""",
        # Intervals aligned to the local clock that tile each local day (marks at midnight
        # and at every existing wall time that is a multiple of the length), whose start
        # lies in [p_from, p_to): `span_intervals` of services/kpi/periods.py.
        f"""CREATE OR REPLACE FUNCTION {s}.local_intervals(p_from timestamptz,
                p_to timestamptz, tz text, length_min integer)
            RETURNS TABLE (start_at timestamptz, end_at timestamptz)
            LANGUAGE sql STABLE PARALLEL SAFE ROWS 100 AS
            $$ WITH days AS (
                   SELECT d, {s}.local_day_start(d, tz) AS lo, {s}.local_day_start(d + 1, tz) AS hi
                   FROM (SELECT (p_from AT TIME ZONE tz)::date + k AS d
                         FROM generate_series(-1, ((p_to AT TIME ZONE tz)::date
                                                   - (p_from AT TIME ZONE tz)::date) + 1) k) x),
               marks AS (
                   SELECT d, lo AS at FROM days
                   UNION SELECT d, hi FROM days
                   UNION SELECT days.d, i.i FROM days
                       CROSS JOIN generate_series(0, 25 * 60 - 1, length_min) m
                       CROSS JOIN LATERAL {s}.local_instants(
                           days.d + make_interval(mins => m), tz) i(i)
                       WHERE i.i BETWEEN days.lo AND days.hi),
               spans AS (
                   SELECT at AS start_at, lead(at) OVER (PARTITION BY d ORDER BY at) AS end_at
                   FROM marks)
               SELECT start_at, end_at FROM spans
               WHERE end_at IS NOT NULL AND start_at >= p_from AND start_at < p_to
               ORDER BY start_at $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.local_interval_at(p_at timestamptz, tz text,
                length_min integer)
            RETURNS TABLE (start_at timestamptz, end_at timestamptz)
            LANGUAGE sql STABLE PARALLEL SAFE ROWS 1 AS
            $$ SELECT i.start_at, i.end_at FROM {s}.local_intervals(
                   p_at - interval '2 days', p_at + interval '1 second', tz, length_min) i
               WHERE i.start_at <= p_at AND p_at < i.end_at $$""",
        # Business hours: [[weekday (0 = Monday), start minute, end minute), ...] of local
        # wall-clock time; an interval counts when it starts inside them (empty: always).
        f"""CREATE OR REPLACE FUNCTION {s}.in_business_hours(start_at timestamptz, tz text,
                hours jsonb) RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS
            $$ SELECT hours IS NULL OR jsonb_array_length(hours) = 0 OR EXISTS (
                   SELECT 1 FROM jsonb_array_elements(hours) h,
                       LATERAL (SELECT start_at AT TIME ZONE tz AS l) w
                   WHERE (h->>0)::integer = extract(isodow FROM w.l)::integer - 1
                     AND (h->>1)::integer <= extract(hour FROM w.l) * 60 + extract(minute FROM w.l)
                     AND extract(hour FROM w.l) * 60 + extract(minute FROM w.l) < (h->>2)::integer)
            $$""",
        # -- windows, intervals, periods ----------------------------------------------------
        # The 1-minute rows of one queue, of a tenant's queues (p_queue NULL) or of every
        # tenant (p_tenant NULL) in [p_from, p_to). Three branches with one-time filters, so
        # that each keeps its index range scan (an `x IS NULL OR col = x` test would not).
        f"""CREATE OR REPLACE FUNCTION {s}.bucket_rows(p_tenant text, p_queue text,
                p_from timestamptz, p_to timestamptz)
            RETURNS SETOF {s}.queue_buckets LANGUAGE sql STABLE PARALLEL SAFE ROWS 1000 AS
            $$ SELECT * FROM {s}.queue_buckets
               WHERE p_tenant IS NOT NULL AND p_queue IS NOT NULL AND tenant_id = p_tenant
                 AND queue_id = p_queue AND bucket >= p_from AND bucket < p_to
               UNION ALL
               SELECT * FROM {s}.queue_buckets
               WHERE p_tenant IS NOT NULL AND p_queue IS NULL AND tenant_id = p_tenant
                 AND bucket >= p_from AND bucket < p_to
               UNION ALL
               SELECT * FROM {s}.queue_buckets
               WHERE p_tenant IS NULL AND bucket >= p_from AND bucket < p_to $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.queue_sums(p_tenant text, p_queue text,
                p_from timestamptz, p_to timestamptz)
            RETURNS TABLE ({_COUNTERS}, hist_answered bigint[], hist_abandoned bigint[])
            LANGUAGE sql STABLE PARALLEL SAFE ROWS 1 AS
            $$ SELECT {_sums()}, {s}.hist_sum(hist_answered), {s}.hist_sum(hist_abandoned)
               FROM {s}.bucket_rows(p_tenant, p_queue, p_from, p_to) $$""",
        # Every figure of one window [p_from, p_to) under the contract in force at p_at.
        f"""CREATE OR REPLACE FUNCTION {s}.queue_window(p_tenant text, p_queue text,
                p_from timestamptz, p_to timestamptz, p_at timestamptz)
            RETURNS TABLE ({_COUNTERS}, hist_answered bigint[], hist_abandoned bigint[],
                           {_FIGURES}, timezone text)
            LANGUAGE sql STABLE ROWS 1 AS
            $$ SELECT {t_cols}, t.hist_answered, t.hist_abandoned, {fig}, c.timezone
               FROM {s}.queue_sums(p_tenant, p_queue, p_from, p_to) t
               CROSS JOIN {s}.contract_at(p_tenant, p_queue, p_at) c
               CROSS JOIN LATERAL {sl} f $$""",
        # The live windows of the API at p_now: rolling (the current minute and the ones
        # before it), the contract's current interval, and today since local midnight.
        f"""CREATE OR REPLACE FUNCTION {s}.queue_live(p_tenant text, p_queue text,
                p_now timestamptz)
            RETURNS TABLE (window_name text, window_start timestamptz, window_end timestamptz,
                           {_COUNTERS}, hist_answered bigint[], hist_abandoned bigint[],
                           {_FIGURES}, timezone text)
            LANGUAGE sql STABLE ROWS 6 AS
            $$ WITH c AS (SELECT * FROM {s}.contract_at(p_tenant, p_queue, p_now)),
               m AS (SELECT date_bin('1 minute', p_now, timestamptz 'epoch')
                            + interval '1 minute' AS end_at),
               spans AS (
                   SELECT 'rolling_' || n || 'm' AS name, m.end_at - make_interval(mins => n)
                          AS lo, m.end_at AS hi, n AS ord
                   FROM m, unnest(ARRAY[5, 15, 30, 60]) u(n)
                   UNION ALL
                   SELECT 'interval', i.start_at, i.end_at, 100
                   FROM c, {s}.local_interval_at(p_now, c.timezone, c.interval_min) i
                   UNION ALL
                   SELECT 'today', {s}.local_day_start((p_now AT TIME ZONE c.timezone)::date,
                          c.timezone), m.end_at, 101
                   FROM c, m)
               SELECT spans.name, spans.lo, spans.hi, w.*
               FROM spans CROSS JOIN LATERAL {s}.queue_window(p_tenant, p_queue, spans.lo,
                   spans.hi, p_now) w
               ORDER BY spans.ord $$""",
        # Intervals whose start lies in [p_from, p_to), on the grid (zone, length) of the
        # contract in force at p_from, each judged under the contract in force at its start.
        f"""CREATE OR REPLACE FUNCTION {s}.queue_intervals(p_tenant text, p_queue text,
                p_from timestamptz, p_to timestamptz, p_length integer DEFAULT NULL,
                p_tz text DEFAULT NULL)
            RETURNS TABLE (start_at timestamptz, end_at timestamptz, {_COUNTERS},
                           hist_answered bigint[], hist_abandoned bigint[], {_FIGURES},
                           timezone text, interval_min integer, in_business_hours boolean)
            LANGUAGE sql STABLE ROWS 100 AS
            $$ WITH g AS (SELECT * FROM {s}.contract_at(p_tenant, p_queue, p_from)),
               iv AS (
                   SELECT row_number() OVER (ORDER BY i.start_at) AS n, i.start_at, i.end_at
                   FROM g, {s}.local_intervals(p_from, p_to, coalesce(p_tz, g.timezone),
                                               coalesce(p_length, g.interval_min)) i),
               span AS (SELECT array_agg(start_at ORDER BY start_at) AS starts,
                               min(start_at) AS lo, max(end_at) AS hi FROM iv),
               -- The intervals tile [lo, hi): each minute's interval by binary search.
               t AS (
                   SELECT width_bucket(b.bucket, span.starts) AS n, {_sums("b.")},
                          {s}.hist_sum(b.hist_answered) AS hist_answered,
                          {s}.hist_sum(b.hist_abandoned) AS hist_abandoned
                   FROM span CROSS JOIN LATERAL {s}.bucket_rows(p_tenant, p_queue, span.lo,
                                                                  span.hi) b
                   GROUP BY 1)
               SELECT iv.start_at, iv.end_at, {t0_cols}, t.hist_answered, t.hist_abandoned,
                      {fig}, coalesce(p_tz, g.timezone),
                      coalesce(p_length, g.interval_min),
                      {s}.in_business_hours(iv.start_at, coalesce(p_tz, c.timezone),
                                           c.business_hours)
               FROM iv LEFT JOIN t USING (n) CROSS JOIN g
               CROSS JOIN LATERAL {s}.contract_at(p_tenant, p_queue, iv.start_at) c
               CROSS JOIN LATERAL {s}.sl_figures(t.hist_answered, t.hist_abandoned,
                   coalesce(t.answered, 0), coalesce(t.abandoned, 0), coalesce(t.flowed_out, 0),
                   c.variant, c.threshold_s, c.short_abandon_s, c.inclusive, c.target_pct) f
               ORDER BY iv.start_at $$""",
        # A period [p_from, p_to): the sum of its intervals inside business hours under the
        # contract in force at p_from, and SLA attainment over those intervals.
        f"""CREATE OR REPLACE FUNCTION {s}.queue_section(p_tenant text, p_queue text,
                p_from timestamptz, p_to timestamptz, p_tz text DEFAULT NULL)
            RETURNS TABLE ({_COUNTERS}, hist_answered bigint[], hist_abandoned bigint[],
                           {_FIGURES}, timezone text, interval_min integer,
                           attainment_pct double precision, intervals_met bigint,
                           intervals_measured bigint, intervals_counted bigint,
                           contract_versions integer[])
            LANGUAGE sql STABLE ROWS 1 AS
            $$ WITH iv AS (SELECT * FROM {s}.queue_intervals(p_tenant, p_queue, p_from, p_to,
                                                               NULL, p_tz)),
               t AS (SELECT {_sums()},
                            {s}.hist_sum(hist_answered) AS hist_answered,
                            {s}.hist_sum(hist_abandoned) AS hist_abandoned,
                            count(*) FILTER (WHERE in_business_hours AND sl_met) AS met,
                            count(*) FILTER (WHERE in_business_hours AND sl_met IS NOT NULL)
                                AS measured,
                            count(*) FILTER (WHERE in_business_hours) AS counted
                     FROM iv WHERE in_business_hours),
               v AS (SELECT array_agg(DISTINCT contract_version ORDER BY contract_version)
                            AS versions FROM iv)
               SELECT {t_cols}, t.hist_answered, t.hist_abandoned, {fig},
                      coalesce(p_tz, c.timezone), c.interval_min,
                      CASE WHEN t.measured > 0 THEN 100.0::float8 * t.met / t.measured END,
                      t.met, t.measured, t.counted, coalesce(v.versions, '{{}}')
               FROM t CROSS JOIN v
               CROSS JOIN {s}.contract_at(p_tenant, p_queue, p_from) c
               CROSS JOIN LATERAL {sl} f $$""",
        # A team's agents (by their latest state's team) over [p_from, p_to) against the team:
        # `team_view` of services/api/routes/teams.py. The open segment of each agent's
        # current state counts up to p_now; team figures are sums divided.
        f"""CREATE OR REPLACE FUNCTION {s}.team_agents(p_tenant text, p_team text,
                p_from timestamptz, p_to timestamptz, p_now timestamptz)
            RETURNS TABLE (agent_id text, state text, state_since timestamptz,
                           time_in_state_ms bigint, queues text, handled bigint,
                           aht_ms double precision, team_aht_ms double precision,
                           occupancy double precision, team_occupancy double precision,
                           aht_vs_team_pct double precision,
                           occupancy_vs_team_pts double precision)
            LANGUAGE sql STABLE ROWS 20 AS
            $$ WITH m AS (
                   SELECT a.agent_id, a.state, a.since_ms, a.queues FROM {s}.agents a
                   WHERE a.tenant_id = p_tenant AND a.team_id = p_team),
               c AS (
                   SELECT b.agent_id, sum(b.handled)::bigint AS handled,
                          sum(b.talk_ms + b.hold_ms + b.wrap_ms)::bigint AS handle_ms
                   FROM {s}.agent_buckets b JOIN m USING (agent_id)
                   WHERE b.tenant_id = p_tenant AND b.bucket >= p_from AND b.bucket < p_to
                   GROUP BY b.agent_id),
               t AS (
                   SELECT b.agent_id,
                          coalesce(sum(o.ms) FILTER (WHERE b.state = 'available'), 0)::bigint AS av,
                          coalesce(sum(o.ms) FILTER (WHERE b.state = 'on_call'), 0)::bigint AS oc,
                          coalesce(sum(o.ms) FILTER (WHERE b.state = 'wrapup'), 0)::bigint AS wu
                   FROM {s}.state_segments b JOIN m USING (agent_id)
                   CROSS JOIN LATERAL (SELECT {s}.epoch_ms(least(b.end_at, p_to))
                       - {s}.epoch_ms(greatest(b.start_at, p_from)) AS ms) o
                   WHERE b.tenant_id = p_tenant AND b.end_at > p_from AND b.start_at < p_to
                   GROUP BY b.agent_id),
               x AS (
                   SELECT m.agent_id, m.state, m.since_ms, m.queues,
                          coalesce(c.handled, 0) AS handled, coalesce(c.handle_ms, 0) AS hm,
                          coalesce(t.av, 0) + CASE WHEN m.state = 'available' THEN o.ms ELSE 0 END
                              AS av,
                          coalesce(t.oc, 0) + CASE WHEN m.state = 'on_call' THEN o.ms ELSE 0 END
                              AS oc,
                          coalesce(t.wu, 0) + CASE WHEN m.state = 'wrapup' THEN o.ms ELSE 0 END
                              AS wu
                   FROM m LEFT JOIN c USING (agent_id) LEFT JOIN t USING (agent_id)
                   CROSS JOIN LATERAL (SELECT greatest(0,
                       least({s}.epoch_ms(p_now), {s}.epoch_ms(p_to))
                       - greatest(m.since_ms, {s}.epoch_ms(p_from))) AS ms) o),
               y AS (
                   SELECT x.*,
                          CASE WHEN x.handled <> 0 THEN x.hm::float8 / x.handled END AS aht,
                          CASE WHEN x.oc + x.wu + x.av <> 0
                               THEN (x.oc + x.wu)::float8 / (x.oc + x.wu + x.av) END AS occ
                   FROM x),
               team AS (
                   SELECT CASE WHEN sum(handled) <> 0
                               THEN sum(hm)::float8 / sum(handled) END AS aht,
                          CASE WHEN sum(oc + wu + av) <> 0
                               THEN sum(oc + wu)::float8 / sum(oc + wu + av) END AS occ
                   FROM x)
               SELECT y.agent_id, y.state,
                      timestamptz 'epoch' + y.since_ms * interval '1 millisecond',
                      greatest(0, {s}.epoch_ms(p_now) - y.since_ms), y.queues, y.handled,
                      y.aht, team.aht, y.occ, team.occ,
                      CASE WHEN y.aht IS NOT NULL AND team.aht <> 0
                           THEN (y.aht / team.aht - 1) * 100 END,
                      CASE WHEN y.occ IS NOT NULL AND team.occ IS NOT NULL
                           THEN (y.occ - team.occ) * 100 END
               FROM y CROSS JOIN team ORDER BY y.agent_id $$""",
        # The queues of a tenant, as the API lists them: with data, with a contract of their
        # own, or declared.
        f"""CREATE OR REPLACE FUNCTION {s}.tenant_queues(p_tenant text)
            RETURNS TABLE (queue_id text) LANGUAGE sql STABLE PARALLEL SAFE ROWS 10 AS
            $$ SELECT queue_id FROM {s}.known_queues WHERE tenant_id = p_tenant
               UNION SELECT queue_id FROM {s}.contracts WHERE tenant_id = p_tenant
                   AND queue_id <> ''
               UNION SELECT queue_id FROM {s}.queues WHERE tenant_id = p_tenant
               ORDER BY 1 $$""",
    ]


#: Signatures of the reporting functions, for grants.
SIGNATURES: Final = (
    "epoch_ms(timestamptz)",
    "hist_within(bigint[], integer, boolean)",
    "sl_fraction(text, bigint, bigint, bigint, bigint, bigint, bigint)",
    "sl_figures(bigint[], bigint[], bigint, bigint, bigint, text, integer, integer, boolean,"
    " double precision)",
    "contract_at(text, text, timestamptz)",
    "utc_offset(timestamptz, text)",
    "local_instants(timestamp, text)",
    "local_day_start(date, text)",
    "local_intervals(timestamptz, timestamptz, text, integer)",
    "local_interval_at(timestamptz, text, integer)",
    "in_business_hours(timestamptz, text, jsonb)",
    "bucket_rows(text, text, timestamptz, timestamptz)",
    "queue_sums(text, text, timestamptz, timestamptz)",
    "queue_window(text, text, timestamptz, timestamptz, timestamptz)",
    "queue_live(text, text, timestamptz)",
    "queue_intervals(text, text, timestamptz, timestamptz, integer, text)",
    "queue_section(text, text, timestamptz, timestamptz, text)",
    "team_agents(text, text, timestamptz, timestamptz, timestamptz)",
    "tenant_queues(text)",
)


def grafana_access(
    schema: str, role: str, *, timescale: bool, rollups: tuple[str, ...]
) -> list[str]:
    """Grafana's read-only role: SELECT on what the boards read, EXECUTE on the functions.

    On the plain path the tables have row-level security for the API role, so Grafana gets
    a policy of its own that shows every row (it is cross-tenant by design); TimescaleDB's
    path has no row-level security (see `pg_schema`), so a grant is enough there.
    """
    s = schema
    out = [
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
            END IF; END $$""",
        # Board queries are many small function calls whose estimated cost would trigger
        # JIT compilation (hundreds of milliseconds for a millisecond query).
        f"ALTER ROLE {role} SET jit = off",
        f"GRANT USAGE ON SCHEMA {s} TO {role}",
        f"GRANT SELECT ON {', '.join((*GRAFANA_TABLES, *GRAFANA_REGISTRY))} TO {role}",
        f"GRANT SELECT ({GRAFANA_PARTITION_COLUMNS}) ON aggregator_partitions TO {role}",
        f"GRANT SELECT ON {', '.join(rollups)} TO {role}",
        f"GRANT EXECUTE ON FUNCTION {s}.hist_add(bigint[], bigint[]) TO {role}",
        f"GRANT EXECUTE ON FUNCTION {s}.hist_sum(bigint[]) TO {role}",
    ]
    out += [f"GRANT EXECUTE ON FUNCTION {s}.{sig} TO {role}" for sig in SIGNATURES]
    if not timescale:
        for table in GRAFANA_TABLES:
            out += [
                f"DROP POLICY IF EXISTS grafana_read ON {table}",
                f"CREATE POLICY grafana_read ON {table} FOR SELECT TO {role} USING (true)",
            ]
    return out


_TIME_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS queue_buckets_by_time ON queue_buckets (bucket, tenant_id)"
)


def statements(
    schema: str, grafana_role: str, *, timescale: bool, rollups: tuple[str, ...]
) -> list[str]:
    """Functions, then the role and its grants (run after the tables, rollups and roles).

    The plain path also gets an index by time for the cross-queue roll-ups (the primary key
    leads with tenant and queue); a hypertable has its own time index already.
    """
    index = [] if timescale else [_TIME_INDEX]
    access = grafana_access(schema, grafana_role, timescale=timescale, rollups=rollups)
    return [*index, *functions(schema), *access]
