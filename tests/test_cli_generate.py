"""``forgellm cli generate`` (one-shot and chat) and ``forgellm info``, through the real entry point."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forgellm.cli.generate_cmd import ChatSession
from forgellm.engines import get_engine, load_model
from forgellm.engines.base import SamplingParams
from forgellm.models.resolve import describe
from tests.cli_helpers import forgellm
from tests.engine_helpers import build_peft_adapter
from tests.tiny_model import build_tiny_llama

FORGELLM = Path(sys.executable).with_name("forgellm")
SUMMARY = re.compile(
    r"^\d+ tokens, [\d.]+ tok/s, first token after [\d.]+ s \(prompt \d+ tokens, finish: (stop|length)\)$"
)
ENGINES = ("torch", "mlx")


def assert_one_line_error(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and all(w in err for w in words), err


# --- one-shot generation ------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_prompt_streams_text_to_stdout_and_summary_to_stderr(engine: str, tiny_model_dir: Path) -> None:
    args = (
        "cli",
        "generate",
        "--model",
        str(tiny_model_dir),
        "--engine",
        engine,
        "--format",
        "raw",
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "5",
        "--temperature",
        "0",
    )
    code, out, err = forgellm(*args)
    assert code == 0, err
    assert out.endswith("\n") and out.strip()
    assert SUMMARY.match(err.strip()) and err.startswith("5 tokens"), err
    assert forgellm(*args)[1] == out  # greedy: the same text again


def test_prompt_from_stdin_when_not_a_terminal(tiny_model_dir: Path) -> None:
    code, out, err = forgellm(
        "cli",
        "generate",
        "-m",
        str(tiny_model_dir),
        "-e",
        "torch",
        "-n",
        "3",
        "-t",
        "0",
        "--format",
        "raw",
        input="Once upon a time\n",
    )
    assert code == 0 and err.startswith("3 tokens") and "(prompt 5 tokens" in err, err


def test_seed_and_stop_through_the_cli(tiny_model_dir: Path) -> None:
    base = (
        "cli",
        "generate",
        "-m",
        str(tiny_model_dir),
        "-e",
        "torch",
        "--format",
        "raw",
        "-p",
        "Hello",
        "-n",
        "12",
        "--temperature",
        "1.2",
        "--top-k",
        "40",
        "--seed",
        "3",
    )
    first, second = forgellm(*base), forgellm(*base)
    assert first[0] == 0 and first[1] == second[1]
    text = first[1].rstrip("\n")
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    code, out, err = forgellm(*base, "--stop", stop, "--stop", "never-appears")
    assert code == 0 and out == text[: text.index(stop)] + "\n" and "finish: stop" in err


# --- bad input: one line, exit 2, no traceback ----------------------------------------------------


@pytest.fixture(scope="module")
def other_adapter(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other")
    return build_peft_adapter(build_tiny_llama(root / "wide", hidden_size=32), root / "wide-adapter")


def test_unknown_model(workspace: Path) -> None:
    code, out, err = forgellm("cli", "generate", "--model", "no-such-model", "--prompt", "hi")
    assert code == 2 and "Traceback" not in err and err.startswith("error: model 'no-such-model' not found")
    assert "import-default" in err  # the fix is named (the message lists the places searched, one per line)


def test_adapter_that_does_not_fit(tiny_model_dir: Path, other_adapter: Path) -> None:
    assert_one_line_error(
        *forgellm(
            "cli", "generate", "-m", str(tiny_model_dir), "--adapter", str(other_adapter), "-e", "torch", "-p", "hi"
        ),
        "does not fit",
        other_adapter.name,
        tiny_model_dir.name,
    )


def test_unknown_engine(tiny_model_dir: Path) -> None:
    assert_one_line_error(
        *forgellm("cli", "generate", "-m", str(tiny_model_dir), "-e", "jax", "-p", "hi"),
        "unknown engine",
        "auto, mlx, torch",
    )


def test_engine_not_installed(tiny_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # what Python sees when mlx-lm is not installed
    assert_one_line_error(
        *forgellm("cli", "generate", "-m", str(tiny_model_dir), "-e", "mlx", "-p", "hi"),
        "mlx engine is not available",
        "pip install",
    )


@pytest.mark.parametrize("args,input", [(("-p", ""), None), (("-p", "  \n"), None), ((), ""), ((), " \n")])
def test_empty_prompt(tiny_model_dir: Path, args: tuple, input: str | None) -> None:
    assert_one_line_error(
        *forgellm("cli", "generate", "-m", str(tiny_model_dir), *args, input=input), "prompt is empty"
    )


@pytest.mark.parametrize(
    "option,value,name",
    [
        ("--max-tokens", "0", "max_tokens"),
        ("--max-tokens", "100000", "max_tokens"),
        ("--temperature", "-1", "temperature"),
        ("--top-p", "0", "top_p"),
    ],
)
def test_sampling_value_out_of_range(tiny_model_dir: Path, option: str, value: str, name: str) -> None:
    assert_one_line_error(
        *forgellm("cli", "generate", "-m", str(tiny_model_dir), "-p", "hi", option, value), name, "out of range"
    )


# --- chat -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_chat_session_commands(engine: str, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    loaded = get_engine(engine).load(describe(tiny_model_dir))
    session = ChatSession(loaded, SamplingParams(max_tokens=4, temperature=0.5))
    saved = tmp_path / "chat.json"
    script = iter(
        [
            "/params temperature=0 max_tokens=3 stop=none",
            "hello",
            "",
            "/system Be brief.",
            "again",
            f"/save {saved}",
            "/clear",
            "/params bogus=1",
            "/nope",
            f"/load {saved}",
            "/help",
            "/quit",
            "never read",
        ]
    )
    try:
        session.run(lambda prompt: next(script))
    finally:
        loaded.close()
    assert next(script) == "never read"
    out, err = capsys.readouterr()
    assert session.params.temperature == 0 and session.params.max_tokens == 3
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.system == "Be brief."
    data = json.loads(saved.read_text())
    assert data["messages"] == session.messages and data["system"] == "Be brief."
    assert "unknown parameter 'bogus'" in err and "unknown command /nope" in err and "/load FILE" in err
    assert len([line for line in err.splitlines() if SUMMARY.match(line)]) == 2  # one per answer


def test_chat_repl_on_a_terminal(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real program on a pseudo-terminal: no --prompt opens the chat."""
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "TERM": "dumb", "FORGELLM_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [
            str(FORGELLM),
            "cli",
            "generate",
            "-m",
            str(tiny_model_dir),
            "-e",
            "torch",
            "-n",
            "3",
            "-t",
            "0",
            "--format",
            "raw",
        ],
        stdin=child_fd,
        stdout=child_fd,
        stderr=child_fd,
        env=env,
        cwd=tmp_path,
        close_fds=True,
    )
    os.close(child_fd)
    transcript = b""

    def read_until(marker: bytes, timeout: float = 120) -> None:
        nonlocal transcript
        deadline = time.monotonic() + timeout
        while marker not in transcript and time.monotonic() < deadline:
            if select.select([main_fd], [], [], 0.5)[0]:
                try:
                    transcript += os.read(main_fd, 4096)
                except OSError:
                    break
        assert marker in transcript, transcript.decode(errors="replace")

    try:
        read_until(b"you> ")
        os.write(main_fd, b"Once upon a time\n")
        read_until(b"3 tokens")
        os.write(main_fd, b"/save chat.json\n")
        read_until(b"saved 2 messages")
        os.write(main_fd, b"/quit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        os.close(main_fd)
    assert json.loads((tmp_path / "chat.json").read_text())["messages"][0]["content"] == "Once upon a time"


# --- info ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # measures the BLAS in three child processes
def test_info_json_reports_engines_blas_workspace_and_default_model(workspace: Path) -> None:
    code, out, err = forgellm("info", "--json")
    assert code == 0, err
    data = json.loads(out)
    engines = {e["name"]: e for e in data["engines"]}
    assert set(engines) == {"mlx", "torch"} and engines["torch"]["available"]
    assert engines["torch"]["device"] in ("cpu", "cuda") and "torch 2." in engines["torch"]["version"]
    assert data["default_engine"] == ("mlx" if sys.platform == "darwin" else "torch")
    assert data["blas"]["torch"]["gflops"] > 0
    if data["blas"]["optimized_library"]:
        assert data["blas"]["mlx"]["gflops"] > data["blas"]["mlx"]["gflops_without_preload"] > 0
    assert data["workspace"]["root"] == str(workspace.resolve())
    assert data["default_model"]["name"] == "SmolLM2-135M-Instruct" and data["default_model"]["imported"] is False


# --- the embedded model (slow) ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_embedded_model_knows_the_capital_of_france(engine: str, embedded_model_dir: Path) -> None:
    done = subprocess.run(
        [
            str(FORGELLM),
            "cli",
            "generate",
            "--model",
            str(embedded_model_dir),
            "--engine",
            engine,
            "--prompt",
            "What is the capital of France?",
            "--temperature",
            "0",
            "--max-tokens",
            "24",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and SUMMARY.match(done.stderr.strip().splitlines()[-1]), done.stderr


@pytest.mark.slow
def test_engines_agree_on_greedy_tokens(embedded_model_dir: Path) -> None:
    params = SamplingParams(max_tokens=8, temperature=0)
    ids = {}
    for engine in ENGINES:
        loaded = load_model(str(embedded_model_dir), engine=engine)
        try:
            prompt_ids = loaded.encode(loaded.format_prompt("Tell me about the history of Rome."))
            tokens = loaded._sample_tokens(prompt_ids, params)
            ids[engine] = [next(tokens) for _ in range(8)]
            tokens.close()
        finally:
            loaded.close()
    assert ids["torch"] == ids["mlx"]
