"""The whole path: read, clean, dedupe, split, tokenise, pack, mix, cache.

`prepare_dataset` is the one entry point (re-exported by `forgellm.data`). Documents
stream through: each is read, normalised, filtered and checked for an exact duplicate,
then tokenised in batches and staged on disk. Near duplicates and the split are then
decided for all documents at once, and the kept documents are packed into memory-mapped
arrays. Only small per-document numbers (length, split hash, MinHash signature) stay in
memory.
"""

from __future__ import annotations

import logging
import shutil
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.data import cache as cache_mod
from forgellm.data import cpt_batches
from forgellm.data.cleaning import content_digest, near_duplicates
from forgellm.data.cpt_batches import BatchRunner, CleaningRules, EncodedBatch
from forgellm.data.ift import ChatRenderer, RecordError, detect_format, encode_rendered, to_messages
from forgellm.data.packing import Packed, Staging, pack_records, pack_stream, padding_fraction
from forgellm.data.readers import SUPPORTED_SUFFIXES, Row, SourceFile, list_sources, read_source
from forgellm.data.sequences import PreferencePairs, TokenSequences, load_split
from forgellm.data.settings import DataSettings
from forgellm.data.shuffled_copies import with_shuffled_copies
from forgellm.data.split import assign_validation, split_value
from forgellm.data.stats import DataReport, first_seen
from forgellm.data.tokenizing import DocumentEncoder, Encoded, HuggingFaceEncoder, available_cores, document_encoder
from forgellm.data.validation import copy_split, hold_out_tail, prepare_validation_dir
from forgellm.errors import NotFoundError, UserError
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

BATCH_CHARS = 1 << 20  # tokenise this many characters at a time


@dataclass
class PreparedData:
    """Packed, memory-mapped training and validation sequences and the stats of how they were made."""

    train: TokenSequences | PreferencePairs
    val: TokenSequences | PreferencePairs
    stats: dict[str, Any]
    path: Path  # the cache folder holding the arrays


def prepare_dataset(settings: DataSettings, tokenizer: Any, workspace: Workspace | Path) -> PreparedData:
    """Turn ``settings.input_dir`` into packed sequences, or load them from the cache.

    Raises `NotFoundError` when the folder does not exist and `UserError` when nothing
    usable is left (or, with ``settings.strict``, at the first skipped input).
    """
    started = time.perf_counter()
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    root = resolve_input_dir(settings.input_dir, workspace)
    report = DataReport(strict=settings.strict)
    sources = list_sources(root, report)
    if not sources and not report.skipped:
        raise UserError(
            f"{root} has no files to read; add documents ({', '.join(sorted(SUPPORTED_SUFFIXES))}) "
            f"or point input_dir at another folder"
        )

    if settings.training_type == "preference" and settings.data_mixture_ratio < 1.0:
        # Mixing adds general text to CPT or IFT data; pairs have no general counterpart, so the
        # mixture (0.8 by default, shared with TrainingConfig) does not apply to them.
        settings = settings.model_copy(update={"data_mixture_ratio": 1.0, "general_data_dir": None})
    general = documents = None
    if settings.mixes_general:
        from forgellm.data.mixing import prepare_general

        general = prepare_general(settings, tokenizer, workspace)
    if settings.documents_dir is not None:
        from forgellm.data.mixing import prepare_documents

        documents = prepare_documents(settings, tokenizer, workspace)
    held_out = None
    if settings.validation_dir is not None:
        held_out = prepare_validation_dir(settings, tokenizer, workspace)
    tokenizer_id = cache_mod.tokenizer_fingerprint(tokenizer)
    extra = {"general": general.stats["cache"]["key"] if general else None}
    if held_out is not None:  # only then, so the keys of existing caches stay valid
        extra["validation"] = held_out.stats["cache"]["key"]
    if documents is not None:
        extra["documents"] = documents.stats["cache"]["key"]
    key = cache_mod.cache_key(
        settings=settings.cache_fields(),
        inputs=[(s.rel, cache_mod.tree_digest(s.path)) for s in sources],
        listing_skips=report.skipped,
        tokenizer=tokenizer_id,
        extra=extra,
    )
    entry = cache_mod.CacheEntry(workspace.data_dir, key)
    if entry.complete:
        stats = entry.stats()
        if settings.strict and stats["skipped"]:
            first = stats["skipped"][0]
            report.skip(first["file"], first["line"], first["reason"])  # raises: strict
        stats["cache"] = {"key": key, "hit": True, "path": str(entry.path)}
        stats["seconds"] = round(time.perf_counter() - started, 3)
        log.info("data: cache hit %s", entry.path)
        return PreparedData(load_split(entry.path, "train"), load_split(entry.path, "val"), stats, entry.path)

    tmp = entry.staging_dir()
    try:
        stats = _build(
            settings,
            tokenizer,
            root,
            sources,
            report,
            tmp,
            general,
            held_out,
            documents,
            verdicts=workspace.data_dir / "tokenizer-checks",
        )
        stats["tokenizer"].update({"name": getattr(tokenizer, "name_or_path", ""), "fingerprint": tokenizer_id})
        stats["cache"] = {"key": key, "hit": False, "path": str(entry.path)}
        stats["seconds"] = round(time.perf_counter() - started, 3)
        entry.commit(tmp, stats)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedData(load_split(entry.path, "train"), load_split(entry.path, "val"), stats, entry.path)


