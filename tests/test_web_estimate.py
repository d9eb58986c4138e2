"""The Training form's estimate: `POST /api/training/estimate` takes the form's config and answers
the run's length both ways, its size and duration, counted as the trainer counts them (the data
stats of `forgellm data stats`, the copies the floor asks for, `training_length`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from forgellm.runs.events import read_events
from forgellm.training.config import validate_config
from forgellm.training.length import training_length
from forgellm.web.app import create_app
from tests.cli_helpers import forgellm
from tests.data_helpers import prose, write_files
from tests.training_helpers import prepared_data, tiny_config_values, write_config
from tests.web_helpers import free_port, write_run

BASE = {"model_name": "tiny", "input_dir": "dataset/docs", "max_seq_length": 32, "batch_size": 2, "engine": "torch"}


def sentence_doc(seed: int) -> str:
    """Six distinct sentences: shuffled copies reorder sentences, so a document needs several."""
    return " ".join(prose(seed * 10 + j, words=14) for j in range(6))


@pytest.fixture
def client(workspace: Path, tiny_model_dir: Path):
    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    write_files(workspace / "dataset" / "docs", {f"{i}.md": sentence_doc(i) for i in range(6)})
    app = create_app(
        {"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    )
    return app.test_client()


def train_sequences(workspace: Path, copies: int, config: dict) -> int:
    """The training sequences `forgellm data stats` counts, with ``copies`` shuffled copies."""
    code, out, err = forgellm(
        "data", "stats", str(workspace / "dataset" / "docs"), "--model", str(workspace / "models" / "base" / "tiny"),
        "--max-seq-length", str(config["max_seq_length"]), "--mixture-ratio", str(config.get("data_mixture_ratio", 0.8)),
        "--shuffled-copies", str(copies), "--json",
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)["sequences"]["train"]


@pytest.mark.parametrize(
    "given",
    [
        {"max_iterations": 7},
        {"num_epochs": 2},
        {"num_epochs": 1.5, "grad_accumulation_steps": 2},
        {"num_epochs": 1, "min_iterations": 40},  # the floor raises the steps
        {"num_epochs": 2, "shuffled_copies": 2},  # the copies add sequences
        {"max_iterations": 9, "batch_size": 1, "grad_accumulation_steps": 3, "shuffled_copies": 1},
    ],
)
def test_the_estimate_is_the_trainers_length_of_the_counted_data(client, workspace, given):
    values = {**BASE, "data_mixture_ratio": 1.0, **given}
    answer = client.post("/api/training/estimate", json={"config": values})
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    config = validate_config(values)
    sequences = train_sequences(workspace, config.shuffled_copies, values)
    length = training_length(config, sequences)
    assert {k: got[k] for k in ("max_iterations", "num_epochs", "steps_per_epoch", "sequences", "effective_batch")} == {
        "max_iterations": length.max_iterations,
        "num_epochs": length.num_epochs,
        "steps_per_epoch": length.steps_per_epoch,
        "sequences": sequences,
        "effective_batch": config.batch_size * config.grad_accumulation_steps,
    }
    assert got["train_tokens"] == length.max_iterations * length.effective_batch * 32
    assert got["shuffled_copies"] == config.shuffled_copies and not got["fills_floor"]
    if "min_iterations" in given:
        assert got["max_iterations"] == 40 and got["num_epochs"] == round(40 / got["steps_per_epoch"], 3)
    if "shuffled_copies" in given:
        assert sequences > train_sequences(workspace, 0, values)


def test_the_estimate_of_a_floor_filled_with_copies_is_the_runs_length(client, workspace, tiny_model_dir):
    """min_iterations_fill: shuffled_copies changes the data itself: the estimate shows the
    length the trainer then trains, read from a real run's start event."""
    values = {**BASE, "data_mixture_ratio": 1.0, "batch_size": 4, "num_epochs": 1, "min_iterations": 12,
              "min_iterations_fill": "shuffled_copies"}  # fmt: skip
    run_values = tiny_config_values(tiny_model_dir, run_name="fill", **{**values, "model_name": str(tiny_model_dir)})
    del run_values["max_iterations"]
    got = client.post("/api/training/estimate", json={"config": {**run_values, "model_name": "tiny"}}).get_json()
    assert got["fills_floor"] and got["shuffled_copies"] >= 1

    code, out, err = forgellm("train", "--config", str(write_config(workspace / "c.yaml", **run_values)))
    assert code == 0, err
    start = read_events(Path(out.split()[-1]) / "metrics.jsonl", event="start")[0]
    assert (got["max_iterations"], got["num_epochs"], got["sequences"]) == (
        start["total_steps"],
        start["num_epochs"],
        start["train_sequences"],
    )
    assert got["steps_per_epoch"] == pytest.approx(start["steps_per_epoch"], abs=1e-4)


def test_the_duration_comes_from_earlier_runs_of_the_model_and_engine(client, workspace):
    config = {**BASE, "max_iterations": 10, "data_mixture_ratio": 1.0}
    none_yet = client.post("/api/training/estimate", json={"config": config}).get_json()
    assert none_yet["seconds"] is None and none_yet["speed"]["runs"] == []
    write_run(workspace, "cpt/a")  # model "tiny", torch, 100 tok/s in every train event
    got = client.post("/api/training/estimate", json={"config": config}).get_json()
    assert got["speed"] == {"engine": "torch", "tokens_per_second": 100.0, "runs": ["a"]}
    assert got["seconds"] == got["train_tokens"] / 100.0 == 10 * 2 * 32 / 100.0


