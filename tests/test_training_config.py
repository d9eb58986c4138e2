"""Config validation and the config errors of `forgellm train`, through the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.errors import UserError
from forgellm.runs.events import read_events
from forgellm.training.config import build_config, config_keys, parse_overrides
from forgellm.training.schedule import learning_rate
from tests.cli_helpers import forgellm_error
from tests.training_helpers import prepared_data, tiny_config_values, write_config


def invoke(*args: str):
    return CliRunner().invoke(root, list(args))


def test_merge_order_defaults_file_then_set(tmp_path):
    path = write_config(tmp_path / "c.yaml", learning_rate=1e-4, batch_size=4)
    config = build_config(path, parse_overrides(["batch_size=8", "lora_target_modules=[q_proj, v_proj]"]))
    assert (config.learning_rate, config.batch_size, config.lora_rank) == (1e-4, 8, 8)
    assert config.lora_target_modules == ["q_proj", "v_proj"]


def test_unknown_key_suggests_the_closest(tmp_path):
    with pytest.raises(UserError, match=r"unknown key 'learning_rat'; did you mean 'learning_rate'"):
        build_config(write_config(tmp_path / "c.yaml", learning_rat=1e-4))


def test_wrong_type_names_key_and_type():
    with pytest.raises(UserError, match=r"batch_size='two'.*expected int"):
        build_config(None, {"batch_size": "two"})
    with pytest.raises(UserError, match=r"lr_schedule"):
        build_config(None, {"lr_schedule": "exponential"})


def test_print_config_lists_every_key_with_default_and_meaning():
    result = invoke("train", "--print-config")
    assert result.exit_code == 0, result.output
    for key, _default, meaning in config_keys():
        assert f"{key}:" in result.output and meaning in result.output
    assert len(config_keys()) >= 30


def test_sample_configs_are_valid():
    from pathlib import Path

    for name in ("cpt-sample.yaml", "ift-sample.yaml", "preference-sample.yaml"):
        config = build_config(Path(__file__).resolve().parents[1] / "configs" / name)
        assert config.training_type in name


@pytest.mark.parametrize("peak,kind", [(1.0, "cosine"), (1.0, "linear"), (1.0, "constant")])
def test_schedule_warmup_then_decay_to_floor(peak, kind):
    lrs = [
        learning_rate(s, peak=peak, total_steps=100, warmup_steps=10, schedule=kind, min_ratio=0.1) for s in range(100)
    ]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    if kind == "constant":
        assert lrs[-1] == 1.0
    else:
        assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] >= 0.1 and lrs[-1] < 0.12


# --- bad input through `forgellm train` ---------------------------------------------------------


def _config(workspace, tiny_model_dir, **overrides) -> str:
    prepared_data(workspace / "prepared")
    return str(write_config(workspace / "c.yaml", **tiny_config_values(tiny_model_dir, **overrides)))


def _train(workspace, tiny_model_dir, **overrides):
    return invoke("train", "--config", _config(workspace, tiny_model_dir, **overrides))


def _train_error(workspace, tiny_model_dir, **overrides) -> str:
    """The message `forgellm train` refuses this config with (exit status 2)."""
    return forgellm_error("train", "--config", _config(workspace, tiny_model_dir, **overrides))


def test_missing_dataset(workspace, tiny_model_dir):
    assert "input_dir 'nowhere' not found" in _train_error(workspace, tiny_model_dir, input_dir="nowhere")


def test_unknown_model(workspace, tiny_model_dir):
    assert "model 'no-such-model' not found" in _train_error(workspace, tiny_model_dir, model_name="no-such-model")


def test_batch_that_cannot_fit(workspace, tiny_model_dir):
    assert "longer than the model's context of 512" in _train_error(workspace, tiny_model_dir, max_seq_length=4096)
    assert "fewer than batch_size=64" in _train_error(workspace, tiny_model_dir, batch_size=64)


def test_existing_output_folder_needs_resume_or_overwrite(workspace, tiny_model_dir):
    first = _train(workspace, tiny_model_dir, run_name="same", max_iterations=2)
    assert first.exit_code == 0, first.output
    assert "already exists; pass --resume" in _train_error(workspace, tiny_model_dir, run_name="same", max_iterations=2)
    assert (workspace / "models/cpt/same/final/adapter_model.safetensors").exists()  # nothing lost
    path = workspace / "c.yaml"
    third = invoke("train", "--config", str(path), "--overwrite")
    assert third.exit_code == 0, third.output


def test_nan_loss_stops_with_error_event_and_keeps_last_good_checkpoint(workspace, tiny_model_dir):
    message = _train_error(
        workspace,
        tiny_model_dir,
        run_name="nan",
        learning_rate=1e12,
        warmup_steps=0,
        lr_schedule="constant",
        max_grad_norm=0.0,
        save_every=1,
        max_iterations=30,
    )
    assert "loss became" in message
    run = workspace / "models/cpt/nan"
    errors = read_events(run / "metrics.jsonl", event="error")
    assert errors and "loss became" in errors[-1]["message"]
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    checkpoints = sorted((run / "checkpoints").glob("step_*"))
    assert checkpoints, "the last good checkpoint must be kept"
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(checkpoints[-1] / "adapter_model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_docs_reference_every_key_with_its_default():
    from pathlib import Path

    import yaml

    docs = (Path(__file__).resolve().parents[1] / "docs/training.md").read_text()
    for key, default, _meaning in config_keys():
        value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        assert f"| `{key}` | `{value}` |" in docs, f"docs/training.md lacks {key} (default {value})"