def resolve_input_dir(path: Path, workspace: Workspace) -> Path:
    """The dataset folder (or single file) ``path`` names, relative paths from the workspace root."""
    root = path if path.is_absolute() else workspace.root / path
    if not root.exists():
        raise NotFoundError(
            f"dataset folder {root} does not exist; create it or set input_dir to a folder of documents"
        )
    if not root.is_dir() and not root.is_file():
        raise UserError(f"{root} is neither a folder nor a file; point input_dir at a folder of documents")
    return root.resolve()


def _build(
    settings: DataSettings,
    tokenizer: Any,
    root: Path,
    sources: list[SourceFile],
    report: DataReport,
    out: Path,
    general: Any,
    held_out: PreparedData | None,
    documents: PreparedData | None = None,
    *,
    verdicts: Path,
) -> dict[str, Any]:
    if settings.training_type == "preference":
        return _build_pairs(settings, tokenizer, root, sources, report, out, held_out)
    staging = Staging(out / "staging", with_mask=settings.training_type == "ift")
    if settings.training_type == "ift":
        stager: _IFTStager | _CPTStager = _IFTStager(settings, tokenizer, report, staging)
    else:
        stager = _CPTStager(
            settings,
            tokenizer,
            report,
            staging,
            document_encoder(tokenizer, verdicts=verdicts),
            processes=_worker_processes(sources),
            scratch=staging.folder,
        )
    for row in iter_rows(sources, report, settings):
        stager.add(row)
    stager.finish()
    docs = staging.close()
    if len(docs.lengths) == 0:
        docs.close()
        raise UserError(_nothing_usable(root, report))

    keep = np.ones(len(docs.lengths), dtype=bool)
    if stager.signatures:
        near = near_duplicates(np.concatenate(stager.signatures), settings.near_dedupe_threshold)
        report.near_duplicates_removed = int(near.sum())
        keep &= ~near
    kept = np.flatnonzero(keep)
    share = 0.0 if held_out is not None else settings.validation_split  # a validation_dir: all of input_dir trains
    is_val = assign_validation(np.asarray(stager.split_values)[kept], share)
    train_idx, val_idx = kept[~is_val], kept[is_val]
    pack = pack_records if settings.training_type == "ift" else pack_stream
    pad_id = pad_token_id(tokenizer)
    mixed = general is not None or documents is not None
    train_target = out / "domain" if mixed else out
    copies = _copies_plan(settings, held_out, val_idx, share)
    train_docs, train_chosen, copied_tokens = docs, train_idx, 0
    try:
        if copies["copies"]:
            train_docs, copied_tokens = with_shuffled_copies(
                docs, train_idx, out / "staging" / "copies", tokenizer, copies=copies["copies"], seed=settings.seed
            )
            train_chosen = np.arange(len(train_docs.lengths))
        train = pack(train_docs, train_chosen, train_target, "train", seq_length=settings.max_seq_length, pad_id=pad_id)
        val = pack(docs, val_idx, out, "val", seq_length=settings.max_seq_length, pad_id=pad_id)
    finally:
        docs.close()
        if train_docs is not docs:
            train_docs.close()
    train_tokens, val_tokens = int(docs.lengths[train_idx].sum()), int(docs.lengths[val_idx].sum())
    if copies["copies"]:
        copies["tokens"] = copied_tokens
        train_tokens += copied_tokens
    validation: dict[str, Any] = {"source": "documents"}
    if held_out is not None:
        copy_split(held_out.path, out)
        val = Packed(len(held_out.train), held_out.train.target_tokens)
        val_tokens = int(held_out.stats["train_tokens"])
        validation = {
            "source": "validation_dir",
            "path": str(settings.validation_dir),
            "documents": int(held_out.stats["train_documents"]),
        }
    elif len(val_idx) == 0 and share > 0:
        # Fewer documents than a split needs: hold out the last packed sequences (CPT; an IFT record
        # is one sequence, so one record cannot be cut in two).
        cut = hold_out_tail(train_target, out, share) if settings.training_type == "cpt" else None
        if cut is None:
            validation = {
                "source": "none",
                "reason": f"{len(kept)} document(s) packed into {train.rows} "
                f"sequence(s): nothing to hold out; add data or set validation_dir",
            }
        else:
            train, val = cut
            val_tokens = int(TokenSequences.load(out, "val").mask.sum(dtype=np.int64))  # CPT: 1 on every real token
            train_tokens -= val_tokens
            validation = {"source": "packed_sequences", "sequences": val.rows}
    elif len(val_idx) == 0:
        validation = {"source": "none", "reason": "validation_split is 0"}
    stats = report.to_json()
    stats.update(
        {
            "mode": settings.training_type,
            "train_documents": int(len(train_idx)),
            "val_documents": int(len(val_idx)),
            "train_tokens": train_tokens,
            "val_tokens": val_tokens,
            "train_target_tokens": train.target_tokens,
            "sequences": {"train": train.rows, "val": val.rows},
            "validation": validation,
            "seq_length": settings.max_seq_length,
            "padding_fraction": round(
                padding_fraction(train.rows + val.rows, settings.max_seq_length, real_tokens=train_tokens + val_tokens),
                6,
            ),
            # an ift run's copies are of its documents_dir documents (`prepare_documents`)
            "shuffled_copies": documents.stats.get("shuffled_copies")
            if documents is not None
            else copies
            if settings.shuffled_copies
            else None,
            "format": report.file_formats if settings.training_type == "ift" else None,
            "chat_template": stager.template_source,
            "tokenizer": {"encoder": stager.encoder_name, "worker_processes": stager.processes},
            "settings": settings.cache_fields(),
        }
    )
    if mixed:
        from forgellm.data.mixing import mix_into

        stats["mixture"] = mix_into(
            TokenSequences.load(train_target, "train"), out, settings, general=general, documents=documents
        )
        stats["sequences"]["train"] = stats["mixture"]["sequences"]
        shutil.rmtree(out / "domain")
    shutil.rmtree(out / "staging")
    return stats


