"""Real local servers for alert delivery tests: an HTTP receiver (webhooks), aiosmtpd (SMTP,
with STARTTLS and AUTH), Debian's Alertmanager; and a sample notice."""

from __future__ import annotations

import contextlib
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from services.alerts.views import notice_payload
from services.store.alerts import AlertRecord, Delivery
from tests.conftest import free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers `status`."""

    status: int = 200
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                if status < 300:  # a refused request was not received
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.on(path)) >= count:
                return self.on(path)
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.on(path))} requests, wanted {count}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


class Mailbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (and its key), made with openssl."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed to make the SMTP server's certificate"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextlib.contextmanager
def smtp_server(
    tls: tuple[Path, Path] | None = None, users: dict[str, str] | None = None
) -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server on 127.0.0.1: plain, or STARTTLS required with AUTH."""
    mailbox = Mailbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        kwargs |= {"tls_context": context, "require_starttls": True}
    if users is not None:

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == (
                data.password.decode()
            )
            return AuthResult(success=ok, handled=False)

        kwargs |= {"authenticator": authenticate, "auth_required": True}
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@contextlib.contextmanager
def alertmanager(tmp: Path, webhook_url: str) -> Iterator[str]:
    """Debian's Alertmanager on a free 127.0.0.1 port, forwarding to a webhook (resolved
    notifications included, grouped by alert, flushed every second)."""
    assert Path(ALERTMANAGER).exists(), (
        f"{ALERTMANAGER} is missing: apt-get install prometheus-alertmanager (scripts/test.sh)"
    )
    config = tmp / "alertmanager.yml"
    config.write_text(
        "route:\n  receiver: hook\n  group_by: ['alert_id']\n  group_wait: 0s\n"
        "  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: '{webhook_url}/am'\n        send_resolved: true\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"alertmanager exited: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "alertmanager did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def sample_delivery(
    channel: str,
    address: str,
    kind: str = "firing",
    delivery_id: int = 7,
    resolved_at_ms: int | None = None,
) -> Delivery:
    """A notice as the engine writes it to the outbox."""
    now = int(time.time() * 1000)
    record = AlertRecord(
        alert_id="al_test0001",
        rule_id="sales-sl",
        target="acme|sales|",
        tenant_id="acme",
        queue_id="sales",
        team_id=None,
        severity="critical",
        state="resolved" if resolved_at_ms else "firing",
        summary="SL (15 min) 71.4% < 80.0% on acme/sales",
        value=71.4,
        threshold=80.0,
        started_at_ms=now - 300_000,
        fired_at_ms=now - 180_000,
        resolved_at_ms=resolved_at_ms,
    )
    payload = notice_payload(kind, now, record, "http://callpulse.test", {"metric": "sl_rolling"})
    return Delivery(
        delivery_id=delivery_id,
        alert_id=record.alert_id,
        kind=kind,
        due_ms=now,
        recipient_id="r1",
        channel=channel,
        address=address,
        payload=json.dumps(payload),
        created_at_ms=now,
    )
