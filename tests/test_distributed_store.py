"""The PostgreSQL store against a real PostgreSQL 15: migrations, absolute upserts, restore,
fencing, the API role's tenant isolation, and the rollups. The TimescaleDB statements are
parsed here (pglast) and their rollup query is run on plain PostgreSQL through a
`time_bucket` stand-in; the one test that needs the extension itself runs only when
DATABASE_URL names a TimescaleDB server (README: "Tests against TimescaleDB")."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from itertools import pairwise
from typing import Any

import msgspec
import pglast
import psycopg
import pytest
from pglast import ast
from pglast.stream import RawStream

from services.kpi.centre import Centre, Settings
from services.kpi.counters import AgentCounters, Counters, StateTime, merged
from services.kpi.events import AgentStateChanged, CallLegEvent, Event, decode_event
from services.kpi.leg import at_ms
from services.store import pg_schema
from services.store.keys import new_key
from services.store.postgres import (
    Fenced,
    PartitionWrite,
    PartitionWriter,
    PostgresStore,
    migrate,
)
from tests.distributed import START, recorded_events, wire, with_user
from tests.oracle import batch, nonzero
from tests.pg import PgServer

SETTINGS = Settings(correction_horizon_ms=40 * 86_400_000)


def decoded(raw: list[bytes]) -> list[Event]:
    out = []
    for body in raw:
        event = decode_event(body)
        assert not hasattr(event, "reason") or hasattr(event, "event_id")
        out.append(event)  # type: ignore[arg-type]
    return out


def fold(centre: Centre, events: list[Event]) -> tuple[set[Any], set[Any], set[Any]]:
    """Apply events; (touched legs, touched timelines, touched queues) as the pipeline keeps."""
    legs, timelines, queues = set(), set(), set()
    for e in events:
        centre.apply(e, at_ms(e))
        if isinstance(e, CallLegEvent):
            legs.add((e.tenant_id, e.call_id, e.queue_id, e.visit))
            queues.add((e.tenant_id, e.queue_id))
        elif isinstance(e, AgentStateChanged):
            timelines.add((e.tenant_id, e.agent_id))
    return legs, timelines, queues


def write(writer: PartitionWriter, generation: int, offset: int, centre: Centre,
          touched: tuple[set[Any], set[Any], set[Any]]) -> int:  # fmt: skip
    legs, timelines, queues = touched
    part = PartitionWrite(0, generation, offset, centre, legs, timelines, set(), queues)
    n = asyncio.run(writer.write([part]))
    centre.clear_dirty()
    return n


def test_migrate_twice_creates_the_plain_schema(pg_url: str) -> None:
    assert migrate(pg_url, timescale=False) == "postgresql"
    assert migrate(pg_url, timescale=False) == "postgresql"  # idempotent
    with psycopg.connect(pg_url) as conn:
        tables = {
            r[0]
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        views = {
            r[0] for r in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
        }
        rls = dict(conn.execute(
            "SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY(%s)",
            (list(pg_schema.API_TABLES),),
        ).fetchall())  # fmt: skip
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    assert set(pg_schema.API_TABLES) | set(pg_schema.REGISTRY_TABLES) <= tables
    assert {f"api_{t}" for t in pg_schema.API_TABLES} <= views
    assert {"queue_buckets_15m", "queue_buckets_1h", "queue_buckets_1d"} <= views
    assert all(rls.values()) and len(rls) == len(pg_schema.API_TABLES)
    assert version == (pg_schema.SCHEMA_VERSION,)


def test_writes_are_absolute_and_a_claim_restores_the_state(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    events = decoded(recorded_events(12))
    half = len(events) // 2
    writer = PartitionWriter(pg_url, "events", SETTINGS)
    store = PostgresStore(pg_url, pool_size=1)
    try:
        claim = asyncio.run(writer.claim(0))
        assert (claim.generation, claim.applied_offset, claim.centre.legs) == (1, -1, {})
        centre = Centre(SETTINGS)
        write(writer, 1, 10, centre, fold(centre, events[:half]))
        touched = fold(centre, events[half:])
        write(writer, 1, 20, centre, touched)
        first = (store.all_queue_buckets(), store.all_agent_buckets(), store.all_legs())
        # Writing the same absolute values again changes nothing (a replay after a crash).
        centre.dirty_queue.update(centre.queue_buckets)
        centre.dirty_agent.update(centre.agent_buckets)
        centre.dirty_segments.update(
            (s.key, s) for timeline in centre.timelines.values() for s in timeline.segments()
        )
        write(writer, 1, 20, centre, touched)
        assert (store.all_queue_buckets(), store.all_agent_buckets(), store.all_legs()) == first

        oracle_q, oracle_a = batch(wire(recorded_events(12)))
        assert nonzero(first[0]) == nonzero(oracle_q)
        assert nonzero(first[1]) == nonzero(oracle_a)
        segments = [s for timeline in centre.timelines.values() for s in timeline.segments()]
        assert {s.key: s for s in store.all_segments()} == {s.key: s for s in segments}

        again = asyncio.run(writer.claim(0))
        assert again.generation == 2 and again.applied_offset == 20
        assert again.centre.queue_buckets == centre.queue_buckets
        assert again.centre.agent_buckets == centre.agent_buckets
        assert again.centre.legs == centre.legs
        assert again.centre.timelines == centre.timelines
        assert {k: v for k, v in again.centre.waiting.items() if v} == {
            k: v for k, v in centre.waiting.items() if v
        }
    finally:
        asyncio.run(writer.close())
        store.close()


def test_per_agent_totals_match_the_batch_recomputation(pg_url: str) -> None:
    """The team view's sums in SQL (over shards, inside a window) equal the oracle's agent
    buckets and the core's state minutes summed per agent in Python."""
    migrate(pg_url, timescale=False)
    raw = recorded_events(12)
    events = decoded(raw)
    writer = PartitionWriter(pg_url, "events", SETTINGS)
    store = PostgresStore(pg_url, pool_size=1)
    try:
        asyncio.run(writer.claim(0))
        centre = Centre(SETTINGS)
        write(writer, 1, 0, centre, fold(centre, events))
        _, oracle_agents = batch(wire(raw))
        start = int(START.timestamp() * 1000) + 3 * 60_000
        end = start + 5 * 60_000  # a window inside the replay: its edges must hold
        for tenant in sorted({e.tenant_id for e in events}):
            handle: dict[str, AgentCounters] = defaultdict(AgentCounters)
            for (t, agent, minute), c in oracle_agents.items():
                if t == tenant and start <= minute < end:
                    handle[agent].merge(c)
            assert nonzero(store.agent_totals(tenant, start, end)) == nonzero(dict(handle))
            states: dict[str, StateTime] = defaultdict(StateTime)
            for (t, agent), timeline in centre.timelines.items():
                for before, after in pairwise(timeline.changes):
                    overlap = min(after.at, end) - max(before.at, start)
                    if t == tenant and overlap > 0:
                        states[agent].add(before.state, overlap)
            assert store.state_totals(tenant, start, end) == dict(states)
    finally:
        asyncio.run(writer.close())
        store.close()