def _copies_plan(
    settings: DataSettings, held_out: PreparedData | None, val_idx: np.ndarray, share: float
) -> dict[str, Any]:
    """How many shuffled copies of each training document to add (`forgellm.data.shuffled_copies`):
    CPT documents only (an IFT record's turns keep their order); none when validation is cut from
    the training text itself (one document), since copies of it would repeat the held-out part."""
    asked = settings.shuffled_copies
    if not asked:
        return {"copies": 0}
    if settings.training_type != "cpt":
        reason = "chats and pairs keep their order; copies are of documents (cpt, or an ift run's documents_dir)"
        return {"copies": 0, "asked": asked, "reason": reason}
    if held_out is None and len(val_idx) == 0 and share > 0:
        reason = "one document: its validation is its own last part, which copies would repeat; set validation_dir"
        log.warning("data: no shuffled copies (%s)", reason)
        return {"copies": 0, "asked": asked, "reason": reason}
    return {"copies": asked}


def _build_pairs(
    settings: DataSettings,
    tokenizer: Any,
    root: Path,
    sources: list[SourceFile],
    report: DataReport,
    out: Path,
    held_out: PreparedData | None,
) -> dict[str, Any]:
    """Preference pairs (`forgellm.data.preference`): no packing, no mixing, no near-dedupe.

    A validation_dir's pairs are the validation split (all of input_dir trains); a pair is never
    cut in two, so with too few pairs to hold one out there is no validation split."""
    from forgellm.data.preference import NO_ROOM_HINT, PreferenceStager, write_pairs

    staging = Staging(out / "staging", with_mask=True)
    stager = PreferenceStager(settings, tokenizer, report, staging)
    for row in iter_rows(sources, report, settings):
        stager.add(row)
    stager.finish()
    if len(staging) == 0:
        staging.close()
        raise UserError(
            _nothing_usable(root, report)
            + (f" Hint: {NO_ROOM_HINT}." if report.filtered.get("prompt_leaves_no_room") else "")
        )
    split = settings.model_copy(update={"validation_split": 0.0}) if held_out is not None else settings
    pairs = write_pairs(staging, stager.split_values, out, split, pad_token_id(tokenizer))
    validation: dict[str, Any] = {"source": "documents"}
    if held_out is not None:
        copy_split(held_out.path, out)
        pairs["pairs"]["val"] = int(held_out.stats["pairs"]["train"])
        pairs["tokens"]["val"] = int(held_out.stats["train_tokens"])
        pairs["target_tokens"]["val"] = int(held_out.stats["train_target_tokens"])
        pairs["pairs"]["total"] = pairs["pairs"]["train"] + pairs["pairs"]["val"]
        validation = {
            "source": "validation_dir",
            "path": str(settings.validation_dir),
            "documents": pairs["pairs"]["val"],
        }
    elif pairs["pairs"]["val"] == 0:
        validation = {
            "source": "none",
            "reason": "validation_split is 0"
            if settings.validation_split == 0
            else f"{pairs['pairs']['train']} pair(s): too few to hold one out; add pairs or set validation_dir",
        }
    stats = report.to_json()
    stats.update(
        {
            "mode": "preference",
            "pairs": pairs["pairs"],
            "train_documents": pairs["pairs"]["train"],
            "val_documents": pairs["pairs"]["val"],
            "train_tokens": pairs["tokens"]["train"],
            "val_tokens": pairs["tokens"]["val"],
            "train_target_tokens": pairs["target_tokens"]["train"],
            "sequences": {"train": 2 * pairs["pairs"]["train"], "val": 2 * pairs["pairs"]["val"]},
            "validation": validation,
            "seq_length": settings.max_seq_length,
            "padding_fraction": round(
                padding_fraction(
                    2 * pairs["pairs"]["total"],
                    settings.max_seq_length,
                    real_tokens=pairs["tokens"]["train"] + pairs["tokens"]["val"],
                ),
                6,
            ),
            "format": report.file_formats,
            "chat_template": stager.template_source,
            "tokenizer": {"encoder": HuggingFaceEncoder.name, "worker_processes": 0},
            "settings": settings.cache_fields(),
        }
    )
    if report.filtered.get("prompt_leaves_no_room"):
        stats["hints"] = [NO_ROOM_HINT]
    shutil.rmtree(out / "staging")
    return stats


