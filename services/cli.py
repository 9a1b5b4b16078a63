"""The `callpulse` command line: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Each module has `register(subparsers)`, which adds its parser(s) and sets `handler`.
# Modules import their heavy dependencies inside the handler, so `--help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "services.embedded.command",
    "services.simulator.command",
    "services.ingest.importers.command",
    "services.tenancy.command",
    "services.distributed.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callpulse",
        description="Real-time KPI monitoring for outsourced call centres.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"callpulse: error: {exc}", file=sys.stderr)
        return 2


class CliError(Exception):
    """A user-facing error: printed without a traceback."""


if __name__ == "__main__":
    # Under `python -m services.cli` this module is `__main__`; run the `services.cli` copy so
    # that the CliError subcommands raise is the one `main` catches.
    from services.cli import main as package_main

    sys.exit(package_main())
