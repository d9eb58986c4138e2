"""PEFT <-> mlx-lm adapter conversion: the same numbers and greedy output on both engines."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from forgellm.cli.main import root
from tests.cli_helpers import forgellm_error
from tests.publish_helpers import (
    make_mlx_adapter,
    make_peft_adapter,
    mlx_greedy,
    mlx_logits,
    torch_greedy,
    torch_logits,
)


def invoke(*args: str):
    return CliRunner().invoke(root, list(args))


def test_peft_adapter_runs_on_mlx_with_the_same_output(tmp_path, tiny_model_dir):
    peft = make_peft_adapter(tiny_model_dir, tmp_path / "peft", layers=[1], alpha=12.0)
    result = invoke("adapter", "convert", str(peft), "--to", "mlx")
    assert result.exit_code == 0, result.output
    converted = tmp_path / "peft-mlx"
    config = json.loads((converted / "adapter_config.json").read_text())
    assert config["lora_parameters"]["scale"] == 3.0 and config["num_layers"] == 1
    expected = torch_logits(tiny_model_dir, peft)
    assert not np.allclose(expected, torch_logits(tiny_model_dir), atol=1e-2)  # the adapter matters
    np.testing.assert_allclose(mlx_logits(tiny_model_dir, converted), expected, atol=1e-4)
    assert mlx_greedy(tiny_model_dir, converted) == torch_greedy(tiny_model_dir, peft)


def test_mlx_adapter_runs_on_torch_with_the_same_output(tmp_path, tiny_model_dir):
    mlx = make_mlx_adapter(tiny_model_dir, tmp_path / "mlx", num_layers=1, scale=5.0)
    out = tmp_path / "as-peft"
    result = invoke("adapter", "convert", str(mlx), "--to", "peft", "--out", str(out))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["lora_alpha"] == 20.0 and config["r"] == 4
    expected = mlx_logits(tiny_model_dir, mlx)
    np.testing.assert_allclose(torch_logits(tiny_model_dir, out), expected, atol=1e-4)
    assert torch_greedy(tiny_model_dir, out) == mlx_greedy(tiny_model_dir, mlx)


def test_round_trip_keeps_every_tensor(tmp_path, tiny_model_dir):
    peft = make_peft_adapter(tiny_model_dir, tmp_path / "peft")
    assert invoke("adapter", "convert", str(peft), "--to", "mlx", "--out", str(tmp_path / "m")).exit_code == 0
    assert (
        invoke("adapter", "convert", str(tmp_path / "m"), "--to", "peft", "--out", str(tmp_path / "p")).exit_code == 0
    )
    before, after = load_file(peft / "adapter_model.safetensors"), load_file(tmp_path / "p/adapter_model.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_unportable_and_bad_requests_are_refused(tmp_path, tiny_model_dir):
    peft = make_peft_adapter(tiny_model_dir, tmp_path / "peft")
    cfg_path = peft / "adapter_config.json"
    assert "already a peft adapter" in forgellm_error("adapter", "convert", str(peft), "--to", "peft")
    (tmp_path / "taken").mkdir()
    message = forgellm_error("adapter", "convert", str(peft), "--to", "mlx", "--out", str(tmp_path / "taken"))
    assert "exists" in message
    config = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**config, "use_dora": True}))
    assert "DoRA" in forgellm_error("adapter", "convert", str(peft), "--to", "mlx")
    assert not (tmp_path / "peft-mlx").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
