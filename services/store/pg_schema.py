"""The PostgreSQL/TimescaleDB schema: one list of idempotent statements per path.

`statements(options, timescale=...)` is the whole migration. The tables, keys, the API role
and its tenant-filtering views are the same on both paths; only the TimescaleDB path adds
hypertables, continuous aggregates (15 min / 1 h / 1 day, real-time aggregation on), and
retention and columnstore (compression) policies, while the plain path defines the same
rollups as ordinary views over `date_bin` (the plain counterpart of `time_bucket`). Every
time column is `timestamptz`, UTC; durations are integer milliseconds (`_ms`).

Tenant isolation for the API role (`options.api_role`, which owns nothing):
- every API query names its tenant, and reads only the `api_*` views, which keep the rows of
  `current_setting('callpulse.tenant_id')` (set per transaction by the API);
- on plain PostgreSQL the views are `security_invoker`, so row-level security policies on
  the tables apply to the API role underneath them;
- TimescaleDB refuses row-level security on hypertables that have continuous aggregates or
  compression (timescale/timescaledb#6832, #6827), so on that path the views are
  `security_barrier` views owned by the schema owner and the API role gets no privilege on
  the tables at all. Grafana reads the rollups with its own role.
The tenant setting is chosen by the API process, so these layers stop a query that forgets
its tenant, not a process that can run arbitrary SQL as the API role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import pg_reporting
from .records import AGENT_FIELDS, SCALAR_COUNTER_FIELDS

SCHEMA_VERSION = 1
TENANT_SETTING = "callpulse.tenant_id"
HIST_BINS_SQL = "bigint[]"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: Tables of one tenant's data, which the API reads through `api_<name>` views only.
API_TABLES = (
    "queue_buckets", "agent_buckets", "state_segments", "legs", "agents", "known_queues",
    "queue_snapshots", "surveys", "contracts",
)  # fmt: skip
#: The registry the API's admin routes maintain across tenants (no row-level security;
#: every query of a tenant's part names the tenant).
REGISTRY_TABLES = ("tenants", "queues", "api_keys", "api_key_grants", "wallboard_links",
                   "access_log")  # fmt: skip
#: (hypertable, time column, segment-by columns) on the TimescaleDB path.
HYPERTABLES = (
    ("queue_buckets", "bucket", "tenant_id, queue_id"),
    ("agent_buckets", "bucket", "tenant_id, agent_id"),
    ("state_segments", "start_at", "tenant_id, agent_id"),
    ("legs", "leg_at", "tenant_id, queue_id"),
    ("queue_snapshots", "at", "tenant_id, queue_id"),
)
ROLLUPS = (("15m", "15 minutes"), ("1h", "1 hour"), ("1d", "1 day"))
_MAX_FIELDS = ("max_wait_answered_ms", "max_wait_abandoned_ms")


@dataclass(frozen=True)
class SchemaOptions:
    """Names and data lifetimes. Retention is in days of event time; columnstore conversion
    happens `compress_after_days` after a chunk's end (keep it well past the correction
    horizon: restating a compressed chunk works, but slowly)."""

    schema: str = "public"
    api_role: str = "callpulse_api"
    #: Grafana's read-only, cross-tenant role (see `pg_reporting`).
    grafana_role: str = "callpulse_grafana"
    bucket_retention_days: int = 400
    leg_retention_days: int = 90
    snapshot_retention_days: int = 14
    compress_after_days: int = 7
    chunk_days: int = 1

    def __post_init__(self) -> None:
        for name in (self.schema, self.api_role, self.grafana_role):
            if not _IDENT.match(name):
                raise ValueError(f"{name!r} is not a plain lower-case SQL identifier")


def _ints(fields: tuple[str, ...]) -> str:
    return ", ".join(f"{f} bigint NOT NULL" for f in fields)


def tables() -> list[str]:
    """The tables of both paths. Primary keys make every write an idempotent upsert and
    contain the time column, as TimescaleDB requires of unique indexes on hypertables.
    Tables rewritten by upserts leave room in each page (fillfactor) for HOT updates."""
    return [
        f"""CREATE TABLE IF NOT EXISTS queue_buckets (
            tenant_id text NOT NULL, queue_id text NOT NULL, bucket timestamptz NOT NULL,
            {_ints(SCALAR_COUNTER_FIELDS)},
            hist_answered {HIST_BINS_SQL} NOT NULL, hist_abandoned {HIST_BINS_SQL} NOT NULL,
            restated boolean NOT NULL DEFAULT false,
            PRIMARY KEY (tenant_id, queue_id, bucket)) WITH (fillfactor = 70)""",
        # `shard` is the events-topic partition whose legs contributed: an agent takes
        # calls from queues owned by several partitions, each upserting its own part.
        f"""CREATE TABLE IF NOT EXISTS agent_buckets (
            tenant_id text NOT NULL, agent_id text NOT NULL, bucket timestamptz NOT NULL,
            shard integer NOT NULL, {_ints(AGENT_FIELDS)},
            PRIMARY KEY (tenant_id, agent_id, bucket, shard)) WITH (fillfactor = 70)""",
        # Time in state: one row per closed segment (from a change to the agent's next),
        # keyed by the change; readers sum the overlaps with their span.
        """CREATE TABLE IF NOT EXISTS state_segments (
            tenant_id text NOT NULL, agent_id text NOT NULL, start_at timestamptz NOT NULL,
            event_id text NOT NULL, state text NOT NULL, end_at timestamptz NOT NULL,
            PRIMARY KEY (tenant_id, agent_id, start_at, event_id)) WITH (fillfactor = 70)""",
        "CREATE INDEX IF NOT EXISTS state_segments_by_end ON state_segments (tenant_id, end_at)",
        # `leg_at` is the leg's earliest event; it only moves earlier, and the writer
        # deletes the row under the older `leg_at` when it does.
        """CREATE TABLE IF NOT EXISTS legs (
            tenant_id text NOT NULL, call_id text NOT NULL, queue_id text NOT NULL,
            visit integer NOT NULL, leg_at timestamptz NOT NULL,
            queued_at_ms bigint, priority integer NOT NULL, caller_key text, outcome text,
            outcome_at_ms bigint, wait_ms bigint, agent_id text, flow_out_reason text,
            transferred_at_ms bigint, handled_at_ms bigint, talk_ms bigint, hold_ms bigint,
            wrap_ms bigint, anomalies text NOT NULL,
            PRIMARY KEY (tenant_id, call_id, queue_id, visit, leg_at)) WITH (fillfactor = 70)""",
        """CREATE TABLE IF NOT EXISTS agents (
            tenant_id text NOT NULL, agent_id text NOT NULL, team_id text NOT NULL,
            state text NOT NULL, since_ms bigint NOT NULL, queues text NOT NULL,
            PRIMARY KEY (tenant_id, agent_id))""",
        # Queues seen in data (the aggregator adds them), next to the declared `queues`.
        """CREATE TABLE IF NOT EXISTS known_queues (
            tenant_id text NOT NULL, queue_id text NOT NULL,
            first_seen timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, queue_id))""",
        """CREATE TABLE IF NOT EXISTS queue_snapshots (
            tenant_id text NOT NULL, queue_id text NOT NULL, at timestamptz NOT NULL,
            calls_waiting integer NOT NULL, longest_wait_ms bigint NOT NULL,
            oldest_queued_at_ms bigint,
            PRIMARY KEY (tenant_id, queue_id, at))""",
        """CREATE TABLE IF NOT EXISTS contracts (
            tenant_id text NOT NULL, queue_id text NOT NULL, version integer NOT NULL,
            body text NOT NULL, PRIMARY KEY (tenant_id, queue_id, version))""",
        """CREATE TABLE IF NOT EXISTS surveys (
            tenant_id text NOT NULL, event_id text NOT NULL, call_id text NOT NULL,
            queue_id text, agent_id text, at_ms bigint NOT NULL, score integer NOT NULL,
            scale_max integer NOT NULL, PRIMARY KEY (tenant_id, event_id))""",
        "CREATE INDEX IF NOT EXISTS surveys_by_time ON surveys (tenant_id, at_ms)",
        # -- the registry ----------------------------------------------------------------
        """CREATE TABLE IF NOT EXISTS tenants (
            tenant_id text PRIMARY KEY, name text NOT NULL, created_at_ms bigint NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS queues (
            tenant_id text NOT NULL, queue_id text NOT NULL, name text NOT NULL,
            created_at_ms bigint NOT NULL, PRIMARY KEY (tenant_id, queue_id))""",
        """CREATE TABLE IF NOT EXISTS api_keys (
            key_id text PRIMARY KEY, key_hash text NOT NULL, tenant_id text,
            role text NOT NULL, label text NOT NULL, created_at_ms bigint NOT NULL,
            expires_at_ms bigint, revoked_at_ms bigint)""",
        """CREATE TABLE IF NOT EXISTS api_key_grants (
            key_id text NOT NULL, kind text NOT NULL CHECK (kind IN ('queue', 'team')),
            value text NOT NULL, PRIMARY KEY (key_id, kind, value))""",
        """CREATE TABLE IF NOT EXISTS wallboard_links (
            link_id text PRIMARY KEY, body text NOT NULL, revoked_at_ms bigint)""",
        """CREATE TABLE IF NOT EXISTS access_log (
            seq bigserial PRIMARY KEY, at_ms bigint NOT NULL, key_id text NOT NULL,
            role text NOT NULL, tenant_id text, method text NOT NULL, path text NOT NULL,
            query text NOT NULL, status integer NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS access_log_by_tenant ON access_log (tenant_id, seq)",
        # The aggregator's own state, written in the same transaction as the results:
        # per partition a fencing generation and the last applied offset, and the core's
        # minimal state (legs and agent timelines, msgpack) keyed like a compacted topic.
        """CREATE TABLE IF NOT EXISTS aggregator_partitions (
            topic text NOT NULL, partition integer NOT NULL,
            generation bigint NOT NULL DEFAULT 0, applied_offset bigint NOT NULL DEFAULT -1,
            max_seen_ms bigint NOT NULL DEFAULT 0,
            evicted_until_ms bigint NOT NULL DEFAULT -4611686018427387904,
            stats bytea, checkpoint bytea, updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition))""",
        """CREATE TABLE IF NOT EXISTS aggregator_legs (
            topic text NOT NULL, partition integer NOT NULL, tenant_id text NOT NULL,
            call_id text NOT NULL, queue_id text NOT NULL, visit integer NOT NULL,
            state bytea NOT NULL,
            PRIMARY KEY (topic, partition, tenant_id, call_id, queue_id, visit))
            WITH (fillfactor = 70)""",
        """CREATE TABLE IF NOT EXISTS aggregator_timelines (
            topic text NOT NULL, partition integer NOT NULL, tenant_id text NOT NULL,
            agent_id text NOT NULL, state bytea NOT NULL,
            PRIMARY KEY (topic, partition, tenant_id, agent_id))""",
        """CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX IF NOT EXISTS legs_by_caller ON legs (tenant_id, queued_at_ms)"
        " WHERE caller_key IS NOT NULL",
    ]


def functions(options: SchemaOptions) -> list[str]:
    """`hist_sum(bigint[])` (element-wise sum of histograms, for the rollups) and
    `api_key(key_id)` (lets the API role look one key up without reading the table)."""
    s = options.schema
    return [
        f"""CREATE OR REPLACE FUNCTION {s}.hist_add(a bigint[], b bigint[]) RETURNS bigint[]
            LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
            $$ SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a
                ELSE ARRAY(SELECT x + y FROM unnest(a, b) AS t(x, y)) END $$""",
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                           WHERE p.proname = 'hist_sum' AND n.nspname = '{s}') THEN
                CREATE AGGREGATE {s}.hist_sum(bigint[]) (SFUNC = {s}.hist_add,
                    STYPE = bigint[], COMBINEFUNC = {s}.hist_add, PARALLEL = SAFE);
            END IF; END $$""",
        f"""CREATE OR REPLACE FUNCTION {s}.api_key(p_key_id text)
            RETURNS TABLE (key_id text, key_hash text, tenant_id text, role text, label text,
                           created_at_ms bigint, expires_at_ms bigint, revoked_at_ms bigint)
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, {s} AS
            $$ SELECT k.key_id, k.key_hash, k.tenant_id, k.role, k.label, k.created_at_ms,
                      k.expires_at_ms, k.revoked_at_ms
               FROM {s}.api_keys k WHERE k.key_id = p_key_id $$""",
        f"REVOKE ALL ON FUNCTION {s}.api_key(text) FROM PUBLIC",
        # Every tenant (declared, or known from data, contracts or keys), for admin routes.
        f"""CREATE OR REPLACE FUNCTION {s}.api_tenants()
            RETURNS TABLE (tenant_id text, name text, created_at_ms bigint, declared boolean)
            LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, {s} AS
            $$ SELECT t.tenant_id, t.name, t.created_at_ms, true FROM {s}.tenants t
               UNION ALL
               SELECT x.t, '', 0::bigint, false FROM (
                   SELECT tenant_id AS t FROM {s}.known_queues
                   UNION SELECT tenant_id FROM {s}.contracts
                   UNION SELECT tenant_id FROM {s}.api_keys WHERE tenant_id IS NOT NULL) x
               WHERE x.t NOT IN (SELECT tenant_id FROM {s}.tenants)
               ORDER BY 1 $$""",
        f"REVOKE ALL ON FUNCTION {s}.api_tenants() FROM PUBLIC",
    ]


def _rollup_select(bucket_expr: str) -> str:
    sums = ", ".join(
        f"{'max' if f in _MAX_FIELDS else 'sum'}({f})::bigint AS {f}" for f in SCALAR_COUNTER_FIELDS
    )
    return (
        f"SELECT tenant_id, queue_id, {bucket_expr} AS bucket, {sums},"
        " hist_sum(hist_answered) AS hist_answered, hist_sum(hist_abandoned) AS hist_abandoned"
        " FROM queue_buckets GROUP BY tenant_id, queue_id, 3"
    )


def plain_rollups() -> list[str]:
    """The rollups as views over `date_bin` (buckets aligned to the Unix epoch, UTC)."""
    return [
        f"CREATE OR REPLACE VIEW queue_buckets_{name} AS "
        + _rollup_select(f"date_bin('{width}', bucket, timestamptz '1970-01-01 00:00:00+00')")
        for name, width in ROLLUPS
    ]


def timescale_statements(options: SchemaOptions, columnstore_api: bool) -> list[str]:
    """Hypertables, continuous aggregates and policies (run right after `tables()`).

    `columnstore_api`: TimescaleDB >= 2.18 (hypercore names); older 2.x gets the
    equivalent compression calls.
    """
    out = ["CREATE EXTENSION IF NOT EXISTS timescaledb"]
    for table, column, _ in HYPERTABLES:
        out.append(
            f"SELECT create_hypertable('{table}', '{column}',"
            f" chunk_time_interval => INTERVAL '{options.chunk_days} days',"
            " if_not_exists => TRUE, migrate_data => TRUE)"
        )
    for name, width in ROLLUPS:
        out.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS queue_buckets_{name}"
            " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            + _rollup_select(f"time_bucket(INTERVAL '{width}', bucket)")
            + " WITH NO DATA"
        )
    # Refresh windows reach back well past the correction horizon, so restated minutes
    # are re-materialised; the most recent buckets come from real-time aggregation.
    for name, start, end, every in (
        ("15m", "3 days", "15 minutes", "5 minutes"),
        ("1h", "3 days", "1 hour", "30 minutes"),
        ("1d", "7 days", "1 day", "6 hours"),
    ):
        out.append(
            f"SELECT add_continuous_aggregate_policy('queue_buckets_{name}',"
            f" start_offset => INTERVAL '{start}', end_offset => INTERVAL '{end}',"
            f" schedule_interval => INTERVAL '{every}', if_not_exists => TRUE)"
        )
    for table, column, segment_by in HYPERTABLES:
        after = f"INTERVAL '{options.compress_after_days} days'"
        if columnstore_api:
            out.append(
                f"ALTER TABLE {table} SET (timescaledb.enable_columnstore = true,"
                f" timescaledb.segmentby = '{segment_by}', timescaledb.orderby = '{column} DESC')"
            )
            out.append(
                f"CALL add_columnstore_policy('{table}', after => {after}, if_not_exists => TRUE)"
            )
        else:
            out.append(
                f"ALTER TABLE {table} SET (timescaledb.compress,"
                f" timescaledb.compress_segmentby = '{segment_by}',"
                f" timescaledb.compress_orderby = '{column} DESC')"
            )
            out.append(
                f"SELECT add_compression_policy('{table}', compress_after => {after},"
                " if_not_exists => TRUE)"
            )
        days = {
            "legs": options.leg_retention_days,
            "queue_snapshots": options.snapshot_retention_days,
        }.get(table, options.bucket_retention_days)
        out.append(
            f"SELECT add_retention_policy('{table}', drop_after => INTERVAL '{days} days',"
            " if_not_exists => TRUE)"
        )
    return out


