"""Security: no secret in the repository or in logs and data files; API keys stored hashed;
caller numbers never stored in clear (HMAC under a per-tenant key, in SQLite and in
PostgreSQL) and never in dead-letter records; Faust's web server off, or on loopback only;
security headers on the pages and the API.

Expected values are computed here from the documented rules (SHA-256 of the key's secret,
HMAC-SHA256 under HMAC(secret, "caller-key:" + tenant)), not by calling the product.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from confluent_kafka import Producer

from services.store.keys import new_key
from services.store.postgres import PostgresStore, migrate
from tests.conftest import ROOT, Service, free_port
from tests.distributed import CALLER_SECRET, read_topic, stack, wait_caught_up
from tests.kafka import MockCluster
from tests.reliability import record

pytestmark = pytest.mark.reliability

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
NUMBERS = ["+33612345678", "+4915112345678", "0044 20 7946 0958"]

# -- 1. no secret in the tracked files --------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Slack webhook": re.compile(r"hooks\.slack\.com/services/T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/\w{20,}"),
    "CallPulse API key": re.compile(r"\bcp_[0-9a-f]{12}_[A-Za-z0-9_-]{40,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:([^@\s/'\"]+)@"),
    "assigned secret": re.compile(
        r"(?i)\b(?:password|passwd|secret|api_?key|token)\w*\s*[:=]\s*[\"']([A-Za-z0-9+/_\-]{24,})[\"']"
    ),
}
# Placeholders, not secrets: an environment variable to be filled in, or documentation's
# obvious stand-ins for a throwaway local database.
PLACEHOLDERS = re.compile(r"^(?:\$\{?[A-Z_]+\}?|pw|password|secret|changeme|change-me|\.\.\.)$")


def find_secrets(text: str) -> list[tuple[str, str]]:
    hits = []
    for name, pattern in SECRET_PATTERNS.items():
        for m in pattern.finditer(text):
            value = m.group(1) if m.groups() else m.group(0)
            if not PLACEHOLDERS.match(value):
                hits.append((name, m.group(0)[:60]))
    return hits


def test_the_secret_scanner_finds_planted_secrets() -> None:
    """The scan below can fail: each pattern finds a planted sample, and placeholders pass."""
    token, _ = new_key("t", "client", "x", 0)
    # Written in pieces, so that this file itself passes the scan of the tracked files.
    planted = [
        "-----BEGIN RSA " "PRIVATE KEY-----", "-----BEGIN OPENSSH " "PRIVATE KEY-----",
        "aws_access_key_id = AKIA" "IOSFODNN7EXAMPLE", "ghp_" + "a1B2" * 9,
        "xoxb" "-123456789012-abcdefghij",
        "https://hooks.slack.com/services/" "T01ABCDEFG/B01ABCDEFG/abcdEFGHijklMNOPqrstUVWX",
        f"curl -H 'Authorization: Bearer {token}'", "postgresql://callpulse:" "s3cr3t-pw@db/x",
        'API_KEY = "' 'Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0"',
    ]  # fmt: skip
    for sample in planted:
        assert find_secrets(sample), sample
    for fine in ("postgresql://callpulse:${CALLPULSE_DB_PASSWORD}@timescaledb:5432/callpulse",
                 "DATABASE_URL=postgresql://postgres:pw@127.0.0.1:55433/postgres",
                 "token = new_key(tenant, role)", "password: SecretStr"):  # fmt: skip
        assert not find_secrets(fine), fine


def test_no_secret_in_the_tracked_files() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    scanned, hits = 0, []
    for name in filter(None, files):
        path = ROOT / name.decode()
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        scanned += 1
        hits += [(str(path.relative_to(ROOT)), *hit) for hit in find_secrets(text)]
        if path.name.endswith((".pem", ".key", ".p12", ".pfx")) or path.name in (".env",):
            hits.append((str(path.relative_to(ROOT)), "key or env file", path.name))
    record("security", "no secret in the tracked files", {
        "files_scanned": scanned, "patterns": sorted(SECRET_PATTERNS), "findings": len(hits),
    })  # fmt: skip
    assert scanned > 100
    assert not hits, hits


# -- 2. a real `callpulse run`: keys hashed, no token or caller number in logs or files -----


def caller_hmac(secret: bytes, tenant: str, number: str) -> str:
    """The documented rule, computed here: HMAC-SHA256 under HMAC(secret, caller-key:tenant)."""
    tenant_key = hmac.new(secret, b"caller-key:" + tenant.encode(), hashlib.sha256).digest()
    return hmac.new(tenant_key, number.strip().encode(), hashlib.sha256).hexdigest()


def queued(tenant: str, call: str, number: str, at: datetime) -> dict[str, Any]:
    return {
        "schema_version": "1.0", "event_id": f"{tenant}-{call}-q", "event_type": "call.queued",
        "occurred_at": at.isoformat(), "tenant_id": tenant, "source": "sec", "call_id": call,
        "queue_id": "sales", "caller_key": number,
    }  # fmt: skip


def answered(tenant: str, call: str, at: datetime) -> dict[str, Any]:
    return {
        "schema_version": "1.0", "event_id": f"{tenant}-{call}-a", "event_type": "call.answered",
        "occurred_at": at.isoformat(), "tenant_id": tenant, "source": "sec", "call_id": call,
        "queue_id": "sales", "agent_id": "ag1",
    }  # fmt: skip


def traffic(tenant: str) -> list[dict[str, Any]]:
    out = []
    for n, number in enumerate(NUMBERS):
        out += [queued(tenant, f"c{n}", number, NOW + timedelta(seconds=n)),
                answered(tenant, f"c{n}", NOW + timedelta(seconds=n + 9))]  # fmt: skip
    return out


def forms(number: str) -> list[bytes]:
    """The ways a caller number could appear in clear: as sent, digits only, UTF-16."""
    digits = re.sub(r"\D", "", number)
    return [number.encode(), digits.encode(), number.encode("utf-16-le")]


def cli(*args: str, data_dir: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args, "--data-dir", str(data_dir)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """`callpulse run` at DEBUG log level (the most it ever says), its log in a file."""
    data_dir, log_path = tmp_path / "data", tmp_path / "run.log"
    data_dir.mkdir()
    admin = cli("keys", "create", "--role", "admin", data_dir=data_dir)
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--log-level", "DEBUG", "run",
             "--data-dir", str(data_dir), "--port", str(port)],
            cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        yield data_dir, log_path, f"{url}|{admin}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_no_token_or_caller_number_in_logs_or_data_files(
    run_process: tuple[Path, Path, str],
) -> None:
    data_dir, log_path, where = run_process
    url, admin = where.split("|")
    admin_auth = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        # Keys made through the API, used, rotated; a wrong secret for a real key id.
        made = {}
        for tenant, role in (("sec-a", "ingest"), ("sec-b", "ingest"), ("sec-a", "client")):
            r = client.post("/v1/admin/keys", headers=admin_auth,
                            json={"tenant_id": tenant, "role": role, "label": "sec"})  # fmt: skip
            assert r.status_code == 201, r.text
            made[(tenant, role)] = r.json()["key"]
        tokens = [admin, *made.values()]
        for tenant in ("sec-a", "sec-b"):
            auth = {"Authorization": f"Bearer {made[(tenant, 'ingest')]}"}
            r = client.post("/v1/events", content=msgspec.json.encode(traffic(tenant)),
                            headers=auth)  # fmt: skip
            assert r.status_code == 202 and r.json()["accepted"] == 6, r.text
            # A rejected event carrying a number: the rejection must not echo it to the log.
            bad = queued(tenant, "bad", NUMBERS[0], NOW) | {"priority": "high"}
            r = client.post("/v1/events", content=msgspec.json.encode([bad]), headers=auth)
            assert r.status_code == 422
        reader = {"Authorization": f"Bearer {made[('sec-a', 'client')]}"}
        assert client.get("/v1/queues/sales/live", headers=reader).status_code == 200
        key_id = made[("sec-a", "client")].split("_")[1]
        wrong = {"Authorization": f"Bearer cp_{key_id}_{'x' * 43}"}
        assert client.get("/v1/queues", headers=wrong).status_code == 401
        r = client.post(f"/v1/admin/keys/{key_id}/rotate", headers=admin_auth, json={})
        assert r.status_code == 201, r.text
        tokens.append(r.json()["key"])
        deadline = time.monotonic() + 30
        while client.get("/healthz").json()["lag_events"] and time.monotonic() < deadline:
            time.sleep(0.1)
    time.sleep(1.5)  # the access log is written in batches at least every second

    # Keys are stored as SHA-256 of their secret, never the secret.
    db = sqlite3.connect(data_dir / "store.db")
    try:
        stored_keys = dict(db.execute("SELECT key_id, key_hash FROM api_keys").fetchall())
        legs = db.execute("SELECT tenant_id, call_id, caller_key FROM legs").fetchall()
    finally:
        db.close()
    for token in tokens:
        _, kid, secret = token.split("_", 2)
        assert stored_keys[kid] == hashlib.sha256(secret.encode()).hexdigest()

    # Caller numbers: HMAC under the tenant's key; the same number differs across tenants.
    secret = (data_dir / "caller-key.secret").read_text().strip().encode()
    assert (data_dir / "caller-key.secret").stat().st_mode & 0o077 == 0
    by_tenant: dict[str, dict[str, str]] = {}
    for tenant, call, caller_key in legs:
        by_tenant.setdefault(tenant, {})[call] = caller_key
    for tenant in ("sec-a", "sec-b"):
        assert by_tenant[tenant] == {
            f"c{n}": caller_hmac(secret, tenant, number) for n, number in enumerate(NUMBERS)
        }
    assert set(by_tenant["sec-a"].values()).isdisjoint(by_tenant["sec-b"].values())

    # Nothing in clear anywhere: the process's whole log output and every file it wrote.
    time.sleep(0.5)
    places = {"log": log_path.read_bytes()}
    places |= {str(p.relative_to(data_dir)): p.read_bytes()
               for p in data_dir.rglob("*") if p.is_file()}  # fmt: skip
    needles = {f"token {t[:6]}...": t.split("_", 2)[2].encode() for t in tokens}
    needles |= {f"number {n}": form for n in NUMBERS for form in forms(n)}
    found = [(what, place) for what, needle in needles.items()
             for place, content in places.items() if needle in content]  # fmt: skip
    record("security", "callpulse run: keys hashed, no token or caller number in clear", {
        "log_bytes": len(places["log"]), "files_scanned": len(places) - 1,
        "tokens": len(tokens), "caller_numbers": len(NUMBERS), "found_in_clear": len(found),
        "keys_stored_as_sha256": len(tokens), "tenants_with_distinct_caller_keys": 2,
    })  # fmt: skip
    assert len(places["log"]) > 0 and len(places) > 3
    assert not found, found


# -- 3. distributed: PostgreSQL legs, dead letters, Faust's web server ----------------------


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] != "0A" or parts[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = parts[1].split(":")
            assert len(hex_addr) == width
            if width == 8:
                address = ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                address = "::1" if hex_addr == "0" * 24 + "01000000" else hex_addr
            out.append((address, int(hex_port, 16)))
    return out


def test_distributed_caller_keys_dead_letters_and_faust_web_server(
    pg_url: str, kafka: MockCluster, tmp_path: Path
) -> None:
    migrate(pg_url)
    token, key = new_key(None, "admin", "sec", int(time.time() * 1000))
    owner = PostgresStore(pg_url, pool_size=1)
    owner.put_key(key)
    owner.close()
    web_port = free_port()
    with stack(kafka.bootstrap, pg_url, tmp_path) as s:
        s.start("ingest", "ingest")
        s.start("agg", "aggregator")
        s.env_extra["CALLPULSE_WEB_PORT"] = str(web_port)
        s.start("web", "aggregator")
        s.env_extra.pop("CALLPULSE_WEB_PORT")
        body = msgspec.json.encode(traffic("pg-a") + traffic("pg-b"))
        r = httpx.post(f"{s.url('ingest')}/v1/events", content=body, timeout=30,
                       headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert r.status_code == 202 and r.json()["accepted"] == 12, r.text
        # Poison records behind the ingest's back, with caller numbers in every place.
        producer = Producer({"bootstrap.servers": kafka.bootstrap})
        key_bytes = b'["pg-a","q","sales"]'
        producer.produce(s.topics.events, key=key_bytes, value=f"not json {NUMBERS[0]}".encode())
        poison = queued("pg-a", f"c-{NUMBERS[1][1:]}", NUMBERS[1], NOW) | {
            "priority": "urgent",
            "note": NUMBERS[2],
            "event_id": f"p-{NUMBERS[2]}",
        }
        producer.produce(s.topics.events, key=key_bytes, value=msgspec.json.encode([poison]))
        assert producer.flush(10) == 0
        wait_caught_up(s, timeout_s=120)
        # Faust's web server: off by default, loopback only when enabled.
        for _ in range(100):
            if ("127.0.0.1", web_port) in listening(s.procs["web"].pid):
                break
            time.sleep(0.2)
        sockets = {name: listening(s.procs[name].pid) for name in ("agg", "web")}
    assert sockets["agg"] == [], sockets
    assert sockets["web"] == [("127.0.0.1", web_port)], sockets

    with psycopg.connect(pg_url) as conn:
        legs = conn.execute("SELECT tenant_id, call_id, caller_key FROM legs").fetchall()
        dump = "\n".join(
            str(row) for table in ("legs", "queue_buckets", "api_keys")
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()
        )  # fmt: skip
        stored_hash = conn.execute(
            "SELECT key_hash FROM api_keys WHERE key_id = %s", (token.split("_")[1],)
        ).fetchone()
    assert stored_hash == (hashlib.sha256(token.split("_", 2)[2].encode()).hexdigest(),)
    expected = {(tenant, f"c{n}"): caller_hmac(CALLER_SECRET.encode(), tenant, number)
                for tenant in ("pg-a", "pg-b") for n, number in enumerate(NUMBERS)}  # fmt: skip
    assert {(t, c): k for t, c, k in legs} == expected
    dead = read_topic(kafka.bootstrap, s.topics.dlq)
    assert len(dead) == 2, dead
    dead_bytes = b"\n".join(value for _, value in dead)
    clear = [n for n in NUMBERS for form in forms(n) if form in dead_bytes or form.decode(
        "utf-8", "ignore") in dump]  # fmt: skip
    assert token.split("_", 2)[2] not in dump
    record("security", "distributed: caller keys in PostgreSQL, dead letters, Faust web", {
        "legs_checked": len(legs), "dead_letters": len(dead), "numbers_in_clear": len(clear),
        "aggregator_listening_default": sockets["agg"],
        "aggregator_listening_with_web_port": [f"{a}:{p}" for a, p in sockets["web"]],
    })  # fmt: skip
    assert not clear, (clear, dead_bytes[:500])


# -- 4. security headers --------------------------------------------------------------------


async def test_security_headers_on_pages_and_api(service: Service) -> None:
    client = service.key("hdr", "client")
    ingest = service.key("hdr", "ingest")
    answers = {
        "wallboard page": await service.client.get("/wallboard"),
        "team page": await service.client.get("/team"),
        "static script": await service.client.get("/static/wallboard.js"),
        "API read": await service.client.get("/v1/queues", headers=client),
        "API 401": await service.client.get("/v1/queues"),
        "API 404": await service.client.get("/v1/nothing-here", headers=client),
        "ingest 413": await service.client.post(
            "/v1/events", content=b" " * (service.embedded.settings.max_body_bytes + 1),
            headers=ingest),
        "ingest 422": await service.client.post("/v1/events", content=b"[1]", headers=ingest),
        "health": await service.client.get("/healthz"),
        "openapi": await service.client.get("/openapi.json"),
    }  # fmt: skip
    for name, r in answers.items():
        h = r.headers
        assert h.get("x-content-type-options") == "nosniff", name
        assert h.get("x-frame-options") == "DENY", name
        assert h.get("referrer-policy") == "no-referrer", name
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), name
        assert h.get("cache-control") in ("no-store", "no-cache"), (name, h.get("cache-control"))
    # The pages keep their own policy: their scripts and styles come from the site only.
    for name in ("wallboard page", "team page"):
        csp = answers[name].headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert "default-src 'none'" in answers["API read"].headers["content-security-policy"]
    record("security", "security headers", {
        "responses_checked": len(answers),
        "headers": ["Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options",
                    "Referrer-Policy", "Cache-Control"],
    })  # fmt: skip
