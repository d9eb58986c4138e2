"""Preference pairs through the data pipeline and `forgellm data stats --mode preference`: both
layouts detected, the chat template's rendering with a response-only mask, consistent truncation,
and the bad inputs (missing field: the run does not start; equal responses and no room: dropped)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgellm.data.sequences import PreferencePairs
from forgellm.errors import UserError
from tests.cli_helpers import forgellm
from tests.data_helpers import load_tokenizer, prepare, write_files
from tests.tiny_model import EMBEDDED_DIR

STANDARD = [
    {"prompt": f"Who founded town {i}?", "chosen": f"Ysolde Tarrow founded town {i}.", "rejected": "Nobody knows."}
    for i in range(12)
]
CONVERSATIONAL = [
    {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is Orlemund?"},
            {"role": "assistant", "content": "On the Vell."},
            {"role": "user", "content": f"And its bridge {i}?"},
        ],
        "chosen": [{"role": "assistant", "content": f"Bridge {i} spans the Vell."}],
        "rejected": [{"role": "assistant", "content": f"Bridge {i} is in Paris."}],
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def stats_json(path, *options: str) -> dict:
    code, out, err = forgellm(
        "data", "stats", str(path), "--model", str(EMBEDDED_DIR), "--mode", "preference", "--json", *options
    )
    assert code == 0, err
    return json.loads(out)


def decoded_targets(tokenizer, ids: np.ndarray, mask: np.ndarray) -> str:
    return tokenizer.decode(ids[mask.astype(bool)])


def test_both_layouts_are_detected_and_named_per_file(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {"a.jsonl": STANDARD, "b.jsonl": CONVERSATIONAL})
    stats = stats_json(root, "--max-seq-length", "128")
    assert stats["mode"] == "preference"
    assert stats["format"] == {"a.jsonl": "standard", "b.jsonl": "conversational"}
    assert stats["pairs"]["train"] + stats["pairs"]["val"] == 20 and stats["pairs"]["val"] >= 1
    assert stats["train_tokens"] > 0 and stats["truncated"] == 0 and stats["filtered"]["total"] == 0
    code, out, _ = forgellm(
        "data", "stats", str(root), "--model", str(EMBEDDED_DIR), "--mode", "preference", "--max-seq-length", "128"
    )
    assert code == 0 and "pairs train / val" in out


def test_responses_are_rendered_after_the_prompt_and_only_they_are_targets(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {"b.jsonl": CONVERSATIONAL[:1] * 1, "a.jsonl": STANDARD[:1]})
    prepared = prepare(root, tokenizer, workspace, training_type="preference", max_seq_length=128, validation_split=0.5)
    pairs = [prepared.train, prepared.val]
    assert all(isinstance(p, PreferencePairs) for p in pairs)
    seen = {}
    for split in pairs:
        for i in range(len(split)):
            chosen, rejected = (decoded_targets(tokenizer, split.tokens[i, s], split.mask[i, s]) for s in (0, 1))
            seen[chosen] = rejected
            # the prompt (every turn before the responses, the earlier assistant turn included) is context only
            context = tokenizer.decode(split.tokens[i, 0][: int(np.argmax(split.mask[i, 0]))])
            assert "<|im_start|>assistant\n" in context and "On the Vell." not in chosen
    assert seen == {
        "Bridge 0 spans the Vell.<|im_end|>": "Bridge 0 is in Paris.<|im_end|>",
        "Ysolde Tarrow founded town 0.<|im_end|>": "Nobody knows.<|im_end|>",
    }


def test_long_pairs_keep_the_prompt_and_cut_both_responses_at_max_seq_length(tmp_path, workspace, tokenizer):
    record = {"prompt": "Tell me about the river.", "chosen": "The Vell river " * 40, "rejected": "No river " * 60}
    root = write_files(tmp_path / "ds", {"a.jsonl": [record, STANDARD[0]]})
    prepared = prepare(root, tokenizer, workspace, training_type="preference", max_seq_length=64, validation_split=0.01)
    assert prepared.stats["truncated"] == 1
    split, row = next((s, i) for s in (prepared.train, prepared.val) for i in range(len(s)) if s.mask[i, 0].sum() > 20)
    prompt_lengths = [int(np.argmax(split.mask[row, s])) for s in (0, 1)]
    assert prompt_lengths[0] == prompt_lengths[1]  # the same whole prompt before both responses
    assert split.mask[row, 0, -1] == 1 and split.mask[row, 1, -1] == 1  # both responses run to the end


def test_equal_responses_and_prompts_without_room_are_dropped_and_counted(tmp_path, workspace):
    same = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Hello."}
    crowded = {"prompt": "word " * 200, "chosen": "Yes.", "rejected": "No."}
    root = write_files(tmp_path / "ds", {"a.jsonl": [*STANDARD, same, crowded]})
    stats = stats_json(root, "--max-seq-length", "64")
    assert stats["filtered"] == {"total": 2, "chosen_equals_rejected": 1, "prompt_leaves_no_room": 1}
    assert stats["pairs"]["train"] + stats["pairs"]["val"] == len(STANDARD)
    assert any("raise max_seq_length" in hint for hint in stats["hints"])


def test_only_crowded_prompts_fail_with_the_hint(tmp_path, workspace):
    root = write_files(tmp_path / "ds", {"a.jsonl": [{"prompt": "word " * 200, "chosen": "Y", "rejected": "N"}]})
    code, _, err = forgellm(
        "data", "stats", str(root), "--model", str(EMBEDDED_DIR), "--mode", "preference", "--max-seq-length", "32"
    )
    assert code == 2 and "prompt_leaves_no_room=1" in err and "raise max_seq_length" in err


@pytest.mark.parametrize(
    "record,missing",
    [
        ({"prompt": "Hi?", "chosen": "Hello."}, "'rejected'"),
        ({"prompt": "Hi?", "rejected": "Go away."}, "'chosen'"),
        ({"question": "Hi?", "answer": "Hello."}, "'prompt', 'chosen', 'rejected'"),
    ],
)
def test_a_record_missing_a_field_names_file_and_line_and_nothing_is_prepared(tmp_path, workspace, record, missing):
    root = write_files(tmp_path / "ds", {"a.jsonl": [*STANDARD[:3], record, *STANDARD[3:]]})
    code, _, err = forgellm("data", "stats", str(root), "--model", str(EMBEDDED_DIR), "--mode", "preference")
    assert code == 2 and err.count("\n") == 1
    assert "a.jsonl:4: not a preference record: missing " + missing in err
    assert not list((workspace / "data").glob("*/train.tokens.npy"))


def test_malformed_responses_are_skipped_with_the_reason(tmp_path, workspace, tokenizer):
    bad = [
        {"prompt": "Hi?", "chosen": [{"role": "user", "content": "x"}], "rejected": "No."},
        {"prompt": 3, "chosen": "Yes.", "rejected": "No."},
        {
            "prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
            "chosen": "Yes.",
            "rejected": "No.",
        },
    ]
    root = write_files(tmp_path / "ds", {"a.jsonl": [*STANDARD, *bad]})
    with pytest.raises(UserError, match=r"a.jsonl:13: field 'chosen': every message of a response must have role"):
        prepare(root, tokenizer, workspace, training_type="preference", max_seq_length=128, strict=True)
    prepared = prepare(root, tokenizer, workspace, training_type="preference", max_seq_length=128)
    reasons = [s["reason"] for s in prepared.stats["skipped"]]
    assert len(reasons) == 3 and "must end with a user turn" in reasons[2]
