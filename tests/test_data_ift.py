"""IFT records through `prepare_dataset`: the five formats (detected per file, or forced),
rendering with the model's chat template, the assistant-only loss mask token by token,
and the quality filters."""

from __future__ import annotations

import numpy as np
import pytest

from forgellm.data.ift import FALLBACK_CHAT_TEMPLATE, ChatRenderer, encode_rendered, to_messages
from tests.data_helpers import load_tokenizer, prepare, write_files

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who founded Orlemund?"},
    {"role": "assistant", "content": "Ysolde Tarrow, in 1388."},
    {"role": "user", "content": "And the river?"},
    {"role": "assistant", "content": "The Vell runs through it."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def expected_chatml(tokenizer, messages) -> tuple[list[int], list[int]]:
    """Ids and mask built piece by piece for a ChatML template: the assistant's text and its
    closing <|im_end|> are targets; headers, prompts, system text and newlines are not."""
    ids, mask = [], []

    def piece(text: str, target: bool) -> None:
        new = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(new)
        mask.extend([int(target)] * len(new))

    for m in messages:
        assistant = m["role"] == "assistant"
        piece(f"<|im_start|>{m['role']}\n", False)
        piece(m["content"], assistant)
        piece("<|im_end|>", assistant)
        piece("\n", False)
    return ids, mask


def only_record(data) -> tuple[list[int], list[int]]:
    tokens, mask = np.asarray(data.train.tokens), np.asarray(data.train.mask)
    assert len(tokens) == 1
    real = data.stats["train_tokens"]
    assert not mask[0, real:].any() and (tokens[0, real:] == data.train.tokens[0, -1]).all()  # then padding only
    return tokens[0, :real].tolist(), mask[0, :real].tolist()


def test_loss_mask_covers_only_assistant_tokens_token_by_token(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {"chat.jsonl": [{"messages": CHAT}]})
    data = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, max_seq_length=256)
    ids, mask = only_record(data)
    want_ids, want_mask = expected_chatml(tokenizer, CHAT)
    assert ids == want_ids
    for position, (token, got, want) in enumerate(zip(ids, mask, want_mask)):
        assert got == want, f"token {position} {tokenizer.decode([token])!r}: mask {got}, expected {want}"
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained == "Ysolde Tarrow, in 1388.<|im_end|>The Vell runs through it.<|im_end|>"
    assert data.stats["train_target_tokens"] == sum(want_mask)
    assert data.stats["chat_template"] == "model"


RECORDS = {
    "messages": {"messages": [{"role": "user", "content": "Q1?"}, {"role": "assistant", "content": "Answer one."}]},
    "sharegpt": {"conversations": [{"from": "human", "value": "Q1?"}, {"from": "gpt", "value": "Answer one."}]},
    "alpaca": {"instruction": "Q1?", "input": "", "output": "Answer one."},
    "prompt_completion": {"prompt": "Q1?", "completion": "Answer one."},
}


@pytest.mark.parametrize("fmt", sorted(RECORDS))
def test_each_chat_format_renders_like_messages(fmt, tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {f"{fmt}.jsonl": [RECORDS[fmt]]})
    data = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, max_seq_length=128)
    assert data.stats["format"] == {f"{fmt}.jsonl": fmt}
    ids, mask = only_record(data)
    reference = tokenizer.apply_chat_template(RECORDS["messages"]["messages"], tokenize=False)
    assert tokenizer.decode(ids) == reference
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == "Answer one.<|im_end|>"


