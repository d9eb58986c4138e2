"""The held-out domains, dataset/heldout-domain (an invented valley, its moth and its people), its
successor dataset/heldout-domain-2 (the internal documentation of an invented instrument maker), theirs,
dataset/heldout-domain-3 (the papers of an invented amateur astronomy society and its observatory), and
dataset/heldout-domain-4 (the papers of an invented seaside music festival and its orchestra), the check
of the next recipe change: hand-written documents, chats and held-out questions used only
to check that the shipped recipes carry to a domain they were not tuned on. Each must load as the recipes
load it, its questions must be answerable from what trains (and, for document-facts, from the documents
alone) without being worded like the training text, and it must share no names with the sample or with
the other held-out domains, or a score on it would measure what was trained before instead."""

from __future__ import annotations

import calendar
import itertools
import json
import re
from dataclasses import dataclass
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
SAMPLE = ROOT / "dataset" / "sample"
GENERAL_SETS = (ROOT / "dataset" / "general", ROOT / "dataset" / "general-replay")
CPT_RECIPE = yaml.safe_load((ROOT / "configs" / "cpt-sample.yaml").read_text())
IFT_RECIPE = yaml.safe_load((ROOT / "configs" / "ift-sample.yaml").read_text())


@dataclass(frozen=True)
class Domain:
    """A held-out folder and the sizes its README promises (each was written to its own brief)."""

    path: Path
    documents: tuple[int, int]
    kilobytes: tuple[int, int]
    chats: tuple[int, int]

    def __str__(self) -> str:
        return self.path.name


DOMAINS = [
    Domain(ROOT / "dataset" / "heldout-domain", documents=(12, 20), kilobytes=(25, 40), chats=(35, 50)),
    Domain(ROOT / "dataset" / "heldout-domain-2", documents=(22, 26), kilobytes=(40, 55), chats=(55, 65)),
    Domain(ROOT / "dataset" / "heldout-domain-3", documents=(22, 26), kilobytes=(40, 55), chats=(55, 65)),
    Domain(ROOT / "dataset" / "heldout-domain-4", documents=(22, 26), kilobytes=(40, 55), chats=(55, 65)),
]


@pytest.fixture(params=DOMAINS, ids=str)
def domain(request) -> Domain:
    return request.param


def documents(domain: Domain) -> list[Path]:
    return sorted((domain.path / "cpt").glob("*.md"))


def corpus(domain: Domain) -> str:
    return "\n".join(p.read_text() for p in documents(domain))


def chats(domain: Domain) -> str:
    return (domain.path / "ift" / "train.jsonl").read_text()


def questions(domain: Domain, split: str) -> list[dict]:
    return read_qa(domain.path / "qa" / f"{split}.jsonl")


def all_questions(domain: Domain) -> list[dict]:
    return questions(domain, "chat-facts") + questions(domain, "document-facts")


def contains(text: str, answer: str) -> bool:
    """Whether ``text`` holds ``answer`` as forgellm eval scores it (normalised, as whole words)."""
    return f" {normalise(answer)} " in f" {normalise(text)} "


def stats_json(path: Path, *options: str) -> dict:
    code, out, err = forgellm(
        "data", "stats", str(path), "--model", str(EMBEDDED_DIR), "--json", "--mixture-ratio", "1", *options
    )
    assert code == 0, err
    return json.loads(out)


def test_the_folders_hold_only_what_the_recipes_read(domain):
    # A README or notes file inside cpt/ or ift/ would be trained on as one more document.
    assert {p.suffix for p in (domain.path / "cpt").iterdir()} == {".md"}
    assert [p.name for p in (domain.path / "ift").iterdir()] == ["train.jsonl"]
    assert sorted(p.name for p in (domain.path / "qa").iterdir()) == ["chat-facts.jsonl", "document-facts.jsonl"]
    assert (domain.path / "README.md").is_file()


def test_the_documents_are_a_dozen_or_more_varied_pages_of_the_promised_size(domain, workspace):
    docs = documents(domain)
    assert domain.documents[0] <= len(docs) <= domain.documents[1]
    low, high = domain.kilobytes
    assert low * 1024 <= sum(p.stat().st_size for p in docs) <= high * 1024
    stats = stats_json(domain.path / "cpt", "--max-seq-length", str(CPT_RECIPE["max_seq_length"]))
    assert stats["documents"] == len(docs) and stats["skipped"] == [] and stats["filtered"]["total"] == 0
    assert stats["duplicates_removed"] == stats["near_duplicates_removed"] == 0


def test_the_chats_are_message_records_with_a_short_reply_each(domain, workspace):
    records = [json.loads(line) for line in chats(domain).splitlines()]
    assert domain.chats[0] <= len(records) <= domain.chats[1]
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles in (["user", "assistant"], ["system", "user", "assistant"]), record
        assert len(words(record["messages"][-1]["content"])) <= 25, record
    stats = stats_json(domain.path / "ift", "--mode", "ift", "--max-seq-length", str(IFT_RECIPE["max_seq_length"]))
    assert stats["format"] == {"train.jsonl": "messages"}
    assert stats["documents"] == len(records) and stats["skipped"] == [] and stats["filtered"]["total"] == 0


