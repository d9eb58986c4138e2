"""Fuse, quantise and publish through the CLI, on the tiny model with real adapters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.errors import UserError
from tests.analysis_helpers import curve, make_events, write_run
from tests.cli_helpers import forgellm, forgellm_error
from tests.publish_helpers import make_mlx_adapter, make_peft_adapter, mlx_logits, torch_logits


def invoke(*args: str):
    return CliRunner().invoke(root, list(args))


def two_checkpoint_run(workspace: Path, base: Path, *, fmt: str = "peft", name: str = "run") -> Path:
    """A run whose best checkpoint (lowest validation loss) is step 10, not the last one (step 20)."""
    events = make_events(curve(20), val={10: 1.5, 20: 2.5}, checkpoints=[10, 20])
    run = write_run(
        workspace,
        name,
        events,
        config={
            "model_name": str(base),
            "engine": "torch" if fmt == "peft" else "mlx",
            "training_type": "cpt",
            "fine_tune_type": "lora",
        },
        checkpoint_dirs=[10, 20],
    )
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
    assert "has no checkpoints yet" in forgellm_error("fuse", str(run))


def test_fuse_a_checkpoint_that_does_not_exist(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    message = forgellm_error("fuse", str(run), "--checkpoint", "step_000015")
    assert "no checkpoint at step 15; available: step_000010, step_000020" in message
    assert "not understood" in forgellm_error("fuse", str(run), "--checkpoint", "newest")


def test_fuse_refuses_an_existing_output_folder(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    out = workspace / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "already exists" in forgellm_error("fuse", str(run), "--out", str(out))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_failed_fuse_leaves_nothing_behind(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    (run / "checkpoints/step_000010/adapter_model.safetensors").write_bytes(b"not a safetensors file")
    out = workspace / "out" / "fused"
    forgellm_error("fuse", str(run), "--out", str(out))
    assert not out.exists() and leftovers(out.parent) == []


def test_fuse_final_before_training_ended_and_an_unknown_base_model(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    assert "has no final/ folder yet" in forgellm_error("fuse", str(run), "--checkpoint", "final")
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(tiny_model_dir), "no-such-base-model"))
    assert "no-such-base-model" in forgellm_error("fuse", str(run))
    assert not any(p.name.startswith("fused") or p.name.endswith(".tmp") for p in run.iterdir())


def test_a_failed_publish_leaves_nothing_behind(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    (run / "checkpoints/step_000010/adapter_model.safetensors").write_bytes(b"broken")
    forgellm_error("publish", "cpt/run", "--name", "broken", "--gguf")
    published = workspace / "models/published"
    assert not (published / "broken").exists() and leftovers(published) == []


# --- publish -------------------------------------------------------------------------------------


def test_publish_writes_a_complete_loadable_model(workspace, tiny_model_dir):
    run = two_checkpoint_run(workspace, tiny_model_dir)
    (run / "data_stats.json").write_text(json.dumps({"files": 3, "documents": 42, "filtered": {"total": 1}}))
    (run / "eval.json").write_text(json.dumps({"qa_accuracy": 0.61, "val_perplexity": 7.5}))
    result = invoke("publish", "cpt/run", "--name", "my-model", "--gguf")
    assert result.exit_code == 0, result.output
    out = workspace / "models/published/my-model"
    assert str(out) in result.output and "step_000010" in result.output
    card = (out / "README.md").read_text()
    for expected in (
        f"base_model: {tiny_model_dir.name}",
        "| documents | 42 |",
        "| filtered.total | 1 |",
        "| model_name |",
        "best validation loss | 1.5",
        "`step_000010`",
        "| qa_accuracy | 0.61 |",
        "![Training dashboard](dashboard.png)",
        "## Limitations",
        "my-model-f16.gguf",
    ):
        assert expected in card, expected
    assert (out / "dashboard.png").read_bytes().startswith(b"\x89PNG")
    marker = json.loads((out / ".forgellm-model").read_text())
    assert marker["checkpoint"] == "step_000010" and marker["gguf"] == "my-model-f16.gguf"
    assert marker["modelfile"] == "Modelfile" and "FROM ./my-model-f16.gguf" in (out / "Modelfile").read_text()
    assert "ollama create my-model -f Modelfile && ollama run my-model" in card
    assert "llama-cli -m my-model-f16.gguf" in card
    expected_logits = torch_logits(tiny_model_dir, run / "checkpoints/step_000010")
    np.testing.assert_allclose(torch_logits(out), expected_logits, atol=1e-4)
    np.testing.assert_allclose(mlx_logits(out), expected_logits, atol=1e-3)

    import gguf

    reader = gguf.GGUFReader(str(out / "my-model-f16.gguf"))
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "blk.1.attn_q.weight", "output_norm.weight"} <= names
    from forgellm.models.resolve import resolve

    info = resolve("published/my-model")
    assert info.path == out.resolve() and info.is_instruct and not info.is_adapter


def test_publish_refuses_an_existing_name_and_a_bad_name(workspace, tiny_model_dir):
    two_checkpoint_run(workspace, tiny_model_dir)
    taken = workspace / "models/published/taken"
    taken.mkdir(parents=True)
    assert "taken" in forgellm_error("publish", "cpt/run", "--name", "taken")
    assert list(taken.iterdir()) == [] and leftovers(taken.parent) == []
    assert "not a usable folder name" in forgellm_error("publish", "cpt/run", "--name", "../escape")


def test_publish_a_run_without_checkpoints(workspace, tiny_model_dir):
    write_run(workspace, "empty", make_events(curve(5)), config={"model_name": str(tiny_model_dir)})
    assert "has no checkpoints" in forgellm_error("publish", "cpt/empty")
    assert not (workspace / "models/published").exists() or not any((workspace / "models/published").iterdir())


# --- quantize ------------------------------------------------------------------------------------


def test_quantize_with_mlx_gives_a_model_that_loads(workspace, tiny_model_dir):
    out = workspace / "q4"
    result = invoke("quantize", str(tiny_model_dir), "--bits", "4", "--group-size", "32", "--out", str(out))
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    assert "loads with the mlx engine" in result.output
    logits = mlx_logits(out)
    assert np.isfinite(logits).all()
    assert np.corrcoef(logits[-1], mlx_logits(tiny_model_dir)[-1])[0, 1] > 0.9  # close to the original


@pytest.mark.parametrize("bits,group_size", [(8, 64), (4, 128)])
def test_quantize_other_widths_and_groups_load_in_forgellm(workspace, tiny_model_dir, bits, group_size):
    name = f"{tiny_model_dir.name}-mlx-q{bits}-g{group_size}"  # the default output name
    out = workspace / "models" / "published" / name
    result = invoke("quantize", str(tiny_model_dir), "--bits", str(bits), "--group-size", str(group_size))
    assert result.exit_code == 0, result.output
    assert out.is_dir() and str(out) in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["quantization"]["bits"], config["quantization"]["group_size"]) == (bits, group_size)
    logits = mlx_logits(out)
    assert np.corrcoef(logits[-1], mlx_logits(tiny_model_dir)[-1])[0, 1] > 0.9
    generated = invoke(
        "cli",
        "generate",
        "--model",
        f"published/{name}",
        "--engine",
        "mlx",
        "--prompt",
        "Hello",
        "--format",
        "raw",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
    )
    assert generated.exit_code == 0, generated.output


def test_quantize_unsupported_settings_are_clear_errors(workspace, tiny_model_dir):
    assert "--engine mlx" in forgellm_error("quantize", str(tiny_model_dir), "--bits", "4", "--engine", "torch")
    code, _, err = forgellm("quantize", str(tiny_model_dir), "--bits", "3")  # click's usage error
    assert code == 2 and "'3' is not one of '4', '8'" in err
    from forgellm.publishing.quantize import quantize

    with pytest.raises(UserError, match="--group-size 16 is not supported"):
        quantize(str(tiny_model_dir), bits=4, group_size=16)
    assert not (workspace / "models/published").exists() or not any((workspace / "models/published").iterdir())


def test_quantize_refuses_an_existing_output(workspace, tiny_model_dir):
    out = workspace / "exists"
    out.mkdir()
    assert "exists" in forgellm_error("quantize", str(tiny_model_dir), "--bits", "8", "--out", str(out))
