"""`forgellm runs` and `forgellm eval` on tiny runs, and the metrics reader."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.runs.events import Event, MetricsWriter, read_events
from forgellm.training.qa import is_correct, normalise
from tests.cli_helpers import forgellm_error
from tests.training_helpers import prepared_data, tiny_config_values, write_config


def invoke(*args: str) -> str:
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.stdout


@pytest.fixture
def tiny_run(workspace, tiny_model_dir):
    prepared_data(workspace / "prepared")
    cfg = write_config(
        workspace / "c.yaml",
        **tiny_config_values(tiny_model_dir, run_name="tiny", max_iterations=6, steps_per_eval=3, save_every=3),
    )
    invoke("train", "--config", str(cfg))
    return workspace / "models/cpt/tiny"


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    writer.write(
        Event.TRAIN,
        1,
        loss=2.0,
        grad_norm=float("nan"),
        learning_rate=1e-4,
        tokens=8,
        trained_tokens=8,
        tokens_per_second=1.0,
        peak_memory_gb=0.1,
        elapsed=1.0,
    )
    writer.close()
    with open(path, "a") as fh:
        fh.write('{"event": "train", "step": 2, "lo')
    events = read_events(path)
    assert [e["step"] for e in events] == [1] and events[0]["grad_norm"] is None


def test_runs_list_and_show(tiny_run):
    listed = json.loads(invoke("runs", "list", "--json"))
    assert [r["name"] for r in listed] == ["tiny"]
    run = listed[0]
    assert run["status"] == "done" and run["step"] == 6 and run["progress"] == 1.0
    assert run["best_checkpoint"] in run["checkpoints"] and run["last_eval"]["step"] == 6
    shown = json.loads(invoke("runs", "show", "tiny", "--json"))
    assert shown["path"] == str(tiny_run) and shown["engine"] == "torch"
    text = invoke("runs", "show", "tiny")
    assert "status:     done" in text and "step 6/6" in text
    assert "tiny" in invoke("runs", "list")


def test_a_run_whose_process_died_shows_failed(tiny_run):
    status = json.loads((tiny_run / "status.json").read_text())
    (tiny_run / "status.json").write_text(json.dumps({**status, "status": "running", "pid": 2**22 + 12345}))
    shown = json.loads(invoke("runs", "show", str(tiny_run), "--json"))
    assert shown["status"] == "failed" and "without a final status" in shown["message"]


def test_unknown_run_is_a_clear_error(workspace):
    assert "run 'nope' not found" in forgellm_error("runs", "show", "nope")


def test_normalised_containment():
    assert normalise("  The Éiffel-Tower!! ") == "eiffel tower"
    assert is_correct("It is in Paris, France.", "paris")
    assert is_correct("Answer: 1889", ["1889", "eighteen eighty-nine"])
    assert not is_correct("Parisian", "Paris") and not is_correct("anything", "")


def test_only_the_first_sentence_is_scored():
    # A model that names the wrong founder and then recites the document is wrong.
    assert not is_correct("Maren Solt founded it in 1388. Later, Ysolde Tarrow built the hall.", "Ysolde Tarrow")
    assert not is_correct("Maren Solt\nYsolde Tarrow", "Ysolde Tarrow")
    assert is_correct("  It melts at 1,140 degrees (about 2,084 F). It is blue-green.", "1,140")
    assert is_correct("It was founded by Ysolde Tarrow in 1388!", "Ysolde Tarrow")


def test_eval_reports_qa_and_perplexities(tiny_run, workspace):
    qa = workspace / "qa.jsonl"
    qa.write_text(json.dumps({"question": "Say hi", "answer": "hi"}) + "\n")
    report = json.loads(
        invoke(
            "eval",
            "tiny",
            "--checkpoint",
            "best",
            "--qa",
            str(qa),
            "--general",
            "prepared",
            "--max-tokens",
            "4",
            "--json",
        )
    )
    best = json.loads((tiny_run / "checkpoints/best.json").read_text())
    assert report["path"].endswith(best["checkpoint"]) and report["qa_total"] == 1
    assert len(report["answers"]) == 1 and isinstance(report["answers"][0]["correct"], bool)
    # The domain perplexity of the best checkpoint is its recorded validation loss (same loss, same data).
    assert report["domain_val_loss"] == pytest.approx(best["val_loss"], rel=1e-4)
    assert report["general_ppl"] > 1.0
    # Kept with the run, under the checkpoint's name, for the model card of `forgellm publish`.
    assert json.loads((tiny_run / "evaluation" / f"{best['checkpoint']}.json").read_text()) == report


def test_eval_unknown_checkpoint(tiny_run):
    assert "has no checkpoint at step 999" in forgellm_error("eval", "tiny", "--checkpoint", "999")


def test_writing_after_a_torn_line_starts_a_new_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "train", "step": 1}\n{"event": "train", "st')
    writer = MetricsWriter(path)
    writer.write(Event.ERROR, 1, message="disk full")
    writer.close()
    assert [(e["event"], e["step"]) for e in read_events(path)] == [("train", 1), ("error", 1)]


def test_qa_accepts_aliases_and_a_folder(tmp_path):
    from forgellm.training.qa import read_qa

    (tmp_path / "a.jsonl").write_text(
        json.dumps({"question": "Who?", "answer": "Ysolde Tarrow", "aliases": ["Tarrow"]}) + "\n"
    )
    (tmp_path / "b.jsonl").write_text(json.dumps({"question": "When?", "answer": ["1388"]}) + "\n")
    items = read_qa(tmp_path)
    assert [i["accepted"] for i in items] == [["Ysolde Tarrow", "Tarrow"], ["1388"]]
    assert is_correct("It was Tarrow.", items[0]["accepted"])


def test_native_writer_errors_become_clear_storage_errors(tmp_path):
    from forgellm.training.storage import as_os_error, storage_error

    native = Exception("Error while serializing: I/O error: No space left on device (os error 28)")
    message = str(storage_error(as_os_error(native), tmp_path, resumable=True))
    assert message.startswith(f"cannot write in {tmp_path}: the disk is full; free some disk space")
    assert f"forgellm train --resume {tmp_path}" in message
    assert as_os_error(ValueError("a plain bug")) is None


def test_eval_of_a_plain_model_at_a_chosen_sequence_length(workspace, tiny_model_dir):
    prepared_data(workspace / "prepared")
    report = json.loads(invoke("eval", str(tiny_model_dir), "--data", "prepared", "--max-seq-length", "32", "--json"))
    assert report["domain_ppl"] > 1.0 and report["qa_accuracy"] is None
    message = forgellm_error("eval", str(tiny_model_dir), "--data", "prepared", "--max-seq-length", "64")
    assert "max_seq_length is 64" in message


def test_train_config_reaches_the_data_pipeline(workspace, tiny_model_dir):
    # general_data_dir and the cleaning switches are training config keys, not only `forgellm data` options.
    words = "harbour lantern ferry granite orchard meadow beacon tide".split()
    domain, general = workspace / "dataset/domain", workspace / "dataset/general"
    for folder, offset in ((domain, 0), (general, 3)):
        folder.mkdir(parents=True)
        for i in range(12):
            text = " ".join(words[(i * 5 + j + offset) % len(words)] + str(j % 7) for j in range(150))
            (folder / f"doc{i}.txt").write_text(text)
    values = tiny_config_values(
        tiny_model_dir,
        run_name="mixed",
        input_dir="dataset/domain",
        max_iterations=2,
        steps_per_eval=2,
        save_every=2,
        batch_size=2,
        validation_split=0.2,
        data_mixture_ratio=0.5,
        general_data_dir="dataset/general",
        near_dedupe_threshold=0.0,
    )
    invoke("train", "--config", str(write_config(workspace / "c.yaml", **values)))
    stats = json.loads((workspace / "models/cpt/mixed/data_stats.json").read_text())
    mixture = stats["mixture"]
    assert mixture["general_source"] == f"folder {general}"
    assert mixture["general_sequences"] == mixture["domain_sequences"] > 0


def test_a_validation_split_smaller_than_a_batch_still_evaluates(workspace, tiny_model_dir):
    prepared_data(workspace / "prepared", train=16, val=3)  # 3 validation sequences, batch_size 4
    values = tiny_config_values(tiny_model_dir, run_name="small-val", max_iterations=2, steps_per_eval=2, save_every=2)
    invoke("train", "--config", str(write_config(workspace / "c.yaml", **values)))
    evals = [e for e in read_events(workspace / "models/cpt/small-val/metrics.jsonl") if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2] and all(e["val_loss"] > 0 for e in evals)


def test_eval_of_an_ift_run_with_documents_reads_other_folders_as_plain_text(workspace, tiny_model_dir):
    # The run's documents_dir belongs to its own (chat) dataset: perplexity on another folder is that folder's
    # text alone, as for any model; it used to fail with "documents_dir mixes documents into ... ift run".
    from forgellm.data.sample.generator import write_sample

    write_sample(workspace / "dataset" / "sample")
    few = workspace / "dataset" / "few"
    few.mkdir()
    for doc in sorted((workspace / "dataset" / "sample" / "cpt").glob("*.md"))[:3]:
        (few / doc.name).write_text(doc.read_text())
    cfg = write_config(
        workspace / "c.yaml",
        **tiny_config_values(
            tiny_model_dir,
            run_name="mixed",
            training_type="ift",
            input_dir="dataset/sample/ift",
            documents_dir="dataset/few",
            data_mixture_ratio=1.0,
            max_seq_length=128,
            max_iterations=2,
            steps_per_eval=2,
            save_every=2,
        ),
    )
    invoke("train", "--config", str(cfg))
    args = ("--data", "dataset/few", "--general", "dataset/few", "--max-seq-length", "64", "--json")
    run, plain = (json.loads(invoke("eval", name, *args)) for name in ("mixed", str(tiny_model_dir)))
    assert run["domain_ppl"] > 1.0 and run["general_ppl"] > 1.0
    # Same folder, same windows: the adapter's two-step change moves the perplexity only a little.
    assert run["domain_ppl"] == pytest.approx(plain["domain_ppl"], rel=0.2)
