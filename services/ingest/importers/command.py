"""`callpulse import FORMAT FILE`: turn a call-centre log into CallPulse events.

Formats: `ndjson` (our own events), `anonymous-bank` (the Technion per-call TSV),
`asterisk-queue-log` (stock pipe queue_log, or its CSV table export). Events go to NDJSON
(`--out FILE`, `-` for standard output, the default) or to the ingest API in batches
(`--url URL --key KEY`; the key may come from `CALLPULSE_API_KEY`). Anonymous Bank events
are written in time order, the others in source order. A summary of the records used and
not used, per reason, is printed at the end (on standard error when the events go to
standard output). Caller numbers are keyed with `--caller-key-secret` or
`CALLPULSE_CALLER_KEY_SECRET` (per tenant), else dropped. `--follow` stops at SIGINT or
SIGTERM, after flushing what it read.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, Protocol

from services.cli import CliError
from services.kpi.events import Event

from . import anonymous_bank, asterisk
from .anonymous_bank import AnonymousBankImporter
from .asterisk import QueueLogImporter
from .ndjson import NdjsonImporter, replay
from .sink import HttpSink, NdjsonSink, Sink, SinkError
from .summary import ImporterError, ImportSummary
from .tail import FileTail

if TYPE_CHECKING:
    from pydantic import SecretStr

    from .settings import ImportSettings

logger = logging.getLogger(__name__)

FORMATS = ("ndjson", "anonymous-bank", "asterisk-queue-log")


def register(subparsers: Any) -> None:
    """Add the `import` subcommand to the `callpulse` parser."""
    parser = subparsers.add_parser(
        "import",
        help="import events from an NDJSON, Anonymous Bank TSV or Asterisk queue_log file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("format", metavar="FORMAT", choices=FORMATS, help=", ".join(FORMATS))
    parser.add_argument("file", metavar="FILE", help="input file, or - for standard input")
    parser.add_argument(
        "--follow",
        action="store_true",
        help="keep reading as the file grows, across rotation (asterisk-queue-log only)",
    )
    parser.add_argument(
        "--tenant",
        help="tenant id of the events (default: anonymous-bank for anonymous-bank, "
        "default for asterisk-queue-log; ndjson events carry their own)",
    )
    parser.add_argument(
        "--team", default="default", help="team id of Asterisk agents (default: default)"
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--out", help="write NDJSON to FILE, or - for standard output")
    output.add_argument("--url", help="POST batches to URL/v1/events")
    parser.add_argument("--key", help="API key for --url (or CALLPULSE_API_KEY)")
    parser.add_argument(
        "--speed",
        type=float,
        help="ndjson only: replay with the original timing sped up by this factor "
        "(default: as fast as possible)",
    )
    parser.add_argument(
        "--caller-key-secret",
        help="per-tenant secret for caller keys (or CALLPULSE_CALLER_KEY_SECRET); "
        "without one caller numbers are dropped",
    )
    parser.set_defaults(handler=handle)


class Importer(Protocol):
    """What every importer offers: a summary and an event generator over lines."""

    summary: ImportSummary

    def events(self, lines: Iterable[str]) -> Iterator[Event]: ...


def handle(args: argparse.Namespace) -> int:
    """Run one import; returns the exit status."""
    from .settings import ImportSettings  # here: pydantic-settings is slow to import

    settings = ImportSettings()
    _check(args, settings)
    secret = args.caller_key_secret or (
        settings.caller_key_secret.get_secret_value() if settings.caller_key_secret else None
    )
    importer = _importer(args, secret.encode() if secret else None)
    source = None if args.follow else _open_input(args)
    if args.follow and not os.path.isfile(args.file):
        raise CliError(f"cannot follow {args.file}: not a file")
    try:
        sink, report = _sink(args, settings.api_key)
    except CliError:
        if source is not None and source is not sys.stdin:
            source.close()
        raise
    stop = threading.Event()
    readable = True
    previous: Any = None
    try:
        lines: Iterable[str]
        if args.follow:
            if threading.current_thread() is threading.main_thread():
                # A service manager stops a follower with SIGTERM: finish the lines read,
                # flush, print the summary and exit 0 instead of dying mid-batch.
                previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
            lines = FileTail(args.file, stop=stop, on_idle=sink.flush).lines()
        else:
            assert source is not None
            lines = source
        events = importer.events(lines)
        if args.format == "anonymous-bank":
            # The TSV is ordered by VRU line and call id, not by time: written as is, most
            # events would arrive later than a live aggregator's lateness allows. A month
            # is ~100k events, so sorting in memory is fine; the sort is stable, so a leg's
            # events keep their order on equal instants.
            events = iter(sorted(events, key=lambda event: event.occurred_at.timestamp()))
        if args.format == "ndjson":
            events = replay(events, args.speed)
        for event in events:
            sink.write(event)
        sink.flush()
    except ImporterError as exc:
        readable = False
        raise CliError(str(exc)) from exc
    except SinkError as exc:
        raise CliError(str(exc)) from exc
    except BrokenPipeError:
        # The reader of our standard output went away (e.g. `| head`): stop quietly, and
        # point stdout at /dev/null so that the final flushes cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    finally:
        stop.set()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        try:
            if source is not None and source is not sys.stdin:
                source.close()
            sink.close()
        finally:
            if readable:
                report.write(f"callpulse import {args.format} {args.file}\n")
                report.write(importer.summary.render() + "\n")
                report.flush()
    return 0


def _check(args: argparse.Namespace, settings: ImportSettings) -> None:
    if args.follow and args.format != "asterisk-queue-log":
        raise CliError("--follow is only supported for asterisk-queue-log")
    if args.follow and args.file == "-":
        raise CliError("--follow needs a file, not standard input")
    if args.speed is not None and args.format != "ndjson":
        raise CliError("--speed is only supported for ndjson")
    if args.speed is not None and not args.speed > 0:
        raise CliError(f"--speed must be positive, got {args.speed}")
    if args.tenant is not None and args.format == "ndjson":
        raise CliError("ndjson events carry their own tenant_id; --tenant does not apply")
    if args.key and not args.url:
        raise CliError("--key only applies with --url")
    if args.url and not (args.key or settings.api_key):
        raise CliError("--url needs --key (or CALLPULSE_API_KEY)")


def _importer(args: argparse.Namespace, secret: bytes | None) -> Importer:
    if args.format == "ndjson":
        return NdjsonImporter()
    if args.format == "anonymous-bank":
        return AnonymousBankImporter(
            tenant_id=args.tenant or anonymous_bank.DEFAULT_TENANT, caller_secret=secret
        )
    return QueueLogImporter(
        tenant_id=args.tenant or asterisk.DEFAULT_TENANT, caller_secret=secret, team_id=args.team
    )


def _open_input(args: argparse.Namespace) -> IO[str]:
    """Standard input or the opened file (a followed file is reopened by the tail)."""
    if args.file == "-":
        return sys.stdin
    try:
        return open(args.file, encoding="utf-8", errors="replace", newline="")
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from exc


def _sink(args: argparse.Namespace, api_key: SecretStr | None) -> tuple[Sink, IO[str]]:
    """The event sink and the stream the summary goes to."""
    if args.url:
        key = args.key or (api_key.get_secret_value() if api_key else "")
        return HttpSink(args.url, key), sys.stdout
    out = args.out or "-"
    if out == "-":
        return NdjsonSink(sys.stdout.buffer), sys.stderr
    try:
        stream = open(out, "wb")  # noqa: SIM115 - the sink owns and closes it
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return NdjsonSink(stream, owns=True), sys.stdout