def test_a_restated_bucket_stays_flagged_when_rewritten(pg_url: str) -> None:
    """A late event's restatement is not unflagged by a later on-time write of the bucket."""
    migrate(pg_url, timescale=False)
    writer = PartitionWriter(pg_url, "events", SETTINGS)
    key = ("t", "q", 60_000)
    try:
        asyncio.run(writer.claim(0))
        centre = Centre(SETTINGS)
        for offset, (offered, restated) in enumerate(((1, True), (2, False))):
            centre.queue_buckets[key] = Counters(offered=offered)
            centre.dirty_queue.add(key)
            if restated:
                centre.restated.add(key)
            write(writer, 1, offset, centre, (set(), set(), set()))
    finally:
        asyncio.run(writer.close())
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT offered, restated FROM queue_buckets").fetchall()
    assert row == [(2, True)]
    store = PostgresStore(pg_url, pool_size=1)
    try:  # what the intervals API marks
        assert store.restated_minutes("t", "q", 0, 120_000) == {60_000}
        assert store.restated_minutes("t", "q", 0, 60_000) == set()
        assert store.restated_minutes("other", "q", 0, 120_000) == set()
    finally:
        store.close()


def test_a_fenced_writer_writes_nothing(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    events = decoded(recorded_events(3))
    old, new = (PartitionWriter(pg_url, "events", SETTINGS) for _ in range(2))
    store = PostgresStore(pg_url, pool_size=1)
    try:
        stale = asyncio.run(old.claim(0))
        fresh = asyncio.run(new.claim(0))  # another worker took the partition over
        centre = Centre(SETTINGS)
        touched = fold(centre, events)
        with pytest.raises(Fenced):
            write(old, stale.generation, 5, centre, touched)
        assert store.all_queue_buckets() == {} and store.all_legs() == []
        centre = Centre(SETTINGS)
        write(new, fresh.generation, 5, centre, fold(centre, events))
        assert nonzero(store.all_queue_buckets()) == nonzero(batch(wire(recorded_events(3)))[0])
    finally:
        asyncio.run(old.close())
        asyncio.run(new.close())
        store.close()


def _two_tenants(pg_url: str) -> None:
    writer = PartitionWriter(pg_url, "events", SETTINGS)
    centre = Centre(SETTINGS)
    evs = decoded(recorded_events(5))
    tenants = sorted({e.tenant_id for e in evs})[:2]
    evs = [e for e in evs if e.tenant_id in tenants]
    claim = asyncio.run(writer.claim(0))
    write(writer, claim.generation, 1, centre, fold(centre, evs))
    asyncio.run(writer.close())


def test_the_api_role_sees_one_tenant_and_owns_nothing(pg_url: str) -> None:
    migrate(pg_url, timescale=False)
    _two_tenants(pg_url)
    owner = PostgresStore(pg_url, pool_size=1)
    tenants = sorted({k[0] for k in owner.all_queue_buckets()})
    assert len(tenants) == 2
    a, b = tenants
    _, key = new_key(a, "client", "t", 0)
    owner.put_key(key)
    api_url = with_user(pg_url, "callpulse_api")
    with psycopg.connect(api_url) as conn:
        owners = {r[0] for r in conn.execute("SELECT DISTINCT tableowner FROM pg_tables"
                                               " WHERE schemaname = 'public'")}  # fmt: skip
        assert "callpulse_api" not in owners
        # Row-level security: no tenant set, nothing visible, even without a WHERE clause.
        assert conn.execute("SELECT count(*) FROM queue_buckets").fetchone() == (0,)
        conn.execute("SELECT set_config('callpulse.tenant_id', %s, false)", (a,))
        seen = {r[0] for r in conn.execute("SELECT tenant_id FROM queue_buckets")}
        assert seen == {a}
        assert {r[0] for r in conn.execute("SELECT tenant_id FROM api_legs")} == {a}
        assert conn.execute("SELECT key_id FROM api_key(%s)", (key.key_id,)).fetchone() == (
            key.key_id,
        )
        conn.rollback()
        for forbidden in (
            "INSERT INTO queue_buckets (tenant_id) VALUES ('x')",
            "SELECT * FROM aggregator_legs",
            "DELETE FROM legs",
            "UPDATE agent_buckets SET handled = 0",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
            conn.rollback()
    api = PostgresStore(api_url, pool_size=1)
    try:
        by_owner = owner.all_queue_buckets()
        for tenant in (a, b):
            queues = api.queues(tenant)
            assert queues == sorted({k[1] for k in by_owner if k[0] == tenant})
            for queue in queues:
                want = merged([c for k, c in by_owner.items() if k[:2] == (tenant, queue)])
                assert api.queue_total(tenant, queue, 0, 2**50) == want
                assert api.queue_buckets(tenant, queue, 0, 2**50) == {
                    k[2]: c for k, c in by_owner.items() if k[:2] == (tenant, queue)
                }
        assert api.get_key(key.key_id) == key
    finally:
        api.close()
        owner.close()


def test_the_timescale_path_views_isolate_tenants_without_rls(pg_url: str) -> None:
    """TimescaleDB refuses RLS next to continuous aggregates and compression; its path
    guards the API role with security-barrier views instead. Those are plain SQL: run here."""
    options = pg_schema.SchemaOptions()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in (*pg_schema.tables(), *pg_schema.functions(options),
                          *pg_schema.api_access(options, timescale=True)):  # fmt: skip
            conn.execute(statement.encode())
        conn.execute("INSERT INTO agents VALUES ('t1', 'a1', 'x', 'available', 0, '[]'),"
                     " ('t2', 'a2', 'x', 'available', 0, '[]')")  # fmt: skip
    with psycopg.connect(with_user(pg_url, "callpulse_api")) as conn:
        conn.execute("SELECT set_config('callpulse.tenant_id', 't2', false)")
        assert conn.execute("SELECT tenant_id, agent_id FROM api_agents").fetchall() == [
            ("t2", "a2")
        ]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM agents")


def _cagg_query(statement: str) -> str:
    """The SELECT inside a `CREATE MATERIALIZED VIEW ... AS SELECT ... WITH NO DATA`."""
    (raw,) = pglast.parse_sql(statement)
    node = raw.stmt
    assert isinstance(node, ast.CreateTableAsStmt)
    return str(RawStream()(node.query))


def test_timescale_statements_parse_and_their_rollups_match_the_plain_views(pg_url: str) -> None:
    options = pg_schema.SchemaOptions()
    for columnstore in (True, False):
        statements = pg_schema.statements(options, timescale=True, columnstore_api=columnstore)
        for statement in statements:
            pglast.parse_sql(statement)  # raises on a syntax error
        text = "\n".join(statements)
        assert text.count("create_hypertable(") == len(pg_schema.HYPERTABLES)
        assert text.count("add_retention_policy(") == len(pg_schema.HYPERTABLES)
        assert text.count("add_continuous_aggregate_policy(") == 3
        assert text.count("timescaledb.materialized_only = false") == 3
        policy = "add_columnstore_policy(" if columnstore else "add_compression_policy("
        assert text.count(policy) == len(pg_schema.HYPERTABLES)
        assert "ROW LEVEL SECURITY" not in text
    caggs = [s for s in pg_schema.timescale_statements(options, True)
             if s.startswith("CREATE MATERIALIZED VIEW")]  # fmt: skip
    assert len(caggs) == 3

    migrate(pg_url, timescale=False)
    writer = PartitionWriter(pg_url, "events", SETTINGS)
    centre = Centre(SETTINGS)
    claim = asyncio.run(writer.claim(0))
    write(writer, claim.generation, 1, centre, fold(centre, decoded(recorded_events(40))))
    asyncio.run(writer.close())
    expected: dict[str, dict[Any, Counters]] = {}
    for (name, _), width_ms in zip(pg_schema.ROLLUPS, (900_000, 3_600_000, 86_400_000),
                                   strict=True):  # fmt: skip
        groups: dict[Any, list[Counters]] = defaultdict(list)
        for (t, q, m), c in centre.queue_buckets.items():
            groups[(t, q, m - m % width_ms)].append(c)
        expected[name] = {k: merged(v) for k, v in groups.items()}
    cols = ", ".join(pg_schema.SCALAR_COUNTER_FIELDS)
    with psycopg.connect(pg_url) as conn:
        # TimescaleDB's time_bucket for these widths is date_bin from the epoch (UTC).
        conn.execute(
            "CREATE FUNCTION time_bucket(w interval, ts timestamptz) RETURNS timestamptz"
            " LANGUAGE sql IMMUTABLE AS $$ SELECT date_bin(w, ts, timestamptz 'epoch') $$"
        )
        for (name, _), cagg in zip(pg_schema.ROLLUPS, caggs, strict=True):
            for source in (f"queue_buckets_{name}", f"({_cagg_query(cagg)}) AS cagg"):
                rows = conn.execute(
                    f"SELECT tenant_id, queue_id, (extract(epoch FROM bucket) * 1000)::bigint,"
                    f" {cols}, hist_answered, hist_abandoned FROM {source}"
                ).fetchall()
                got = {
                    (r[0], r[1], r[2]): Counters(
                        **dict(zip(pg_schema.SCALAR_COUNTER_FIELDS, r[3:-2], strict=True)),
                        hist_answered=list(r[-2]), hist_abandoned=list(r[-1]),
                    )
                    for r in rows
                }  # fmt: skip
                assert got == expected[name], (name, source)


def test_on_a_real_timescaledb(pg_server: PgServer, pg_url: str) -> None:
    """Runs only against a TimescaleDB server named by DATABASE_URL (see the README)."""
    if not pg_server.external or not pg_server.has_timescaledb():
        pytest.skip(
            "needs DATABASE_URL naming a PostgreSQL server with the timescaledb extension "
            "(README: Tests against TimescaleDB); the plain path ran above"
        )
    assert migrate(pg_url) == "timescaledb"
    assert migrate(pg_url) == "timescaledb"
    events = decoded(recorded_events(20))
    writer = PartitionWriter(pg_url, "events", SETTINGS)
    centre = Centre(SETTINGS)
    claim = asyncio.run(writer.claim(0))
    write(writer, claim.generation, 1, centre, fold(centre, events))
    asyncio.run(writer.close())
    with psycopg.connect(pg_url) as conn:
        hypertables = {r[0] for r in conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables")}  # fmt: skip
        caggs = {r[0] for r in conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates")}  # fmt: skip
        jobs = conn.execute("SELECT count(*) FROM timescaledb_information.jobs"
                            " WHERE proc_name <> 'policy_telemetry'").fetchone()  # fmt: skip
        total = conn.execute("SELECT sum(offered), sum(answered) FROM queue_buckets_1h").fetchone()
    assert {t for t, _, _ in pg_schema.HYPERTABLES} <= hypertables
    assert {"queue_buckets_15m", "queue_buckets_1h", "queue_buckets_1d"} <= caggs
    assert jobs is not None and jobs[0] >= 3 + 2 * len(pg_schema.HYPERTABLES)
    all_ = merged(list(centre.queue_buckets.values()))
    assert total == (all_.offered, all_.answered)  # real-time aggregation sees fresh rows
    store = PostgresStore(with_user(pg_url, "callpulse_api"), pool_size=1)
    try:
        tenant = next(iter(centre.queue_buckets))[0]
        assert store.queues(tenant) == sorted(
            {q for t, q, _ in centre.queue_buckets if t == tenant}
        )
    finally:
        store.close()
    assert msgspec.json.encode(nonzero(centre.queue_buckets))
