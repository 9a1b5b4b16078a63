"""Processes the benchmarks measure: `callpulse run` and a trivial FastAPI app, on loopback."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

TRIVIAL = """
import sys
from fastapi import FastAPI, Request
from fastapi.responses import Response
import uvicorn

app = FastAPI()
SIZE = int(sys.argv[2])
BODY = b"x" * SIZE

@app.post("/v1/events", status_code=202)
async def events(request: Request) -> dict[str, int]:
    body = await request.body()
    return {"accepted": len(body)}

@app.get("/constant")
def constant() -> Response:
    return Response(BODY, media_type="application/json")

@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str) -> None:
    for _ in range(400):
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{url}/healthz", timeout=1)
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def callpulse(*args: str) -> Iterator[tuple[str, str, Path]]:
    """(base URL, admin key, data dir) of a fresh `callpulse run` process."""
    with tempfile.TemporaryDirectory() as data_dir:
        key = subprocess.run(
            [sys.executable, "-m", "services.cli", "keys", "create", "--role", "admin",
             "--data-dir", data_dir], cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "--log-level", "WARNING", "run",
             "--data-dir", data_dir, "--port", str(port), *args], cwd=ROOT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url)
            yield url, key, Path(data_dir)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextlib.contextmanager
def trivial(constant_size: int = 100) -> Iterator[str]:
    """Base URL of a trivial FastAPI app: POST /v1/events reads the body; GET /constant."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", TRIVIAL, str(port), str(constant_size)])
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
