"""Analysis, dashboards, fuse, publish and adapter conversion on run folders written by
``forgellm train`` itself (tiny model, both engines), not on crafted ones.

The runs train on one repeated token pattern and validate on another whose tokens point the
other way in the tiny model's embedding space, so the validation loss falls a little, then rises
again while the training loss falls: the best checkpoint is an early one, not the last, by tenths
of a nat (a validation pattern of unrelated tokens stayed flat at ln(vocabulary), and its best
step flipped with the last bits of a BLAS's rounding).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file

from forgellm.analysis.analyze import analyze
from forgellm.analysis.runs import load_run
from forgellm.cli.main import root
from forgellm.engines import load_model
from forgellm.engines.base import SamplingParams
from forgellm.runs.checkpoints import read_best
from tests.publish_helpers import mlx_logits, torch_logits
from tests.training_helpers import patterned_sequences, tiny_config_values, write_config

pytestmark = pytest.mark.slow  # trains on both engines, then loads many models: minutes on 2 cores

ENGINES = ["torch", "mlx"]
STEPS = 12


def invoke(*args: str):
    return CliRunner().invoke(root, list(args))


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def diverging_data(folder: Path, model: Path) -> Path:
    """Prepared splits: a repeated pattern to train on, and to validate on, a pattern of the tokens
    whose embeddings point most against the training tokens' mean (the output layer is tied to
    the embedding, so raising the training tokens' logits lowers theirs)."""
    train = patterned_sequences(32, 32, seed=0)
    train.save(folder, "train")
    embedding = load_file(str(model / "model.safetensors"))["model.embed_tokens.weight"].astype(np.float64)
    opposite = np.argsort(embedding @ embedding[np.unique(train.tokens)].mean(axis=0))[:8]
    patterned_sequences(8, 32, seed=1, pattern=opposite).save(folder, "val")
    return folder


def train_run(home: Path, model: Path, engine: str, **overrides) -> Path:
    """Train a tiny run with ``forgellm train`` in workspace ``home``; its run folder."""
    diverging_data(home / "prepared", model)
    values = tiny_config_values(
        model,
        run_name=f"trained-{engine}",
        engine=engine,
        max_iterations=STEPS,
        steps_per_eval=3,
        save_every=3,
        max_checkpoints=10,
        early_stopping_patience=0,
        learning_rate=1e-2,
    )
    values.update(overrides)
    config = write_config(home / f"{engine}.yaml", **values)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FORGELLM_HOME", str(home))
        mp.chdir(home)
        ok("train", "--config", str(config))
    return home / "models" / "cpt" / f"trained-{engine}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """One finished run per engine (trained once for the module; tests copy them)."""
    home = tmp_path_factory.mktemp("trained-ws")
    return {engine: train_run(home, tiny_model_dir, engine) for engine in ENGINES}


@pytest.fixture
def run_in_workspace(workspace, trained):
    """Copy a trained run into this test's workspace (fuse and publish write beside or under it)."""

    def copy(engine: str) -> Path:
        dest = workspace / "models" / "cpt" / trained[engine].name
        shutil.copytree(trained[engine], dest, symlinks=True)
        return dest

    return copy


def adapter_logits(engine: str, base: Path, adapter: Path | None) -> np.ndarray:
    return torch_logits(base, adapter) if engine == "torch" else mlx_logits(base, adapter)


