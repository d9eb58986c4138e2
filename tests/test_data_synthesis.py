"""`forgellm data synthesize`: chunks, the grounding check, the teacher (a model loaded here, ForgeLLM's
own server over HTTP), resume after a kill, and bad input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from forgellm.data.synthesis import Sampling, Synthesis, SynthesisOptions
from forgellm.data.synthesis.chunks import read_chunks, split_text
from forgellm.data.synthesis.grounding import ChunkIndex
from forgellm.data.synthesis.prompts import parse_pairs, parse_paraphrase
from forgellm.serving.app import create_app
from forgellm.serving.main import RunningServer, ServerOptions
from tests.cli_helpers import forgellm

ORLEMUND = (
    "Orlemund is a harbour town on the west coast of Vendrasil. It was founded in 1642 by the merchant "
    "Tavel Orne, who built its first granary. The town exports salted fish and wool."
)
LIGHTHOUSE = (
    "The lighthouse of Orlemund, the Grey Needle, stands 48 metres tall. It was first lit in 1788 "
    "and its keeper rings a bell in fog."
)


def _docs(folder: Path, count: int = 2) -> Path:
    """A source folder: ``count`` short documents of one fact-rich paragraph each (one chunk each)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [ORLEMUND, LIGHTHOUSE] + [
        f"Village number {i} of Vendrasil grows {i * 7} kinds of apples. It keeps {i * 3} goats on its common pasture."
        for i in range(2, count)
    ]
    for i, text in enumerate(texts[:count]):
        (folder / f"doc{i:02d}.md").write_text(text + "\n")
    return folder


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ------------------------------------------------------------------ grounding


def test_grounding_accepts_the_chunks_words_and_rejects_invented_facts() -> None:
    index = ChunkIndex(ORLEMUND)
    # The chunk's own words, another inflection of them ("founder", "harbours"), case and punctuation.
    assert index.answer_grounded("Orlemund was founded in 1642 by Tavel Orne.", 0.8)
    assert index.answer_grounded("The founder of the harbours was the merchant Tavel Orne.", 0.8)
    # An invented founder: most content words are not in the chunk.
    support = index.support("Orlemund was founded by King Aldric the Bold.")
    assert set(support.missing) == {"king", "aldric", "bold"}
    assert not support.grounded(0.8)
    # One wrong number is enough, whatever the words.
    wrong_year = index.support("Orlemund was founded in 1643 by the merchant Tavel Orne.")
    assert wrong_year.missing_numbers == ("1643",) and not wrong_year.grounded(0.5)
    # An answer of stopwords only says nothing: rejected.
    assert not index.answer_grounded("Yes, it was.", 0.8)
    # The threshold is a share: 2 of 3 content words found passes 0.6, not 0.8.
    assert index.support("granary wool pottery").share == pytest.approx(2 / 3)
    assert index.answer_grounded("granary wool pottery", 0.6) and not index.answer_grounded("granary wool pottery", 0.8)


def test_paraphrase_check_keeps_names_and_numbers() -> None:
    index = ChunkIndex(ORLEMUND)
    assert index.paraphrase_grounded(
        "Founded in 1642 by a trader named Tavel Orne, the coastal town of Orlemund lies in western Vendrasil."
    )
    assert not index.paraphrase_grounded("Founded in 1650 by Tavel Orne, Orlemund lies in Vendrasil.")  # a number
    assert not index.paraphrase_grounded("The town of Orlemund was founded by Queen Marisa.")  # a name


def test_teacher_replies_are_read_leniently_and_non_json_is_none() -> None:
    pairs = [("Who founded Orlemund?", "Tavel Orne founded Orlemund.")]
    assert (
        parse_pairs('{"pairs": [{"question": "Who founded Orlemund?", "answer": "Tavel Orne founded Orlemund."}]}')
        == pairs
    )
    assert (
        parse_pairs(
            'Sure! ```json\n[{"question": "Who founded Orlemund?", "answer": "Tavel Orne founded Orlemund."}]\n```'
        )
        == pairs
    )
    assert parse_pairs("Q: Who founded Orlemund? A: Tavel Orne.") is None
    assert parse_pairs('{"pairs": [{"question": "", "answer": "x"}]}') is None
    assert parse_paraphrase('Here it is: {"paraphrase": "A rewritten text."} Hope this helps') == "A rewritten text."
    assert parse_paraphrase('{"text": "wrong key"}') is None


# ------------------------------------------------------------------ chunks


