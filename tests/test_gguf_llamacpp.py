"""The GGUF files `forgellm export gguf` writes, run in llama.cpp itself (llama-cpp-python).

transformers' GGUF loader (tests/test_gguf_export.py) is lenient: it reads names and shapes its
own way. Here llama.cpp loads each architecture and tensor type and its logits are compared
with the source model's (transformers, float32) on the same token ids; the embedded model in
Q8_0 must also generate, tokenize and render its chat template as transformers does.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forgellm.models.pre_tokenizers import PRE_TOKENIZERS
from tests.cli_helpers import forgellm
from tests.gguf_helpers import TOKENIZER_TEXTS
from tests.tiny_model import ARCHITECTURES

llama_cpp = pytest.importorskip(
    "llama_cpp",
    reason="needs llama.cpp's Python binding, which compiles llama.cpp (about 15 minutes on 2 cores): "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_BLAS=OFF" .venv/bin/pip install llama-cpp-python==0.3.36',
)

pytestmark = pytest.mark.slow

# Largest logit difference from the float32 source, as a share of the largest source logit.
# llama.cpp's CPU kernels also round the activations that meet a matrix to the matrix's type
# (F16 / BF16, or 8-bit blocks for Q8_0), so these are looser than the transformers round trip.
# Measured on the tiny models: at most 0.2% (f16), 1.2% (bf16), 4% (q8_0), the gemmas the most
# (their GELU is a float16 table in llama.cpp, and their logits are half the others' size).
TOLERANCE = {"f16": 0.005, "bf16": 0.02, "q8_0": 0.06}
TEXT = "Hello world, how are you today? 1234 apples."
CHAT = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def llama(path: Path, n_ctx: int = 128) -> Any:
    return llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=n_ctx, verbose=False)


def source_logits(model_dir: Path, ids: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        return model(torch.tensor([ids])).logits[0].numpy()


def export(model_dir: Path, dtype: str, out: Path) -> Path:
    code, stdout, err = forgellm("export", "gguf", str(model_dir), "--type", dtype, "--name", "m", "--out", str(out))
    assert code == 0, err
    return Path(stdout.strip().splitlines()[-1]) / f"m-{dtype}.gguf"


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_llama_cpp_computes_the_logits_of_each_architecture_and_type(arch, dtype, workspace, tiny_models, tmp_path):
    from transformers import AutoTokenizer

    source = tiny_models[arch]
    gguf_file = export(source, dtype, tmp_path / "out")
    ids = AutoTokenizer.from_pretrained(source)(TEXT).input_ids
    expected = source_logits(source, ids)

    llm = llama(gguf_file)
    assert llm.n_vocab() == expected.shape[-1]
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=True) == ids
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])

    diff = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    print(f"{arch} {dtype}: max |logit difference| {diff:.3g} ({diff / scale:.2%} of {scale:.3g})")
    assert diff <= TOLERANCE[dtype] * scale, f"{arch} {dtype}: {diff:.4g} on a scale of {scale:.4g}"


@pytest.mark.parametrize("pre", list(PRE_TOKENIZERS))
def test_llama_cpp_splits_text_as_each_known_pre_tokenizer_does(pre, workspace, tiny_models, tmp_path):
    import json
    import shutil

    from transformers import AutoTokenizer

    model = shutil.copytree(tiny_models["llama"], tmp_path / "model")
    spec = json.loads((model / "tokenizer.json").read_text())
    (model / "tokenizer.json").write_text(json.dumps({**spec, "pre_tokenizer": PRE_TOKENIZERS[pre]}))
    llm = llama(export(model, "f16", tmp_path / "out"))
    assert llm.metadata["tokenizer.ggml.pre"] == pre
    tokenizer = AutoTokenizer.from_pretrained(model)
    for text in TOKENIZER_TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text).input_ids, text


@pytest.fixture(scope="module")
def embedded_q8(embedded_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2-135M-Instruct exported to Q8_0 once for the tests below."""
    home = tmp_path_factory.mktemp("ws")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGELLM_HOME", str(home))
        return export(embedded_model_dir, "q8_0", home / "smollm2-gguf")


def test_embedded_model_in_q8_0_generates_as_transformers_does(embedded_model_dir, embedded_q8):
    """llama.cpp's greedy answer to a chat prompt, checked token by token against transformers.

    Q8_0 moves this model's logits by up to ~5% of the largest one, so where transformers' two
    best tokens are closer than that the two may part (on this prompt they do at the first token:
    26.44 against 26.40). So: transformers, fed llama.cpp's tokens, must rank each one within
    that margin of its own best (hence identical wherever its best is clear), and its logits on
    the prompt must be within the Q8_0 tolerance of llama.cpp's.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=False)
    llm = llama(embedded_q8, n_ctx=256)
    got: list[int] = []
    for token in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        got.append(token)
        if token == llm.token_eos() or len(got) == 24:
            break
    prompt_logits = np.asarray(llm.scores[: len(ids)])

    model = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    with torch.no_grad():
        expected = model(torch.tensor([ids + got])).logits[0].numpy()
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids) :].tolist()
    scale = float(np.abs(expected[: len(ids)]).max())
    margin = TOLERANCE["q8_0"] * scale
    print(f"llama.cpp: {tokenizer.decode(got)!r} | transformers: {tokenizer.decode(greedy)!r}")
    print(f"prompt logits: max difference {np.abs(prompt_logits - expected[: len(ids)]).max():.3g} of {scale:.3g}")
    assert np.abs(prompt_logits - expected[: len(ids)]).max() <= margin
    for step, token in enumerate(got):
        row = expected[len(ids) - 1 + step]
        assert row[token] >= row.max() - margin, (step, tokenizer.decode(got[: step + 1]))
    assert got[-1] == llm.token_eos() and "Paris" in tokenizer.decode(got)


def test_embedded_model_tokenizes_as_the_hf_tokenizer(embedded_model_dir, embedded_q8):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    llm = llama(embedded_q8)
    for text in TOKENIZER_TEXTS:
        expected = tokenizer(text, add_special_tokens=False).input_ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, text
        # what llama.cpp adds on its own (a BOS or not) matches what the HF tokenizer adds
        assert llm.tokenize(text.encode(), special=True) == tokenizer(text).input_ids, text
        assert llm.detokenize(expected, special=True).decode() == tokenizer.decode(expected), text


def test_embedded_chat_template_renders_in_llama_cpp_as_in_transformers(embedded_model_dir, embedded_q8):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    llm = llama(embedded_q8)
    template = llm.metadata["tokenizer.chat_template"]
    # llama-cpp-python's create_chat_completion renders the GGUF's template with these tokens
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(llm.token_eos()),
        bos_token=llm._model.token_get_text(llm.token_bos()),
    )
    for messages in (CHAT, CHAT[1:]):  # with a system message, and with the template's default one
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert formatter(messages=messages).prompt == expected

    # llama.cpp's own C++ formatter recognises the template's family from the GGUF's text
    chat = (llama_cpp.llama_chat_message * len(CHAT))(
        *(llama_cpp.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in CHAT)
    )
    buffer = ctypes.create_string_buffer(4096)
    size = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(CHAT), True, buffer, len(buffer))
    assert 0 < size < len(buffer)
    assert buffer.raw[:size].decode() == tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
