"""Document chunks: the pieces of text a teacher is asked about.

Documents come through the data pipeline's readers (`forgellm.data.readers`), so every format
the pipeline reads works here too, and are normalised the same way. Each document is cut at
paragraph boundaries into chunks of at most ``chunk_chars`` characters (a paragraph that is
longer is cut between sentences, a sentence that is longer between words). A chunk is known by
a hash of its file and text, the key of the progress file: a rerun recognises the chunks it
already did, whatever else changed in the folder.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from forgellm.data.cleaning import normalize_text
from forgellm.data.pipeline import row_text
from forgellm.data.readers import SUPPORTED_SUFFIXES, list_sources, read_source
from forgellm.data.stats import DataReport
from forgellm.errors import NotFoundError, UserError

MIN_CHUNK_CHARS = 40  # shorter chunks (a lone heading) hold no fact worth a question
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Chunk:
    file: str  # relative to the source folder, as the readers name it
    line: int | None  # the record's line or row, for line-based formats
    index: int  # 0-based position of the chunk among the chunks of its file
    text: str

    @property
    def key(self) -> str:
        """Stable id of this chunk: its file and its text."""
        return hashlib.sha256(f"{self.file}\0{self.text}".encode()).hexdigest()[:32]

    def source(self) -> dict[str, object]:
        """Where a generated record came from, kept in every record."""
        out: dict[str, object] = {"file": self.file, "chunk": self.index}
        if self.line is not None:
            out["line"] = self.line
        return out


def read_chunks(
    source: Path, *, chunk_chars: int, text_column: str = "text", max_file_mb: float = 256.0
) -> tuple[list[Chunk], DataReport]:
    """Every chunk of the documents under ``source`` (a folder or one file), and what was skipped."""
    if not source.exists():
        raise NotFoundError(f"source {source} does not exist; give a folder of documents or one document")
    report = DataReport()
    sources = list_sources(source, report)
    if not sources and not report.skipped:
        raise UserError(f"{source} has no files to read; add documents ({', '.join(sorted(SUPPORTED_SUFFIXES))})")
    chunks: list[Chunk] = []
    per_file: dict[str, int] = {}
    seen: set[str] = set()
    for src in sources:
        for row in read_source(src, report, max_file_bytes=int(max_file_mb * 2**20)):
            text = row_text(row, text_column, report)
            if text is None:
                continue
            report.documents += 1
            for piece in split_text(normalize_text(text), chunk_chars):
                index = per_file.get(row.file, 0)
                chunk = Chunk(row.file, row.line, index, piece)
                if chunk.key in seen:  # the same text twice in one file: asked about once
                    report.duplicates_removed += 1
                    continue
                seen.add(chunk.key)
                per_file[row.file] = index + 1
                chunks.append(chunk)
    if not chunks:
        first = f" (first skipped: {report.first_skips()})" if report.skipped_total else ""
        raise UserError(
            f"no text to synthesize from in {source}: {report.files} file(s) read, "
            f"{report.skipped_total} skipped{first}; give documents with at least {MIN_CHUNK_CHARS} characters"
        )
    return chunks, report


def split_text(text: str, chunk_chars: int) -> Iterator[str]:
    """Pieces of ``text`` of at most ``chunk_chars`` characters, cut at paragraphs, then sentences,
    then words; pieces under `MIN_CHUNK_CHARS` are dropped."""
    current = ""
    for unit in _units(text, chunk_chars):
        if current and len(current) + 2 + len(unit) > chunk_chars:
            yield from _keep(current)
            current = ""
        current = f"{current}\n\n{unit}" if current else unit
    yield from _keep(current)


def _units(text: str, limit: int) -> Iterator[str]:
    """Paragraphs, each cut into sentence groups or word groups when over ``limit``."""
    for paragraph in _PARAGRAPHS.split(text):
        paragraph = paragraph.strip()
        if len(paragraph) <= limit:
            if paragraph:
                yield paragraph
            continue
        yield from _pack(_SENTENCE_END.split(paragraph), limit)


def _pack(parts: list[str], limit: int) -> Iterator[str]:
    """Parts joined by spaces into pieces of at most ``limit`` characters."""
    current = ""
    for part in parts:
        if len(part) > limit:  # a sentence longer than a chunk: cut it between words (a word that long is cut)
            yield from _pack(part.split(), limit) if " " in part.strip() else [part[:limit]]
            continue
        if current and len(current) + 1 + len(part) > limit:
            yield current
            current = ""
        current = f"{current} {part}" if current else part
    if current:
        yield current


def _keep(piece: str) -> Iterator[str]:
    if len(piece.strip()) >= MIN_CHUNK_CHARS:
        yield piece.strip()