def test_chunks_come_from_every_format_the_pipeline_reads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    long_text = "\n\n".join(
        f"Paragraph {i} says that the river Ost{i} floods every spring near the mill." for i in range(40)
    )
    (src / "a.md").write_text(long_text)
    (src / "b.jsonl").write_text(
        json.dumps({"text": ORLEMUND})
        + "\n"
        + json.dumps({"body": "no text field"})
        + "\n"
        + json.dumps({"text": ORLEMUND})
        + "\n"
    )  # the same text again: one chunk
    (src / "c.csv").write_text(f'text\n"{LIGHTHOUSE}"\n')
    (src / "d.html").write_text(f"<html><script>var x;</script><p>{ORLEMUND}</p></html>")
    chunks, report = read_chunks(src, chunk_chars=400)
    by_file = Counter(c.file for c in chunks)
    assert by_file["b.jsonl"] == by_file["c.csv"] == by_file["d.html"] == 1
    assert by_file["a.md"] == len([c for c in chunks if c.file == "a.md"]) > 5
    assert all(len(c.text) <= 400 for c in chunks)
    assert [c.index for c in chunks if c.file == "a.md"] == list(range(by_file["a.md"]))  # per file, in order
    assert "var x" not in next(c.text for c in chunks if c.file == "d.html")
    assert next(c for c in chunks if c.file == "b.jsonl").source() == {"file": "b.jsonl", "chunk": 0, "line": 1}
    assert report.skipped_total == 1 and "no 'text' field" in report.skipped[0]["reason"]
    assert report.duplicates_removed == 1
    # A paragraph longer than a chunk is cut between sentences, never losing one.
    sentences = " ".join(f"Sentence {i} is about harbour number {i}." for i in range(60))
    pieces = list(split_text(sentences, 300))
    assert all(len(p) <= 300 for p in pieces) and " ".join(pieces) == sentences


# ------------------------------------------------------------------ the loop, with a teacher that follows the prompts


class ExtractiveTeacher:
    """Answers exactly as the prompts ask, from the chunk in the prompt: the questions and answers of
    ``answers`` (by chunk start) and a paraphrase that reorders the chunk's sentences. It stands in for
    a capable instruct model, which no test here can run; it lets the test see real records flow."""

    name = "extractive"

    def __init__(self, answers: dict[str, list[tuple[str, str]]], paraphrase_ok: bool = True):
        self.answers, self.paraphrase_ok, self.calls = answers, paraphrase_ok, 0

    def complete(self, messages, sampling, *, seed):
        self.calls += 1
        prompt = messages[-1]["content"]
        chunk = prompt.split('"""')[1].strip()
        if "study questions" in messages[0]["content"]:
            pairs = next((v for k, v in self.answers.items() if chunk.startswith(k)), None)
            return (
                "no JSON here"
                if pairs is None
                else json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})
            )
        sentences = [s for s in chunk.split(". ") if s]
        return json.dumps({"paraphrase": ". ".join(reversed(sentences)) if self.paraphrase_ok else "Queen Marisa."})

    def close(self) -> None:
        pass