def _worker_processes(sources: list[SourceFile]) -> int:
    """Worker processes for cleaning and tokenising CPT documents: one a core for a large input, none
    (this process does it) for a small one or a single core."""
    cores = available_cores()
    if cores < 2:
        return 0
    size = 0
    for source in sources:
        size += (
            sum(p.stat().st_size for p in source.path.rglob("*") if p.is_file())
            if source.is_datasets_folder
            else source.path.stat().st_size
        )
        if size >= cpt_batches.WORKERS_MIN_BYTES:
            return cores
    return 0


def _nothing_usable(root: Path, report: DataReport) -> str:
    parts = [f"no usable documents in {root}: {report.files} file(s) read"]
    if report.skipped_total:
        parts.append(f"{report.skipped_total} input(s) skipped (first: {report.first_skips()})")
    if report.filtered:
        parts.append("filtered: " + ", ".join(f"{k}={v}" for k, v in sorted(report.filtered.items())))
    if report.duplicates_removed:
        parts.append(f"{report.duplicates_removed} duplicate(s)")
    return "; ".join(parts) + ". Fix the inputs or relax the filters (see `forgellm data stats`)."


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def iter_rows(sources: list[SourceFile], report: DataReport, settings: DataSettings) -> Iterator[Row]:
    max_bytes = int(settings.max_file_mb * 2**20)
    for source in sources:
        yield from read_source(source, report, max_file_bytes=max_bytes)


