"""Every benchmark in one run, one table (and JSON): `python -m bench.run [--quick]`.

Each figure is printed next to its baseline measured in the same run (or its target), as the
median of repeated measurements with min..max where repeated. These machines are shared and
noisy: read ratios, not absolute times. `--quick` runs everything once on small inputs: a
smoke test that the benchmarks work (CI runs it), not a measurement.

Both modes side by side: the distributed benchmarks share one throwaway PostgreSQL 15 (or
`DATABASE_URL`) and one librdkafka mock broker (`bench/infra.py`), each with a database and
topics of its own, and run `callpulse ingest | aggregator | api` as processes. The sizes are
chosen so that the full run stays within 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import time
from pathlib import Path

from .table import Row, render

MODULES = (
    "decode", "core", "ingest", "aggregation", "dist_aggregation", "pg_store", "freshness",
    "dist_freshness", "api", "memory",
)  # fmt: skip
# The table's order: each group's embedded and distributed rows next to each other.
GROUPS = ("decode", "core", "ingest", "aggregate", "store", "freshness", "api", "memory")


def run(quick: bool, only: list[str] | None = None) -> list[Row]:
    from . import infra

    rows: list[Row] = []
    try:
        for name in MODULES:
            if only and name not in only:
                continue
            started = time.monotonic()
            rows += importlib.import_module(f"bench.{name}").measure(quick)
            logging.getLogger(__name__).info("%s took %.1f s", name, time.monotonic() - started)
    finally:
        infra.close()  # the PostgreSQL and Kafka broker the distributed benchmarks shared
    order = {g: i for i, g in enumerate(GROUPS)}
    return sorted(rows, key=lambda r: order.get(r.group, len(order)))


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
