"""A real PostgreSQL for the tests, never a mock and never a silent skip.

Without `DATABASE_URL` a throwaway cluster is created with initdb and started with pg_ctl
from /usr/lib/postgresql/15/bin (override with `CALLPULSE_PG_BIN`) in a temporary
directory, on a free port of 127.0.0.1. PostgreSQL refuses to run as root, so under root
(as in CI) both run as the `postgres` user through `runuser`. With `DATABASE_URL` (a role
that may create databases, e.g. on a TimescaleDB server) that server is used instead.
Either way every test gets a database of its own, dropped afterwards. A server that cannot
be started or reached fails the session loudly.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PG_BIN = Path(os.environ.get("CALLPULSE_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True)
class PgServer:
    """A reachable server; `conninfo` names a maintenance database as a superuser."""

    conninfo: str
    external: bool

    def url(self, dbname: str, user: str | None = None) -> str:
        params = conninfo_to_dict(self.conninfo)
        params["dbname"] = dbname
        if user is not None:
            params["user"] = user
            params.pop("password", None)
        return make_conninfo("", **params)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database (as the server's superuser), dropped afterwards."""
        name = f"cp_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    def has_timescaledb(self) -> bool:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
        return bool(row and row[0])


@dataclass(frozen=True)
class LocalPgServer(PgServer):
    """A throwaway cluster of this process, which a test may stop and start again (same
    port and data directory), e.g. for a database outage."""

    pg_ctl: tuple[str, ...] = ()  # pg_ctl -D <data> (and the start options)
    options: str = ""
    log: str = ""

    def stop(self, mode: str = "fast") -> None:
        _run([*self.pg_ctl, "-m", mode, "-w", "stop"])

    def start(self) -> None:
        _run([*self.pg_ctl, "-o", self.options, "-l", self.log, "-w", "-t", "60", "start"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> None:
    done = subprocess.run(_as_postgres(args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}")


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[LocalPgServer]:
    """initdb + pg_ctl start in a temp dir; stopped (immediate) and removed afterwards."""
    for tool in ("initdb", "pg_ctl"):
        if not (PG_BIN / tool).exists():
            raise RuntimeError(
                f"PostgreSQL 15 is required for the tests: {PG_BIN / tool} is missing "
                "(apt-get install postgresql-15, or set DATABASE_URL)"
            )
    root = Path(tempfile.mkdtemp(prefix="callpulse-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    _run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
          "-E", "UTF8", "--no-sync"])  # fmt: skip
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
          "-w", "-t", "60", "start"])  # fmt: skip
    stop = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    # Should this process die without cleaning up (SIGKILL, a timeout), a detached reaper
    # stops the server and removes its directory, so that no cluster outlives its run.
    reaper = subprocess.Popen(
        ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done;"
         f" {shlex.join(_as_postgres(stop))}; rm -rf {shlex.quote(str(root))}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield LocalPgServer(
            f"host=127.0.0.1 port={port} user=postgres dbname=postgres", False,
            (str(PG_BIN / "pg_ctl"), "-D", str(data)), options, str(root / "log"),
        )  # fmt: skip
    finally:
        with contextlib.suppress(RuntimeError):
            _run(stop)
        shutil.rmtree(root, ignore_errors=True)
        reaper.terminate()
        reaper.wait(timeout=10)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    url = os.environ.get("DATABASE_URL")
    if url:
        server = PgServer(url, True)
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(url, connect_timeout=3).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
        return
    with throwaway_cluster() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database for this test (as the server's superuser)."""
    with pg_server.database() as url:
        yield url
