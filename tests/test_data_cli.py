"""``forgellm data stats|preview`` through the real entry point, and bad input: every problem is
skipped and reported with file, line and reason, or stops with one clear line, never a traceback."""

from __future__ import annotations

import json

import pytest

from tests.cli_helpers import forgellm
from tests.data_helpers import prose, write_files
from tests.tiny_model import EMBEDDED_DIR

STATS_KEYS = {
    "files",
    "documents",
    "duplicates_removed",
    "near_duplicates_removed",
    "filtered",
    "skipped",
    "train_documents",
    "val_documents",
    "train_tokens",
    "val_tokens",
    "sequences",
    "padding_fraction",
    "format",
}

# The default --mixture-ratio (training's, 0.8) samples a replay set from --model; these tests look at the domain data.
DOMAIN_ONLY = ("--mixture-ratio", "1")


def stats_json(path, *options: str) -> dict:
    code, out, err = forgellm(
        "data", "stats", str(path), "--model", str(EMBEDDED_DIR), "--json", *DOMAIN_ONLY, *options
    )
    assert code == 0, err
    return json.loads(out)


def data_error(path, *options: str) -> str:
    """The one-line error of a failing `forgellm data stats`."""
    code, out, err = forgellm("data", "stats", str(path), "--model", str(EMBEDDED_DIR), *DOMAIN_ONLY, *options)
    assert code == 2 and "Traceback" not in err, (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1
    return err


def test_stats_json_has_every_documented_field(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {f"{i}.md": prose(i) for i in range(6)})
    stats = stats_json(root)
    assert STATS_KEYS <= set(stats)
    assert stats["files"] == 6 and stats["train_documents"] + stats["val_documents"] == 6
    assert stats["sequences"]["train"] >= 1 and stats["format"] is None
    code, out, err = forgellm("data", "stats", str(root), "--model", str(EMBEDDED_DIR), *DOMAIN_ONLY)
    assert code == 0 and "documents train / val" in out and "cache" in out and "hit" in out


def test_stats_options_reach_the_pipeline(tmp_path, workspace):
    import pandas as pd

    root = tmp_path / "ds"
    root.mkdir()
    pd.DataFrame({"body": [prose(1), prose(1), "x"]}).to_csv(root / "t.csv", index=False)
    stats = stats_json(
        root,
        "--text-column",
        "body",
        "--no-dedupe",
        "--no-filters",
        "--max-seq-length",
        "64",
        "--validation-split",
        "0",
        "--seed",
        "3",
    )
    assert stats["documents"] == 3 and stats["duplicates_removed"] == 0 and stats["filtered"]["total"] == 0
    assert stats["seq_length"] == 64 and stats["val_documents"] == 0
    assert stats["settings"]["seed"] == 3


def test_a_single_file_can_be_given_instead_of_a_folder(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {"a.jsonl": [{"text": prose(1)}, {"text": prose(2)}], "b.txt": prose(3)})
    stats = stats_json(root / "a.jsonl")
    assert stats["files"] == 1 and stats["documents"] == 2


def test_preview_marks_trained_spans(tmp_path, workspace):
    records = [
        {
            "conversations": [
                {"from": "human", "value": "Where is Saltmere?"},
                {"from": "gpt", "value": "On the east coast."},
            ]
        }
    ]
    root = write_files(tmp_path / "ds", {"c.jsonl": records})
    code, out, err = forgellm("data", "preview", str(root), "--mode", "ift", "--model", str(EMBEDDED_DIR), "-n", "1")
    assert code == 0, err
    assert "c.jsonl:1" in out and "⟦On the east coast.<|im_end|>⟧" in out
    assert "⟦" not in out.split("⟦On the east")[0]  # prompt and template markup are not trained
    code, out, err = forgellm("data", "preview", str(root), "--mode", "cpt", "--model", str(EMBEDDED_DIR))
    assert code == 0 and out == "" and "too_short 1" in err and "nothing to show" in err
    code, out, _ = forgellm(
        "data", "preview", str(root), "--mode", "cpt", "--model", str(EMBEDDED_DIR), "--min-chars", "10"
    )
    assert code == 0 and out.count("⟦") == 1  # CPT: the whole conversation text is trained
    assert "⟦Where is Saltmere?\n\nOn the east coast.<|im_end|>⟧" in out


def test_bad_inputs_are_skipped_with_file_line_and_reason(tmp_path, workspace):
    good = [{"text": prose(1)}, {"text": prose(2)}]
    root = write_files(
        tmp_path / "ds",
        {
            "binary.txt": b"\x00\x01\x02" * 100,
            "latin1.txt": "caf\xe9 ".encode("latin-1") * 20,
            "records.jsonl": [good[0]],
            "big.txt": prose(3, words=400),
            "empty.md": "",
            "good.jsonl": good,
            "image.png": b"\x89PNG",
        },
    )
    with open(root / "records.jsonl", "a") as fh:
        fh.write('{"text": "unterminated\n')  # line 2: malformed JSON
        fh.write('{"title": "no text field"}\n')  # line 3: wrong fields
        fh.write('["a", "list"]\n')  # line 4: not an object
        fh.write('{"text": 12}\n')  # line 5: wrong type
        fh.write('{"text": "' + "long " * 400 + '"}\n')  # line 6: one record over the limit
    stats = stats_json(root, "--max-file-mb", "0.001")
    reasons = {(s["file"], s["line"]): s["reason"] for s in stats["skipped"]}
    assert "binary file" in reasons[("binary.txt", None)]
    assert "invalid UTF-8" in reasons[("latin1.txt", 1)]
    assert "malformed JSON line" in reasons[("records.jsonl", 2)]
    assert "no 'text' field (found: title)" in reasons[("records.jsonl", 3)]
    assert "JSON list, expected an object" in reasons[("records.jsonl", 4)]
    assert "is a int, expected a string" in reasons[("records.jsonl", 5)]
    assert "over the 0.001 MB limit for one record" in reasons[("records.jsonl", 6)]
    assert "over the 0.001 MB limit" in reasons[("big.txt", None)] and "max_file_mb" in reasons[("big.txt", None)]
    assert reasons[("empty.md", None)] == "empty file"
    assert "unsupported file type .png" in reasons[("image.png", None)]
    assert len(reasons) == stats["skipped_total"] == 10
    assert stats["documents"] == 3  # records.jsonl line 1 and both good.jsonl lines


def test_strict_turns_the_first_skip_into_an_error(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {"a.jsonl": [{"text": prose(1)}]})
    with open(root / "a.jsonl", "a") as fh:
        fh.write("{oops\n")
    assert stats_json(root)["skipped_total"] == 1
    err = data_error(root, "--strict")
    assert "a.jsonl:2: malformed JSON line" in err and "--strict" in err


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "has no files to read"),
        ({"x.bin": b"\x00"}, "no usable documents"),
        ({"a.txt": b"\x00\x00", "b.jsonl": b"{bad\n"}, "2 input(s) skipped (first: a.txt: binary file"),
        ({"a.txt": "too short"}, "filtered: too_short=1"),
    ],
)
def test_nothing_usable_stops_with_a_clear_error(tmp_path, workspace, files, message):
    root = write_files(tmp_path / "ds", files)
    root.mkdir(exist_ok=True)
    assert message in data_error(root)


