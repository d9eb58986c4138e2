"""Both engines behind one interface, on the tiny random llama (fast)."""

from __future__ import annotations

import gc
import os
import sys
import weakref
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forgellm.engines import blas, get_engine, load_model, resolve_engine_name
from forgellm.engines.base import SamplingParams
from forgellm.engines.prompting import format_prompt
from forgellm.engines.streaming import IncrementalDecoder, StopStrings
from forgellm.errors import ConflictError, EngineUnavailableError, UserError
from forgellm.models.resolve import describe
from tests.engine_helpers import build_mlx_adapter, build_peft_adapter
from tests.tiny_model import build_tiny_llama

ENGINES = ("torch", "mlx")
RAW = "The quick brown fox"


@pytest.fixture(scope="module", params=ENGINES)
def loaded(request, tiny_model_dir: Path):
    model = get_engine(request.param).load(describe(tiny_model_dir))
    yield model
    model.close()


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def complete(model, prompt: str = RAW, **params) -> tuple[str, list]:
    chunks = list(model.generate(model.format_prompt(prompt, fmt="raw"), SamplingParams(**params)))
    return "".join(c.text for c in chunks), chunks


# --- engine selection -------------------------------------------------------------------------


def test_auto_picks_torch_off_apple_silicon(monkeypatch) -> None:
    monkeypatch.delenv("FORGELLM_ENGINE", raising=False)
    expected = "mlx" if sys.platform == "darwin" else "torch"
    assert resolve_engine_name("auto") == resolve_engine_name(None) == expected
    monkeypatch.setenv("FORGELLM_ENGINE", "mlx")
    assert resolve_engine_name(None) == "mlx"
    assert resolve_engine_name("Torch") == "torch"


def test_unknown_engine_lists_the_valid_ones(monkeypatch) -> None:
    with pytest.raises(UserError, match="auto, mlx, torch"):
        resolve_engine_name("jax")
    monkeypatch.setenv("FORGELLM_ENGINE", "tpu")
    with pytest.raises(UserError, match="FORGELLM_ENGINE"):
        get_engine()


def test_missing_engine_library_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # what Python sees when a package is not installed
    with pytest.raises(EngineUnavailableError, match="pip install"):
        get_engine("mlx")


# --- the BLAS under mlx ------------------------------------------------------------------------

AVX512 = "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl\n"


def test_openblas_kernels_follow_the_cpu_instruction_sets() -> None:
    intel, amd = "vendor_id\t: GenuineIntel\n", "vendor_id\t: AuthenticAMD\n"
    assert blas.coretype(intel + AVX512) == blas.coretype(amd + AVX512) == "SkylakeX"
    assert blas.coretype(intel + "flags : fpu sse2 avx avx2 fma avx512f\n") == "Haswell"  # AVX-512 in part only
    # OpenBLAS's own choice stands: AMD's AVX2 CPUs (it tunes for Zen), CPUs without AVX2, no flags
    assert blas.coretype(amd + "flags : fpu sse2 avx avx2 fma\n") is None
    assert blas.coretype(intel + "flags : fpu sse2 avx\n") is None
    assert blas.coretype("processor : 0\n") is None


def test_mlx_children_get_the_kernel_family_unless_the_user_chose_one(monkeypatch) -> None:
    monkeypatch.setattr(blas, "find_blas_library", lambda: Path("/usr/lib/libopenblas.so.0"))
    monkeypatch.setattr(blas, "coretype", lambda: "SkylakeX")
    env = blas.subprocess_env({"LD_PRELOAD": "/x.so"})
    assert env["LD_PRELOAD"] == "/usr/lib/libopenblas.so.0:/x.so" and env["OPENBLAS_CORETYPE"] == "SkylakeX"
    assert blas.subprocess_env({"OPENBLAS_CORETYPE": "Haswell"})["OPENBLAS_CORETYPE"] == "Haswell"
    monkeypatch.setattr(blas, "find_blas_library", lambda: None)  # no OpenBLAS (or FORGELLM_NO_BLAS_PRELOAD)
    assert "OPENBLAS_CORETYPE" not in blas.subprocess_env({})


