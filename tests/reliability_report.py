"""Regenerate docs/reliability.md: run the reliability tests, then render their figures.

    python -m tests.reliability_report           # the standing (CI-sized) runs
    python -m tests.reliability_report --soak    # longer runs, into docs/reliability-soak.md
    python -m tests.reliability_report --soak tests/test_reliability_crash.py  # some only

Every test marked `reliability` records what it injected and saw through
`tests.reliability.record(...)` into a fresh directory (CALLPULSE_RELIABILITY_DIR); the
1-million-event memory figure of the embedded mode comes from bench/memory.py. The document
renders every section it finds, whatever test wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
SOAK_DOC = ROOT / "docs" / "reliability-soak.md"
SOAK_FACTOR = 4

#: Sections in this order first (the issue's order), then any other alphabetically.
ORDER = (
    "disorder", "crash-embedded", "crashes", "crash-distributed", "rebalance", "store_outage",
    "store-outage", "broker", "broker-outage", "poison", "hostile", "hostile-input", "security",
    "memory",
)  # fmt: skip


def run_tests(figures_dir: Path, soak: bool, extra: list[str]) -> tuple[int, str, float]:
    """Run `pytest -m reliability`; returns (exit code, pytest's summary line, seconds)."""
    env = {**os.environ, "CALLPULSE_RELIABILITY_DIR": str(figures_dir)}
    args = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider"]
    if soak:
        env["CALLPULSE_SOAK"] = str(SOAK_FACTOR)
        args.append("--timeout=3600")  # the soak variants run longer than CI's 5 minutes
    started = time.monotonic()
    done = subprocess.run([*args, *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    sys.stdout.write(done.stdout[-4000:])
    sys.stderr.write(done.stderr[-2000:])
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    return done.returncode, summary, time.monotonic() - started


def run_memory(figures_dir: Path, events: int) -> None:
    """The embedded mode's RSS over an `events`-long replay (bench/memory.py), recorded."""
    os.environ["CALLPULSE_RELIABILITY_DIR"] = str(figures_dir)
    from bench.memory import replay_rss
    from tests import reliability

    reliability.FIGURES = figures_dir
    started = time.monotonic()
    sent, legs, half, peak, last = replay_rss(events)
    reliability.record(
        "memory",
        f"RSS of the embedded mode over a {sent:,}-event replay of the large centre "
        "(bench/memory.py: ingest, aggregation and store in one process, horizon 2 h)",
        {
            "events": sent, "rss_half_way_mib": round(half, 1), "rss_max_mib": round(peak, 1),
            "rss_end_mib": round(last, 1), "rss_end_over_half_way": round(last / half, 3),
            "legs_held_at_end": legs, "run_s": round(time.monotonic() - started, 1),
        },
    )  # fmt: skip


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", info.read_text(), re.MULTILINE)
        if found:
            cpu = found.group(1).strip()
    mem = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        found = re.search(r"^MemTotal:\s*(\d+) kB", meminfo.read_text(), re.MULTILINE)
        if found:
            mem = f", {int(found.group(1)) / 2**20:.1f} GiB RAM"
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} CPU ({cpu}){mem}, "
        f"Python {platform.python_version()}"
    )


def commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        if len(value) > 12:
            shown = ", ".join(_value(v) for v in value[:12])
            return f"{shown}, … ({len(value)} values)"
        return ", ".join(_value(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k} {_value(v)}" for k, v in value.items()) or "none"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _flatten(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        # Small dicts of numbers read best on one line; others get a row per entry.
        if isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values()):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def render(figures_dir: Path, meta: dict[str, str]) -> str:
    files = {p.stem: p for p in figures_dir.glob("*.json")}
    names = [n for n in ORDER if n in files] + sorted(n for n in files if n not in ORDER)
    out = [
        "# Reliability: figures of the last run",
        "",
        "Generated by `python -m tests.reliability_report"
        + (" --soak" if meta["soak"].startswith("yes") else "")
        + "`; do not edit by hand. Each section is one reliability test (pytest marker "
        "`reliability`): what it injected, the events, the results compared integer for "
        "integer with a batch recomputation from the deduplicated events (tests/harness.py, "
        "tests/oracle.py), and recovery times. Times are wall-clock seconds on the machine "
        "below, shared with other work: read them as orders of magnitude, not benchmarks.",
        "",
        "The standing runs (CI-sized) render into `docs/reliability.md`, the soak runs "
        "(`--soak`) into `docs/reliability-soak.md`.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in meta.items()),
        "",
    ]
    if not names:
        out += ["No figures were recorded.", ""]
    for name in names:
        entries = json.loads(files[name].read_text())
        out += [f"## {name}", ""]
        for entry in entries:
            out += [f"### {entry['title']}", "", f"Recorded {entry['at'][:19]}Z.", ""]
            out += ["| figure | value |", "|---|---|"]
            out += [f"| {k} | {_value(v)} |" for k, v in _flatten(entry["figures"])]
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability_report")
    parser.add_argument("--soak", action="store_true", help=f"runs x{SOAK_FACTOR} longer")
    parser.add_argument("--render-only", type=Path, metavar="DIR",
                        help="render figures already recorded in DIR, run nothing")  # fmt: skip
    parser.add_argument("--memory-events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, help=f"default {DOC.name}, {SOAK_DOC.name} with --soak")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k crash)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # bench/memory.py reads scenarios/ relative to the repository
    started = datetime.now(UTC)
    meta = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC", "commit": commit(), "machine": machine(),
        "soak": "yes" if args.soak else "no",
    }  # fmt: skip
    code = 0
    if args.render_only is not None:
        figures_dir = args.render_only
    else:
        figures_dir = ROOT / "artifacts" / "reliability" / f"run-{started:%Y%m%dT%H%M%SZ}"
        figures_dir.mkdir(parents=True)
        code, summary, _ = run_tests(figures_dir, args.soak, args.pytest_args)
        meta["tests"] = f"`pytest -m reliability {' '.join(args.pytest_args)}`: {summary}"
        if args.soak:
            meta["soak"] = (
                f"yes: CALLPULSE_SOAK={SOAK_FACTOR} (event counts and kills x{SOAK_FACTOR})"
            )
        mem_started = time.monotonic()
        run_memory(figures_dir, args.memory_events)
        meta["memory replay"] = (
            f"{args.memory_events:,} events, {time.monotonic() - mem_started:.0f} s"
        )
    # The run's facts live with its figures, so `--render-only DIR` renders them again.
    saved = figures_dir / "run.meta"
    if args.render_only is not None and saved.exists():
        meta = json.loads(saved.read_text())
    else:
        saved.write_text(json.dumps(meta))
    meta["figures"] = str(
        figures_dir.relative_to(ROOT) if figures_dir.is_relative_to(ROOT) else figures_dir
    )
    out = args.out or (SOAK_DOC if meta["soak"].startswith("yes") else DOC)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(figures_dir, meta))
    print(f"wrote {out} from {figures_dir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
