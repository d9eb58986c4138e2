"""`shuffled_copies`: extra copies of the training documents with paragraphs and sentences reordered.

The copies must hold exactly the original's sentences (nothing invented, nothing lost but
sub-headings), train only (the validation split is the same with and without them), and be
reported; with one document, whose validation is its own last part, none are made."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from forgellm.data.settings import DataSettings
from forgellm.data.shuffled_copies import shuffle_text
from forgellm.errors import UserError
from forgellm.training.config import TrainingConfig, build_config
from tests.cli_helpers import forgellm
from tests.data_helpers import documents_of, load_tokenizer, prepare, prose, write_files
from tests.test_data_cli import DOMAIN_ONLY, stats_json
from tests.tiny_model import EMBEDDED_DIR

TEXT = """# The harbour of Kelm

## History

The harbour was dug in 1412. Its first master was Anselm Drey. Ships came from the north.

## Trade

Salt left by the western quay. Wool came in by the eastern quay!
Was the toll high? It was one penny a barrel.

- Salt: 300 barrels a year
- Wool: 40 bales a year
"""
SENTENCES = {
    "The harbour was dug in 1412.",
    "Its first master was Anselm Drey.",
    "Ships came from the north.",
    "Salt left by the western quay.",
    "Wool came in by the eastern quay!",
    "Was the toll high?",
    "It was one penny a barrel.",
    "- Salt: 300 barrels a year",
    "- Wool: 40 bales a year",
}


def units_of(text: str) -> list[str]:
    """The sentences and list items of everything after the title."""
    out = []
    for paragraph in text.split("\n\n")[1:]:
        for line in paragraph.split("\n"):
            out += [line] if line.startswith("- ") else re.split(r"(?<=[.!?]) (?=[A-Z0-9])", line)
    return out


def test_a_copy_reorders_the_sentences_and_keeps_every_one():
    copies = [shuffle_text(TEXT, random.Random(seed)) for seed in range(6)]
    for copy in copies:
        assert copy.startswith("# The harbour of Kelm\n\n")  # the title stays first
        assert "## " not in copy  # sub-headings would label the wrong paragraph
        units = units_of(copy)
        assert sorted(units) == sorted(SENTENCES)  # nothing lost, nothing added, nothing split
    assert len(set(copies)) > 1  # different orders
    assert shuffle_text(TEXT, random.Random(3)) == copies[3]  # and reproducible from the seed


def sentence_doc(seed: int) -> str:
    """A document of six distinct sentences (the copies reorder sentences, so it needs several)."""
    return " ".join(prose(seed * 10 + j, words=14) for j in range(6))


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_copies_train_and_never_reach_validation(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {f"{i}.md": sentence_doc(i) for i in range(10)})
    plain = prepare(root, tokenizer, workspace, max_seq_length=64)
    copied = prepare(root, tokenizer, workspace, max_seq_length=64, shuffled_copies=2)
    assert copied.stats["cache"]["key"] != plain.stats["cache"]["key"]
    # Validation: the same documents, the same sequences.
    assert copied.stats["val_documents"] == plain.stats["val_documents"] >= 1
    np.testing.assert_array_equal(np.asarray(copied.val.tokens), np.asarray(plain.val.tokens))
    # Training: each original, then two copies of it whose sentences are the original's, reordered.
    report = copied.stats["shuffled_copies"]
    assert report["copies"] == 2 and report["tokens"] > 0
    assert copied.stats["train_tokens"] == plain.stats["train_tokens"] + report["tokens"]
    eos = tokenizer.eos_token_id
    originals = [tokenizer.decode(d) for d in documents_of(plain.train, eos)]
    trained = [tokenizer.decode(d) for d in documents_of(copied.train, eos)]
    assert len(trained) == 3 * len(originals)
    assert trained[: len(originals)] == originals

    def sentences(text: str) -> list[str]:
        return sorted(s.strip() for s in text.split(".") if s.strip())

    by_content = {tuple(sentences(o)): o for o in originals}
    for copy in trained[len(originals) :]:
        assert tuple(sentences(copy)) in by_content  # a permutation of one training document
    assert set(trained[len(originals) :]) - set(originals)  # and not just the original again
    val_text = "\n".join(tokenizer.decode(d) for d in documents_of(copied.val, eos))
    for copy in trained:
        assert copy.split(".")[0] not in val_text


def test_the_option_reaches_the_pipeline_from_the_cli_and_the_config(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {f"{i}.md": sentence_doc(i) for i in range(6)})
    stats = stats_json(root, "--shuffled-copies", "3")
    assert stats["shuffled_copies"]["copies"] == 3
    assert stats_json(root)["shuffled_copies"] is None
    config = TrainingConfig(model_name="default", input_dir=str(root), max_iterations=1, shuffled_copies=3)
    assert DataSettings.from_config(config).shuffled_copies == 3


def test_one_document_gets_no_copies_and_the_stats_say_why(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "one", {"only.md": " ".join(sentence_doc(i) for i in range(8))})
    stats = prepare(root, tokenizer, workspace, max_seq_length=64, shuffled_copies=2).stats
    assert stats["validation"]["source"] == "packed_sequences"
    assert stats["shuffled_copies"]["copies"] == 0 and "validation_dir" in stats["shuffled_copies"]["reason"]


def test_the_stats_table_names_the_copies(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {f"{i}.md": sentence_doc(i) for i in range(6)})
    code, out, err = forgellm(
        "data", "stats", str(root), "--model", str(EMBEDDED_DIR), *DOMAIN_ONLY, "--shuffled-copies", "2"
    )
    assert code == 0, err
    assert "shuffled copies" in out and "2 of each training document" in out


@pytest.mark.parametrize(
    "values, problem",
    [
        (
            {"training_type": "ift"},
            "an ift run without documents_dir has none to copy: remove it, or set documents_dir",
        ),
        ({"training_type": "preference"}, "a preference run has none to copy: remove it"),
    ],
)
def test_copies_where_there_are_no_documents_are_refused(values, problem):
    with pytest.raises(UserError, match=re.escape(problem)):
        build_config(None, {"model_name": "default", "max_iterations": 1, "shuffled_copies": 2, **values})
    ift = build_config(
        None,
        {
            "model_name": "default",
            "max_iterations": 1,
            "shuffled_copies": 2,
            "training_type": "ift",
            "documents_dir": "docs",
        },
    )
    assert ift.shuffled_copies == 2