def test_a_replay_set_is_not_sampled_for_the_estimate(client):
    """data_mixture_ratio < 1 without general_data_dir samples general text when the run starts
    (minutes); the estimate counts the domain data and says so."""
    got = client.post("/api/training/estimate", json={"config": {**BASE, "max_iterations": 5}}).get_json()
    domain = client.post(
        "/api/training/estimate", json={"config": {**BASE, "max_iterations": 5, "data_mixture_ratio": 1.0}}
    ).get_json()
    assert got["replay_pending"] and not domain["replay_pending"]
    assert got["replay_share"] == 0.2 and domain["replay_share"] == 0.0
    assert got["sequences"] == domain["sequences"]


@pytest.mark.parametrize(
    ("config", "field", "words"),
    [
        ({"max_iterations": 10, "num_epochs": 2}, "num_epochs", "are both set"),
        ({"input_dir": "dataset/missing"}, "input_dir", "does not exist"),
        ({"min_iterations": 10}, "min_iterations", "set num_epochs too"),
        ({"batch_size": 500, "data_mixture_ratio": 1.0}, None, "fewer than batch_size=500"),
        ({"model_name": "nope"}, "model_name", "nope"),
        ({"learning_rat": 1e-4}, "learning_rat", "did you mean 'learning_rate'"),
    ],
)
def test_bad_input_is_a_400_naming_the_problem(client, config, field, words):
    answer = client.post("/api/training/estimate", json={"config": {**BASE, **config}})
    assert answer.status_code == 400, answer.get_json()
    error = answer.get_json()["error"]
    assert words in error["message"] and error.get("field") == field, error


@pytest.mark.parametrize("ratio", [{"data_mixture_ratio": 1}, {}])  # domain data only; a replay set pending
def test_the_stats_line_and_the_estimate_share_one_computation(client, monkeypatch, ratio):
    """The form asks for its stats line (the data keys it shows) and the estimate (every config
    key): settings at their defaults count as not given, and both count the domain data alone
    while a replay set is pending, so one `forgellm data stats` serves both."""
    from forgellm.web.services.dataset_stats import DatasetStats

    computed = []
    compute = DatasetStats._compute
    monkeypatch.setattr(DatasetStats, "_compute", lambda self, *args: computed.append(args) or compute(self, *args))
    line = {"path": "docs", "mode": "cpt", "model": "tiny", "max_seq_length": "32", **ratio,
            "seed": "42", "dedupe": "true", "shuffled_copies": "0"}  # fmt: skip
    stats = client.get("/api/datasets/stats", query_string=line)
    assert stats.status_code == 200, stats.get_json()
    answer = client.post("/api/training/estimate", json={"config": {**BASE, "num_epochs": 1, **ratio}})
    assert answer.status_code == 200, answer.get_json()
    assert len(computed) == 1
    assert stats.get_json()["replay_pending"] == answer.get_json()["replay_pending"] == (not ratio)


def test_a_preference_run_is_counted_in_pairs(client, workspace):
    """A pair is one row of a preference run (its two sequences one example), as the trainer counts it."""
    records = [{"prompt": f"Who founded town {i}?", "chosen": f"Tarrow founded town {i}.", "rejected": "Nobody."}
               for i in range(40)]  # fmt: skip
    write_files(workspace / "dataset" / "pairs", {"a.jsonl": records})
    config = {
        **BASE,
        "input_dir": "dataset/pairs",
        "training_type": "preference",
        "max_seq_length": 64,
        "num_epochs": 1,
    }
    got = client.post("/api/training/estimate", json={"config": config}).get_json()
    stats = client.get(
        "/api/datasets/stats",
        query_string={"path": "pairs", "mode": "preference", "model": "tiny", "max_seq_length": 64},
    ).get_json()["stats"]
    assert got["unit"] == "pairs" and got["sequences"] == stats["pairs"]["train"] == stats["sequences"]["train"] // 2
    assert got["max_iterations"] == stats["pairs"]["train"] // 2 and not got["replay_pending"]


def test_a_folder_of_prepared_splits_is_counted_as_it_is(client, workspace):
    """The trainer trains on prepared splits (``train.tokens.npy`` ...) as they are; so does the estimate."""
    prepared_data((workspace / "dataset" / "prepared").resolve(), train=21, length=32)
    values = {**BASE, "input_dir": "dataset/prepared", "num_epochs": 2, "shuffled_copies": 3, "data_mixture_ratio": 1.0}
    answer = client.post("/api/training/estimate", json={"config": values})
    assert answer.status_code == 200, answer.get_json()
    got = answer.get_json()
    length = training_length(validate_config({**values, "shuffled_copies": 0}), 21)  # no copies are made of it
    assert (got["sequences"], got["max_iterations"], got["num_epochs"]) == (21, length.max_iterations, 2)
    assert got["shuffled_copies"] == 0 and length.max_iterations == 20
    # Nothing is mixed into prepared splits, so no replay set waits for the run at the default ratio.
    default_ratio = client.post("/api/training/estimate", json={"config": {**values, "data_mixture_ratio": 0.8}})
    assert default_ratio.get_json()["sequences"] == 21 and not default_ratio.get_json()["replay_pending"]
