"""Helpers for the Grafana tests: the provisioning files, and Grafana's SQL interpolation.

`expand` does what Grafana does to a PostgreSQL query before it reaches the database:
the frontend replaces template variables (`$var`, `${var}`, `${var:sqlstring}`,
`[[var]]`; a multi-value or include-all variable becomes quoted values joined by commas,
a single value has its quotes doubled), then the backend replaces `$__interval`,
`$__interval_ms`, `$__unixEpochFrom()`/`To()` and the macros of
pkg/tsdb/grafana-postgresql-datasource/macros.go (`$__timeFilter(col)` is
`col BETWEEN 'from' AND 'to'`, `$__timeFrom()`/`$__timeTo()` quoted RFC 3339 UTC,
`$__timeGroup(col, interval)` is `floor(extract(epoch from col)/s)*s`, or
`time_bucket('s.000s',col)` with the data source's TimescaleDB option, `...Alias` adds
`AS "time"`). An unknown variable or macro is an error, not an empty string.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
PROVISIONING = GRAFANA / "provisioning"

Variables = Mapping[str, str | Sequence[str]]


def rfc3339(at: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC instant (trailing zeros of the fraction dropped)."""
    text = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if at.microsecond:
        text += f".{at.microsecond:06d}".rstrip("0")
    return text + "Z"


_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def interval_seconds(text: str) -> float:
    match = _INTERVAL.match(text.strip().strip("'"))
    if match is None:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNIT_S[match.group(2)]


def _number(seconds: float) -> str:
    """Go's %v of a float64 (whole numbers without a fraction)."""
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def _variable(value: str | Sequence[str], fmt: str | None, name: str) -> str:
    values = [value] if isinstance(value, str) else list(value)
    multi = not isinstance(value, str)
    if fmt == "sqlstring":
        return ",".join(_quote(v) for v in values)
    if fmt == "raw":
        return ",".join(values)
    if fmt is not None:
        raise ValueError(f"format {fmt!r} of ${{{name}}} is not handled by this expander")
    # The SQL data sources' default: quote multi-value variables, escape single ones.
    return ",".join(_quote(v) for v in values) if multi else values[0].replace("'", "''")


def expand(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    variables: Variables,
    timescale: bool = False,
    interval: str = "1m",
) -> str:
    """The SQL Grafana would send for a panel over [start, end] (see the module docstring)."""

    def var(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if name.startswith("__"):
            return match.group(0)  # a built-in, handled below
        if name not in variables:
            raise KeyError(f"template variable ${name} is not defined")
        return _variable(variables[name], match.group(2), name)

    sql = _VAR.sub(var, sql)
    seconds = interval_seconds(interval)
    sql = sql.replace("$__interval_ms", str(int(seconds * 1000)))
    sql = sql.replace("$__interval", interval)
    sql = sql.replace("$__rate_interval", interval)
    sql = sql.replace("$__unixEpochFrom()", str(int(start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(end.timestamp())))

    def macro(match: re.Match[str]) -> str:
        name = match.group(1)
        # Grafana < 5.3 compatibility, kept by macros.go: `$__timeGroup(...)` directly
        # followed by a comma is read as `$__timeGroupAlias(...)`.
        if name == "__timeGroup" and match.string[match.end() : match.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in match.group(2).split(",")]
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339(start)}' AND '{rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{rfc3339(end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            s = interval_seconds(args[1])
            if timescale:
                group = f"time_bucket('{s:.3f}s',{args[0]})"
            else:
                group = f"floor(extract(epoch from {args[0]})/{_number(s)})*{_number(s)}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__time":
            return f'{args[0]} AS "time"'
        raise ValueError(f"macro ${name} is not handled by this expander")

    sql = _MACRO.sub(macro, sql)
    leftover = re.search(r"\$\w+", re.sub(r"'[^']*'", "''", sql))
    if leftover:
        raise ValueError(f"uninterpolated {leftover.group(0)} in:\n{sql}")
    return sql


# -- provisioning files ------------------------------------------------------------------------


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def provisioning(kind: str) -> list[dict[str, Any]]:
    """Every YAML document under provisioning/<kind>/."""
    return [
        yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in sorted((PROVISIONING / kind).glob("*.yaml"))
    ]


def datasource_uids() -> dict[str, str]:
    return {
        ds["uid"]: ds["type"]
        for doc in provisioning("datasources")
        for ds in doc.get("datasources", [])
    }


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for doc in provisioning("alerting")
        for group in doc.get("groups", [])
        for rule in group["rules"]
    ]


@dataclass(frozen=True)
class Query:
    """One SQL query Grafana runs: a panel target, a template variable or an alert query."""

    where: str
    sql: str
    fmt: str  # "table" or "time_series"
    panel: dict[str, Any] | None
    board: str


def sql_queries(pg_uid: str = "callpulse-pg") -> Iterator[Query]:
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var.get("type") == "query" and var["datasource"]["uid"] == pg_uid:
                yield Query(f"{name} variable ${var['name']}", var["query"], "table", None, name)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target["datasource"]["uid"] == pg_uid:
                    where = f"{name} panel {panel['title']!r} {target['refId']}"
                    yield Query(where, target["rawSql"], target["format"], panel, name)
    for rule in alert_rules():
        for data in rule["data"]:
            if data["datasourceUid"] == pg_uid:
                model = data["model"]
                yield Query(f"alert rule {rule['uid']}", model["rawSql"], model["format"], None, "")


def referenced_columns(panel: dict[str, Any]) -> set[str]:
    """Names a panel refers to: reduce-field regexes (/^name$/) and byName overrides."""
    names: set[str] = set()
    fields = panel.get("options", {}).get("reduceOptions", {}).get("fields", "")
    match = re.fullmatch(r"/\^(\w+)\$/", fields)
    if match:
        names.add(match.group(1))
    elif fields:
        raise AssertionError(f"panel {panel['title']!r}: unexpected reduce fields {fields!r}")
    for override in panel.get("fieldConfig", {}).get("overrides", []):
        if override["matcher"]["id"] == "byName":
            names.add(override["matcher"]["options"])
    for transformation in panel.get("transformations", []):
        names.update(transformation.get("options", {}).get("renameByName", {}))
    return names


def minute(at: datetime) -> datetime:
    return at - timedelta(seconds=at.second, microseconds=at.microsecond)