def test_the_questions_are_read_as_forgellm_eval_reads_them(domain):
    chat_facts, document_facts = questions(domain, "chat-facts"), questions(domain, "document-facts")
    assert len(chat_facts) >= 20 and len(document_facts) >= 12
    assert {q["qa_file"] for q in read_qa(domain.path / "qa")} == {"chat-facts", "document-facts"}
    for q in chat_facts + document_facts:
        # Scoring is containment: a short answer, not a common word a wrong answer could contain by chance.
        assert 0 < len(q["answer"].split()) <= 2, q
        # Nor one the question gives away: a model that repeats the question would score.
        assert not any(contains(q["question"], option) for option in q["accepted"]), q


def test_every_answer_is_in_two_or_more_documents_and_the_chats_teach_only_the_chat_facts(domain):
    texts = [p.read_text() for p in documents(domain)]
    taught = "\n".join(m["content"] for line in chats(domain).splitlines() for m in json.loads(line)["messages"])
    for q in all_questions(domain):
        holding = sum(contains(text, q["answer"]) for text in texts)
        assert holding >= 2, f"{q['answer']!r} is in {holding} document(s): each fact is told more than once"
    for q in questions(domain, "chat-facts"):
        assert contains(taught, q["answer"]), f"{q['answer']!r} (chat-facts) is in no chat"
    for q in questions(domain, "document-facts"):
        for option in q["accepted"]:
            assert not contains(taught, option), f"{option!r} (document-facts) appears in a chat"


def test_no_question_is_worded_like_the_training_text(domain):
    seen = ngrams(words(corpus(domain)), 5) | ngrams(words(chats(domain)), 5)
    for q in all_questions(domain):
        assert q["question"] not in corpus(domain) and q["question"] not in chats(domain)
        shared = ngrams(words(q["question"]), 5) & seen
        assert not shared, f"{q['question']!r} shares {sorted(shared)} with the documents or chats"


def test_the_domain_shares_no_name_with_the_sample(domain):
    text = corpus(domain) + chats(domain) + "".join(p.read_text() for p in (domain.path / "qa").glob("*.jsonl"))
    sample_names = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(domain_names())) + r")\b", re.I)
    assert not sample_names.search(text), f"names {sample_names.search(text).group(0)!r} of the sample"
    sample = "\n".join(p.read_text() for p in sorted(SAMPLE.rglob("*")) if p.is_file())
    for q in all_questions(domain):
        for option in q["accepted"]:
            if not option.replace(",", "").isdigit():  # years and counts may coincide; names may not
                assert not re.search(rf"\b{re.escape(option)}\b", sample, re.I), f"{option!r} is in the sample"


def invented_names(folder: Path) -> set[str]:
    """The proper names a domain made up: words capitalised in mid-sentence (so not merely a sentence's first
    word), never written in lower case there, and absent from the general sets and the calendar (English
    words and names any text may use, such as a month)."""
    text = "\n".join(p.read_text() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "README.md")
    english = set(words("\n".join(p.read_text() for general in GENERAL_SETS for p in general.glob("*.md"))))
    english |= {name.lower() for name in [*calendar.month_name, *calendar.day_name] if name}
    lower_case = set(re.findall(r"\b[a-z]+\b", text))
    capitalised = set(re.findall(r"\b[a-z]+,? ([A-Z][a-z]+)\b", text))
    return {name for name in capitalised if name.lower() not in lower_case and name.lower() not in english}


@pytest.mark.parametrize("owner, other", itertools.permutations(DOMAINS, 2), ids=str)
def test_the_held_out_domains_share_no_name(owner, other):
    # A successor that reused a name of a domain it replaces would let what was trained there score here.
    names = invented_names(owner.path)
    assert len(names) >= 15
    text = set(words("\n".join(p.read_text() for p in sorted(other.path.rglob("*")) if p.is_file())))
    shared = {name for name in names if name.lower() in text}
    assert not shared, f"{other} uses names of {owner}: {sorted(shared)}"


def test_the_documents_share_no_passage_with_the_general_sets_or_the_sample(domain):
    # dataset/general measures forgetting after training on this domain, so none of its text may be trained here.
    assert_shares_nothing_with(
        domain.path / "cpt",
        {
            "the evaluation set dataset/general": ROOT / "dataset" / "general",
            "dataset/general-replay": ROOT / "dataset" / "general-replay",
            "the sample's CPT documents": SAMPLE / "cpt",
        },
    )


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_every_answer_trains_under_the_recipes_split(domain, workspace, tokenizer):
    """The recipes hold out a share of the documents and chats for validation (by content hash and seed): a
    fact whose every mention landed there could not be learnt, and the lead would measure the split."""
    cpt = prepare(domain.path / "cpt", tokenizer, workspace, max_seq_length=CPT_RECIPE["max_seq_length"])
    assert cpt.stats["val_documents"] >= 1
    trained = "\n".join(tokenizer.decode(d) for d in documents_of(cpt.train, tokenizer.eos_token_id))
    for q in all_questions(domain):
        assert contains(trained, q["answer"]), f"{q['answer']!r} is only in validation documents"
    ift = prepare(
        domain.path / "ift", tokenizer, workspace, training_type="ift", max_seq_length=IFT_RECIPE["max_seq_length"]
    )
    assert ift.stats["val_documents"] >= 1
    replies = "\n".join(tokenizer.decode(d) for d in documents_of(ift.train, tokenizer.eos_token_id))
    for q in questions(domain, "chat-facts"):
        assert contains(replies, q["answer"]), f"{q['answer']!r} is only in validation chats"
