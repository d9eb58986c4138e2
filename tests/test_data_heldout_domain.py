"""The held-out domain, dataset/heldout-domain: hand-written documents, chats and held-out questions about
an invented valley, its moth and its people, used only to check that the shipped recipes carry to a domain
they were not tuned on. It must load as the recipes load it, its questions must be answerable from what
trains (and, for document-facts, from the documents alone) without being worded like the training text,
and it must share no names with the sample, or a score on it would measure the sample instead."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from forgellm.training.qa import normalise, read_qa
from tests.cli_helpers import forgellm
from tests.data_helpers import documents_of, load_tokenizer, prepare
from tests.test_data_general_set import assert_shares_nothing_with, domain_names
from tests.test_data_sample import ngrams, words
from tests.tiny_model import EMBEDDED_DIR

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "dataset" / "heldout-domain"
SAMPLE = ROOT / "dataset" / "sample"
CPT_RECIPE = yaml.safe_load((ROOT / "configs" / "cpt-sample.yaml").read_text())
IFT_RECIPE = yaml.safe_load((ROOT / "configs" / "ift-sample.yaml").read_text())


def documents() -> list[Path]:
    return sorted((HELDOUT / "cpt").glob("*.md"))


def corpus() -> str:
    return "\n".join(p.read_text() for p in documents())


def chats() -> str:
    return (HELDOUT / "ift" / "train.jsonl").read_text()


def questions(split: str) -> list[dict]:
    return read_qa(HELDOUT / "qa" / f"{split}.jsonl")


def contains(text: str, answer: str) -> bool:
    """Whether ``text`` holds ``answer`` as forgellm eval scores it (normalised, as whole words)."""
    return f" {normalise(answer)} " in f" {normalise(text)} "


def stats_json(path: Path, *options: str) -> dict:
    code, out, err = forgellm(
        "data", "stats", str(path), "--model", str(EMBEDDED_DIR), "--json", "--mixture-ratio", "1", *options
    )
    assert code == 0, err
    return json.loads(out)


def test_the_folders_hold_only_what_the_recipes_read():
    # A README or notes file inside cpt/ or ift/ would be trained on as one more document.
    assert {p.suffix for p in (HELDOUT / "cpt").iterdir()} == {".md"}
    assert [p.name for p in (HELDOUT / "ift").iterdir()] == ["train.jsonl"]
    assert sorted(p.name for p in (HELDOUT / "qa").iterdir()) == ["chat-facts.jsonl", "document-facts.jsonl"]
    assert (HELDOUT / "README.md").is_file()


def test_the_documents_are_a_dozen_or_more_varied_pages_of_25_to_40_kb(workspace):
    docs = documents()
    assert 12 <= len(docs) <= 20
    assert 25 * 1024 <= sum(p.stat().st_size for p in docs) <= 40 * 1024
    stats = stats_json(HELDOUT / "cpt", "--max-seq-length", str(CPT_RECIPE["max_seq_length"]))
    assert stats["documents"] == len(docs) and stats["skipped"] == [] and stats["filtered"]["total"] == 0
    assert stats["duplicates_removed"] == stats["near_duplicates_removed"] == 0


def test_the_chats_are_message_records_with_a_short_reply_each(workspace):
    records = [json.loads(line) for line in chats().splitlines()]
    assert 35 <= len(records) <= 50
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles in (["user", "assistant"], ["system", "user", "assistant"]), record
        assert len(words(record["messages"][-1]["content"])) <= 25, record
    stats = stats_json(HELDOUT / "ift", "--mode", "ift", "--max-seq-length", str(IFT_RECIPE["max_seq_length"]))
    assert stats["format"] == {"train.jsonl": "messages"}
    assert stats["documents"] == len(records) and stats["skipped"] == [] and stats["filtered"]["total"] == 0


def test_the_questions_are_read_as_forgellm_eval_reads_them():
    chat_facts, document_facts = questions("chat-facts"), questions("document-facts")
    assert len(chat_facts) >= 20 and len(document_facts) >= 12
    assert {q["qa_file"] for q in read_qa(HELDOUT / "qa")} == {"chat-facts", "document-facts"}
    for q in chat_facts + document_facts:
        # Scoring is containment: a short answer, not a common word a wrong answer could contain by chance.
        assert 0 < len(q["answer"].split()) <= 2, q
        # Nor one the question gives away: a model that repeats the question would score.
        assert not any(contains(q["question"], option) for option in q["accepted"]), q


def test_every_answer_is_in_two_or_more_documents_and_the_chats_teach_only_the_chat_facts():
    texts = [p.read_text() for p in documents()]
    taught = "\n".join(m["content"] for line in chats().splitlines() for m in json.loads(line)["messages"])
    for q in questions("chat-facts") + questions("document-facts"):
        holding = sum(contains(text, q["answer"]) for text in texts)
        assert holding >= 2, f"{q['answer']!r} is in {holding} document(s): each fact is told more than once"
    for q in questions("chat-facts"):
        assert contains(taught, q["answer"]), f"{q['answer']!r} (chat-facts) is in no chat"
    for q in questions("document-facts"):
        for option in q["accepted"]:
            assert not contains(taught, option), f"{option!r} (document-facts) appears in a chat"


def test_no_question_is_worded_like_the_training_text():
    seen = ngrams(words(corpus()), 5) | ngrams(words(chats()), 5)
    for q in questions("chat-facts") + questions("document-facts"):
        assert q["question"] not in corpus() and q["question"] not in chats()
        shared = ngrams(words(q["question"]), 5) & seen
        assert not shared, f"{q['question']!r} shares {sorted(shared)} with the documents or chats"


def test_the_domain_shares_no_name_with_the_sample():
    text = corpus() + chats() + "".join(p.read_text() for p in (HELDOUT / "qa").glob("*.jsonl"))
    sample_names = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(domain_names())) + r")\b", re.I)
    assert not sample_names.search(text), f"names {sample_names.search(text).group(0)!r} of the sample"
    sample = "\n".join(p.read_text() for p in sorted(SAMPLE.rglob("*")) if p.is_file())
    for q in questions("chat-facts") + questions("document-facts"):
        for option in q["accepted"]:
            if not option.replace(",", "").isdigit():  # years and counts may coincide; names may not
                assert not re.search(rf"\b{re.escape(option)}\b", sample, re.I), f"{option!r} is in the sample"


def test_the_documents_share_no_passage_with_the_general_sets_or_the_sample():
    # dataset/general measures forgetting after training on this domain, so none of its text may be trained here.
    assert_shares_nothing_with(
        HELDOUT / "cpt",
        {
            "the evaluation set dataset/general": ROOT / "dataset" / "general",
            "dataset/general-replay": ROOT / "dataset" / "general-replay",
            "the sample's CPT documents": SAMPLE / "cpt",
        },
    )


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_every_answer_trains_under_the_recipes_split(workspace, tokenizer):
    """The recipes hold out a share of the documents and chats for validation (by content hash and seed): a
    fact whose every mention landed there could not be learnt, and the lead would measure the split."""
    cpt = prepare(HELDOUT / "cpt", tokenizer, workspace, max_seq_length=CPT_RECIPE["max_seq_length"])
    assert cpt.stats["val_documents"] >= 1
    trained = "\n".join(tokenizer.decode(d) for d in documents_of(cpt.train, tokenizer.eos_token_id))
    for q in questions("chat-facts") + questions("document-facts"):
        assert contains(trained, q["answer"]), f"{q['answer']!r} is only in validation documents"
    ift = prepare(
        HELDOUT / "ift", tokenizer, workspace, training_type="ift", max_seq_length=IFT_RECIPE["max_seq_length"]
    )
    assert ift.stats["val_documents"] >= 1
    replies = "\n".join(tokenizer.decode(d) for d in documents_of(ift.train, tokenizer.eos_token_id))
    for q in questions("chat-facts"):
        assert contains(replies, q["answer"]), f"{q['answer']!r} is only in validation chats"
