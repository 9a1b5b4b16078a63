"""`callpulse tenants ...` and `callpulse contracts ...`: administration of the embedded
store from the command line (the same rules as the admin API)."""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ..cli import CliError


def register(subparsers: Any) -> None:
    tenants = subparsers.add_parser("tenants", help="manage tenants and their queues")
    t_sub = tenants.add_subparsers(dest="tenants_command", metavar="ACTION", required=True)
    t_list = t_sub.add_parser("list", help="list tenants (declared and known from data)")
    t_list.set_defaults(handler=_tenants_list)
    t_add = t_sub.add_parser("add", help="declare a tenant (or rename it)")
    t_add.add_argument("tenant_id")
    t_add.add_argument("--name", default="")
    t_add.set_defaults(handler=_tenants_add)
    q_add = t_sub.add_parser("add-queue", help="declare a queue of a tenant (or rename it)")
    q_add.add_argument("tenant_id")
    q_add.add_argument("queue_id")
    q_add.add_argument("--name", default="")
    q_add.set_defaults(handler=_queues_add)
    t_apply = t_sub.add_parser(
        "apply", help="bootstrap tenants, queues and contracts from a TOML file (idempotent)"
    )
    t_apply.add_argument("file", type=Path)
    t_apply.set_defaults(handler=_tenants_apply)

    contracts = subparsers.add_parser("contracts", help="manage versioned SLA contracts")
    c_sub = contracts.add_subparsers(dest="contracts_command", metavar="ACTION", required=True)
    c_list = c_sub.add_parser("list", help="every contract version of a tenant")
    c_list.add_argument("--tenant", required=True)
    c_list.set_defaults(handler=_contracts_list)
    c_add = c_sub.add_parser(
        "add", help="add a contract version, in force from an instant (earlier periods keep"
        " the contract in force then)",
    )  # fmt: skip
    c_add.add_argument("--tenant", required=True)
    c_add.add_argument("--queue", help="omit for the tenant's default contract")
    c_add.add_argument(
        "--effective-from", required=True, help="RFC 3339 with offset, e.g. 2026-04-01T00:00Z"
    )
    c_add.add_argument("--threshold-s", type=int, default=20, help="T, a histogram edge")
    c_add.add_argument("--target-pct", type=float, default=80.0)
    c_add.add_argument("--variant", default="answered")
    c_add.add_argument("--short-abandon-s", type=int, default=5)
    c_add.add_argument("--exclusive", action="store_true", help="within T means wait < T")
    c_add.add_argument("--interval-min", type=int, choices=[15, 30, 60], default=30)
    c_add.add_argument("--timezone", default="UTC", help="IANA zone, e.g. Asia/Kathmandu")
    c_add.add_argument(
        "--hours", action="append", default=[],
        help="business hours, e.g. mon-fri=08:00-18:00 (repeatable; default: all hours)",
    )  # fmt: skip
    c_add.add_argument("--csat-satisfied-pct", type=float, default=80.0)
    c_add.add_argument("--fcr-window-h", type=int, default=72)
    c_add.set_defaults(handler=_contracts_add)
    for p in (t_list, t_add, q_add, t_apply, c_list, c_add):
        p.add_argument("--data-dir", type=Path)


def _store(args: argparse.Namespace) -> Any:
    from ..embedded.runtime import open_store
    from ..embedded.settings import EmbeddedSettings

    overrides = {} if args.data_dir is None else {"data_dir": args.data_dir}
    return open_store(EmbeddedSettings(**overrides))


def _tenants_list(args: argparse.Namespace) -> int:
    store = _store(args)
    for t in store.tenancy.tenants():
        print(f"{t.tenant_id}\t{t.name}\t{'declared' if t.declared else 'from data'}")
    store.close()
    return 0


