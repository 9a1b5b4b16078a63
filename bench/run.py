"""Every benchmark in one run, one table (and JSON): `python -m bench.run [--quick]`.

Each figure is printed next to its baseline measured in the same run (or its target), as the
median of repeated measurements with min/max where repeated. These machines are shared and
noisy: read ratios, not absolute times. `--quick` runs everything once on small inputs: a
smoke test that the benchmarks work (CI runs it), not a measurement.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from pathlib import Path

from .table import Row, render

MODULES = ("decode", "core", "ingest", "aggregation", "freshness", "memory")


def run(quick: bool, only: list[str] | None = None) -> list[Row]:
    rows: list[Row] = []
    for name in MODULES:
        if only and name not in only:
            continue
        started = time.monotonic()
        rows += importlib.import_module(f"bench.{name}").measure(quick)
        logging.getLogger(__name__).info("%s took %.1f s", name, time.monotonic() - started)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke test: small, once")
    parser.add_argument("--only", nargs="*", choices=MODULES, help="run only these")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    rows = run(args.quick, args.only)
    print(render(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([r.as_dict() for r in rows], indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
