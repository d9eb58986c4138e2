"""The embedded model trained briefly on the sample data, CPT then IFT, through `forgellm train`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.runs.events import read_events

SAMPLE = Path(__file__).resolve().parents[1] / "dataset/sample"


def _train(*args: str) -> Path:
    result = CliRunner().invoke(root, ["train", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_embedded_model_cpt_then_ift_on_the_sample_data(workspace, embedded_model_dir):
    shutil.copytree(SAMPLE / "cpt", workspace / "cpt")
    shutil.copytree(SAMPLE / "ift", workspace / "ift")
    common = [
        "--set",
        f"model_name={embedded_model_dir}",
        "--set",
        "max_seq_length=64",
        "--set",
        "batch_size=2",
        "--set",
        "max_iterations=3",
        "--set",
        "steps_per_eval=3",
        "--set",
        "val_batches=2",
        "--set",
        "warmup_steps=0",
        "--set",
        "data_mixture_ratio=1.0",
        "--set",
        "engine=torch",
    ]
    cpt = _train(*common, "--set", "input_dir=cpt", "--set", "run_name=c", "--set", "learning_rate=1e-3")
    evals = read_events(cpt / "metrics.jsonl", event="eval")
    assert [e["step"] for e in evals] == [0, 3] and evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert json.loads((cpt / "data_stats.json").read_text())["mode"] == "cpt"

    ift = _train(
        *common,
        "--set",
        "training_type=ift",
        "--set",
        "input_dir=ift",
        "--set",
        f"model_name={cpt}",
        "--set",
        "run_name=i",
        "--set",
        "validation_split=0.2",
    )
    stats = json.loads((ift / "data_stats.json").read_text())
    assert stats["mode"] == "ift" and 0 < stats["train_target_tokens"] < stats["train_tokens"]  # assistant-only loss
    assert json.loads((ift / "final/adapter_config.json").read_text())["base_model_name_or_path"]
    assert read_events(ift / "metrics.jsonl", event="done")[-1]["status"] == "completed"
