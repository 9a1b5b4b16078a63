"""`callpulse simulate`: run a scenario and send its events to a file, stdout or the API."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .sinks import Sink

logger = logging.getLogger(__name__)

KEY_ENV: Final = "CALLPULSE_API_KEY"
_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS: Final = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a call centre and emit its events",
        description=(
            "Run a discrete-event simulation of the call centre described by a scenario "
            "file (TOML, see scenarios/) and emit schema-valid events in time order: as "
            "NDJSON to a file or stdout, and/or POSTed to a CallPulse service. The same "
            "scenario, seed and start give the same events, byte for byte."
        ),
    )
    parser.add_argument("scenario", help="scenario file (TOML), e.g. scenarios/demo.toml")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--start",
        help="simulated start instant, RFC 3339 with offset "
        "(e.g. 2026-11-23T08:00:00+01:00); default: now, to the second",
    )
    parser.add_argument(
        "--duration",
        default="8h",
        help="simulated length, e.g. 90s, 30m, 8h, 2d, 1h30m (default 8h)",
    )
    parser.add_argument(
        "--out",
        metavar="FILE|-",
        help="write NDJSON to FILE, or to stdout with '-' (the default without --url)",
    )
    parser.add_argument("--url", help="POST events to {URL}/v1/events, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--key", help=f"API key for --url (default: the {KEY_ENV} environment variable)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=500, help="events per write/request (default 500)"
    )
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=float,
        help="release events at X times real time (1 = real time; default with --url)",
    )
    pace.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="no pacing (the default without --url)",
    )
    parser.set_defaults(handler=handle)


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '8h', '2d', '1h30m' (or plain seconds) as a timedelta."""
    from services.cli import CliError

    compact = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", compact):
        seconds = float(compact)
    else:
        parts = _DURATION_PART.findall(compact)
        if not parts or _DURATION_PART.sub("", compact).strip():
            raise CliError(f"--duration {text!r}: expected e.g. 90s, 30m, 8h, 2d or 1h30m")
        seconds = sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in parts)
    if seconds <= 0:
        raise CliError(f"--duration {text!r}: must be longer than zero")
    return timedelta(seconds=seconds)


def parse_start(text: str | None) -> datetime:
    """An RFC 3339 instant with offset; None means now (UTC, whole seconds)."""
    from services.cli import CliError

    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        start = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--start {text!r}: expected RFC 3339, e.g. 2026-11-23T08:00:00+01:00"
        ) from None
    if start.utcoffset() is None:
        raise CliError(f"--start {text!r}: give an offset (Z or +hh:mm); local time is ambiguous")
    return start


def handle(args: argparse.Namespace) -> int:
    """Run the simulation and deliver its events; returns the exit status."""
    from services.cli import CliError

    from .engine import simulate
    from .errors import SimulatorError
    from .scenario import load_scenario
    from .sinks import HttpSink, NdjsonSink, pump

    try:
        scenario = load_scenario(args.scenario)
    except SimulatorError as exc:
        raise CliError(str(exc)) from None
    start = parse_start(args.start)
    duration = parse_duration(args.duration)
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1")
    if args.speed is not None and args.speed <= 0:
        raise CliError("--speed must be positive (1 = real time)")
    speed: float | None = args.speed
    if speed is None and not args.as_fast_as_possible and args.url:
        speed = 1.0

    sinks: list[Sink] = []
    out = args.out if args.out is not None or args.url else "-"
    try:
        if out == "-":
            sinks.append(NdjsonSink(sys.stdout.buffer, close_stream=False))
        elif out is not None:
            try:
                sinks.append(NdjsonSink(open(out, "wb")))  # noqa: SIM115 - closed below
            except OSError as exc:
                raise CliError(f"--out {out}: {exc.strerror or exc}") from None
        if args.url:
            key = args.key or os.environ.get(KEY_ENV)
            if not key:
                raise CliError(f"--url needs an API key: --key or the {KEY_ENV} variable")
            if not re.match(r"^https?://", args.url):
                raise CliError(f"--url {args.url!r}: expected http:// or https://")
            try:
                sinks.append(HttpSink(args.url, key))
            except ImportError:
                raise CliError("--url needs httpx: pip install httpx") from None
        logger.info(
            "simulating %s (seed %d) from %s for %s, %s",
            args.scenario,
            args.seed,
            start.isoformat(),
            duration,
            "as fast as possible" if speed is None else f"at {speed:g}x real time",
        )
        stats = pump(
            simulate(scenario, args.seed, start, duration),
            sinks,
            origin=start,
            speed=speed,
            batch_size=args.batch_size,
        )
    except SimulatorError as exc:
        raise CliError(str(exc)) from None
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        for sink in sinks:
            try:
                sink.close()
            except OSError as exc:
                logger.debug("closing %r: %s", sink, exc)
    logger.info("emitted %d events in %d batches", stats.events, stats.batches)
    return 0