def api_access(options: SchemaOptions, *, timescale: bool) -> list[str]:
    """The API role, its grants, and the tenant-filtering `api_*` views (see the module
    docstring for why the two paths differ here)."""
    s, role = options.schema, options.api_role
    out = [
        f"""DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
            END IF; END $$""",
        f"GRANT USAGE ON SCHEMA {s} TO {role}",
        f"GRANT EXECUTE ON FUNCTION {s}.api_key(text) TO {role}",
        f"GRANT EXECUTE ON FUNCTION {s}.api_tenants() TO {role}",
        f"GRANT EXECUTE ON FUNCTION {s}.hist_add(bigint[], bigint[]) TO {role}",
        f"GRANT EXECUTE ON FUNCTION {s}.hist_sum(bigint[]) TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON {', '.join(REGISTRY_TABLES)} TO {role}",
        f"GRANT DELETE ON api_key_grants TO {role}",
        f"GRANT USAGE ON SEQUENCE access_log_seq_seq TO {role}",
    ]
    mine = f"current_setting('{TENANT_SETTING}', true)"
    for table in API_TABLES:
        if timescale:
            out += [
                f"REVOKE ALL ON {table} FROM {role}",
                f"CREATE OR REPLACE VIEW api_{table} WITH (security_barrier = true) AS"
                f" SELECT * FROM {table} WHERE tenant_id = {mine} WITH CASCADED CHECK OPTION",
            ]
        else:
            out += [
                f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
                f"DROP POLICY IF EXISTS api_tenant ON {table}",
                f"CREATE POLICY api_tenant ON {table} FOR ALL TO {role}"
                f" USING (tenant_id = {mine}) WITH CHECK (tenant_id = {mine})",
                f"GRANT SELECT ON {table} TO {role}",
                f"CREATE OR REPLACE VIEW api_{table} WITH (security_invoker = true) AS"
                f" SELECT * FROM {table} WHERE tenant_id = {mine} WITH CASCADED CHECK OPTION",
            ]
        out.append(f"GRANT SELECT ON api_{table} TO {role}")
    # Contract versions are written through the API (admin routes), one tenant at a time.
    out.append(f"GRANT INSERT, UPDATE ON api_contracts TO {role}")
    if not timescale:  # a security_invoker view needs the privilege on the table too
        out.append(f"GRANT INSERT, UPDATE ON contracts TO {role}")
    return out


def statements(
    options: SchemaOptions, *, timescale: bool, columnstore_api: bool = True
) -> list[str]:
    """The whole migration for one path, in order; every statement is idempotent."""
    out = [f"SET search_path = {options.schema}", *tables(), *functions(options)]
    out += timescale_statements(options, columnstore_api) if timescale else plain_rollups()
    out += api_access(options, timescale=timescale)
    rollups = tuple(f"queue_buckets_{name}" for name, _ in ROLLUPS)
    out += pg_reporting.statements(
        options.schema, options.grafana_role, timescale=timescale, rollups=rollups
    )
    out.append(
        f"INSERT INTO schema_migrations (version) VALUES ({SCHEMA_VERSION}) ON CONFLICT DO NOTHING"
    )
    return out
