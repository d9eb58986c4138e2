"""Readers: walk a dataset folder and yield its records, one reader per format.

Every record is a `Row`: the file it came from (relative to the dataset folder), its
line (or row number) when the format has lines, and its fields (``{"text": ...}`` for
prose formats). Nothing here raises on bad input: a problem becomes a skipped entry
``{file, line, reason}`` in the `DataReport`, and the rest of the folder is still read.
Line-based formats (.jsonl, .csv, .parquet, datasets folders) stream at any size (a single
.jsonl line or .csv field over ``max_file_mb`` is skipped); files read whole are refused
above ``max_file_mb``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from forgellm.data.stats import DataReport

PROSE_SUFFIXES = {".txt", ".md", ".rst", ".markdown", ".text"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED_SUFFIXES = PROSE_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl", ".json", ".csv", ".parquet"}
DATASETS_MARKERS = ("dataset_dict.json", "state.json")
BINARY_PROBE_BYTES = 8192
CHUNK_BYTES = 1 << 20


@dataclass
class Row:
    file: str  # relative to the dataset folder
    line: int | None  # 1-based line (jsonl, csv), row (parquet, datasets) or None (whole file)
    fields: dict[str, Any]
    whole_file: bool = False  # prose, HTML, PDF: one document whose text is fields["text"], whatever text_column says


@dataclass
class SourceFile:
    path: Path
    rel: str
    is_datasets_folder: bool = False


def list_sources(root: Path, report: DataReport) -> list[SourceFile]:
    """Every readable file (or datasets folder) under ``root``, sorted, symlinks kept inside ``root``;
    ``root`` itself when it is a file.

    Hidden files and folders (a name starting with '.') are ignored without a report.
    """
    root = root.resolve()
    found: list[SourceFile] = []
    seen_dirs: set[Path] = set()

    def walk(folder: Path, prefix: str) -> None:  # prefix: the folder relative to root, with a slash
        real = folder.resolve()
        if real in seen_dirs:  # a symlink loop, or two links to one folder
            return
        seen_dirs.add(real)
        if folder != root and any((folder / m).is_file() for m in DATASETS_MARKERS):
            found.append(SourceFile(folder, prefix.rstrip("/"), is_datasets_folder=True))
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            report.skip(prefix.rstrip("/") or root.name, None, f"cannot list folder: {exc.strerror or exc}")
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, rel = Path(entry.path), prefix + entry.name
            if entry.is_symlink():
                target = path.resolve()
                if target != root and root not in target.parents:
                    # No target in the reason: the web app shows it to HTTP callers.
                    report.skip(rel, None, "symlink leaves the dataset folder; not followed")
                    continue
                if not target.exists():
                    report.skip(rel, None, "broken symlink")
                    continue
            if entry.is_dir():  # the type scandir already read, for anything but a symlink
                walk(path, rel + "/")
            elif path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.append(SourceFile(path, rel))
            else:
                report.skip(
                    rel,
                    None,
                    f"unsupported file type {path.suffix or '(no extension)'}; "
                    f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))} and datasets folders",
                )

    if root.is_file():  # a single file given instead of a folder
        if root.suffix.lower() in SUPPORTED_SUFFIXES:
            return [SourceFile(root, root.name)]
        report.skip(
            root.name,
            None,
            f"unsupported file type {root.suffix or '(no extension)'}; "
            f"supported: {', '.join(sorted(SUPPORTED_SUFFIXES))} and datasets folders",
        )
        return []
    if any((root / m).is_file() for m in DATASETS_MARKERS):
        return [SourceFile(root, root.name, is_datasets_folder=True)]
    walk(root, "")
    return found


def read_source(source: SourceFile, report: DataReport, *, max_file_bytes: int) -> Iterator[Row]:
    """The rows of one file or datasets folder; problems go to ``report``."""
    report.files += 1
    if source.is_datasets_folder:
        yield from _read_datasets_folder(source, report)
        return
    suffix = source.path.suffix.lower()
    try:
        size = source.path.stat().st_size
    except OSError as exc:
        report.skip(source.rel, None, f"cannot read: {exc.strerror or exc}")
        return
    streamed = suffix in {".jsonl", ".csv", ".parquet"}
    if not streamed and size > max_file_bytes:
        report.skip(
            source.rel,
            None,
            f"file is {_mb(size)} MB, over the {_mb(max_file_bytes)} MB limit "
            f"for files read whole; split it, convert it to .jsonl, or raise max_file_mb",
        )
        return
    if size == 0:
        report.skip(source.rel, None, "empty file")
        return
    reader = _READERS.get(suffix, _read_prose)
    try:
        whole = None if streamed or suffix == ".pdf" else source.path.read_bytes()  # text read whole: read once
        if whole is not None:
            start = whole[:BINARY_PROBE_BYTES]
        elif suffix in {".jsonl", ".csv"}:
            start = _first_bytes(source.path)
        else:  # PDF and Parquet are binary formats
            start = b""
        if b"\0" in start:
            report.skip(
                source.rel, None, f"binary file (NUL bytes in its first {BINARY_PROBE_BYTES} bytes), not {suffix} text"
            )
            return
        report.bytes_read += size
        if whole is not None:
            yield from reader(source, report, whole)
        elif suffix in {".jsonl", ".csv"}:  # streamed, but one record is still read whole: bound it
            yield from reader(source, report, max_record_bytes=max_file_bytes)
        else:
            yield from reader(source, report)
    except OSError as exc:
        report.skip(source.rel, None, f"cannot read: {exc.strerror or exc}")


def _mb(size: int) -> str:
    return f"{round(size / 2**20, 3):g}"


def _first_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(BINARY_PROBE_BYTES)


def _decode(data: bytes, source: SourceFile, report: DataReport, line: int | None = None) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        at_line = line if line is not None else data[: exc.start].count(b"\n") + 1
        report.skip(source.rel, at_line, f"invalid UTF-8 at byte {exc.start}; re-save the file as UTF-8")
        return None


def _read_prose(source: SourceFile, report: DataReport, data: bytes) -> Iterator[Row]:
    text = _decode(data, source, report)
    if text is not None:
        yield Row(source.rel, None, {"text": text.removeprefix("\ufeff")}, whole_file=True)


def _read_html(source: SourceFile, report: DataReport, data: bytes) -> Iterator[Row]:
    from bs4 import BeautifulSoup

    html = _decode(data, source, report)
    if html is None:
        return
    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    yield Row(source.rel, None, {"text": soup.get_text("\n")}, whole_file=True)


def _read_pdf(source: SourceFile, report: DataReport) -> Iterator[Row]:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed-PDF chatter; failures are reported below
    try:
        reader = PdfReader(source.path)
        if reader.is_encrypted:
            report.skip(source.rel, None, "encrypted PDF; decrypt it first")
            return
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        report.skip(source.rel, None, f"unreadable PDF: {exc}")
        return
    text = "\n\n".join(p for p in pages if p.strip())
    if not text.strip():
        report.skip(source.rel, None, "PDF has no extractable text (scanned images need OCR first)")
        return
    yield Row(source.rel, None, {"text": text}, whole_file=True)


def _read_jsonl(source: SourceFile, report: DataReport, *, max_record_bytes: int) -> Iterator[Row]:
    with open(source.path, "rb") as fh:
        number = 0
        while raw := fh.readline(max_record_bytes + 1):
            number += 1
            if len(raw) > max_record_bytes and not raw.endswith(b"\n"):
                while (rest := fh.readline(CHUNK_BYTES)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the line without holding it
                report.skip(
                    source.rel,
                    number,
                    f"line is over the {_mb(max_record_bytes)} MB limit for one "
                    f"record; split the record or raise max_file_mb",
                )
                continue
            if not raw.strip():
                continue
            record = _parse_json(raw, source, report, number)
            if record is not None:
                yield Row(source.rel, number, record)


def _read_json(source: SourceFile, report: DataReport, data: bytes) -> Iterator[Row]:
    text = _decode(data, source, report)
    if text is None:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        report.skip(source.rel, exc.lineno, f"malformed JSON: {exc.msg} (column {exc.colno})")
        return
    if isinstance(data, dict):  # one record, or {"data": [...]} as some exports write
        records = next((v for k, v in data.items() if k in ("data", "records", "rows") and isinstance(v, list)), [data])
    elif isinstance(data, list):
        records = data
    else:
        report.skip(source.rel, None, f"top-level JSON {type(data).__name__}; expected an object or a list of objects")
        return
    for index, record in enumerate(records, start=1):
        if isinstance(record, dict):
            yield Row(source.rel, index, record)
        else:
            report.skip(source.rel, index, f"record {index} is a JSON {type(record).__name__}, not an object")


def _parse_json(raw: bytes, source: SourceFile, report: DataReport, number: int) -> dict[str, Any] | None:
    try:
        record = orjson.loads(raw)  # several times faster than json, for the common case of a valid line
    except orjson.JSONDecodeError:
        # The standard library takes what orjson refuses but JSON writers emit (NaN, integers over 64 bits)
        # and says what is wrong with the rest.
        line = _decode(raw, source, report, line=number)
        if line is None:
            return None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            report.skip(source.rel, number, f"malformed JSON line: {exc.msg} (column {exc.colno})")
            return None
    if not isinstance(record, dict):
        report.skip(source.rel, number, f"JSON {type(record).__name__}, expected an object like {{\"text\": ...}}")
        return None
    return record


def _read_csv(source: SourceFile, report: DataReport, *, max_record_bytes: int) -> Iterator[Row]:
    csv.field_size_limit(min(max_record_bytes, sys.maxsize))  # a larger field is a csv.Error below
    with open(source.path, "rb") as raw:
        stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        reader = csv.DictReader(stream)
        try:
            for row in reader:
                yield Row(source.rel, reader.line_num, {k: v for k, v in row.items() if k is not None})
        except UnicodeDecodeError as exc:
            report.skip(
                source.rel,
                reader.line_num + 1,
                f"invalid UTF-8 at byte {exc.start} of a read block; "
                f"re-save the file as UTF-8 (rows after this point were not read)",
            )
        except csv.Error as exc:
            report.skip(source.rel, reader.line_num, f"malformed CSV: {exc} (rows after this point were not read)")


def _read_parquet(source: SourceFile, report: DataReport) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
        row = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield Row(source.rel, row, record)
    except (pa.ArrowException, OSError) as exc:
        report.skip(source.rel, None, f"unreadable Parquet: {exc}")


def _read_datasets_folder(source: SourceFile, report: DataReport) -> Iterator[Row]:
    try:
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(source.path))
    except Exception as exc:  # the datasets library raises many types for a damaged folder
        report.skip(source.rel, None, f"unreadable datasets folder: {exc}")
        return
    splits = loaded.items() if isinstance(loaded, DatasetDict) else [("", loaded)]
    for split, dataset in splits:
        name = f"{source.rel}[{split}]" if split else source.rel
        row = 0
        for batch in dataset.iter(batch_size=1024):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys)):
                row += 1
                yield Row(name, row, dict(zip(keys, values)))


_READERS: dict[str, Callable[..., Iterator[Row]]] = {
    **{s: _read_html for s in HTML_SUFFIXES},
    ".pdf": _read_pdf,
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}