def test_records_are_grounded_deduplicated_traced_and_read_by_the_pipeline(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    src, out = _docs(tmp_path / "src", 3), tmp_path / "out"
    teacher = ExtractiveTeacher(
        {
            "Orlemund": [
                ("Who founded Orlemund?", "Orlemund was founded by the merchant Tavel Orne."),
                ("When was Orlemund founded?", "Orlemund was founded in 1642."),
                ("Who was the first king of Orlemund?", "King Aldric the Bold ruled Orlemund."),  # invented
                ("who founded ORLEMUND", "Tavel Orne founded it."),
            ],  # the first question again
            "The lighthouse": [
                ("How tall is the Grey Needle?", "The Grey Needle stands 52 metres tall.")
            ],  # wrong number
        }
    )
    options = SynthesisOptions(source=src, out=out, questions_per_chunk=4, paraphrases=1, sampling=Sampling(64, 0.0))
    summary = Synthesis(options).run(teacher, progress=False)
    assert summary["state"] == "done" and summary["chunks"] == summary["chunks_done"] == 3
    assert summary["teacher_calls"] == teacher.calls == 6
    assert (summary["qa_generated"], summary["qa_written"], summary["qa_ungrounded"], summary["qa_duplicates"]) == (
        5,
        2,
        2,
        1,
    )
    assert summary["not_json"] == 1  # the third document's questions
    assert summary["paraphrases_written"] == 3

    qa = [json.loads(line) for line in (out / "ift/qa.jsonl").read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in qa] == ["Who founded Orlemund?", "When was Orlemund founded?"]
    assert all(r["source"] == {"file": "doc00.md", "chunk": 0} for r in qa)
    assert [r["messages"][1]["role"] for r in qa] == ["assistant", "assistant"]
    para = [json.loads(line) for line in (out / "cpt/paraphrases.jsonl").read_text().splitlines()]
    assert [p["source"]["file"] for p in para] == ["doc00.md", "doc01.md", "doc02.md"]
    assert summary["samples"][-1] == qa[-1]

    # The IFT pipeline reads the chats and the CPT pipeline the paraphrases, as written.
    from transformers import AutoTokenizer

    from forgellm.data import DataSettings, prepare_dataset

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ift = prepare_dataset(
        DataSettings(input_dir=out / "ift", training_type="ift", validation_split=0.0, data_mixture_ratio=1.0),
        tokenizer,
        tmp_path / "ws",
    )
    assert ift.stats["documents"] == 2 and ift.stats["format"] == {"qa.jsonl": "messages"} and not ift.stats["skipped"]
    cpt = prepare_dataset(
        DataSettings(input_dir=out / "cpt", min_chars=10, data_mixture_ratio=1.0), tokenizer, tmp_path / "ws"
    )
    assert cpt.stats["documents"] == 3 and not cpt.stats["skipped"]

    # Run again after a run killed while appending (half a record): every chunk is done, the teacher is
    # not asked, the half record is cut away, nothing is written twice.
    with open(out / "ift/qa.jsonl", "a") as fh:
        fh.write('{"messages": [{"role": "user", "con')
    again = Synthesis(options).run(teacher, progress=False)
    assert again["this_run"] == {"chunks": 0, "teacher_calls": 0, "seconds": again["this_run"]["seconds"]}
    assert teacher.calls == 6 and [json.loads(r) for r in (out / "ift/qa.jsonl").read_text().splitlines()] == qa


def test_invented_paraphrases_are_rejected_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = Synthesis(
        SynthesisOptions(source=_docs(tmp_path / "src", 1), out=out, questions_per_chunk=0, paraphrases=2)
    ).run(ExtractiveTeacher({}, paraphrase_ok=False), progress=False)
    assert summary["paraphrases_ungrounded"] == 2 and summary["paraphrases_written"] == 0
    assert (out / "cpt/paraphrases.jsonl").read_text() == ""


def test_ctrl_c_keeps_finished_chunks_and_says_interrupted(tmp_path: Path) -> None:
    class StopsOnThirdCall(ExtractiveTeacher):
        def complete(self, messages, sampling, *, seed):
            if self.calls == 2:
                raise KeyboardInterrupt  # Ctrl-C, or SIGTERM through the CLI's handler
            return super().complete(messages, sampling, seed=seed)

    out, teacher = (
        tmp_path / "out",
        StopsOnThirdCall({"Orlemund": [("Who founded Orlemund?", "Tavel Orne founded Orlemund.")]}),
    )
    options = SynthesisOptions(source=_docs(tmp_path / "src", 2), out=out, questions_per_chunk=1, paraphrases=1)
    with pytest.raises(KeyboardInterrupt):
        Synthesis(options).run(teacher, progress=False)
    assert _summary(out)["state"] == "interrupted" and _summary(out)["chunks_done"] == 1
    assert len((out / "ift/qa.jsonl").read_text().splitlines()) == 1


# ------------------------------------------------------------------ real teachers: a model loaded here, a server


def test_model_teacher_through_the_cli(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The tiny random model writes no JSON: every reply is counted as skipped, the run still completes."""
    src, out = _docs(tmp_path / "src", 2), tmp_path / "out"
    code, stdout, stderr = forgellm(
        "data",
        "synthesize",
        str(src),
        "--out",
        str(out),
        "--teacher",
        str(tiny_model_dir),
        "--questions-per-chunk",
        "1",
        "--paraphrases",
        "1",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--json",
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["teacher"] == tiny_model_dir.name
    assert summary["chunks_done"] == 2 and summary["teacher_calls"] == 4
    assert summary["not_json"] + summary["qa_generated"] + summary["paraphrases_generated"] == 4
    assert summary == _summary(out) | {"updated": summary["updated"]}


@pytest.fixture
def teacher_server(tmp_path: Path):
    """ForgeLLM's own model server on a free loopback port, with an access token."""
    running = RunningServer(
        create_app({"FORGELLM_ENGINE": "torch", "FORGELLM_TOKEN": "teacher-key-0123456789"}), ServerOptions(port=0)
    )
    yield running
    running.stop()


def test_server_teacher_with_api_key_from_the_environment(
    tmp_path: Path, tiny_model_dir: Path, teacher_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = _docs(tmp_path / "src", 2), tmp_path / "out"
    args = [
        "data",
        "synthesize",
        str(src),
        "--out",
        str(out),
        "--teacher",
        teacher_server.url + "/v1",
        "--teacher-model",
        str(tiny_model_dir),
        "--questions-per-chunk",
        "1",
        "--paraphrases",
        "1",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--json",
    ]
    code, _, stderr = forgellm(*args)  # no key: the server refuses, the message says how to give one
    assert code == 2 and "refused the request (401" in stderr and "--api-key-env" in stderr
    assert _summary(out)["state"] == "failed"
    code, _, stderr = forgellm(*args, "--api-key-env", "TEACHER_KEY")
    assert code == 2 and "TEACHER_KEY, which is not set" in stderr
    monkeypatch.setenv("TEACHER_KEY", "teacher-key-0123456789")
    code, stdout, stderr = forgellm(*args, "--api-key-env", "TEACHER_KEY")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["teacher"] == teacher_server.url + "/v1" and summary["chunks_done"] == 2
    assert summary["teacher_calls"] == 4 and summary["state"] == "done"

    # The teacher goes away; a new document makes more work: one line naming it, the earlier work kept.
    before = {p: (out / p).read_bytes() for p in ("ift/qa.jsonl", "cpt/paraphrases.jsonl", ".progress.json")}
    (src / "doc99.md").write_text(f"{LIGHTHOUSE} The bell weighs 300 kilograms and was cast in Orlemund.\n")
    dead = f"http://127.0.0.1:{_free_port()}/v1"
    args[args.index(teacher_server.url + "/v1")] = dead
    code, _, stderr = forgellm(*args, "--api-key-env", "TEACHER_KEY")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert f"teacher {dead} cannot be reached" in stderr and "2 of 3 chunks done and kept" in stderr
    assert {p: (out / p).read_bytes() for p in before} == before
    assert _summary(out)["state"] == "failed" and _summary(out)["chunks_done"] == 2


def test_teacher_that_does_not_answer_times_out_with_its_name(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
    try:
        code, _, stderr = forgellm(
            "data",
            "synthesize",
            str(_docs(tmp_path / "src", 1)),
            "--out",
            str(tmp_path / "out"),
            "--teacher",
            url,
            "--teacher-model",
            "m",
            "--timeout",
            "1",
        )
    finally:
        silent.close()
    assert code == 2 and f"teacher {url} did not answer within 1 s" in stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ resume


def _args(src: Path, out: Path, teacher: Path) -> list[str]:
    return [
        "data",
        "synthesize",
        str(src),
        "--out",
        str(out),
        "--teacher",
        str(teacher),
        "--questions-per-chunk",
        "1",
        "--paraphrases",
        "1",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
        "--json",
    ]


@pytest.mark.slow  # a second process, killed
def test_a_killed_run_resumes_without_asking_again_or_writing_twice(tmp_path: Path, tiny_model_dir: Path) -> None:
    chunks = 8
    src = _docs(tmp_path / "src", chunks)
    code, stdout, stderr = forgellm(*_args(src, tmp_path / "whole", tiny_model_dir))  # the run never stopped
    assert code == 0, stderr
    reference = json.loads(stdout)

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "forgellm", *_args(src, out, tiny_model_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    done_at_kill = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            done_at_kill = len(json.loads((out / ".progress.json").read_text())["done"])
        except (OSError, ValueError):
            pass
        if done_at_kill >= 2:
            process.send_signal(signal.SIGKILL)  # no chance to tidy up
            break
        time.sleep(0.01)
    process.wait()
    assert 2 <= done_at_kill < chunks, f"the run was not stopped midway ({done_at_kill} of {chunks} chunks)"

    code, stdout, stderr = forgellm(*_args(src, out, tiny_model_dir))
    assert code == 0, stderr
    summary = json.loads(stdout)
    done_before = summary["chunks"] - summary["this_run"]["chunks"]
    assert done_before >= done_at_kill  # a chunk may have finished between the look and the kill
    assert summary["this_run"]["teacher_calls"] == 2 * (chunks - done_before)  # done chunks were not asked again
    for name in (
        "teacher_calls",
        "not_json",
        "qa_written",
        "paraphrases_written",
        "qa_generated",
        "paraphrases_generated",
    ):
        assert summary[name] == reference[name], name
    for name in ("ift/qa.jsonl", "cpt/paraphrases.jsonl"):  # the same records, each once
        assert (out / name).read_text() == (tmp_path / "whole" / name).read_text()


# ------------------------------------------------------------------ bad input


def test_bad_input_is_one_clear_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = _docs(tmp_path / "src", 1)

    def run(*args: str) -> str:
        code, _, stderr = forgellm("data", "synthesize", *args)
        assert code == 2, stderr
        assert len(stderr.strip().splitlines()) == 1
        return stderr

    assert "does not exist" in run(str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--teacher", "default")
    assert "inside SOURCE" in run(str(src), "--out", str(src / "synth"), "--teacher", "default")
    assert "--questions-per-chunk and --paraphrases" in run(
        str(src), "--out", str(tmp_path / "o"), "--teacher", "x", "--questions-per-chunk", "0", "--paraphrases", "0"
    )
    assert "--min-grounding 1.5" in run(
        str(src), "--out", str(tmp_path / "o"), "--teacher", "x", "--min-grounding", "1.5"
    )
    assert "has no host" in run(str(src), "--out", str(tmp_path / "o"), "--teacher", "http:///v1")
    assert "--teacher-model applies to a teacher URL" in run(
        str(src), "--out", str(tmp_path / "o"), "--teacher", str(tiny_model_dir), "--teacher-model", "x"
    )
    code, _, stderr = forgellm(
        "data", "synthesize", str(src), "--out", str(tmp_path / "o"), "--teacher", "no-such-model"
    )
    assert code == 2 and "model 'no-such-model' not found" in stderr  # the one message of every command for it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no files to read" in run(str(empty), "--out", str(tmp_path / "o"), "--teacher", "default")

    # Resuming with other settings would mix two syntheses: refused, nothing touched.
    out = tmp_path / "done"
    Synthesis(SynthesisOptions(source=src, out=out, questions_per_chunk=1, paraphrases=0)).run(
        ExtractiveTeacher({"Orlemund": [("Who founded Orlemund?", "Tavel Orne founded Orlemund.")]}), progress=False
    )
    before = (out / "ift/qa.jsonl").read_bytes()
    message = run(
        str(src),
        "--out",
        str(out),
        "--teacher",
        str(tiny_model_dir),
        "--questions-per-chunk",
        "2",
        "--paraphrases",
        "0",
    )
    assert "other settings (questions_per_chunk was 1, now 2)" in message
    assert (out / "ift/qa.jsonl").read_bytes() == before
    (out / "ift/qa.jsonl").write_bytes(b"x" * (len(before) - 1) + b"\n")  # a record spoilt by hand
    message = run(
        str(src),
        "--out",
        str(out),
        "--teacher",
        str(tiny_model_dir),
        "--questions-per-chunk",
        "1",
        "--paraphrases",
        "0",
    )
    assert f"{out / 'ift/qa.jsonl'}:1 is not a JSON record" in message
    # A folder with records this tool did not write is not cut or appended to.
    foreign = tmp_path / "foreign"
    (foreign / "ift").mkdir(parents=True)
    (foreign / "ift/qa.jsonl").write_text('{"messages": []}\n')
    assert "has no synthesis progress file" in run(str(src), "--out", str(foreign), "--teacher", "default")


# ------------------------------------------------------------------ the embedded model as teacher


@pytest.mark.slow
def test_embedded_model_teacher_end_to_end(tmp_path: Path, embedded_model_dir: Path) -> None:
    src, out = _docs(tmp_path / "src", 1), tmp_path / "out"
    code, stdout, stderr = forgellm(
        "data",
        "synthesize",
        str(src),
        "--out",
        str(out),
        "--teacher",
        str(embedded_model_dir),
        "--questions-per-chunk",
        "1",
        "--paraphrases",
        "0",
        "--max-tokens",
        "64",
        "--temperature",
        "0",
        "--json",
    )
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["chunks_done"] == 1 and summary["teacher_calls"] == 1
    # Whatever a 135M model writes is accounted for: skipped as not JSON, rejected, or written with its source.
    assert summary["not_json"] + summary["qa_generated"] == 1
    assert summary["qa_generated"] == summary["qa_written"] + summary["qa_ungrounded"] + summary["qa_duplicates"]
    for line in (out / "ift/qa.jsonl").read_text().splitlines():
        assert json.loads(line)["source"] == {"file": "doc00.md", "chunk": 0}