@pytest.mark.slow  # a child process multiplies matrices for half a second
def test_mlx_runs_openblas_with_the_kernels_of_this_cpu() -> None:
    import json
    import subprocess

    if blas.find_blas_library() is None or blas.coretype() is None:
        pytest.skip("no OpenBLAS to preload, or a CPU without AVX2")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    done = subprocess.run(
        [sys.executable, "-m", "forgellm.engines.blas", "mlx"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(done.stdout)["library"].endswith(f"({blas.coretype()} kernels)")


# --- loading and generating -------------------------------------------------------------------


def test_load_reports_model_and_memory(loaded, tiny_model_dir: Path) -> None:
    info = describe(tiny_model_dir)
    assert loaded.info.path == tiny_model_dir.resolve() and loaded.adapter is None
    assert loaded.memory_bytes() == info.num_parameters * 4  # float32, tied embeddings counted once
    assert 2 in loaded.eos_token_ids  # <|im_end|>


def test_greedy_generation_is_deterministic(loaded) -> None:
    first, _ = complete(loaded, max_tokens=12, temperature=0)
    second, _ = complete(loaded, max_tokens=12, temperature=0)
    assert first and first == second


def test_seed_makes_sampling_reproducible(loaded) -> None:
    params = dict(max_tokens=12, temperature=1.0, top_p=0.95, top_k=50, repetition_penalty=1.1)
    a, _ = complete(loaded, seed=7, **params)
    b, _ = complete(loaded, seed=7, **params)
    c, _ = complete(loaded, seed=8, **params)
    assert a == b and a != c


def test_max_tokens_ends_with_length(loaded) -> None:
    _, chunks = complete(loaded, max_tokens=5, temperature=0)
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 5
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].prompt_tokens == len(loaded.encode(RAW))
    assert chunks[-1].time_to_first_token > 0


def test_stop_string_cuts_the_text_and_is_never_shown(loaded) -> None:
    full, _ = complete(loaded, max_tokens=20, temperature=0)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut, chunks = complete(loaded, max_tokens=20, temperature=0, stop=[stop])
    assert cut == full[: full.index(stop)]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].completion_tokens < 20


def test_streamed_chunks_add_up_to_the_decoded_completion(loaded) -> None:
    params = SamplingParams(max_tokens=16, temperature=0)
    prompt_ids = loaded.encode(RAW)
    tokens = loaded._sample_tokens(prompt_ids, params)
    ids = [next(tokens) for _ in range(16)]
    tokens.close()
    text, chunks = complete(loaded, max_tokens=16, temperature=0)
    assert text == loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert [c.completion_tokens for c in chunks] == list(range(1, 17))


def test_closing_the_stream_stops_the_engine_loop(loaded, monkeypatch) -> None:
    stopped = []
    real = loaded._sample_tokens

    def recording(prompt_ids, params):
        try:
            yield from real(prompt_ids, params)
        finally:
            stopped.append(True)

    monkeypatch.setattr(loaded, "_sample_tokens", recording)
    stream = loaded.generate(RAW, SamplingParams(max_tokens=100, temperature=0))
    next(stream)
    assert not stopped
    stream.close()
    assert stopped == [True]


def test_bad_sampling_params_raise_before_generation(loaded) -> None:
    with pytest.raises(UserError, match="max_tokens"):
        loaded.generate(RAW, SamplingParams(max_tokens=0))
    with pytest.raises(UserError, match="empty"):
        loaded.generate("", SamplingParams())


@pytest.mark.parametrize("engine", ENGINES)
def test_close_frees_the_weights(engine: str, tiny_model_dir: Path) -> None:
    model = get_engine(engine).load(describe(tiny_model_dir))
    weights = weakref.ref(model.model)
    model.close()
    gc.collect()
    assert weights() is None and model.memory_bytes() == 0
    with pytest.raises(ConflictError):
        model.generate(RAW, SamplingParams())


# --- adapters ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_model_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    other = build_tiny_llama(root / "other-llama", hidden_size=32)
    return {
        "peft": build_peft_adapter(tiny_model_dir, root / "peft"),
        "mlx": build_mlx_adapter(tiny_model_dir, root / "mlx"),
        "peft-other": build_peft_adapter(other, root / "peft-other"),
        "mlx-other": build_mlx_adapter(other, root / "mlx-other"),
    }


