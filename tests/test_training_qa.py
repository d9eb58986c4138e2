"""Training length in epochs, QA accuracy during training, best-by-metric, batched greedy generation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.runs.events import read_events
from forgellm.training.config import TrainingConfig, validate_config
from forgellm.training.length import training_length
from tests.cli_helpers import forgellm
from tests.training_helpers import prepared_data, tiny_config_values, write_config

# Four facts the tiny model learns from chats and is then asked about (the eval_qa set).
FACTS = [
    ("What is the secret word of Alba?", "zebra"),
    ("What colour is the door of Brannock?", "purple"),
    ("Which fruit grows in Corvale?", "mango"),
    ("What animal guards Dunmere?", "falcon"),
]


def invoke(*args: str):
    result = CliRunner().invoke(root, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def events(run: Path, kind: str) -> list[dict]:
    return read_events(run / "metrics.jsonl", event=kind)


# --- num_epochs <-> max_iterations ------------------------------------------------------------


def test_epochs_become_steps_with_grad_accumulation_and_workers():
    config = TrainingConfig(num_epochs=3, batch_size=2, grad_accumulation_steps=3)
    length = training_length(config, sequences=101)  # 50 micro-batches an epoch (one sequence left over)
    assert length.steps_per_epoch == pytest.approx(50 / 3) and length.max_iterations == 50
    assert length.num_epochs == 3 and length.effective_batch == 6
    two_workers = training_length(config, sequences=101, world_size=2)  # 25 global micro-batches an epoch
    assert two_workers.max_iterations == 25 and two_workers.effective_batch == 12
    # A fraction of an epoch rounds up to whole steps; steps give their share of an epoch.
    assert training_length(TrainingConfig(num_epochs=0.5, batch_size=4), sequences=30).max_iterations == 4
    steps = training_length(TrainingConfig(max_iterations=20, batch_size=2, grad_accumulation_steps=2), sequences=40)
    assert steps.num_epochs == 2.0 and steps.epoch_at(5) == 0.5


def test_min_iterations_raises_the_steps_of_a_small_dataset_only():
    config = TrainingConfig(num_epochs=2, min_iterations=30, batch_size=2)
    small = training_length(config, sequences=20)  # 10 steps an epoch: 2 epochs would be 20 steps
    assert small.max_iterations == 30 and small.num_epochs == 3.0
    large = training_length(config, sequences=100)  # 50 steps an epoch: the epochs decide
    assert large.max_iterations == 100 and large.num_epochs == 2


def test_min_iterations_without_num_epochs_is_a_clear_error(workspace, tiny_model_dir):
    cfg = write_config(workspace / "c.yaml", **tiny_config_values(tiny_model_dir, min_iterations=50))
    code, _, err = forgellm("train", "--config", str(cfg))
    assert code == 2 and "min_iterations=50 is a floor for a length in epochs; set num_epochs too" in err
    assert not (workspace / "models").exists()


def test_a_resolved_config_keeps_both_lengths_and_a_user_config_may_not_set_both():
    resolved = validate_config(
        {"num_epochs": 3, "max_iterations": 50, "batch_size": 2, "grad_accumulation_steps": 3}, resolved=True
    )
    length = training_length(resolved, sequences=101)
    assert (length.max_iterations, length.num_epochs) == (50, 3)
    assert TrainingConfig().max_iterations == 1000 and TrainingConfig(num_epochs=2).max_iterations is None


def test_setting_both_lengths_is_a_clear_error(workspace, tiny_model_dir):
    cfg = write_config(workspace / "c.yaml", **tiny_config_values(tiny_model_dir, num_epochs=2))
    code, _, err = forgellm("train", "--config", str(cfg))
    assert code == 2 and "num_epochs=2: max_iterations=20 and num_epochs=2 are both set; set one of them" in err
    assert not (workspace / "models").exists()


def test_num_epochs_run_records_both_and_resume_derives_again(workspace, tiny_model_dir):
    prepared_data(workspace / "prepared", train=32)  # batch 4 x accumulation 2: 4 steps an epoch
    values = tiny_config_values(
        tiny_model_dir, run_name="ep", num_epochs=2, grad_accumulation_steps=2, steps_per_eval=4, save_every=4
    )
    del values["max_iterations"]
    run = Path(invoke("train", "--config", str(write_config(workspace / "c.yaml", **values))).stdout.split()[-1])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["max_iterations"], config["num_epochs"]) == (8, 2)
    start = events(run, "start")[0]
    assert (start["total_steps"], start["num_epochs"], start["steps_per_epoch"], start["train_sequences"]) == (
        8,
        2,
        4,
        32,
    )
    assert [e["epoch"] for e in events(run, "train")][-1] == 2.0 and events(run, "train")[3]["epoch"] == 1.0
    shown = json.loads(invoke("runs", "show", "ep", "--json").stdout)
    assert shown["num_epochs"] == 2 and shown["epoch"] == 2.0
    # Resuming the finished run for one more epoch: the steps follow from the new num_epochs.
    invoke("train", "--resume", "ep", "--set", "num_epochs=3")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["max_iterations"], config["num_epochs"]) == (12, 3)
    resume = events(run, "resume")[-1]
    assert resume["total_steps"] == 12 and resume["num_epochs"] == 3
    assert events(run, "train")[-1]["step"] == 12 and events(run, "train")[-1]["epoch"] == 3.0


def test_min_iterations_run_records_the_epochs_it_took(workspace, tiny_model_dir):
    prepared_data(workspace / "prepared", train=32)  # batch 4: 8 steps an epoch
    values = tiny_config_values(
        tiny_model_dir, run_name="floor", num_epochs=1, min_iterations=12, steps_per_eval=6, save_every=6
    )
    del values["max_iterations"]
    run = Path(invoke("train", "--config", str(write_config(workspace / "c.yaml", **values))).stdout.split()[-1])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["max_iterations"], config["num_epochs"], config["min_iterations"]) == (12, 1.5, 12)
    assert events(run, "train")[-1]["step"] == 12 and events(run, "train")[-1]["epoch"] == 1.5
    # Steps given outright on resume replace the length in epochs and its floor.
    invoke("train", "--resume", "floor", "--set", "max_iterations=14")
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["max_iterations"], config.get("min_iterations")) == (14, None)
    assert events(run, "train")[-1]["step"] == 14


# --- eval_qa, qa_accuracy, best_metric ---------------------------------------------------------


def qa_workspace(workspace: Path) -> None:
    """Chats that state the facts (each three times, so validation keeps a copy out) and the QA file."""
    chats = workspace / "dataset/facts"
    chats.mkdir(parents=True)
    with open(chats / "chats.jsonl", "w") as fh:
        for _ in range(3):
            for question, answer in FACTS:
                fh.write(
                    json.dumps(
                        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
                    )
                    + "\n"
                )
    (workspace / "qa.jsonl").write_text(
        "".join(json.dumps({"question": q, "answer": a, "aliases": []}) + "\n" for q, a in FACTS)
    )


def qa_config(workspace: Path, model: Path, **overrides) -> Path:
    values = tiny_config_values(
        model,
        input_dir="dataset/facts",
        training_type="ift",
        fine_tune_type="full",
        dedupe=False,
        validation_split=0.25,
        data_mixture_ratio=1.0,
        max_seq_length=64,
        batch_size=3,
        learning_rate=3e-3,
        warmup_steps=2,
        max_iterations=60,
        steps_per_eval=15,
        save_every=15,
        val_batches=-1,
        eval_qa="qa.jsonl",
        eval_qa_max_tokens=6,
        max_checkpoints=1,
    )
    values.update(overrides)
    return write_config(workspace / "c.yaml", **values)


@pytest.mark.parametrize("engine", ["torch", pytest.param("mlx", marks=pytest.mark.slow)])
def test_qa_accuracy_rises_in_eval_events_and_picks_the_best_checkpoint(workspace, tiny_model_dir, engine):
    qa_workspace(workspace)
    cfg = qa_config(workspace, tiny_model_dir, engine=engine, run_name="qa", best_metric="qa_accuracy")
    run = Path(invoke("train", "--config", str(cfg)).stdout.split()[-1])
    evals = events(run, "eval")
    assert all(e["qa_total"] == 4 and e["qa_accuracy"] == e["qa_correct"] / 4 for e in evals)
    assert evals[0]["qa_accuracy"] == 0 and evals[-1]["qa_accuracy"] >= 0.5, [e["qa_accuracy"] for e in evals]
    best = json.loads((run / "checkpoints/best.json").read_text())
    top = max(e["qa_accuracy"] for e in evals if e["step"] > 0)
    assert best["metric"] == "qa_accuracy" and best["value"] == best["qa_accuracy"] == top
    first_top = min(e["step"] for e in evals if e["step"] > 0 and e["qa_accuracy"] == top)
    assert best["step"] >= first_top and (run / "checkpoints" / best["checkpoint"]).is_dir()  # kept from pruning
    done = events(run, "done")[-1]
    assert done["best_metric"] == "qa_accuracy" and done["best_value"] == top
    # The dashboards' data carries the QA curve.
    from forgellm.analysis.series import dashboard_data

    series = dashboard_data([run])["runs"][0]["series"]["qa_accuracy"]
    assert series["x"] == [e["step"] for e in evals] and series["y"][-1] == evals[-1]["qa_accuracy"]


def test_best_by_val_loss_ignores_qa_accuracy(tmp_path):
    from forgellm.training.checkpoints import CheckpointStore

    for metric, want in (("val_loss", "step_000002"), ("qa_accuracy", "step_000003")):
        store = CheckpointStore(tmp_path / metric, max_keep=1, metric=metric)
        for step, val, qa in ((1, 2.0, 0.25), (2, 1.0, 0.5), (3, 1.5, 0.75), (4, 1.6, 0.75), (5, None, None)):
            store.save(step, {"val_loss": val, "qa_accuracy": qa}, lambda folder: None)
        best = store.best()
        assert best["checkpoint"] == want and best["metric"] == metric, best
        assert sorted(p.name for p in store.steps()) == sorted({want, "step_000005"})  # best kept from pruning


def test_a_qa_folder_of_two_files_is_scored_per_file_in_training_and_by_eval(workspace, tiny_model_dir):
    qa_workspace(workspace)
    folder = workspace / "qa"
    folder.mkdir()
    lines = (workspace / "qa.jsonl").read_text().splitlines(keepends=True)
    (folder / "chat-facts.jsonl").write_text("".join(lines[:3]))
    (folder / "document-facts.jsonl").write_text(lines[3])
    cfg = qa_config(workspace, tiny_model_dir, run_name="split", eval_qa="qa", max_iterations=15)
    code, _, err = forgellm("train", "--config", str(cfg))
    assert code == 0, err
    for e in events(workspace / "models/ift/split", "eval"):
        files = e["qa_files"]
        assert {n: f["total"] for n, f in files.items()} == {"chat-facts": 3, "document-facts": 1}
        assert sum(f["correct"] for f in files.values()) == e["qa_correct"]
    code, out, err = forgellm("eval", "split", "--qa", "qa", "--max-tokens", "6")
    assert code == 0, err
    assert re.search(r"^  chat-facts: [0-9.]+% \(\d/3\)$", out, re.M), out
    assert re.search(r"^  document-facts: [0-9.]+% \(\d/1\)$", out, re.M), out


def test_a_malformed_eval_qa_line_is_named_and_nothing_starts(workspace, tiny_model_dir):
    qa_workspace(workspace)
    (workspace / "qa.jsonl").write_text('{"question": "Q?", "answer": "A"}\n{"question": "broken\n')
    code, _, err = forgellm("train", "--config", str(qa_config(workspace, tiny_model_dir, run_name="bad")))
    assert code == 2 and "qa.jsonl:2 is not valid JSON" in err
    assert not (workspace / "models/ift/bad").exists()
    code, _, err = forgellm("train", "--config", str(qa_config(workspace, tiny_model_dir, eval_qa="nope.jsonl")))
    assert code == 2 and "nope.jsonl not found" in err


def test_best_metric_qa_accuracy_needs_eval_qa(workspace, tiny_model_dir):
    cfg = write_config(workspace / "c.yaml", **tiny_config_values(tiny_model_dir, best_metric="qa_accuracy"))
    code, _, err = forgellm("train", "--config", str(cfg))
    assert code == 2 and "best_metric: qa_accuracy needs eval_qa" in err


# --- batched greedy generation -----------------------------------------------------------------

QUESTIONS = [
    "Who founded Orlemund?",
    "What is 2 + 2?",
    "Name a colour.",
    "Write a long sentence about the sea and the harbour at night.",
    "Hi",
]


@pytest.mark.parametrize("engine", ["torch", "mlx"])
def test_batched_greedy_gives_the_answers_of_one_at_a_time(tiny_model_dir, engine):
    from forgellm.engines import SamplingParams, load_model

    model = load_model(str(tiny_model_dir), engine=engine)
    try:
        prompts = [model.format_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]
        alone = [
            "".join(c.text for c in model.generate(p, SamplingParams(max_tokens=12, temperature=0.0))) for p in prompts
        ]
        batched = model.greedy_batch([model.encode(p) for p in prompts], 12)
    finally:
        model.close()
    assert [len(ids) for ids in batched] == [12] * len(QUESTIONS)  # the random model never says end-of-turn
    assert [model.tokenizer.decode(ids, skip_special_tokens=True) for ids in batched] == alone


@pytest.mark.parametrize("engine", ["torch", "mlx"])
def test_sampled_batches_repeat_with_their_seed_and_differ_from_greedy(tiny_model_dir, engine):
    from forgellm.engines import load_model
    from forgellm.engines.batched import BatchSampling

    model = load_model(str(tiny_model_dir), engine=engine)
    try:
        prompts = [model.encode(model.format_prompt([{"role": "user", "content": q}])) for q in QUESTIONS]
        first = model.sample_batch(prompts, 12, BatchSampling(temperature=1.0, seed=3))
        again = model.sample_batch(prompts, 12, BatchSampling(temperature=1.0, seed=3))
        other = model.sample_batch(prompts, 12, BatchSampling(temperature=1.0, seed=4))
        greedy = model.greedy_batch(prompts, 12)
    finally:
        model.close()
    assert first == again and first != other and first != greedy
    assert all(0 < len(ids) <= 12 for ids in first)


def test_eval_qa_batched_and_one_at_a_time_agree(workspace, tiny_model_dir):
    qa_workspace(workspace)
    batched = json.loads(invoke("eval", str(tiny_model_dir), "--qa", "qa.jsonl", "--max-tokens", "8", "--json").stdout)
    alone = json.loads(
        invoke(
            "eval", str(tiny_model_dir), "--qa", "qa.jsonl", "--max-tokens", "8", "--batch-size", "1", "--json"
        ).stdout
    )
    assert batched["qa_total"] == 4 and batched["answers"] == alone["answers"]
    assert [a["question"] for a in batched["answers"]] == [q for q, _ in FACTS]


def test_training_speed_of_earlier_runs_of_the_model_and_engine(workspace):
    from forgellm.web.app import create_app
    from tests.web_helpers import free_port, write_run

    client = create_app(
        {"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    ).test_client()
    write_run(workspace, "cpt/a")  # model "tiny", torch, 100 tok/s in every train event
    data = client.get("/api/training/speed?model=tiny&engine=torch").get_json()
    assert data == {"model": "tiny", "engine": "torch", "tokens_per_second": 100.0, "runs": ["a"]}
    assert client.get("/api/training/speed?model=other&engine=torch").get_json()["tokens_per_second"] is None
    assert client.get("/api/training/speed?model=tiny&engine=jax").status_code == 400
