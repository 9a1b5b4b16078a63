"""`callpulse run` and `callpulse keys`."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from ..cli import CliError


def register(subparsers: Any) -> None:
    run = subparsers.add_parser(
        "run", help="run the whole product in one process (embedded, no external service)"
    )
    run.add_argument("--simulate", action="store_true", help="add a simulated call centre")
    run.add_argument("--data-dir", type=Path, help="where the log and store live (./data)")
    run.add_argument("--host", help="address to listen on (127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (8000)")
    run.set_defaults(handler=_run)

    keys = subparsers.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--tenant", help="the tenant the key is scoped to (omit for admin)")
    create.add_argument(
        "--role", required=True, choices=["admin", "client", "teamlead", "wallboard", "ingest"]
    )
    create.add_argument("--label", default="", help="a note: who or what uses the key")
    create.add_argument("--expires-in-days", type=float, help="expiry (default: never)")
    create.add_argument("--data-dir", type=Path)
    create.set_defaults(handler=_keys_create)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.add_argument("--data-dir", type=Path)
    revoke.set_defaults(handler=_keys_revoke)
    from ..tenancy.command import register_key_actions

    register_key_actions(keys_sub)  # rotate, expire, list, grant


def _settings(args: argparse.Namespace) -> Any:
    from .settings import EmbeddedSettings

    overrides = {
        name: value
        for name in ("data_dir", "host", "port")
        if (value := getattr(args, name, None)) is not None
    }
    return EmbeddedSettings(**overrides)


def _run(args: argparse.Namespace) -> int:
    from ..alerts.rules_file import AlertConfigError
    from ..api.links import new_link
    from ..kpi.contracts import Contract
    from ..simulator.scenario import load_scenario
    from ..store.keys import new_key
    from .runtime import DEMO_SCENARIO, Embedded, demo_traffic, link_secret

    settings = _settings(args)
    try:
        embedded = Embedded(settings)
    except AlertConfigError as exc:  # a broken alert rules file: say where, no traceback
        raise CliError(str(exc)) from None
    traffic = None
    if args.simulate:
        scenario = load_scenario(DEMO_SCENARIO)
        for tenant in scenario.tenants:
            if not embedded.store.contracts(tenant.id):
                embedded.store.put_contract(
                    Contract(tenant_id=tenant.id, timezone=tenant.timezone, version=1)
                )
        token, record = new_key(None, "admin", "demo (run --simulate)", int(time.time() * 1000))
        embedded.store.put_key(record)
        base = f"http://{settings.host}:{settings.port}"
        print("CallPulse is running with a simulated call centre.")
        print(f"  admin key (shown once): {token}")
        print(f"  live queues: curl -H 'Authorization: Bearer {token}' "
              f"'{base}/v1/queues?tenant={scenario.tenants[0].id}'")  # fmt: skip
        floor, link_token = new_link(
            link_secret(settings), [t.id for t in scenario.tenants], None,
            int(time.time() * 1000), 7 * 86_400_000, "demo floor (run --simulate)",
        )  # fmt: skip
        embedded.store.put_link(floor)
        first = scenario.tenants[0]
        print(f"  wallboard:   {base}/wallboard?token={link_token}")
        print(f"  team view:   {base}/team?tenant={first.id}&team={first.agents[0].team} "
              "(sign in with the admin key)")  # fmt: skip
        print(f"  API docs:    {base}/docs")
        print(f"  metrics:     {base}/metrics")
        traffic = demo_traffic(scenario)
    else:
        print(f"CallPulse listening on http://{settings.host}:{settings.port} "
              f"(data in {settings.data_dir})")  # fmt: skip
    asyncio.run(embedded.serve(traffic))
    return 1 if embedded.failed else 0


def _keys_create(args: argparse.Namespace) -> int:
    from ..store.keys import new_key
    from .runtime import open_store

    now = int(time.time() * 1000)
    expires = None if args.expires_in_days is None else now + int(args.expires_in_days * 86_400_000)
    try:
        token, record = new_key(args.tenant, args.role, args.label, now, expires)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    store = open_store(_settings(args))
    store.put_key(record)
    store.close()
    print(token)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    import msgspec

    from .runtime import open_store

    store = open_store(_settings(args))
    record = store.get_key(args.key_id)
    if record is None:
        raise CliError(f"no key with id {args.key_id!r}")
    store.put_key(msgspec.structs.replace(record, revoked_at_ms=int(time.time() * 1000)))
    store.close()
    print(f"revoked {args.key_id}")
    return 0