@pytest.mark.parametrize("engine,fmt", [("torch", "peft"), ("mlx", "mlx")])
def test_adapter_in_the_engine_format_changes_the_output(engine, fmt, adapters, tiny_model_dir: Path) -> None:
    base = get_engine(engine).load(describe(tiny_model_dir))
    tuned = load_model(str(tiny_model_dir), str(adapters[fmt]), engine)
    try:
        assert tuned.adapter == adapters[fmt].resolve()
        assert tuned.memory_bytes() > base.memory_bytes()
        assert complete(tuned, max_tokens=8, temperature=0)[0] != complete(base, max_tokens=8, temperature=0)[0]
    finally:
        base.close()
        tuned.close()


@pytest.mark.parametrize(
    "engine,adapter", [("torch", "peft-other"), ("mlx", "mlx-other"), ("torch", "mlx"), ("mlx", "peft")]
)
def test_adapter_that_does_not_fit_names_both(engine, adapter, adapters, tiny_model_dir: Path) -> None:
    with pytest.raises(UserError) as err:
        load_model(str(tiny_model_dir), str(adapters[adapter]), engine)
    message = str(err.value)
    assert adapters[adapter].name in message
    assert tiny_model_dir.name in message or ("format" in message and "--engine" in message)


def test_adapter_folder_as_model_loads_its_base(adapters) -> None:
    tuned = load_model(str(adapters["peft"]), engine="torch")
    try:
        assert tuned.adapter == adapters["peft"].resolve() and not tuned.info.is_adapter
    finally:
        tuned.close()


# --- prompt formatting (shared by both engines) -----------------------------------------------


def test_chat_template_for_instruct_raw_for_base(hf_tokenizer) -> None:
    chat = format_prompt(hf_tokenizer, "hi")
    assert chat.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert format_prompt(hf_tokenizer, "hi", fmt="raw") == "hi"
    assert format_prompt(hf_tokenizer, "hi", fmt="raw", system="Be brief.") == "Be brief.\n\nhi"
    with_system = format_prompt(hf_tokenizer, "hi", system="Be brief.")
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "SmolLM" not in with_system
    history = [
        {"role": "user", "content": "Once"},
        {"role": "assistant", "content": " upon"},
        {"role": "user", "content": "a time"},
    ]
    assert format_prompt(hf_tokenizer, history, fmt="raw") == "Once upon\na time"


def test_base_model_without_template_continues_raw(hf_tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(hf_tokenizer, "chat_template", None)
    assert format_prompt(hf_tokenizer, "Once upon a time") == "Once upon a time"
    with pytest.raises(UserError, match="--format raw"):
        format_prompt(hf_tokenizer, "hi", fmt="chat")


GEMMA_STYLE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}<start_of_turn>model\n"
)
QWEN_STYLE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}"
)


def test_system_prompt_folds_into_first_user_turn_when_template_rejects_it(hf_tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(hf_tokenizer, "chat_template", GEMMA_STYLE)
    text = format_prompt(hf_tokenizer, "hi", system="Be brief.")
    assert text == "<start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model"


def test_enable_thinking_reaches_templates_that_read_it(hf_tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(hf_tokenizer, "chat_template", QWEN_STYLE)
    assert format_prompt(hf_tokenizer, "hi").endswith("<think>\n\n</think>\n\n")
    assert format_prompt(hf_tokenizer, "hi", enable_thinking=True).endswith("assistant\n")


def test_empty_prompt_is_refused(hf_tokenizer) -> None:
    with pytest.raises(UserError, match="empty"):
        format_prompt(hf_tokenizer, "   ")


# --- incremental text ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["Paris, café — 東京 🚀 naïve", "  leading spaces\nand lines\t", "x"])
def test_incremental_decoder_never_splits_characters(hf_tokenizer, text: str) -> None:
    ids = hf_tokenizer.encode(text, add_special_tokens=False)
    decoder = IncrementalDecoder(hf_tokenizer)
    pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == hf_tokenizer.decode(ids) and not any("\ufffd" in p for p in pieces)


@given(
    text=st.text(alphabet="abc \n", max_size=40),
    stop=st.text(alphabet="abc", min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 40), max_size=8),
)
def test_stop_strings_cut_at_the_first_match_whatever_the_pieces(text: str, stop: str, cuts: list[int]) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    matcher, shown, stopped = StopStrings([stop, stop + "x"]), "", False
    for start, end in zip(bounds, bounds[1:]):
        piece, stopped = matcher.feed(text[start:end])
        shown += piece
        if stopped:
            break
    if not stopped:
        shown += matcher.flush()
    assert shown == (text[: text.index(stop)] if stop in text else text)