def test_bad_paths_and_settings_are_clear_errors(tmp_path, workspace):
    assert "does not exist" in data_error(tmp_path / "missing")
    (tmp_path / "file.exe").write_bytes(b"MZ")
    assert "unsupported file type .exe" in data_error(tmp_path / "file.exe")
    root = write_files(tmp_path / "ds", {"a.txt": prose(1)})
    assert "validation_split" in data_error(root, "--validation-split", "1.5")
    assert "data_mixture_ratio" in data_error(root, "--mixture-ratio", "0")
    assert "does not exist" in data_error(root, "--mixture-ratio", "0.5", "--general-data", str(tmp_path / "nope"))


def test_a_folder_of_prepared_splits_is_described_as_it_is(tmp_path, workspace):
    """No tokenizer, no pipeline: the splits are what a run trains on (preference pairs too)."""
    from forgellm.data.sequences import PreferencePairs
    from tests.training_helpers import patterned_sequences, prepared_data

    folder = prepared_data(tmp_path / "prepared", train=12, val=3, length=16)
    code, out, err = forgellm("data", "stats", str(folder), "--model", "no-such-model")
    assert code == 0, err
    assert " ".join(out.split()).endswith("12 / 3 train / val sequences of 16 tokens")
    for split, rows in (("train", 6), ("val", 2)):
        sequences = patterned_sequences(2 * rows, 16)
        PreferencePairs(sequences.tokens.reshape(rows, 2, 16), sequences.mask.reshape(rows, 2, 16)).save(
            tmp_path / "pairs", split
        )
    code, out, err = forgellm("data", "stats", str(tmp_path / "pairs"), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["mode"] == "preference" and got["pairs"] == {"train": 6, "val": 2, "total": 8}
    assert got["sequences"] == {"train": 12, "val": 4} and got["prepared_path"] == str(tmp_path / "pairs")
