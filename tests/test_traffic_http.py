"""The simulator and an importer posting to a real `callpulse run` over HTTP: what the
service stores equals a batch recomputation from the very events the tool would write to a
file, and the CLI lists only commands that work."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from services.store.sqlite import SqliteStore
from tests.conftest import ROOT, Process
from tests.oracle import batch, nonzero

ASTERISK = ROOT.parent / "shared" / "data" / "asterisk" / "pbxware-queue_log-2018.csv"


def cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def serve(process: Callable[[str], Process], name: str) -> tuple[Process, str]:
    proc = process(name)
    proc.data_dir.mkdir(parents=True)
    key = cli("keys", "create", "--role", "admin", "--data-dir", str(proc.data_dir)).strip()
    proc.start()
    return proc, key


def stored_buckets(proc: Process) -> dict:  # type: ignore[type-arg]
    proc.wait_caught_up()
    proc.kill()  # SIGKILL: what was acknowledged must already be safe or be replayed
    proc.start()
    proc.wait_caught_up()
    proc.kill()
    store = SqliteStore(proc.data_dir / "store.db")
    try:
        return store.all_queue_buckets()
    finally:
        store.close()


def test_simulate_posts_to_the_service(process: Callable[[str], Process], tmp_path: Path) -> None:
    proc, key = serve(process, "sim")
    common = ["simulate", "scenarios/demo.toml", "--seed", "3", "--start",
              "2026-11-23T08:00:00+00:00", "--duration", "3h", "--as-fast-as-possible"]  # fmt: skip
    cli(*common, "--url", proc.url, "--key", key)
    written = tmp_path / "events.ndjson"
    cli(*common, "--out", str(written))
    events = [msgspec.json.decode(line) for line in written.read_bytes().splitlines()]
    assert len(events) > 500
    assert nonzero(stored_buckets(proc)) == nonzero(batch(events)[0])


def test_import_posts_to_the_service(process: Callable[[str], Process], tmp_path: Path) -> None:
    proc, key = serve(process, "imp")
    cli("import", "asterisk-queue-log", str(ASTERISK), "--tenant", "pbx", "--url", proc.url,
        "--key", key)  # fmt: skip
    written = tmp_path / "events.ndjson"
    cli("import", "asterisk-queue-log", str(ASTERISK), "--tenant", "pbx", "--out", str(written))
    events = [msgspec.json.decode(line) for line in written.read_bytes().splitlines()]
    assert len(events) > 100
    assert nonzero(stored_buckets(proc)) == nonzero(batch(events)[0])


def test_every_listed_command_has_working_help() -> None:
    top = cli("--help")
    listed = [
        line.split()[0] for line in top.split("COMMAND\n", 1)[1].split("options:")[0].splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]  # fmt: skip
    assert {"run", "keys", "simulate", "import"} <= set(listed)
    for command in listed:
        assert "usage: callpulse " + command in cli(command, "--help")


@pytest.mark.parametrize(
    "bad", [["keys", "create", "--role", "client"], ["keys", "revoke", "nope"]]
)
def test_cli_errors_are_one_clear_line(bad: list[str], tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "services.cli", *bad, "--data-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.startswith("callpulse: error: ") and "Traceback" not in out.stderr
