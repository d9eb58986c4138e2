"""Data mixing (`data_mixture_ratio`): general data from a folder, or a replay set the base model
writes itself (a tiny random llama here), cached like the rest; validation stays domain-only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgellm.data.settings import DataSettings
from forgellm.errors import UserError
from tests.data_helpers import load_tokenizer, prepare, prose, write_files


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_general_folder_is_mixed_in_at_the_ratio(tmp_path, workspace, tokenizer):
    domain = write_files(tmp_path / "domain", {f"d{i}.txt": prose(i, words=300) for i in range(12)})
    general = write_files(tmp_path / "general", {"g.jsonl": [{"text": prose(500 + i, words=200)} for i in range(3)]})
    alone = prepare(domain, tokenizer, workspace, max_seq_length=64)
    mixed = prepare(domain, tokenizer, workspace, max_seq_length=64, data_mixture_ratio=0.75, general_data_dir=general)
    mixture = mixed.stats["mixture"]
    n_domain = len(alone.train)
    assert mixture["domain_sequences"] == n_domain
    assert mixture["general_sequences"] == round(n_domain * 0.25 / 0.75)
    assert len(mixed.train) == mixed.stats["sequences"]["train"] == n_domain + mixture["general_sequences"]
    assert mixture["general_source"] == f"folder {general}"
    # Validation is the domain's alone; training holds every domain row plus general rows.
    assert np.array_equal(mixed.val.tokens, alone.val.tokens)
    domain_rows = {row.tobytes() for row in np.asarray(alone.train.tokens)}
    mixed_rows = [row.tobytes() for row in np.asarray(mixed.train.tokens)]
    assert domain_rows <= set(mixed_rows)
    assert sum(row not in domain_rows for row in mixed_rows) == mixture["general_sequences"]
    assert mixed_rows != [row.tobytes() for row in np.asarray(alone.train.tokens)][: len(mixed_rows)]  # shuffled

    # A changed general file changes the mixed entry, not the general folder's path setting.
    (general / "g.jsonl").write_text(json.dumps({"text": prose(900, words=200)}) + "\n")
    again = prepare(domain, tokenizer, workspace, max_seq_length=64, data_mixture_ratio=0.75, general_data_dir=general)
    assert again.stats["cache"]["hit"] is False and again.stats["cache"]["key"] != mixed.stats["cache"]["key"]


def test_mixing_needs_a_source_of_general_data(tmp_path, workspace, tokenizer):
    domain = write_files(tmp_path / "domain", {"d.txt": prose(1)})
    with pytest.raises(UserError, match="needs general data: set general_data_dir"):
        prepare(domain, tokenizer, workspace, data_mixture_ratio=0.5)


@pytest.mark.parametrize(
    ("values", "mixes", "replays"),
    [
        ({"data_mixture_ratio": 1.0}, False, False),
        ({}, True, True),  # the default ratio (0.8) and no general_data_dir
        ({"data_mixture_ratio": 0.5, "general_data_dir": "general"}, True, False),
        ({"training_type": "ift", "data_mixture_ratio": 0.9}, True, True),
        ({"training_type": "preference", "data_mixture_ratio": 0.5}, False, False),  # pairs mix nothing in
        ({"training_type": "preference", "general_data_dir": "general"}, False, False),
    ],
)
def test_one_rule_says_when_a_replay_set_is_sampled(values, mixes, replays):
    settings = DataSettings(input_dir="domain", **values)
    assert (settings.mixes_general, settings.samples_replay) == (mixes, replays)


def test_the_pipeline_samples_a_replay_set_exactly_when_the_rule_says(tmp_path, workspace, tokenizer, monkeypatch):
    """Preference pairs with a ratio < 1 and no general data sample nothing; CPT data does."""
    from forgellm.data import mixing

    class Sampled(Exception):
        """Raised instead of loading a model: the pipeline asked for a replay set."""

    asked = []

    def ensure_replay_set(settings, ws):
        asked.append(settings)
        raise Sampled

    monkeypatch.setattr(mixing, "ensure_replay_set", ensure_replay_set)
    pairs = write_files(
        tmp_path / "pairs",
        {"p.jsonl": [{"prompt": prose(i, words=8), "chosen": prose(50 + i), "rejected": "No."} for i in range(6)]},
    )
    prepare(pairs, tokenizer, workspace, training_type="preference", data_mixture_ratio=0.5, replay_model="x")
    assert asked == []
    domain = write_files(tmp_path / "domain", {"d.txt": prose(1)})
    with pytest.raises(Sampled):
        prepare(domain, tokenizer, workspace, data_mixture_ratio=0.5, replay_model="x")
    assert len(asked) == 1 and asked[0].samples_replay


def test_replay_set_is_written_by_the_base_model_once_and_cached(
    tmp_path, workspace, tokenizer, tiny_model_dir, monkeypatch
):
    domain = write_files(tmp_path / "domain", {f"d{i}.txt": prose(i, words=300) for i in range(8)})
    settings = dict(
        max_seq_length=32,
        data_mixture_ratio=0.5,
        replay_model=str(tiny_model_dir),
        replay_engine="torch",
        replay_samples=3,
        replay_max_tokens=24,
        quality_filters=False,
        near_dedupe_threshold=0.0,
    )
    mixed = prepare(domain, tokenizer, workspace, **settings)
    mixture = mixed.stats["mixture"]
    assert mixture["general_source"] == f"replay from {tiny_model_dir}"
    assert mixture["general_sequences"] == mixture["domain_sequences"]
    (replay_dir,) = (workspace / "data").glob("replay-*")
    records = [json.loads(line) for line in (replay_dir / "replay.jsonl").read_text().splitlines()]
    assert 1 <= len(records) <= 3
    assert all(r["text"] and r["messages"][1]["content"] == r["text"] for r in records)

    # Cached: a second run neither loads the model nor rebuilds anything.
    import forgellm.engines

    def no_model(*args, **kwargs):
        raise AssertionError("the replay set was generated again")

    monkeypatch.setattr(forgellm.engines, "load_model", no_model)
    again = prepare(domain, tokenizer, workspace, **settings)
    assert again.stats["cache"]["hit"] is True and np.array_equal(again.train.tokens, mixed.train.tokens)
    # IFT mode mixes the same replay set in, as text (every token a target), none of it dropped
    # for being longer than the chats' max_seq_length.
    chats = write_files(
        tmp_path / "chats",
        {
            "c.jsonl": [
                {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": prose(i, 2)}]}
                for i in range(6)
            ]
        },
    )
    ift = prepare(chats, tokenizer, workspace, **(settings | {"training_type": "ift", "max_seq_length": 64}))
    assert ift.stats["mixture"]["general_sequences"] == ift.stats["mixture"]["domain_sequences"] >= 1
    texts = prepare(
        replay_dir,
        tokenizer,
        workspace,
        max_seq_length=64,
        validation_split=0.0,
        quality_filters=False,
        near_dedupe_threshold=0.0,
    )
    assert ift.stats["mixture"]["general_unique_sequences"] == min(
        len(texts.train), ift.stats["mixture"]["general_sequences"]
    )


def chats(n: int) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"What is fact {i}?"},
                {"role": "assistant", "content": prose(700 + i, words=12)},
            ]
        }
        for i in range(n)
    ]


def test_documents_are_mixed_into_the_chats_at_their_share_with_every_token_a_target(tmp_path, workspace, tokenizer):
    ift = write_files(tmp_path / "ift", {"chats.jsonl": chats(20)})
    docs = write_files(tmp_path / "docs", {f"d{i}.md": prose(i, words=300) for i in range(6)})
    alone = prepare(ift, tokenizer, workspace, training_type="ift", max_seq_length=64)
    documents = prepare(docs, tokenizer, workspace, max_seq_length=64, validation_split=0.0)
    mixed = prepare(
        ift, tokenizer, workspace, training_type="ift", max_seq_length=64, documents_dir=docs, documents_share=0.25
    )
    mixture = mixed.stats["mixture"]
    n_chats = len(alone.train)
    assert mixture["domain_sequences"] == n_chats and mixture["documents_source"] == f"folder {docs}"
    assert mixture["documents_sequences"] == round(n_chats * 0.25 / 0.75)
    assert len(mixed.train) == mixture["sequences"] == n_chats + mixture["documents_sequences"]
    assert np.array_equal(mixed.val.tokens, alone.val.tokens)  # validation: the chats alone
    # The document rows are the documents' own sequences (every real token a target), the chat rows the chats'.
    document_rows = {
        row.tobytes(): mask for row, mask in zip(np.asarray(documents.train.tokens), np.asarray(documents.train.mask))
    }
    chat_rows = {row.tobytes() for row in np.asarray(alone.train.tokens)}
    rows = list(zip(np.asarray(mixed.train.tokens), np.asarray(mixed.train.mask)))
    assert sum(row.tobytes() in chat_rows for row, _ in rows) == n_chats
    from_documents = [(row, mask) for row, mask in rows if row.tobytes() in document_rows]
    assert len(from_documents) == mixture["documents_sequences"]
    assert all(np.array_equal(mask, document_rows[row.tobytes()]) and mask.sum() > 0 for row, mask in from_documents)
    # Changed documents make a new entry.
    (docs / "d0.md").write_text(prose(99, words=300))
    again = prepare(
        ift, tokenizer, workspace, training_type="ift", max_seq_length=64, documents_dir=docs, documents_share=0.25
    )
    assert again.stats["cache"]["hit"] is False and again.stats["cache"]["key"] != mixed.stats["cache"]["key"]


def test_documents_dir_is_for_ift_runs(tmp_path, workspace, tokenizer):
    docs = write_files(tmp_path / "docs", {"d.md": prose(1, words=300)})
    with pytest.raises(UserError, match="documents_dir mixes documents into the chats of an ift run"):
        prepare(docs, tokenizer, workspace, documents_dir=docs)


def test_data_stats_names_the_documents_mixed_into_the_chats(tmp_path, workspace, tiny_model_dir):
    from tests.cli_helpers import forgellm

    ift = write_files(tmp_path / "ift", {"chats.jsonl": chats(20)})
    docs = write_files(tmp_path / "docs", {f"d{i}.md": prose(i, words=300) for i in range(6)})
    code, out, err = forgellm(
        "data",
        "stats",
        str(ift),
        "--mode",
        "ift",
        "--mixture-ratio",
        "1",
        "--max-seq-length",
        "64",
        "--documents-dir",
        str(docs),
        "--model",
        str(tiny_model_dir),
        "--json",
    )
    assert code == 0, err
    mixture = json.loads(out)["mixture"]
    assert mixture["documents_sequences"] == mixture["domain_sequences"]  # documents_share 0.5
    code, out, err = forgellm(
        "data",
        "stats",
        str(ift),
        "--mode",
        "ift",
        "--mixture-ratio",
        "1",
        "--max-seq-length",
        "64",
        "--documents-dir",
        str(docs),
        "--model",
        str(tiny_model_dir),
    )
    assert code == 0 and "mixed in: documents" in out, err
