"""The fast document encoder gives exactly the tokenizer's own ids, or is not used."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forgellm.data import tokenizing
from forgellm.data.cleaning import _BLANK_LINES, _CONTROL, _TRAILING_SPACES, normalize_text
from forgellm.data.tokenizing import HuggingFaceEncoder, TiktokenEncoder, document_encoder
from tests.data_helpers import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def encoders(tokenizer):
    return document_encoder(tokenizer), HuggingFaceEncoder.of(tokenizer)


def assert_same_ids(encoders, texts):
    fast, reference = encoders
    assert isinstance(fast, TiktokenEncoder)  # the embedded tokenizer is byte-level BPE: rebuilt
    a, b = fast(texts), reference(texts)
    assert a.tokens.dtype == np.int32 and a.lengths.tolist() == [len(ids) for ids in a.documents()]
    for text, x, y in zip(texts, a.documents(), b.documents(), strict=True):
        assert x.tolist() == y.tolist(), text


def test_same_ids_as_the_tokenizer_on_the_sample_dataset(encoders):
    texts = [path.read_text() for path in sorted((ROOT / "dataset" / "sample" / "cpt").glob("*.md"))]
    texts += [line for path in (ROOT / "dataset" / "sample" / "ift").glob("*.jsonl") for line in path.open()]
    assert len(texts) > 100
    assert_same_ids(encoders, texts)


def test_same_ids_on_special_tokens_control_bytes_and_empty_documents(encoders, tokenizer):
    eos = tokenizer.eos_token
    texts = [
        "",
        " ",
        "hello <|endoftext|> there <|im_start|>user\n",
        "a\x04b\x1d c",
        "\u00e9t\u00e9 \u65e5\u672c",
        f"a document that writes the EOS token {eos} inside it",
        "ends with the EOS token" + eos,
        "x" * 5000,
    ]
    assert_same_ids(encoders, texts)
    assert_same_ids(encoders, texts[::-1] * 3)  # several per thread; the EOS-writing one in each share


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), min_size=1, max_size=12))
def test_same_ids_on_any_text(encoders, texts):
    assert_same_ids(encoders, texts)


def test_every_document_ends_with_one_eos(encoders, tokenizer):
    for encoder in encoders:
        for ids in encoder(["one", "two words", ""]).documents():
            assert ids[-1] == tokenizer.eos_token_id and (ids == tokenizer.eos_token_id).sum() == 1


def test_a_worker_process_builds_the_same_encoder_from_the_spec(encoders):
    texts = ["a worker's copy", "encodes <|im_start|>the same\n", ""]
    for encoder in encoders:
        copy = pickle.loads(pickle.dumps(encoder.spec)).build()  # what a worker process receives and builds
        assert copy.name == encoder.name
        a, b = copy(texts), encoder(texts)
        assert a.tokens.tolist() == b.tokens.tolist() and a.lengths.tolist() == b.lengths.tolist()


def test_a_tokenizer_that_adds_tokens_is_not_rebuilt(tokenizer):
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}},
    }
    assert tokenizing._tiktoken_parts(json.dumps(spec)) is None
    spec["post_processor"], spec["pre_tokenizer"] = None, {"type": "Whitespace"}
    assert tokenizing._tiktoken_parts(json.dumps(spec)) is None


def test_the_check_runs_once_and_its_verdict_is_kept(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setattr(tokenizing, "_MATCHES", {})
    assert isinstance(document_encoder(tokenizer, verdicts=tmp_path), TiktokenEncoder)
    (record,) = tmp_path.glob("*.json")
    assert json.loads(record.read_text())["matches"] is True
    # a kept verdict is trusted: one saying the rebuild differs makes the encoder fall back
    record.write_text(json.dumps({"version": tokenizing.REBUILD_VERSION, "matches": False}))
    monkeypatch.setattr(tokenizing, "_MATCHES", {})
    assert isinstance(document_encoder(tokenizer, verdicts=tmp_path), HuggingFaceEncoder)


def test_the_pipeline_reports_the_encoder(tmp_path, workspace, tokenizer):
    from tests.data_helpers import prepare, prose, write_files

    root = write_files(tmp_path / "ds", {f"{i}.txt": prose(i, words=120) for i in range(4)})
    assert prepare(root, tokenizer, workspace).stats["tokenizer"]["encoder"] == "tiktoken"


def _normalize_with_regexes(text: str) -> str:
    """normalize_text without its fast path, as the reference."""
    import unicodedata

    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _TRAILING_SPACES.sub("\n", _CONTROL.sub("", text).replace("\u00a0", " ") + "\n")
    return _BLANK_LINES.sub("\n\n", text).strip()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \t\n\r\x00\x07\x0b\x0c\x1c\x7f.")), max_size=40))
def test_the_normaliser_fast_path_changes_nothing(text):
    assert re.fullmatch(r"[\x00-\x7f]*", text)
    assert normalize_text(text) == _normalize_with_regexes(text)
