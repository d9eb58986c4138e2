"""What happened to the data: counts, skipped inputs and their reasons.

One `DataReport` travels through the pipeline; every stage adds to it, and its JSON is
what ``forgellm data stats --json`` prints and what the cache stores beside the arrays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from forgellm.errors import UserError

#: Skipped entries kept in the report; the total is always counted.
MAX_LISTED_SKIPS = 1000


@dataclass
class DataReport:
    strict: bool = False
    files: int = 0
    documents: int = 0  # usable documents or records read, before cleaning
    duplicates_removed: int = 0
    near_duplicates_removed: int = 0
    filtered: Counter = field(default_factory=Counter)  # reason -> count
    skipped: list[dict[str, Any]] = field(default_factory=list)
    skipped_total: int = 0
    file_formats: dict[str, str] = field(default_factory=dict)  # IFT: file -> detected format
    truncated: int = 0  # IFT records cut at max_seq_length (kept)
    bytes_read: int = 0

    def skip(self, file: str, line: int | None, reason: str) -> None:
        """Record an input that was not used; with ``strict`` it stops the run instead."""
        if self.strict:
            where = f"{file}:{line}" if line is not None else file
            raise UserError(
                f"{where}: {reason} (--strict turns every skipped input into an error; "
                f"fix the input or run without --strict to skip it)"
            )
        self.skipped_total += 1
        if len(self.skipped) < MAX_LISTED_SKIPS:
            self.skipped.append({"file": file, "line": line, "reason": reason})

    def drop(self, reason: str, count: int = 1) -> None:
        """Count documents removed by a filter (not an input problem)."""
        self.filtered[reason] += count

    def first_skips(self, n: int = 3) -> str:
        return "; ".join(
            f"{s['file']}{':' + str(s['line']) if s['line'] else ''}: {s['reason']}" for s in self.skipped[:n]
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "documents": self.documents,
            "duplicates_removed": self.duplicates_removed,
            "near_duplicates_removed": self.near_duplicates_removed,
            "filtered": {"total": sum(self.filtered.values()), **dict(sorted(self.filtered.items()))},
            "truncated": self.truncated,
            "skipped": self.skipped,
            "skipped_total": self.skipped_total,
            "bytes_read": self.bytes_read,
        }


def first_seen(digest: bytes, seen: set[bytes], report: DataReport, dedupe: bool) -> bool:
    """Exact dedupe of one record: True the first time ``digest`` comes (always, with dedupe off);
    a repeat is counted in ``report`` and refused."""
    if not dedupe:
        return True
    if digest in seen:
        report.duplicates_removed += 1
        return False
    seen.add(digest)
    return True


def train_rows(stats: dict[str, Any]) -> int:
    """The rows a run trains on, from the stats of `prepare_dataset`: preference pairs (a pair is
    one row of `PreferencePairs`, its two sequences one example), else packed training sequences
    (the mixture's, when data is mixed in)."""
    if stats.get("mode") == "preference":
        return int(stats["pairs"]["train"])
    return int(stats["sequences"]["train"])
