"""report_to: TensorBoard event files and an MLflow store, read back with their own readers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from forgellm.runs.events import Event, read_events
from forgellm.training.config import build_config, validate_config
from tests.cli_helpers import forgellm
from tests.training_helpers import prepared_data, tiny_config_values, write_config


def train(workspace: Path, model: Path, **overrides) -> tuple[int, str]:
    """`forgellm train` on the tiny model: (exit status, stderr)."""
    if not (workspace / "prepared").exists():
        prepared_data(workspace / "prepared")
    config = write_config(workspace / "c.yaml", **tiny_config_values(model, **overrides))
    code, _, err = forgellm("train", "--config", str(config))
    return code, err


def test_tensorboard_event_files_hold_the_runs_metrics(workspace, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, err = train(
        workspace, tiny_model_dir, report_to=["tensorboard"], max_iterations=6, steps_per_eval=3, run_name="tb"
    )
    assert code == 0, err
    run = workspace / "models/cpt/tb"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = {e.step: e.value for e in events.Scalars("train/loss")}
    expected = {e["step"]: e["loss"] for e in read_events(run / "metrics.jsonl", event=Event.TRAIN)}
    assert sorted(losses) == sorted(expected) == list(range(1, 7))
    assert all(abs(losses[s] - expected[s]) < 1e-4 for s in expected)
    assert [e.step for e in events.Scalars("eval/val_loss")] == [0, 3, 6]
    assert "train/learning_rate" in events.Tags()["scalars"]


def test_mlflow_store_holds_params_metrics_config_and_best_checkpoint(workspace, tiny_model_dir):
    from mlflow.tracking import MlflowClient

    code, err = train(
        workspace, tiny_model_dir, report_to=["mlflow"], max_iterations=6, steps_per_eval=3, save_every=3, run_name="ml"
    )
    assert code == 0, err
    run_dir = workspace / "models/cpt/ml"
    assert (workspace / "mlflow/mlflow.db").exists()  # the default store: a folder in the workspace
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow/mlflow.db'}")
    run = client.get_run(json.loads((run_dir / "mlflow_run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "ml"
    assert run.data.params["learning_rate"] == "0.005" and run.data.params["training_type"] == "cpt"
    history = client.get_metric_history(run.info.run_id, "loss")
    expected = {e["step"]: e["loss"] for e in read_events(run_dir / "metrics.jsonl", event=Event.TRAIN)}
    assert {m.step: m.value for m in history} == pytest.approx(expected)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 3, 6]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "best_checkpoint"} <= artifacts
    best = json.loads((run_dir / "checkpoints/best.json").read_text())["checkpoint"]
    saved = {a.path for a in client.list_artifacts(run.info.run_id, f"best_checkpoint/{best}")}
    assert f"best_checkpoint/{best}/trainer_state.json" in saved
    config_text = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(workspace))).read_text()
    assert yaml.safe_load(config_text)["run_name"] == "ml"


def test_unknown_tracker_is_one_clear_line(workspace, tiny_model_dir):
    code, err = train(workspace, tiny_model_dir, report_to=["wandb"], run_name="x")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown tracker 'wandb'; the trackers are: tensorboard, mlflow" in err
    assert not (workspace / "models/cpt/x").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_mlflow_store_is_refused_before_the_run_starts(workspace, tiny_model_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = train(
            workspace, tiny_model_dir, report_to=["mlflow"], mlflow_tracking_uri=str(locked / "store"), run_name="x"
        )
    finally:
        locked.chmod(0o700)
    assert code == 2
    assert "cannot write the MLflow store" in err and len(err.strip().splitlines()) == 1
    assert not (workspace / "models/cpt/x").exists()


def test_mlflow_uri_on_a_file_is_refused(workspace, tiny_model_dir):
    (workspace / "afile").write_text("x")
    code, err = train(workspace, tiny_model_dir, report_to=["mlflow"], mlflow_tracking_uri="afile/store", run_name="x")
    assert code == 2 and "cannot write the MLflow store" in err
    assert not (workspace / "models/cpt/x").exists()


def test_report_to_reads_a_comma_list_and_old_tensorboard_key_migrates():
    assert build_config(overrides={"report_to": "tensorboard, mlflow"}).report_to == ["tensorboard", "mlflow"]
    assert validate_config({"tensorboard": True}).report_to == ["tensorboard"]
    assert validate_config({"tensorboard": False}).report_to == []
    assert validate_config({"tensorboard": True, "report_to": ["mlflow"]}).report_to == ["mlflow", "tensorboard"]
