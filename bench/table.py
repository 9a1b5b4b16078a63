"""Benchmark rows, repeated measurement and the printed table (shared by every benchmark)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    """One figure next to its baseline, measured in the same run.

    `higher_is_better` tells how to read the ratio; `target` is the ratio ours/baseline the
    issue asks for (None: no target, informative). `spread` is (min, max) over repeats.
    """

    group: str
    name: str
    unit: str
    ours: float
    baseline: float | None = None
    baseline_name: str = ""
    target: float | None = None
    higher_is_better: bool = True
    spread: tuple[float, float] = (0.0, 0.0)
    note: str = ""
    baseline_spread: tuple[float, float] = (0.0, 0.0)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.ours / self.baseline  # type: ignore[operator]

    @property
    def met(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"ratio": self.ratio, "met": self.met}


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.values), max(self.values)


def repeat(fn: Callable[[], float], times: int) -> Samples:
    """Call `fn` (which returns one measurement) `times` times."""
    return Samples([fn() for _ in range(times)])


def rate(fn: Callable[[], int]) -> Callable[[], float]:
    """Wrap a function doing N units of work into one returning units per second."""

    def measure() -> float:
        started = time.perf_counter()
        done = fn()
        return done / (time.perf_counter() - started)

    return measure


def _num(value: float) -> str:
    """Four significant figures at most, no exponent for the magnitudes seen here."""
    if value == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _range(spread: tuple[float, float]) -> str:
    return "" if spread[0] == spread[1] else f"{_num(spread[0])}..{_num(spread[1])}"


def render(rows: list[Row]) -> str:
    """The table: median (min..max over repeats) of ours and of the baseline, the ratio
    ours/baseline, the target on that ratio and whether it is met."""
    head = (
        f"{'group':9} {'measure':54} {'ours':>10} {'(min..max)':>17} {'baseline':>10}"
        f" {'(min..max)':>17} {'ratio':>7} {'target':>7} {'ok':>3}  unit / baseline"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        base = "" if r.baseline is None else _num(r.baseline)
        ratio = "" if r.ratio is None else f"{r.ratio:.3g}"
        target = "" if r.target is None else ("≥" if r.higher_is_better else "≤") + f"{r.target:g}"
        ok = {True: "yes", False: "NO", None: ""}[r.met]
        lines.append(
            f"{r.group:9} {r.name:54} {_num(r.ours):>10} {_range(r.spread):>17} {base:>10}"
            f" {_range(r.baseline_spread):>17} {ratio:>7} {target:>7} {ok:>3}  "
            f"{r.unit}{' vs ' + r.baseline_name if r.baseline_name else ''}"
            f"{' (' + r.note + ')' if r.note else ''}"
        )
    return "\n".join(lines)
