"""The peer baseline of `bench.distributed`: a naive Faust agent counting events per key.

Run by the benchmark as a separate process: `python -m bench.naive_faust BOOTSTRAP TOPIC N`.
One event per message, one table update per event (a changelog-backed Faust table), the
root logger set to WARNING (the measured trap). Prints `elapsed <seconds>` from the first
message to the N-th, then exits.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import faust


def main() -> None:
    bootstrap, topic_name, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    app = faust.App(
        f"naive-{topic_name}", broker=f"kafka://{bootstrap}", web_enabled=False,
        topic_allow_declare=False, topic_disable_leader=True, store="memory://",
        consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="raw",
    )  # fmt: skip
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    counts = app.Table("counts", default=int, partitions=4)
    state: dict[str, Any] = {"seen": 0, "t0": None}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        logging.getLogger().setLevel(logging.WARNING)
        async for key, _ in stream.items():
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            counts[key] += 1
            state["seen"] += 1
            if state["seen"] >= total:
                sys.stderr.write(f"elapsed {time.perf_counter() - state['t0']:.6f}\n")
                sys.stderr.flush()
                os._exit(0)

    from faust.worker import Worker

    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
