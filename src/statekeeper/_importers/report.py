"""What an import did: counts, and the reason of every session not imported."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["Summary", "iter_errors"]


@dataclass(slots=True)
class Summary:
    """What an import did: counts, and the reason of every session not imported."""

    imported: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many sessions the source held."""
        return self.imported + self.unchanged + len(self.skipped) + len(self.failed)


def iter_errors(summary: Summary) -> Iterator[str]:
    """Yield one line per session skipped or failed."""
    for source, reason in summary.skipped:
        yield f"skipped {source}: {reason}"
    for source, reason in summary.failed:
        yield f"failed {source}: {reason}"
