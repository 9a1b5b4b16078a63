"""`callpulse migrate | ingest | aggregator | api | api-key`: the distributed mode.

Each command builds its settings (env prefix CALLPULSE_, see `settings.py`) once, here, and
passes them down; heavy imports happen inside the handlers so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from typing import Any

from ..cli import CliError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    migrate = subparsers.add_parser(
        "migrate", help="create or update the PostgreSQL/TimescaleDB schema (distributed mode)"
    )
    migrate.add_argument(
        "--timescale", choices=["auto", "on", "off"],
        help="use TimescaleDB (auto: when the extension is available)",
    )  # fmt: skip
    migrate.set_defaults(handler=_migrate)

    ingest = subparsers.add_parser("ingest", help="HTTP ingest producing to Kafka")
    ingest.add_argument("--host", help="address to listen on (127.0.0.1)")
    ingest.add_argument("--port", type=int, help="port to listen on (8001)")
    ingest.set_defaults(handler=_ingest)

    aggregator = subparsers.add_parser(
        "aggregator", help="a Faust worker aggregating the events topic into the store"
    )
    aggregator.set_defaults(handler=_aggregator)

    api = subparsers.add_parser("api", help="the API, stateless, over PostgreSQL and Kafka")
    api.add_argument("--host", help="address to listen on (127.0.0.1)")
    api.add_argument("--port", type=int, help="port to listen on (8000)")
    api.set_defaults(handler=_api)

    key = subparsers.add_parser("api-key", help="create or revoke an API key in PostgreSQL")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    create = key_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--tenant", help="the tenant the key is scoped to (omit for admin)")
    create.add_argument(
        "--role", required=True, choices=["admin", "client", "teamlead", "wallboard", "ingest"]
    )
    create.add_argument("--label", default="")
    create.set_defaults(handler=_key_create)
    revoke = key_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_key_revoke)


def _overrides(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    return {n: v for n in names if (v := getattr(args, n, None)) is not None}


def _migrate(args: argparse.Namespace) -> int:
    from ..store.pg_schema import SchemaOptions
    from ..store.postgres import migrate
    from .settings import MigrateSettings

    settings = MigrateSettings(**_overrides(args, "timescale"))
    options = SchemaOptions(
        api_role=settings.api_role, bucket_retention_days=settings.bucket_retention_days,
        leg_retention_days=settings.leg_retention_days,
        snapshot_retention_days=settings.snapshot_retention_days,
        compress_after_days=settings.compress_after_days,
    )  # fmt: skip
    timescale = {"auto": None, "on": True, "off": False}[settings.timescale]
    path = migrate(settings.database_url.get_secret_value(), options, timescale)
    print(f"schema is up to date ({path})")
    return 0


def _caller_secret(settings: Any) -> bytes:
    if settings.caller_key_secret is None:
        raise CliError(
            "set CALLPULSE_CALLER_KEY_SECRET: every ingest replica must hash caller numbers "
            "with the same secret"
        )
    return bytes(settings.caller_key_secret.get_secret_value().encode())


def _serve(settings: Any, backend: Any, routers: Any, tasks: list[Any]) -> int:
    import uvicorn
    from prometheus_client import CollectorRegistry

    from ..api.app import ROUTERS, create_app
    from ..api.deps import ApiConfig

    config = ApiConfig(
        max_body_bytes=settings.max_body_bytes,
        max_events_per_request=settings.max_events_per_request,
        caller_key_secret=_caller_secret(settings) if settings.ingest else b"",
        stale_after_s=getattr(settings, "stale_after_s", 5.0),
        rate_limit_per_s=settings.rate_limit_per_s,
        rate_limit_burst=settings.rate_limit_burst,
    )
    app = create_app(backend, config, CollectorRegistry(), routers or ROUTERS)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                       access_log=False)
    )  # fmt: skip

    async def main() -> None:
        running = [asyncio.create_task(t) for t in tasks]
        try:
            await server.serve()
        finally:
            for task in running:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if backend.sink is not None:
                await backend.sink.stop()
            backend.store.close()

    asyncio.run(main())
    return 0


def _sink(settings: Any) -> Any:
    from ..ingest.kafka import KafkaSink

    return KafkaSink(
        settings.kafka_bootstrap, settings.events_topic, settings.ack_timeout_s,
        settings.retry_after_s, settings.message_max_events, settings.linger_ms,
    )  # fmt: skip


def _ingest(args: argparse.Namespace) -> int:
    from ..api.routes import ingest, operations
    from ..store.postgres import PostgresStore
    from .backend import DistributedBackend
    from .settings import IngestSettings

    settings = IngestSettings(**_overrides(args, "host", "port"))
    _caller_secret(settings)
    sink = _sink(settings)
    store = PostgresStore(settings.api_database_url.get_secret_value(), pool_size=4)
    backend = DistributedBackend(store, None, sink, settings.events_topic, 5.0, 4 * 3_600_000)
    print(f"CallPulse ingest listening on http://{settings.host}:{settings.port}"
          f" -> Kafka {settings.kafka_bootstrap} topic {settings.events_topic}")  # fmt: skip
    return _serve(
        settings,
        backend,
        (ingest.router, operations.router),
        [sink.start(), backend.watch_store()],
    )


def _api(args: argparse.Namespace) -> int:
    from ..store.postgres import PostgresStore
    from .backend import DistributedBackend, LiveSnapshots
    from .settings import ApiSettings

    settings = ApiSettings(**_overrides(args, "host", "port"))
    sink = _sink(settings) if settings.ingest else None
    live = LiveSnapshots(settings.kafka_bootstrap, settings.snapshots_topic)
    store = PostgresStore(settings.api_database_url.get_secret_value(), settings.pool_size)
    backend = DistributedBackend(
        store, live, sink, settings.events_topic, settings.stale_after_s,
        settings.stale_leg_s * 1000,
    )  # fmt: skip
    tasks = [live.run(), backend.watch_store()]
    if sink is not None:
        tasks.append(sink.start())
    print(f"CallPulse API (distributed) listening on http://{settings.host}:{settings.port}")
    return _serve(settings, backend, None, tasks)


def _aggregator(args: argparse.Namespace) -> int:
    from ..aggregator.distributed import run
    from .settings import AggregatorSettings

    return run(AggregatorSettings(), logging.getLevelName(logging.getLogger().level))


def _key_create(args: argparse.Namespace) -> int:
    from ..store.keys import new_key
    from ..store.postgres import PostgresStore
    from .settings import MigrateSettings

    try:
        token, record = new_key(args.tenant, args.role, args.label, int(time.time() * 1000))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    store = PostgresStore(MigrateSettings().database_url.get_secret_value(), pool_size=1)
    try:
        store.put_key(record)
    finally:
        store.close()
    print(token)
    return 0


def _key_revoke(args: argparse.Namespace) -> int:
    import msgspec

    from ..store.postgres import PostgresStore
    from .settings import MigrateSettings

    store = PostgresStore(MigrateSettings().database_url.get_secret_value(), pool_size=1)
    try:
        record = store.get_key(args.key_id)
        if record is None:
            raise CliError(f"no key with id {args.key_id!r}")
        store.put_key(msgspec.structs.replace(record, revoked_at_ms=int(time.time() * 1000)))
    finally:
        store.close()
    print(f"revoked {args.key_id}")
    return 0
