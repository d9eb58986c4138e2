"""Validation sets of datasets too small to split (one large document) and from a `validation_dir`,
through `forgellm data stats` and `forgellm train` (the real entry point, the tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

from forgellm.runs.events import Event, read_events
from tests.cli_helpers import forgellm
from tests.training_helpers import tiny_config_values, write_config

WORDS = "harbour lantern ferry granite orchard meadow beacon tide quarry willow cobble thistle".split()


def one_line_document(folder: Path, words: int = 3000, offset: int = 0) -> Path:
    """A folder holding one single-line document of ``words`` words."""
    folder.mkdir(parents=True)
    text = " ".join(f"{WORDS[(i * 7 + offset) % len(WORDS)]}{i % 13}" for i in range(words))
    (folder / "book.txt").write_text(text)
    return folder


def stats_of(path: Path, model: Path, *options: str) -> dict:
    code, out, err = forgellm(
        "data",
        "stats",
        str(path),
        "--model",
        str(model),
        "--mixture-ratio",
        "1",
        "--max-seq-length",
        "32",
        "--json",
        *options,
    )
    assert code == 0, err
    return json.loads(out)


def test_one_document_holds_out_its_last_packed_sequences_and_says_so(workspace, tiny_model_dir):
    folder = one_line_document(workspace / "dataset" / "one")
    stats = stats_of(folder, tiny_model_dir)
    assert stats["documents"] == stats["train_documents"] == 1 and stats["val_documents"] == 0
    rows = stats["sequences"]["train"] + stats["sequences"]["val"]
    assert stats["validation"] == {"source": "packed_sequences", "sequences": stats["sequences"]["val"]}
    assert stats["sequences"]["val"] == round(rows * 0.1)
    # The tail of the text: full sequences, but the very last one (the end of the document) pads.
    assert stats["train_tokens"] == stats["sequences"]["train"] * 32
    assert (stats["sequences"]["val"] - 1) * 32 < stats["val_tokens"] <= stats["sequences"]["val"] * 32
    whole = stats_of(folder, tiny_model_dir, "--validation-split", "0.0")
    assert whole["validation"]["source"] == "none" and whole["sequences"] == {"train": rows, "val": 0}
    assert whole["train_tokens"] == stats["train_tokens"] + stats["val_tokens"]
    code, out, err = forgellm(
        "data",
        "stats",
        str(folder),
        "--model",
        str(tiny_model_dir),
        "--mixture-ratio",
        "1",
        "--max-seq-length",
        "32",
        "--validation-split",
        "0.25",
    )
    assert code == 0, err
    assert "the last" in out and "packed sequence(s)" in out and "too few documents" in out


def test_a_one_document_dataset_trains_and_evaluates(workspace, tiny_model_dir):
    one_line_document(workspace / "dataset" / "one")
    values = tiny_config_values(
        tiny_model_dir,
        run_name="one",
        input_dir="dataset/one",
        data_mixture_ratio=1.0,
        max_iterations=4,
        steps_per_eval=2,
        save_every=2,
    )
    code, out, err = forgellm("train", "--config", str(write_config(workspace / "c.yaml", **values)))
    assert code == 0, err
    evals = read_events(workspace / "models/cpt/one/metrics.jsonl", event=Event.EVAL)
    assert [e["step"] for e in evals] == [0, 2, 4] and all(e["val_loss"] > 0 for e in evals)
    stats = json.loads((workspace / "models/cpt/one/data_stats.json").read_text())
    assert stats["validation"]["source"] == "packed_sequences"


def test_validation_dir_is_the_validation_set_and_all_of_input_dir_trains(workspace, tiny_model_dir):
    train_folder = one_line_document(workspace / "dataset" / "train")
    held_out = one_line_document(workspace / "dataset" / "held", words=600, offset=5)
    alone = stats_of(held_out, tiny_model_dir, "--validation-split", "0.0")
    stats = stats_of(train_folder, tiny_model_dir, "--validation-dir", str(held_out))
    assert stats["validation"] == {"source": "validation_dir", "path": str(held_out.resolve()), "documents": 1}
    assert stats["train_documents"] == 1 and stats["sequences"]["val"] == alone["sequences"]["train"]
    assert stats["val_tokens"] == alone["train_tokens"]
    whole = stats_of(train_folder, tiny_model_dir, "--validation-split", "0.0")
    assert stats["sequences"]["train"] == whole["sequences"]["train"]  # nothing held out of input_dir

    # Another validation folder is another cache entry, and the trainer takes the key from its config.
    (held_out / "more.txt").write_text(" ".join(f"beacon{i} tide{i}" for i in range(400)))
    assert (
        stats_of(train_folder, tiny_model_dir, "--validation-dir", str(held_out))["sequences"]["val"]
        > stats["sequences"]["val"]
    )
    values = tiny_config_values(
        tiny_model_dir,
        run_name="vd",
        input_dir="dataset/train",
        validation_dir="dataset/held",
        data_mixture_ratio=1.0,
        max_iterations=2,
        steps_per_eval=2,
        save_every=2,
    )
    code, out, err = forgellm("train", "--config", str(write_config(workspace / "c.yaml", **values)))
    assert code == 0, err
    run_stats = json.loads((workspace / "models/cpt/vd/data_stats.json").read_text())
    assert run_stats["validation"]["source"] == "validation_dir" and run_stats["validation"]["documents"] == 2


def test_one_ift_record_cannot_be_split_and_stats_say_what_to_do(workspace, tiny_model_dir):
    folder = workspace / "dataset" / "chat"
    folder.mkdir(parents=True)
    record = {
        "messages": [
            {"role": "user", "content": "Where is the harbour?"},
            {"role": "assistant", "content": "Past the granite quarry, by the willow."},
        ]
    }
    (folder / "one.jsonl").write_text(json.dumps(record) + "\n")
    stats = stats_of(folder, tiny_model_dir, "--mode", "ift", "--max-seq-length", "128")
    assert stats["validation"]["source"] == "none" and "validation_dir" in stats["validation"]["reason"]
