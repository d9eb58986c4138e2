"""QLoRA: adapters on a quantized base. mlx (here on its CPU backend): `forgellm quantize` then
train, or `quantization: 4bit` in memory; fused back quantized or to full precision. torch
without CUDA: a clear refusal naming the mlx alternative."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgellm.runs.events import Event, read_events
from tests.cli_helpers import forgellm
from tests.training_helpers import prepared_data, tiny_config_values, write_config


def train(workspace: Path, model: Path | str, **overrides) -> tuple[int, str]:
    if not (workspace / "prepared").exists():
        prepared_data(workspace / "prepared")
    config = write_config(workspace / "c.yaml", **tiny_config_values(model, **overrides))
    code, _, err = forgellm("train", "--config", str(config))
    return code, err


def losses(run: Path) -> list[float]:
    return [e["loss"] for e in read_events(run / "metrics.jsonl", event=Event.TRAIN)]


@pytest.mark.slow  # quantize, train, two fuses, three generations: about two minutes
def test_mlx_trains_adapters_on_a_quantized_model_and_fuses_both_ways(workspace, tiny_model_dir):
    code, out, err = forgellm("quantize", str(tiny_model_dir), "--bits", "4", "--group-size", "32")
    assert code == 0, err
    quantized = Path(out.strip().splitlines()[-1])
    code, err = train(workspace, quantized, engine="mlx", max_iterations=20, run_name="q4")
    assert code == 0, err
    run = workspace / "models/cpt/q4"
    curve = losses(run)
    assert len(curve) == 20 and sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3  # it learns

    code, out, err = forgellm("fuse", "cpt/q4", "--checkpoint", "final", "--out", str(workspace / "kept"))
    assert code == 0, err
    assert json.loads((workspace / "kept/config.json").read_text())["quantization"]["bits"] == 4
    code, out, err = forgellm(
        "fuse", "cpt/q4", "--checkpoint", "final", "--dequantize", "--out", str(workspace / "full")
    )
    assert code == 0, err
    config = json.loads((workspace / "full/config.json").read_text())
    assert "quantization" not in config and "quantization_config" not in config
    for model in ("kept", "full"):
        code, out, err = forgellm(
            "cli",
            "generate",
            "--model",
            str(workspace / model),
            "--engine",
            "mlx",
            "--format",
            "raw",
            "--prompt",
            "Hello",
            "--max-tokens",
            "3",
            "--temperature",
            "0",
        )
        assert code == 0 and out.strip(), err
    # the full-precision fuse also loads in the torch engine
    code, out, err = forgellm(
        "cli",
        "generate",
        "--model",
        str(workspace / "full"),
        "--engine",
        "torch",
        "--format",
        "raw",
        "--prompt",
        "Hello",
        "--max-tokens",
        "3",
        "--temperature",
        "0",
    )
    assert code == 0 and out.strip(), err


def test_mlx_quantization_key_quantizes_the_base_in_memory(workspace, tiny_model_dir):
    code, err = train(workspace, tiny_model_dir, engine="mlx", quantization="4bit", max_iterations=20, run_name="ql")
    assert code == 0, err
    run = workspace / "models/cpt/ql"
    curve = losses(run)
    assert sum(curve[-3:]) / 3 < sum(curve[:3]) / 3 - 0.3
    adapter = json.loads((run / "final/adapter_config.json").read_text())
    assert adapter["base_quantization"] == {"bits": 4, "group_size": 64, "mode": "affine"}


def test_torch_4bit_without_cuda_is_refused_naming_mlx(workspace, tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: 4bit is allowed")
    code, err = train(workspace, tiny_model_dir, engine="torch", quantization="4bit", run_name="t4")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs bitsandbytes on a CUDA GPU" in err and "engine: mlx" in err and "forgellm quantize" in err
    assert not (workspace / "models/cpt/t4").exists()


def test_torch_refuses_an_mlx_quantized_base_and_full_finetune_refuses_quantization(workspace, tiny_model_dir):
    code, out, err = forgellm("quantize", str(tiny_model_dir), "--bits", "8", "--group-size", "32")
    assert code == 0, err
    code, err = train(workspace, Path(out.strip().splitlines()[-1]), engine="torch", run_name="tq")
    assert code == 2 and "is quantized for mlx" in err and "engine: mlx" in err
    code, err = train(
        workspace, tiny_model_dir, engine="mlx", quantization="4bit", fine_tune_type="full", run_name="fq"
    )
    assert code == 2 and "set fine_tune_type: lora or dora" in err
