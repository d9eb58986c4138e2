"""`shuffled_copies`: extra copies of the training documents with paragraphs and sentences reordered.

The copies must hold exactly the original's sentences (nothing invented, nothing lost but
sub-headings), train only (the validation split is the same with and without them), and be
reported; with one document, whose validation is its own last part, none are made."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from forgellm.data.settings import DataSettings
from forgellm.data.shuffled_copies import shuffle_text
from forgellm.errors import UserError
from forgellm.runs.events import read_events
from forgellm.training.config import MAX_SHUFFLED_COPIES, TrainingConfig, build_config
from forgellm.training.length import copies_for, fills_floor
from tests.cli_helpers import forgellm
from tests.data_helpers import documents_of, load_tokenizer, prepare, prose, write_files
from tests.test_data_cli import DOMAIN_ONLY, stats_json
from tests.tiny_model import EMBEDDED_DIR
from tests.training_helpers import tiny_config_values, write_config

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
    chats = write_files(
        tmp_path / "chats",
        {
            "c.jsonl": [
                {"messages": [{"role": "user", "content": prose(i)}, {"role": "assistant", "content": prose(i + 50)}]}
                for i in range(6)
            ]
        },
    )
    code, out, err = forgellm(
        "data",
        "stats",
        str(chats),
        "--mode",
        "ift",
        "--model",
        str(EMBEDDED_DIR),
        *DOMAIN_ONLY,
        "--shuffled-copies",
        "2",
    )
    assert code == 0, err
    assert "none: chats and pairs keep their order" in out


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


# --- min_iterations_fill: shuffled_copies ----------------------------------------------------


def test_the_floor_asks_for_as_many_copies_as_make_one_epoch_reach_it():
    config = TrainingConfig(
        num_epochs=3, min_iterations=200, min_iterations_fill="shuffled_copies", batch_size=4, training_type="cpt"
    )
    assert copies_for(config, sequences=64) == 12  # 16 steps an epoch: 13 versions read once give 208 >= 200
    assert fills_floor(config, sequences=64)
    assert copies_for(config, sequences=400) == 0 and not fills_floor(config, sequences=400)  # 3 epochs: 300 steps
    assert copies_for(config, sequences=4) == MAX_SHUFFLED_COPIES  # 1 step an epoch: capped, the floor repeats the rest
    assert copies_for(config.model_copy(update={"shuffled_copies": 6}), sequences=64) == 12
    assert copies_for(config.model_copy(update={"shuffled_copies": 20}), sequences=64) == 20  # at least those asked
    repeat = config.model_copy(update={"min_iterations_fill": "repeat"})
    assert copies_for(repeat, sequences=64) == 0 and not fills_floor(repeat, sequences=64)


def test_a_small_dataset_reaches_the_floor_on_copies_and_the_run_records_them(workspace, tiny_model_dir):
    write_files(workspace / "dataset/docs", {f"{i}.md": sentence_doc(i) for i in range(6)})
    values = tiny_config_values(
        tiny_model_dir,
        run_name="fill",
        input_dir="dataset/docs",
        data_mixture_ratio=1.0,
        num_epochs=1,
        min_iterations=12,
        min_iterations_fill="shuffled_copies",
        steps_per_eval=6,
        save_every=6,
    )
    del values["max_iterations"]
    code, out, err = forgellm("train", "--config", str(write_config(workspace / "c.yaml", **values)))
    assert code == 0, err
    run = Path(out.split()[-1])
    stats = json.loads((run / "data_stats.json").read_text())
    copies = stats["shuffled_copies"]["copies"]
    start = read_events(run / "metrics.jsonl", event="start")[0]
    plain_steps = start["steps_per_epoch"] / (1 + copies)  # the epoch of the documents alone
    # One epoch of the documents and their copies reaches the floor: each version is read once.
    # About one epoch of the documents and their copies reaches the floor: each version is read once.
    assert copies >= 1 and plain_steps < 12 <= start["total_steps"] and 1.0 <= start["num_epochs"] < 1.5
    assert start["total_steps"] - 12 < plain_steps  # no more versions than the floor needs
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["shuffled_copies"] == copies and config["min_iterations_fill"] == "shuffled_copies"
    assert (config["num_epochs"], config["max_iterations"]) == (start["num_epochs"], start["total_steps"])
    # A resume that gives the steps outright drops the floor, and keeps training on the same copies.
    code, _, err = forgellm("train", "--resume", "fill", "--set", f"max_iterations={start['total_steps'] + 2}")
    assert code == 0, err
    resumed = yaml.safe_load((run / "config.yaml").read_text())
    assert resumed["shuffled_copies"] == copies and resumed.get("min_iterations") is None
    assert json.loads((run / "data_stats.json").read_text())["shuffled_copies"]["copies"] == copies


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"training_type": "cpt"}, "fills a floor of steps; set min_iterations too"),
        ({"training_type": "ift", "min_iterations": 10}, "copies documents (cpt, or the documents_dir of an ift run)"),
    ],
)
def test_filling_without_a_floor_or_documents_is_refused(values, problem):
    with pytest.raises(UserError, match=re.escape(problem)):
        build_config(None, {"num_epochs": 1, "min_iterations_fill": "shuffled_copies", **values})
