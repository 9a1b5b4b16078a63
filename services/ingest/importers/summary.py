"""What an import produced besides events: counts of records used and not used, per reason.

Every importer fills one `ImportSummary` while its event generator runs. A record (a TSV
row, a queue_log line, an NDJSON line) is counted once in `records`; a record that yields
nothing is counted under exactly one reason in `skipped`; a record used under a documented
correction or interpretation is counted under each rule it needed in `rules`. The
importer modules' docstrings define every reason and rule.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: How many individual bad-record messages a summary keeps (the counts are always complete).
MAX_ERRORS = 100


class ImporterError(Exception):
    """The input cannot be read at all (wrong format, missing columns): nothing to skip."""


@dataclass
class ImportSummary:
    """Counts of one import run; mutated by the importer as its generator is consumed."""

    records: int = 0
    events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def skip(self, reason: str, index: int | None = None, detail: str | None = None) -> None:
        """Count a record that yielded no event; `index` is its 1-based line in the input."""
        self.skipped[reason] += 1
        if index is not None and detail is not None and len(self.errors) < MAX_ERRORS:
            self.errors.append((index, detail))

    def rule(self, name: str) -> None:
        """Count a record used under the documented rule `name`."""
        self.rules[name] += 1

    @property
    def used(self) -> int:
        """Records that yielded at least one event (or were read and needed none)."""
        return self.records - sum(self.skipped.values())

    def render(self) -> str:
        """A human-readable multi-line report (the CLI prints it)."""
        lines = [
            f"records read: {self.records}",
            f"records used: {self.used}",
            f"events emitted: {self.events}",
        ]
        if self.skipped:
            lines.append("records not used, by reason:")
            lines += [f"  {reason}: {n}" for reason, n in sorted(self.skipped.items())]
        if self.rules:
            lines.append("records used under a documented rule:")
            lines += [f"  {rule}: {n}" for rule, n in sorted(self.rules.items())]
        if self.errors:
            lines.append(f"first {len(self.errors)} bad records (line: reason):")
            lines += [f"  {index}: {detail}" for index, detail in self.errors]
        return "\n".join(lines)