def row_text(row: Row, text_column: str, report: DataReport) -> str | None:
    """The document text of a row (CPT, and synthesis): its ``text_column`` field, or the joined
    turns of an instruction record; None, with the reason in ``report``, when it has none."""
    column = "text" if row.whole_file else text_column
    value = row.fields.get(column)
    if value is None:
        fmt = detect_format(row.fields)
        if fmt is None or fmt == "text":
            report.skip(
                row.file,
                row.line,
                f"no {column!r} field (found: {', '.join(map(str, row.fields)) or 'none'}); "
                f"set text_column to the field that holds the text",
            )
            return None
        try:  # an instruction record in a CPT folder: train on its text
            messages = to_messages(row.fields, fmt)
        except RecordError as exc:
            report.skip(row.file, row.line, str(exc))
            return None
        return "\n\n".join(m["content"] for m in messages) if isinstance(messages, list) else messages
    if not isinstance(value, str):
        report.skip(row.file, row.line, f"field {column!r} is a {type(value).__name__}, expected a string")
        return None
    return value


class _CPTStager:
    """CPT: the text of each row, in batches -> cleaned and tokenised (`cpt_batches`) -> exact
    duplicates of earlier documents removed -> staged."""

    template_source = None

    def __init__(
        self,
        settings: DataSettings,
        tokenizer: Any,
        report: DataReport,
        staging: Staging,
        encoder: DocumentEncoder | None = None,
        *,
        processes: int = 0,
        scratch: Path | None = None,
    ):
        self.settings, self.report, self.staging = settings, report, staging
        encoder = encoder or HuggingFaceEncoder.of(tokenizer)
        self.encoder_name = encoder.name
        self.runner = BatchRunner(CleaningRules.of(settings), encoder, processes=processes, scratch=scratch)
        self.processes = self.runner.processes
        self.seen: set[bytes] = set()
        self.batch: list[str] = []
        self.batch_chars = 0
        self.split_values = array("d")  # one float a document
        self.signatures: list[np.ndarray] = []

    def add(self, row: Row) -> None:
        text = row_text(row, self.settings.text_column, self.report)
        if text is None:
            return
        self.report.documents += 1
        self.batch.append(text)
        self.batch_chars += len(text)
        if self.batch_chars >= BATCH_CHARS:
            self.flush()

    def flush(self) -> None:
        """Hand the batch to the runner, and stage the batches it has finished."""
        if self.batch:
            for done in self.runner.submit(self.batch):
                self._stage(done)
            self.batch, self.batch_chars = [], 0

    def finish(self) -> None:
        """Stage everything added so far."""
        try:
            self.flush()
            for done in self.runner.drain():
                self._stage(done)
        finally:
            self.runner.close()

    def _stage(self, done: EncodedBatch) -> None:
        for reason, count in done.dropped.items():
            self.report.drop(reason, count)
        if self.settings.dedupe:
            keep = np.ones(len(done.digests), dtype=bool)
            for i, digest in enumerate(done.digests):
                if digest in self.seen:
                    keep[i] = False
                else:
                    self.seen.add(digest)
            if not keep.all():
                self.report.duplicates_removed += int((~keep).sum())
                done = done.select(keep)
        self.staging.add_many(done.tokens, done.lengths)
        self.split_values.extend(done.split_values)
        if done.signatures is not None:
            self.signatures.append(done.signatures)