@pytest.mark.parametrize("engine", ENGINES)
def test_analysis_and_dashboards_of_a_trained_run(engine, run_in_workspace):
    run = run_in_workspace(engine)
    result = analyze(load_run(run))
    on_disk = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert result.steps_done == STEPS and result.total_steps == STEPS
    assert [c.name for c in result.checkpoints] == on_disk == [f"step_{s:06d}" for s in range(3, STEPS + 1, 3)]
    assert all(c.val_loss is not None and c.train_loss is not None for c in result.checkpoints)
    assert result.recommended is not None and result.recommended.name != on_disk[-1]
    assert result.best_checkpoint == read_best(run)["checkpoint"]
    assert result.best_val_step < STEPS and result.throughput["mean"] > 0
    json.dumps(result.to_dict(), allow_nan=False)
    output = ok("dashboard", str(run), "--format", "html")
    assert f"best checkpoint {result.best_checkpoint}" in output and f"recommended {result.recommended.name}" in output
    page = (run / "dashboard.html").read_text()
    assert "Chart.js v4" in page and result.recommended.name in page
    ok("dashboard", str(run))
    assert (run / "dashboard.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("engine", ENGINES)
def test_fuse_takes_the_best_checkpoint_of_a_trained_run(engine, run_in_workspace, tiny_model_dir):
    run = run_in_workspace(engine)
    best = read_best(run)["checkpoint"]  # the trainer's: what --checkpoint best means
    latest = sorted((run / "checkpoints").glob("step_*"))[-1]
    assert best != latest.name
    output = ok("fuse", str(run))
    fused = run / f"fused-{best}"
    assert best in output and fused.is_dir()
    chosen = adapter_logits(engine, tiny_model_dir, run / "checkpoints" / best)
    np.testing.assert_allclose(adapter_logits(engine, fused, None), chosen, atol=1e-3)
    assert not np.allclose(adapter_logits(engine, tiny_model_dir, latest), chosen, atol=1e-3)  # not the last
    # Either engine's fused folder loads in the other.
    other = mlx_logits if engine == "torch" else torch_logits
    np.testing.assert_allclose(other(fused), chosen, atol=1e-3)


@pytest.mark.parametrize("engine", ENGINES)
def test_publish_a_trained_run(engine, run_in_workspace, workspace, tiny_model_dir):
    run = run_in_workspace(engine)
    best = read_best(run)["checkpoint"]  # the trainer's: what --checkpoint best means
    output = ok("publish", f"cpt/{run.name}", "--name", f"pub-{engine}", "--gguf")
    out = workspace / "models" / "published" / f"pub-{engine}"
    assert best in output and str(out) in output
    card = (out / "README.md").read_text()
    for expected in (
        f"`{best}`",
        f"| engine | {engine} |",
        "| max_iterations | 12 |",
        "## Limitations",
        "| best validation loss |",
        f"pub-{engine}-f16.gguf",
    ):
        assert expected in card, expected
    assert json.loads((out / ".forgellm-model").read_text())["checkpoint"] == best
    expected_logits = adapter_logits(engine, tiny_model_dir, run / "checkpoints" / best)
    np.testing.assert_allclose(torch_logits(out), expected_logits, atol=1e-3)
    np.testing.assert_allclose(mlx_logits(out), expected_logits, atol=1e-3)
    import gguf

    assert len(gguf.GGUFReader(str(out / f"pub-{engine}-f16.gguf")).tensors) > 0


def greedy_text(engine: str, base: Path, adapter: Path) -> str:
    loaded = load_model(str(base), str(adapter), engine)
    try:
        chunks = list(loaded.generate("The capital of France is", SamplingParams(max_tokens=12, temperature=0.0)))
    finally:
        loaded.close()
    return "".join(c.text for c in chunks)


@pytest.mark.parametrize("engine,other,fmt", [("torch", "mlx", "mlx"), ("mlx", "torch", "peft")])
def test_a_trained_adapter_runs_on_the_other_engine(engine, other, fmt, run_in_workspace, tiny_model_dir):
    run = run_in_workspace(engine)
    converted = run.parent / f"{run.name}-{fmt}"
    ok("adapter", "convert", str(run / "final"), "--to", fmt, "--out", str(converted))
    expected = greedy_text(engine, tiny_model_dir, run / "final")
    assert expected != greedy_text(engine, tiny_model_dir, run / "checkpoints" / "step_000003")  # training mattered
    assert greedy_text(other, tiny_model_dir, converted) == expected
    np.testing.assert_allclose(
        adapter_logits(other, tiny_model_dir, converted),
        adapter_logits(engine, tiny_model_dir, run / "final"),
        atol=1e-3,
    )


@pytest.mark.parametrize(
    "engine,fine_tune_type", [("torch", "full"), ("mlx", "full"), ("torch", "dora"), ("mlx", "dora")]
)
def test_fuse_every_kind_of_trained_checkpoint(engine, fine_tune_type, workspace, tiny_model_dir):
    run = train_run(
        workspace,
        tiny_model_dir,
        engine,
        fine_tune_type=fine_tune_type,
        max_iterations=4,
        steps_per_eval=2,
        save_every=2,
        learning_rate=1e-3,
        num_layers=1,
    )
    ok("fuse", str(run), "--checkpoint", "latest", "--out", str(workspace / "fused"))
    checkpoint = run / "checkpoints" / "step_000004"
    if engine == "torch" and fine_tune_type == "full":
        expected = torch_logits(checkpoint)  # a full checkpoint is a model folder of its own
    else:
        expected = adapter_logits(engine, tiny_model_dir, checkpoint)
    assert not np.allclose(expected, torch_logits(tiny_model_dir), atol=1e-4)  # training changed the model
    np.testing.assert_allclose(torch_logits(workspace / "fused"), expected, atol=1e-3)
    np.testing.assert_allclose(mlx_logits(workspace / "fused"), expected, atol=1e-3)
