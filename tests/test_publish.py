"""Fuse, quantise and publish through the CLI, on the tiny model with real adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.errors import ConflictError, NotFoundError, UserError
from tests.analysis_helpers import curve, make_events, write_run
from tests.publish_helpers import make_mlx_adapter, make_peft_adapter, mlx_logits, torch_logits


def invoke(*args: str):
    return CliRunner().invoke(root, list(args))


def two_checkpoint_run(workspace: Path, base: Path, *, fmt: str = "peft", name: str = "run") -> Path:
    """A run whose best checkpoint (lowest validation loss) is step 10, not the last one (step 20)."""
    events = make_events(curve(20), val={10: 1.5, 20: 2.5}, checkpoints=[10, 20])
    run = write_run(workspace, name, events, config={"model_name": str(base), "engine": "torch" if fmt == "peft" else "mlx",
                                                       "training_type": "cpt", "fine_tune_type": "lora"})
    make = make_peft_adapter if fmt == "peft" else make_mlx_adapter
    for seed, step in enumerate((10, 20)):
        make(base, run / "checkpoints" / f"step_{step:06d}", seed=seed)
    return run


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.exists() else []


def test_fuse_peft_takes_the_best_checkpoint_not_the_last(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    result = invoke("fuse", str(run))
    assert result.exit_code == 0, result.output
    out = run / "fused-step_000010"
    assert "step_000010" in result.output and out.is_dir()
    fused = torch_logits(out)
    np.testing.assert_allclose(fused, torch_logits(tiny_model_dir, run / "checkpoints/step_000010"), atol=1e-4)
    assert not np.allclose(fused, torch_logits(tiny_model_dir, run / "checkpoints/step_000020"), atol=1e-2)
    # The same folder loads in the mlx engine with the same numbers.
    np.testing.assert_allclose(mlx_logits(out), fused, atol=1e-3)
    assert (out / "tokenizer.json").exists() and (out / "chat_template.jinja").exists()


def test_fuse_mlx_adapter_at_a_named_step(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir, fmt="mlx")
    out = workspace / "fused20"
    result = invoke("fuse", str(run), "--checkpoint", "20", "--out", str(out))
    assert result.exit_code == 0, result.output
    expected = mlx_logits(tiny_model_dir, run / "checkpoints/step_000020")
    np.testing.assert_allclose(mlx_logits(out), expected, atol=1e-4)
    np.testing.assert_allclose(torch_logits(out), expected, atol=1e-3)  # transformers loads it too
    assert not (out / "README.md").exists()


def test_fuse_latest(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    assert invoke("fuse", "cpt/run", "--checkpoint", "latest").exit_code == 0
    assert (run / "fused-step_000020" / "config.json").exists()


def test_fuse_a_run_without_checkpoints(workspace, tiny_model_dir):
    run = write_run(workspace, "empty", make_events(curve(5)), config={"model_name": str(tiny_model_dir)})
    result = invoke("fuse", str(run))
    assert isinstance(result.exception, NotFoundError) and "has no checkpoints yet" in str(result.exception)


def test_fuse_a_checkpoint_that_does_not_exist(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    result = invoke("fuse", str(run), "--checkpoint", "step_000015")
    assert isinstance(result.exception, NotFoundError)
    assert "no checkpoint at step 15; available: step_000010, step_000020" in str(result.exception)
    result = invoke("fuse", str(run), "--checkpoint", "newest")
    assert isinstance(result.exception, UserError) and "not understood" in str(result.exception)


def test_fuse_refuses_an_existing_output_folder(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    out = workspace / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = invoke("fuse", str(run), "--out", str(out))
    assert isinstance(result.exception, ConflictError) and "already exists" in str(result.exception)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failed_fuse_leaves_nothing_behind(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    (run / "checkpoints/step_000010/adapter_model.safetensors").write_bytes(b"not a safetensors file")
    out = workspace / "out" / "fused"
    result = invoke("fuse", str(run), "--out", str(out))
    assert result.exception is not None
    assert not out.exists() and leftovers(out.parent) == []