def test_alpaca_input_joins_the_instruction():
    messages = to_messages({"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}, "alpaca")
    assert messages == [{"role": "user", "content": "Translate.\n\nBonjour"}, {"role": "assistant", "content": "Hello"}]


def test_plain_text_records_train_on_every_token(tmp_path, workspace, tokenizer):
    root = write_files(tmp_path / "ds", {"t.jsonl": [{"text": "A plain document about Orlemund."}]})
    data = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, max_seq_length=64)
    assert data.stats["format"] == {"t.jsonl": "text"}
    ids, mask = only_record(data)
    assert tokenizer.decode(ids) == "A plain document about Orlemund.<|im_end|>"
    assert all(mask)


def test_formats_are_detected_per_file_and_can_be_forced(tmp_path, workspace, tokenizer):
    root = write_files(
        tmp_path / "ds",
        {
            "a.jsonl": [RECORDS["alpaca"]],
            "s.jsonl": [RECORDS["sharegpt"]],
            "both.jsonl": [{"prompt": "Q?", "completion": "A.", "text": "T"}],
        },
    )
    data = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0)
    assert data.stats["format"] == {"a.jsonl": "alpaca", "s.jsonl": "sharegpt", "both.jsonl": "prompt_completion"}
    forced = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, ift_format="text")
    assert set(forced.stats["format"].values()) == {"text"}
    # Files without a text field cannot be read as text: skipped with a reason, the rest is used.
    assert {s["file"] for s in forced.stats["skipped"]} == {"a.jsonl", "s.jsonl"}
    assert all(
        "missing field 'text'" in s["reason"] and "(file format: text)" in s["reason"] for s in forced.stats["skipped"]
    )


def test_empty_and_duplicate_responses_are_filtered(tmp_path, workspace, tokenizer):
    records = [
        RECORDS["messages"],
        RECORDS["messages"],
        {"messages": [{"role": "user", "content": "Q2?"}, {"role": "assistant", "content": "   "}]},
        {"prompt": "Q3?", "completion": ""},
        {"messages": [{"role": "user", "content": "Q4?"}, {"role": "assistant", "content": "Four."}]},
    ]
    root = write_files(tmp_path / "ds", {"r.jsonl": records})
    stats = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, ift_format="auto").stats
    assert stats["documents"] == 4 and stats["duplicates_removed"] == 1
    # Q3 is prompt/completion in a messages file: it does not match the file's format.
    assert stats["filtered"] == {"total": 1, "empty_response": 1}
    assert [s["line"] for s in stats["skipped"]] == [4]
    assert stats["train_documents"] == 2


def test_overlong_records_are_dropped_or_truncated_and_counted(tmp_path, workspace, tokenizer):
    long_answer = " ".join(["word"] * 200)
    records = [
        RECORDS["messages"],
        {"messages": [{"role": "user", "content": "Long?"}, {"role": "assistant", "content": long_answer}]},
    ]
    root = write_files(tmp_path / "ds", {"r.jsonl": records})
    dropped = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, max_seq_length=128)
    assert dropped.stats["filtered"] == {"total": 1, "overlong": 1} and dropped.stats["train_documents"] == 1
    cut = prepare(
        root, tokenizer, workspace, training_type="ift", validation_split=0.0, max_seq_length=128, overlong="truncate"
    )
    assert cut.stats["truncated"] == 1 and cut.stats["train_documents"] == 2
    prompt = tokenizer(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "Long?"}], tokenize=False, add_generation_prompt=True
        ),
        add_special_tokens=False,
    )["input_ids"]
    tokens, mask = np.asarray(cut.train.tokens), np.asarray(cut.train.mask)
    row = int(np.argmax(mask.sum(axis=1)))
    assert tokens[row].tolist()[: len(prompt)] == list(prompt)  # the prompt is whole, the reply is cut at 128
    assert mask[row].sum() == 128 - len(prompt)


def test_records_are_packed_whole_by_best_fit(tmp_path, workspace, tokenizer):
    records = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": " ".join(["yes"] * (i * 7 % 40 + 1))},
            ]
        }
        for i in range(30)
    ]
    root = write_files(tmp_path / "ds", {"r.jsonl": records})
    data = prepare(root, tokenizer, workspace, training_type="ift", validation_split=0.0, max_seq_length=256)
    tokens = np.asarray(data.train.tokens)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    # Every record starts with <|im_start|>system and is whole: 30 records, 3 turns each.
    assert int((tokens == im_start).sum()) == 90
    assert data.stats["padding_fraction"] < 0.1


def test_a_tokenizer_without_chat_template_gets_chatml(tmp_path, workspace, tokenizer):
    plain = load_tokenizer()
    plain.chat_template = None
    renderer = ChatRenderer(plain)
    assert renderer.template == FALLBACK_CHAT_TEMPLATE and renderer.template_source == "fallback-chatml"
    ((ids, mask),) = encode_rendered(plain, [renderer.render(RECORDS["messages"]["messages"])])
    assert plain.decode([t for t, m in zip(ids, mask) if m]) == "Answer one.<|im_end|>"
