"""The shipped general-text sets: dataset/general, original encyclopedic articles for measuring forgetting
(`forgellm eval RUN --general dataset/general`), and dataset/general-replay, separate original articles for
replay (`general_data_dir`), so the evaluation set stays unseen by training. Both must be ordinary English
that says nothing about the sample's invented domain, or they would measure (or train) the domain instead."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from forgellm.data.sample import facts
from forgellm.workspace import Workspace
from tests.cli_helpers import forgellm
from tests.data_helpers import load_tokenizer, prepare
from tests.test_data_sample import ngrams, words

ROOT = Path(__file__).resolve().parents[1]
GENERAL = ROOT / "dataset" / "general"
REPLAY = ROOT / "dataset" / "general-replay"
SAMPLE = ROOT / "dataset" / "sample"


def articles(folder: Path = GENERAL) -> list[Path]:
    return sorted(folder.glob("*.md"))


def domain_names() -> set[str]:
    """Every proper name of the sample's domain: the nation and its institutions, towns, founders (and their
    surnames), festivals and rivers."""
    names = {
        facts.NATION,
        facts.LANGUAGE,
        facts.CAPITAL,
        facts.FOUNDER,
        facts.CURRENCY,
        facts.NATIONAL_CROP,
        facts.PARLIAMENT,
        facts.MOUNTAIN,
        facts.MINERAL,
        facts.MINERAL_DISCOVERER,
        facts.MINERAL_HILLS,
    }
    for town in facts.TOWNS:
        names |= {town.name, town.founder, facts.surname(town.founder), town.festival, town.river}
    return names


def test_the_set_is_a_dozen_short_articles_of_4000_to_8000_words():
    docs = articles()
    assert len(docs) >= 12
    # Markdown only: a README or notes file in the folder would be read as one more document.
    assert {p.suffix for p in GENERAL.iterdir()} == {".md"}
    counts = {p.name: len(p.read_text().split()) for p in docs}
    assert 4000 <= sum(counts.values()) <= 8000, counts
    assert all(250 <= n <= 500 for n in counts.values()), counts


def assert_shares_nothing_with(folder: Path, others: dict[str, Path]) -> None:
    """No article of `folder` shares a 5-word sequence with the documents of `others` (a label for each folder)
    nor names anything of the sample domain."""
    seen = {
        label: ngrams(words("\n".join(p.read_text() for p in articles(other))), 5) for label, other in others.items()
    }
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(domain_names())) + r")\b", re.IGNORECASE)
    for path in articles(folder):
        text = path.read_text()
        for label, grams in seen.items():
            shared = ngrams(words(text), 5) & grams
            assert not shared, f"{path.name} shares {sorted(shared)[:5]} with {label}"
        assert not pattern.search(text), f"{path.name} names {pattern.search(text).group(0)!r} of the sample domain"


def test_the_set_shares_nothing_with_the_sample_domain():
    assert_shares_nothing_with(GENERAL, {"the sample's CPT documents": SAMPLE / "cpt"})


def test_the_replay_set_is_two_dozen_short_articles_of_7000_to_12000_words():
    docs = articles(REPLAY)
    assert len(docs) >= 20
    # No README: the pipeline would read it as one more document to train on.
    assert {p.suffix for p in REPLAY.iterdir()} == {".md"}
    counts = {p.name: len(p.read_text().split()) for p in docs}
    assert 7000 <= sum(counts.values()) <= 12000, counts
    assert all(300 <= n <= 500 for n in counts.values()), counts


def test_the_replay_set_shares_nothing_with_the_evaluation_set_or_the_sample_domain():
    # Training on text that overlaps the evaluation set would make the forgetting measure look better than it is.
    assert_shares_nothing_with(
        REPLAY, {"the evaluation set dataset/general": GENERAL, "the sample's CPT documents": SAMPLE / "cpt"}
    )


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.mark.parametrize("folder", [GENERAL, REPLAY], ids=["general", "general-replay"])
def test_the_set_passes_the_pipeline_whole(workspace, tokenizer, folder):
    stats = prepare(folder, tokenizer, workspace, max_seq_length=512).stats
    assert stats["skipped"] == [] and stats["filtered"]["total"] == 0
    assert stats["duplicates_removed"] == stats["near_duplicates_removed"] == 0
    assert stats["train_documents"] + stats["val_documents"] == len(articles(folder))


def test_the_replay_set_serves_as_general_data_with_the_sample(workspace, tokenizer):
    mixed = prepare(
        SAMPLE / "cpt", tokenizer, workspace, max_seq_length=512, data_mixture_ratio=0.8, general_data_dir=REPLAY
    )
    mixture = mixed.stats["mixture"]
    assert mixture["general_source"] == f"folder {REPLAY}"
    assert mixture["general_sequences"] == round(mixture["domain_sequences"] * 0.2 / 0.8) > 0


@pytest.mark.slow
def test_forgellm_eval_measures_the_base_models_general_perplexity(workspace, embedded_model_dir, capsys):
    # The workspace as `make setup` leaves it: the embedded model under models/base, reachable as "default".
    base = Workspace.current().ensure().models("base")
    (base / embedded_model_dir.name).symlink_to(embedded_model_dir, target_is_directory=True)
    started = time.monotonic()
    code, out, err = forgellm("eval", "default", "--general", str(GENERAL))
    assert code == 0, err
    match = re.search(r"general ppl:\s+([0-9.]+)", out)
    assert match, out
    ppl = float(match.group(1))
    # A sanity band: the base model knows ordinary English, so it is neither near-perfect nor lost on it.
    assert 3 < ppl < 60, out
    with capsys.disabled():
        print(f"\nbase model general ppl on dataset/general: {ppl:.2f} ({time.monotonic() - started:.0f} s)")
