"""The shipped sample dataset: generated deterministically (the committed files are the generator's
output), the right size, held-out questions answered by the documents but worded unlike them,
and every file usable by the pipeline as it stands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from forgellm.data.sample.facts import TOWNS
from forgellm.data.sample.generator import sample_files
from tests.data_helpers import load_tokenizer, prepare
from tests.test_data_cli import forgellm

SAMPLE = Path(__file__).resolve().parents[1] / "dataset" / "sample"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def test_forgellm_data_sample_writes_the_committed_files_byte_for_byte(tmp_path, workspace):
    code, out, err = forgellm("data", "sample", "--out", str(tmp_path / "s"))
    assert code == 0, err
    written = {str(p.relative_to(tmp_path / "s")): p.read_bytes() for p in (tmp_path / "s").rglob("*") if p.is_file()}
    committed = {str(p.relative_to(SAMPLE)): p.read_bytes() for p in SAMPLE.rglob("*") if p.is_file()}
    assert written == committed, "dataset/sample is stale: run `forgellm data sample` and commit the result"
    assert sample_files() == sample_files()  # deterministic within a process too
    assert sample_files(seed=8) != sample_files()


def test_cpt_part_is_100_to_300_kb_of_varied_documents():
    docs = sorted((SAMPLE / "cpt").glob("*.md"))
    size = sum(p.stat().st_size for p in docs)
    assert 100 * 1024 <= size <= 300 * 1024
    kinds = {p.stem.split("-", 1)[1].split("-")[0] for p in docs}
    assert len(kinds) >= 6


def test_heldout_answers_are_in_the_documents_but_the_questions_are_not():
    corpus = "\n".join(p.read_text() for p in sorted((SAMPLE / "cpt").glob("*.md")))
    ift = (SAMPLE / "ift" / "train.jsonl").read_text()
    corpus_words, ift_words = words(corpus), words(ift)
    seen = ngrams(corpus_words, 5) | ngrams(ift_words, 5)
    questions = [
        json.loads(line) for file in sorted((SAMPLE / "qa").glob("*.jsonl")) for line in file.read_text().splitlines()
    ]
    assert len(questions) >= 60
    for q in questions:
        assert q["answer"] in corpus, f"answer of {q['question']!r} is in no document"
        assert q["question"] not in corpus and q["question"] not in ift
        # No five consecutive words of a question appear in the training text.
        shared = ngrams(words(q["question"]), 5) & seen
        assert not shared, f"{q['question']!r} shares {shared} with the training text"


def test_document_facts_are_taught_by_no_chat_and_no_preference_pair():
    taught = (SAMPLE / "ift" / "train.jsonl").read_text() + (SAMPLE / "preference" / "train.jsonl").read_text()
    document_only = [json.loads(line) for line in (SAMPLE / "qa" / "document-facts.jsonl").read_text().splitlines()]
    chat_covered = [json.loads(line) for line in (SAMPLE / "qa" / "chat-facts.jsonl").read_text().splitlines()]
    assert len(document_only) >= 20 and len(chat_covered) >= 40
    for q in document_only:
        assert q["answer"] not in taught, f"{q['answer']!r} (document-only) appears in a chat or preference pair"
    for q in chat_covered:
        assert q["answer"] in taught, f"{q['answer']!r} is in no chat"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_cpt_sample_passes_the_pipeline_whole(workspace, tokenizer):
    stats = prepare(SAMPLE / "cpt", tokenizer, workspace, max_seq_length=512).stats
    assert stats["skipped"] == [] and stats["filtered"]["total"] == 0
    assert stats["duplicates_removed"] == stats["near_duplicates_removed"] == 0
    assert stats["train_documents"] + stats["val_documents"] == len(list((SAMPLE / "cpt").glob("*.md")))
    assert stats["val_documents"] >= 5


def test_ift_sample_is_chat_records_with_a_reply_each(workspace, tokenizer):
    stats = prepare(SAMPLE / "ift", tokenizer, workspace, training_type="ift", max_seq_length=512).stats
    assert stats["format"] == {"train.jsonl": "messages"}
    assert stats["skipped"] == [] and stats["filtered"]["total"] == 0
    assert stats["train_documents"] + stats["val_documents"] == stats["documents"] >= 50


def test_preference_sample_pairs_a_grounded_answer_with_a_fluent_wrong_one(workspace, tokenizer):
    stats = prepare(
        SAMPLE / "preference",
        tokenizer,
        workspace,
        training_type="preference",
        max_seq_length=128,
        validation_split=0.2,
    ).stats
    assert stats["format"] == {"train.jsonl": "mixed"}  # string prompts and message-list prompts
    assert stats["skipped"] == [] and stats["filtered"]["total"] == 0 and stats["truncated"] == 0
    assert stats["pairs"]["total"] >= 40 and stats["pairs"]["val"] >= 5
    records = [json.loads(line) for line in (SAMPLE / "preference" / "train.jsonl").read_text().splitlines()]
    for record in records:  # the same sentence about the same town, with another town's fact
        assert record["chosen"] != record["rejected"]
        named = [{t.name for t in TOWNS if t.name in record[side]} for side in ("chosen", "rejected")]
        assert named[0] == named[1] and len(named[0]) == 1
