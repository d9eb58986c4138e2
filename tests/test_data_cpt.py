"""CPT processing through `prepare_dataset`: cleaning, dedupe, the document-level split,
EOS between documents, packing without padding waste, and the cache."""

from __future__ import annotations

import numpy as np
import pytest

from forgellm.data.cleaning import minhash_signatures, near_duplicates, normalize_text, quality_problem
from forgellm.data.sequences import TokenSequences
from tests.data_helpers import documents_of, load_tokenizer, prepare, prose, write_files


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_normalisation():
    assert normalize_text("Cafe\u0301  \r\nline two\t \r\n\n\n\nend\u200b\u00a0x\x07") == "Café\nline two\n\nend x"
    assert normalize_text("  indented\n    code") == "indented\n    code"  # inner indentation kept


@pytest.mark.parametrize(
    "text, problem",
    [
        ("short", "too_short"),
        ("1234 5678 9012 3456 7890 1234 5678 9012 3456 7890 !!", "low_letter_share"),
        ("same line here\n" * 5 + "another line", "repeated_lines"),
        (prose(1), None),
    ],
)
def test_quality_filters(text, problem):
    assert quality_problem(text, min_chars=40, min_letter_share=0.5, max_repeated_line_share=0.3) == problem


def test_exact_and_near_duplicates_and_filters_are_removed_and_counted(tmp_path, workspace, tokenizer):
    base = prose(1, words=300)
    words = base.split(" ")
    near = " ".join(words[:150] + ["harbour"] + words[151:])  # one word changed
    root = write_files(
        tmp_path / "ds",
        {
            "a.txt": base,
            "b.txt": "\ufeff" + base + "  \r\n\r\n\r\n",  # same after normalisation
            "c.txt": near,
            "d.txt": prose(2, words=300),
            "e.txt": "tiny",
            "f.txt": "9 " * 60,
        },
    )
    stats = prepare(root, tokenizer, workspace).stats
    assert stats["documents"] == 6
    assert stats["duplicates_removed"] == 1
    assert stats["near_duplicates_removed"] == 1
    assert stats["filtered"] == {"total": 2, "low_letter_share": 1, "too_short": 1}
    assert stats["train_documents"] + stats["val_documents"] == 2

    relaxed = prepare(root, tokenizer, workspace, dedupe=False, near_dedupe_threshold=0.0, quality_filters=False).stats
    assert relaxed["duplicates_removed"] == relaxed["near_duplicates_removed"] == relaxed["filtered"]["total"] == 0
    assert relaxed["train_documents"] + relaxed["val_documents"] == 6


def test_near_duplicate_threshold_means_estimated_jaccard():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 50_000, size=400)
    edited = base.copy()
    edited[::20] = rng.integers(0, 50_000, size=20)  # a quarter of the 5-gram shingles change: Jaccard 0.6
    other = rng.integers(0, 50_000, size=400)
    docs = [base, edited, other]
    signatures = minhash_signatures(np.concatenate(docs), np.array([len(d) for d in docs]))
    assert near_duplicates(signatures, 0.4).tolist() == [False, True, False]
    assert near_duplicates(signatures, 0.9).tolist() == [False, False, False]
    assert near_duplicates(signatures, 0.0).tolist() == [False, False, False]  # 0 turns it off


def test_split_is_by_document_stable_and_disjoint(tmp_path, workspace, tokenizer):
    texts = {f"doc{i:02d}.txt": prose(100 + i) for i in range(40)}
    root = write_files(tmp_path / "ds", texts)
    data = prepare(root, tokenizer, workspace, validation_split=0.25, max_seq_length=128)
    eos = tokenizer.eos_token_id
    train, val = set(documents_of(data.train, eos)), set(documents_of(data.val, eos))
    assert len(train) == data.stats["train_documents"] and len(val) == data.stats["val_documents"]
    assert len(train) + len(val) == 40 and not train & val
    assert 4 <= len(val) <= 18  # about a quarter, by hash

    # The side of a document depends on its content only: renaming and adding files moves nothing.
    moved = write_files(
        tmp_path / "ds2", {f"renamed-{name}": text for name, text in texts.items()} | {"extra.txt": prose(999)}
    )
    again = prepare(moved, tokenizer, workspace, validation_split=0.25, max_seq_length=128)
    assert val <= set(documents_of(again.val, eos)) and train <= set(documents_of(again.train, eos))
    # Another seed gives another split.
    reseeded = prepare(root, tokenizer, workspace, validation_split=0.25, max_seq_length=128, seed=7)
    assert set(documents_of(reseeded.val, eos)) != val