class _IFTStager:
    """IFT: each row -> format (per file) -> chat messages -> rendered with a mask -> staged."""

    encoder_name = HuggingFaceEncoder.name  # records are encoded with their masks by the tokenizer itself
    processes = 0  # encoded here, a batch at a time

    def __init__(self, settings: DataSettings, tokenizer: Any, report: DataReport, staging: Staging):
        self.settings, self.tokenizer, self.report, self.staging = settings, tokenizer, report, staging
        self.renderer = ChatRenderer(tokenizer)
        self.seen: set[bytes] = set()
        self.batch: list[tuple[Any, bytes]] = []
        self.split_values = array("d")  # one float a document
        self.signatures: list[np.ndarray] = []

    @property
    def template_source(self) -> str:
        return self.renderer.template_source

    def _format_of(self, row: Row) -> str | None:
        formats = self.report.file_formats
        if row.file not in formats:
            fmt = self.settings.ift_format if self.settings.ift_format != "auto" else detect_format(row.fields)
            if fmt is None:
                self.report.skip(
                    row.file,
                    row.line,
                    "record matches no IFT format (messages, conversations, "
                    "instruction/output, prompt/completion, text); set ift_format to force one",
                )
                return None
            formats[row.file] = fmt
        return formats[row.file]

    def add(self, row: Row) -> None:
        fmt = self._format_of(row)
        if fmt is None:
            return
        try:
            item = to_messages(row.fields, fmt)
            self.report.documents += 1
            if (
                isinstance(item, str)
                and not item.strip()
                or isinstance(item, list)
                and any(m["role"] == "assistant" and not m["content"] for m in item)
            ):
                self.report.drop("empty_response")
                return
            rendered = self.renderer.render(item)
        except RecordError as exc:
            self.report.skip(row.file, row.line, f"{exc} (file format: {fmt})")
            return
        digest = content_digest(rendered.text)
        if not first_seen(digest, self.seen, self.report, self.settings.dedupe):
            return
        self.batch.append((rendered, digest))
        if len(self.batch) >= 256:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        limit = self.settings.max_seq_length
        for (_rendered, digest), (ids, mask) in zip(
            self.batch, encode_rendered(self.tokenizer, [r for r, _ in self.batch])
        ):
            if len(ids) > limit:
                if self.settings.overlong == "drop":
                    self.report.drop("overlong")
                    continue
                ids, mask = ids[:limit], mask[:limit]
                if not mask[1:].any():
                    self.report.drop("overlong_no_reply_left")
                    continue
                self.report.truncated += 1
            self.staging.add(ids, mask)
            self.split_values.append(split_value(digest, self.settings.seed))
        self.batch = []

    def finish(self) -> None:
        """Stage everything added so far."""
        self.flush()


@dataclass
class PreviewItem:
    file: str
    line: int | None
    ids: np.ndarray
    mask: np.ndarray


class _Collector:
    """Takes what a stager would stage, in memory (for previews)."""

    def __init__(self) -> None:
        self.items: list[tuple[np.ndarray, np.ndarray | None]] = []

    def add(self, ids: np.ndarray, mask: np.ndarray | None = None) -> int:
        self.items.append((ids, mask))
        return len(self.items) - 1

    def add_many(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        for ids in Encoded(flat, lengths).documents():
            self.add(ids)


def preview(
    settings: DataSettings, tokenizer: Any, workspace: Workspace | Path, count: int
) -> tuple[list[PreviewItem], DataReport]:
    """The first ``count`` records as they would be trained on (normalised, rendered, masked); no cache."""
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(Path(workspace))
    root = resolve_input_dir(settings.input_dir, workspace)
    report = DataReport(strict=settings.strict)
    from forgellm.data.preference import PreferenceStager

    stagers: dict[str, type[_IFTStager | PreferenceStager]] = {"ift": _IFTStager, "preference": PreferenceStager}
    stager_class = stagers.get(settings.training_type, _CPTStager)
    items: list[PreviewItem] = []
    for row in iter_rows(list_sources(root, report), report, settings):
        collector = _Collector()
        stager = stager_class(settings, tokenizer, report, collector)  # type: ignore[arg-type]
        stager.add(row)
        stager.finish()
        for ids, mask in collector.items:
            items.append(
                PreviewItem(row.file, row.line, ids, np.ones_like(ids, dtype=np.uint8) if mask is None else mask)
            )
        if len(items) >= count:
            break
    return items[:count], report