def _tenants_add(args: argparse.Namespace) -> int:
    from ..store.tenancy import TenantRecord

    store = _store(args)
    now = int(time.time() * 1000)
    store.tenancy.put_tenant(
        TenantRecord(tenant_id=args.tenant_id, name=args.name, created_at_ms=now)
    )
    store.close()
    print(f"tenant {args.tenant_id} declared")
    return 0


def _queues_add(args: argparse.Namespace) -> int:
    from ..store.tenancy import QueueRecord

    store = _store(args)
    now = int(time.time() * 1000)
    store.tenancy.put_queue(
        QueueRecord(
            tenant_id=args.tenant_id, queue_id=args.queue_id, name=args.name, created_at_ms=now
        )
    )
    store.close()
    print(f"queue {args.tenant_id}/{args.queue_id} declared")
    return 0


def _tenants_apply(args: argparse.Namespace) -> int:
    from .bootstrap import BootstrapError, apply, load

    try:
        spec = load(args.file)
    except (BootstrapError, OSError) as exc:
        raise CliError(str(exc)) from None
    store = _store(args)
    try:
        done = apply(spec, store.tenancy.put_tenant, store.tenancy.put_queue, store)
    except BootstrapError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    print(
        f"{done.tenants} tenants, {done.queues} queues; contracts: {done.contracts_added} added,"
        f" {done.contracts_unchanged} unchanged"
    )
    return 0


def _contracts_list(args: argparse.Namespace) -> int:
    store = _store(args)
    for c in sorted(store.contracts(args.tenant), key=lambda c: c.version):
        start = datetime.fromtimestamp(c.effective_from_ms / 1000).astimezone().isoformat()
        print(
            f"v{c.version}\tqueue={c.queue_id or '(default)'}\tfrom={start}\t{c.variant}"
            f"\tT={'<=' if c.inclusive else '<'}{c.threshold_s}s\ttarget={c.target_pct}%"
            f"\t{c.interval_min}min\t{c.timezone}"
        )
    store.close()
    return 0


def parse_hours(specs: list[str]) -> list[dict[str, Any]]:
    """`mon-fri=08:00-18:00` or `sat,sun=10:00-14:00` into business-hours blocks."""
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    out = []
    for spec in specs:
        try:
            when, _, hours = spec.partition("=")
            start, end = hours.split("-")
            picked: list[str] = []
            for part in when.split(","):
                first, _, last = part.partition("-")
                i, j = days.index(first), days.index(last or first)
                picked += days[i : j + 1]
        except ValueError:
            raise CliError(f"--hours {spec!r}: expected e.g. mon-fri=08:00-18:00") from None
        out.append({"days": picked, "start": start, "end": end})
    return out


def _contracts_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..api.routes.admin import ContractIn, contract_from, next_version
    from ..kpi.contracts import ContractError

    try:
        body = ContractIn.model_validate(
            {
                "queue_id": args.queue, "effective_from": args.effective_from,
                "threshold_s": args.threshold_s, "target_pct": args.target_pct,
                "variant": args.variant, "short_abandon_s": args.short_abandon_s,
                "inclusive": not args.exclusive, "interval_min": args.interval_min,
                "timezone": args.timezone, "business_hours": parse_hours(args.hours),
                "csat_satisfied_pct": args.csat_satisfied_pct, "fcr_window_h": args.fcr_window_h,
            }
        )  # fmt: skip
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
    store = _store(args)
    try:
        contract = contract_from(args.tenant, next_version(store.contracts(args.tenant)), body)
        store.put_contract(contract)
    except (ContractError, ValueError) as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    print(f"contract v{contract.version} of {args.tenant} added")
    return 0


# -- keys: rotate, expire, list, grant (create and revoke live with `callpulse run`) --------