def test_documents_are_packed_back_to_back_with_eos_and_no_padding_waste(tmp_path, workspace, tokenizer):
    texts = [prose(i, words=int(w)) for i, w in enumerate([30, 200, 75, 310, 55, 120])]
    root = write_files(tmp_path / "ds", {f"{i}.txt": t for i, t in enumerate(texts)})
    data = prepare(root, tokenizer, workspace, validation_split=0.0, max_seq_length=64)
    eos = tokenizer.eos_token_id
    assert isinstance(data.train, TokenSequences) and data.train.tokens.dtype == np.int32
    assert isinstance(data.train.tokens, np.memmap)  # memory-mapped from the cache
    flat = np.asarray(data.train.tokens).reshape(-1)
    real = data.stats["train_tokens"]
    assert real == sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)  # every token, plus one EOS each
    assert int((flat[:real] == eos).sum()) == len(texts)
    assert (
        np.asarray(data.train.mask).reshape(-1)[:real].all()
        and not np.asarray(data.train.mask).reshape(-1)[real:].any()
    )
    assert len(data.train) == -(-real // 64)  # only the last sequence holds padding
    assert data.stats["padding_fraction"] == pytest.approx(1 - real / (len(data.train) * 64), abs=1e-6)
    decoded = [tokenizer.decode(list(d)) for d in documents_of(data.train, eos)]
    assert sorted(decoded) == sorted(texts)


def test_cache_hit_and_invalidation(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {"a.txt": prose(1), "b.txt": prose(2), "c.txt": prose(3)})
    first = prepare(root, tokenizer, workspace)
    assert first.stats["cache"]["hit"] is False and first.path.parent == workspace / "data"
    again = prepare(root, tokenizer, workspace)
    assert again.stats["cache"]["hit"] is True and again.path == first.path
    assert np.array_equal(again.train.tokens, first.train.tokens)

    def key(**settings):
        return prepare(root, tokenizer, workspace, **settings).stats["cache"]["key"]

    assert key(max_seq_length=512) != first.stats["cache"]["key"]
    assert key(strict=True) == first.stats["cache"]["key"]  # strict changes nothing in the output
    (root / "b.txt").write_text(prose(20))  # same name and size class, new content
    changed = prepare(root, tokenizer, workspace)
    assert changed.stats["cache"]["hit"] is False and changed.path != first.path
    other_tokenizer = load_tokenizer()
    other_tokenizer.chat_template = "{{ messages }}"
    assert prepare(root, tokenizer, workspace).stats["cache"]["hit"] is True
    assert prepare(root, other_tokenizer, workspace).stats["cache"]["hit"] is False


def test_an_interrupted_build_leaves_no_entry_a_later_run_trusts(tmp_path, workspace, tokenizer, monkeypatch):
    from forgellm.data import pipeline

    root = write_files(tmp_path / "ds", {"a.txt": prose(1), "b.txt": prose(2)})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "pack_stream", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(root, tokenizer, workspace)
    assert not any((workspace / "data").iterdir())
    monkeypatch.undo()
    assert prepare(root, tokenizer, workspace).stats["cache"]["hit"] is False


def test_near_duplicates_are_found_among_many_documents():
    rng = np.random.default_rng(1)
    originals = [rng.integers(0, 50_000, size=int(rng.integers(200, 600))) for _ in range(300)]
    copies = []
    for doc in originals[:25]:
        edited = doc.copy()
        edited[len(doc) // 2] = 7  # one token changed: Jaccard about 0.98
        copies.append(edited)
    docs = originals + copies
    signatures = minhash_signatures(np.concatenate(docs), np.array([len(d) for d in docs]))
    assert np.flatnonzero(near_duplicates(signatures, 0.8)).tolist() == list(range(300, 325))


def test_worker_processes_give_exactly_what_one_process_gives(tmp_path, tokenizer, monkeypatch):
    from forgellm.data import cpt_batches, pipeline

    files = {f"{i:02d}.txt": prose(i, words=80) for i in range(40)}
    files.update(
        {
            "dup-early.txt": prose(3, words=80),
            "dup-late.txt": prose(37, words=80),
            "short.txt": "tiny",
            "records.jsonl": [{"text": prose(100 + i, words=60)} for i in range(30)] + [{"text": prose(5, words=80)}],
        }
    )
    root = write_files(tmp_path / "ds", files)
    monkeypatch.setattr(pipeline, "BATCH_CHARS", 2000)  # many batches: duplicates cross batch boundaries
    results = {}
    for workers, threshold in (("here", 2**62), ("workers", 0)):
        monkeypatch.setattr(cpt_batches, "WORKERS_MIN_BYTES", threshold)
        results[workers] = prepare(root, tokenizer, tmp_path / f"ws-{workers}")
    here, workers = results["here"], results["workers"]
    assert here.stats["tokenizer"]["worker_processes"] == 0 and workers.stats["tokenizer"]["worker_processes"] >= 2
    for key in (
        "documents",
        "duplicates_removed",
        "near_duplicates_removed",
        "filtered",
        "train_tokens",
        "val_tokens",
        "sequences",
    ):
        assert here.stats[key] == workers.stats[key], key
    assert here.stats["duplicates_removed"] == 3 and here.stats["filtered"]["too_short"] == 1
    for split in ("train", "val"):
        a, b = getattr(here, split), getattr(workers, split)
        assert np.array_equal(np.asarray(a.tokens), np.asarray(b.tokens)) and np.array_equal(
            np.asarray(a.mask), np.asarray(b.mask)
        )


def test_a_worker_that_dies_stops_the_run_with_a_clear_error(tmp_path, tokenizer):
    from forgellm.data.cpt_batches import BatchRunner, CleaningRules
    from forgellm.data.settings import DataSettings
    from forgellm.data.tokenizing import HuggingFaceEncoder
    from forgellm.errors import ForgeError
    from tests.data_helpers import DyingEncoderSpec

    encoder = HuggingFaceEncoder.of(tokenizer)
    encoder.spec = DyingEncoderSpec(encoder.spec.eos, encoder.spec.eos_id, definition=encoder.spec.definition)
    runner = BatchRunner(CleaningRules.of(DataSettings(input_dir=tmp_path)), encoder, processes=1, scratch=tmp_path)
    with pytest.raises(ForgeError, match="worker process ended"):
        for _ in range(3):
            list(runner.submit([prose(1)]))
        list(runner.drain())
    runner.close()