def register_key_actions(keys_sub: Any) -> None:
    rotate = keys_sub.add_parser(
        "rotate", help="a new key with the same tenant, role and grants (printed once)"
    )
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace-s", type=int, default=0, help="the old key keeps working this long (0)"
    )
    rotate.set_defaults(handler=_keys_rotate)
    expire = keys_sub.add_parser("expire", help="set when a key stops working")
    expire.add_argument("key_id")
    when = expire.add_mutually_exclusive_group(required=True)
    when.add_argument("--at", help="RFC 3339 with offset")
    when.add_argument("--in-days", type=float)
    when.add_argument("--never", action="store_true")
    expire.set_defaults(handler=_keys_expire)
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--tenant", help="a tenant's keys (default: admin keys)")
    listing.set_defaults(handler=_keys_list)
    grant = keys_sub.add_parser(
        "grant", help="limit a teamlead key to some queues and teams (replaces its grants)"
    )
    grant.add_argument("key_id")
    grant.add_argument("--queue", action="append", default=[])
    grant.add_argument("--team", action="append", default=[])
    grant.set_defaults(handler=_keys_grant)
    for p in (rotate, expire, listing, grant):
        p.add_argument("--data-dir", type=Path)


def _key(store: Any, key_id: str) -> Any:
    record = store.get_key(key_id)
    if record is None:
        store.close()
        raise CliError(f"no key with id {key_id!r}")
    return record


def _keys_rotate(args: argparse.Namespace) -> int:
    import msgspec

    from ..store.keys import new_key

    store = _store(args)
    old = _key(store, args.key_id)
    now = int(time.time() * 1000)
    if not old.usable(now):
        store.close()
        raise CliError(f"key {args.key_id} is already revoked or expired")
    token, record = new_key(old.tenant_id, old.role, old.label, now, old.expires_at_ms)
    store.put_key(record)
    store.tenancy.put_grants(record.key_id, store.tenancy.grants(old.key_id))
    cutoff = now + args.grace_s * 1000
    if old.expires_at_ms is None or cutoff < old.expires_at_ms:
        store.put_key(msgspec.structs.replace(old, expires_at_ms=cutoff))
    store.close()
    print(token)
    return 0


def _keys_expire(args: argparse.Namespace) -> int:
    import msgspec

    store = _store(args)
    record = _key(store, args.key_id)
    if args.never:
        expires = None
    elif args.in_days is not None:
        expires = int(time.time() * 1000) + int(args.in_days * 86_400_000)
    else:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            at = None
        if at is None or at.tzinfo is None:
            store.close()
            raise CliError("--at: expected RFC 3339 with an offset")
        expires = int(at.timestamp() * 1000)
    store.put_key(msgspec.structs.replace(record, expires_at_ms=expires))
    store.close()
    print(f"key {args.key_id} expires {'never' if expires is None else args.at or expires}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    store = _store(args)
    now = int(time.time() * 1000)
    after = ""
    while True:
        page = store.tenancy.keys(args.tenant, after, 500)
        for k in page:
            grants = store.tenancy.grants(k.key_id)
            state = "usable" if k.usable(now) else "revoked/expired"
            scope = ",".join([*grants.queues, *(f"team:{t}" for t in grants.teams)]) or "-"
            print(f"{k.key_id}\t{k.role}\t{k.tenant_id or '*'}\t{state}\t{scope}\t{k.label}")
        if len(page) < 500:
            break
        after = page[-1].key_id
    store.close()
    return 0


def _keys_grant(args: argparse.Namespace) -> int:
    from ..store.tenancy import KeyGrants

    store = _store(args)
    record = _key(store, args.key_id)
    if record.role != "teamlead":
        store.close()
        raise CliError("only teamlead keys have queue and team grants")
    grants = KeyGrants(queues=tuple(sorted(set(args.queue))), teams=tuple(sorted(set(args.team))))
    store.tenancy.put_grants(args.key_id, grants)
    store.close()
    print(
        f"key {args.key_id}: queues {list(grants.queues) or 'all'},"
        f" teams {list(grants.teams) or 'all'}"
    )
    return 0
