"""The training loop on both engines with the tiny model: learning, resume, early stopping, signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.runs.events import read_events
from tests.cli_helpers import forgellm_error
from tests.training_helpers import patterned_sequences, prepared_data, tiny_config_values, write_config

ENGINES = ["torch", "mlx"]
FORGELLM = Path(sys.executable).with_name("forgellm")


def train_cli(*args: str):
    result = CliRunner().invoke(root, ["train", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return Path(result.stdout.strip().splitlines()[-1])


def config_file(workspace: Path, model: Path, **overrides) -> Path:
    if not (workspace / "prepared").exists():
        prepared_data(workspace / "prepared")
    return write_config(workspace / "c.yaml", **tiny_config_values(model, **overrides))


def train_losses(run: Path, after: str | None = None) -> dict[int, float]:
    events = read_events(run / "metrics.jsonl")
    if after is not None:  # only the events written after the last `after` event
        last = max(i for i, e in enumerate(events) if e["event"] == after)
        events = events[last:]
    return {e["step"]: e["loss"] for e in events if e["event"] == "train"}


@pytest.mark.parametrize(
    "engine,fine_tune_type",
    [
        ("torch", "lora"),
        ("torch", "dora"),
        ("torch", "full"),
        ("mlx", "lora"),
        # one mlx variant keeps the fast suite fast; the others run with the slow tests
        pytest.param("mlx", "dora", marks=pytest.mark.slow),
        pytest.param("mlx", "full", marks=pytest.mark.slow),
    ],
)
def test_loss_falls_and_run_folder_is_complete(workspace, tiny_model_dir, engine, fine_tune_type):
    run = train_cli(
        "--config",
        str(config_file(workspace, tiny_model_dir, engine=engine, fine_tune_type=fine_tune_type, run_name="r")),
    )
    assert run == workspace / "models/cpt/r"
    losses = train_losses(run)
    assert len(losses) == 20 and losses[20] < losses[1] - 0.5, losses
    events = [e["event"] for e in read_events(run / "metrics.jsonl")]
    assert events[0] == "start" and events[-1] == "done" and events.count("eval") == 5
    for name in ("config.yaml", "metrics.jsonl", "train.log", "data_stats.json", "status.json", ".forgellm-run"):
        assert (run / name).exists(), name
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    best = json.loads((run / "checkpoints/best.json").read_text())
    assert (run / "checkpoints" / best["checkpoint"]).is_dir()
    assert len(list((run / "checkpoints").glob("step_*"))) <= 4  # last 3 + best
    final = run / "final"
    if engine == "torch" and fine_tune_type != "full":
        assert (final / "adapter_model.safetensors").exists()
        assert json.loads((final / "adapter_config.json").read_text())["use_dora"] == (fine_tune_type == "dora")
    elif engine == "torch":
        assert (final / "config.json").exists() and (final / "tokenizer.json").exists()
    else:
        assert (final / "adapters.safetensors").exists() and (final / "adapter_config.json").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_final_adapter_loads_in_its_engine(workspace, tiny_model_dir, engine):
    run = train_cli(
        "--config", str(config_file(workspace, tiny_model_dir, engine=engine, max_iterations=3, run_name="r"))
    )
    if engine == "torch":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run / "final")
        assert model.peft_config["default"].r == 4
    else:
        import mlx_lm

        model, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(run / "final"))
        assert any("lora_a" in k for k, _ in __import__("mlx.utils").utils.tree_flatten(model.parameters()))


@pytest.mark.parametrize("engine", ENGINES)
def test_resume_follows_the_uninterrupted_loss_curve(workspace, tiny_model_dir, engine):
    cfg = config_file(
        workspace,
        tiny_model_dir,
        engine=engine,
        run_name="full",
        max_iterations=12,
        save_every=6,
        steps_per_eval=6,
        max_checkpoints=5,
        lora_dropout=0.1,
        grad_accumulation_steps=2,
    )
    uninterrupted = train_cli("--config", str(cfg))
    # The same run as if killed right after its step-6 checkpoint.
    cut = workspace / "models/cpt/cut"
    shutil.copytree(uninterrupted, cut)
    shutil.rmtree(cut / "checkpoints/step_000012")
    shutil.rmtree(cut / "final")
    resumed = train_cli("--resume", str(cut))
    assert resumed == cut.resolve()
    expected, got = train_losses(uninterrupted), train_losses(cut, after="resume")
    assert sorted(got) == list(range(7, 13))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-4), (step, got, expected)


@pytest.mark.parametrize("engine", ENGINES)
def test_early_stopping_on_an_overfitting_setup(workspace, tiny_model_dir, engine):
    # Train on 4 sequences of one pattern, validate on another: validation loss climbs.
    patterned_sequences(4, 32, seed=0).save(workspace / "prepared", "train")
    patterned_sequences(8, 32, seed=7).save(workspace / "prepared", "val")
    cfg = config_file(
        workspace,
        tiny_model_dir,
        engine=engine,
        run_name="o",
        learning_rate=2e-2,
        max_iterations=60,
        steps_per_eval=2,
        save_every=2,
        overfitting_threshold=0.002,
        early_stopping_patience=2,
        warmup_steps=0,
        lr_schedule="constant",
    )
    run = train_cli("--config", str(cfg))
    events = read_events(run / "metrics.jsonl")
    kinds = [e["event"] for e in events]
    assert "overfitting" in kinds and "early_stop" in kinds
    done = events[-1]
    assert done["event"] == "done" and done["early_stopped"] and done["step"] < 60
    saved = {e["path"].split("/")[-1]: e["val_loss"] for e in events if e["event"] == "checkpoint"}
    best = json.loads((run / "checkpoints/best.json").read_text())
    assert best["checkpoint"] == min(saved, key=saved.get)  # kept, though older than the last 3
    assert (run / "checkpoints" / best["checkpoint"]).is_dir()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_sigterm_saves_a_loadable_checkpoint_and_resume_finishes(workspace, tiny_model_dir, engine):
    cfg = config_file(
        workspace,
        tiny_model_dir,
        engine=engine,
        run_name="sig",
        max_iterations=100000,
        save_every=100000,
        steps_per_eval=100000,
    )
    proc = subprocess.Popen(
        [str(FORGELLM), "train", "--config", str(cfg)],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FORGELLM_HOME": str(workspace)},
    )
    metrics = workspace / "models/cpt/sig/metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not any(e["step"] >= 3 for e in read_events(metrics, event="train")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "--resume" in err and out.strip().endswith("sig")
    run = workspace / "models/cpt/sig"
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    done = read_events(metrics, event="done")[-1]
    assert done["status"] == "stopped"
    checkpoint = run / "checkpoints" / f"step_{done['step']:06d}"
    assert (checkpoint / "trainer_state.json").exists()
    resumed = train_cli("--resume", str(run), "--set", f"max_iterations={done['step'] + 2}")
    assert read_events(resumed / "metrics.jsonl", event="done")[-1]["status"] == "completed"


def _adapter_tensors(final: Path, engine: str) -> dict:
    if engine == "torch":
        from safetensors.torch import load_file

        return load_file(str(final / "adapter_model.safetensors"))
    import mlx.core as mx

    return mx.load(str(final / "adapters.safetensors"))


@pytest.mark.parametrize("engine", ENGINES)
def test_num_layers_trains_only_the_top_blocks(workspace, tiny_model_dir, engine):
    run = train_cli(
        "--config",
        str(config_file(workspace, tiny_model_dir, engine=engine, num_layers=1, max_iterations=2, run_name="top")),
    )
    names = list(_adapter_tensors(run / "final", engine))
    assert names and all(".layers.1." in n for n in names), names  # the tiny model has blocks 0 and 1
    start = read_events(run / "metrics.jsonl", event="start")[0]
    assert 0 < start["trainable_params"] < start["total_params"]


def test_full_fine_tuning_of_the_top_block_leaves_the_others_untouched(workspace, tiny_model_dir):
    from safetensors.torch import load_file

    run = train_cli(
        "--config",
        str(
            config_file(
                workspace, tiny_model_dir, fine_tune_type="full", num_layers=1, max_iterations=2, run_name="full-top"
            )
        ),
    )
    base, tuned = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(run / "final/model.safetensors"))
    changed = {name for name in base if name in tuned and not base[name].equal(tuned[name])}
    assert changed and all(".layers.1." in name for name in changed), changed


def test_too_many_layers_is_a_clear_error(workspace, tiny_model_dir):
    message = forgellm_error(
        "train", "--config", str(config_file(workspace, tiny_model_dir, num_layers=5, run_name="x"))
    )
    assert "num_layers=5" in message and "has 2" in message


@pytest.mark.slow  # torch.compile takes about a minute even for the tiny model on 2 cores
def test_compile_gives_the_losses_of_the_plain_model(workspace, tiny_model_dir):
    losses = []
    for compiled in (False, True):
        run = train_cli(
            "--config",
            str(
                config_file(
                    workspace,
                    tiny_model_dir,
                    engine="torch",
                    max_iterations=3,
                    compile=compiled,
                    run_name=f"compile{compiled}",
                )
            ),
        )
        losses.append(train_losses(run))
        assert (run / "final" / "adapter_model.safetensors").exists()
    assert losses[0].keys() == losses[1].keys() and len(losses[0]) == 3
    for step in losses[0]:
        assert losses[1][step] == pytest.approx(losses[0][step], rel=1e-4), (losses[0], losses[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_grad_checkpointing_changes_memory_not_the_losses(workspace, tiny_model_dir, engine):
    losses = []
    for checkpointing in (False, True):
        run = train_cli(
            "--config",
            str(
                config_file(
                    workspace,
                    tiny_model_dir,
                    engine=engine,
                    max_iterations=3,
                    grad_checkpointing=checkpointing,
                    run_name=f"gc{checkpointing}",
                )
            ),
        )
        losses.append(train_losses(run))
    assert losses[0].keys() == losses[1].keys()
    for step in losses[0]:
        assert losses[1][step] == pytest.approx(losses[0][step], rel=1e-4), (losses[0], losses[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_ift_continues_the_adapter_of_a_cpt_run(workspace, tiny_model_dir, engine):
    prepared_data(workspace / "prepared")
    patterned_sequences(8, 32, seed=0).save(workspace / "prepared", "val")  # the pattern CPT learns
    cpt = train_cli(
        "--config", str(config_file(workspace, tiny_model_dir, engine=engine, run_name="c", max_iterations=10))
    )
    ift = train_cli(
        "--config",
        str(
            config_file(
                workspace,
                tiny_model_dir,
                engine=engine,
                run_name="i",
                training_type="ift",
                model_name=str(cpt),
                max_iterations=2,
            )
        ),
    )
    assert ift == workspace / "models/ift/i"
    # Same validation data: the IFT run starts exactly where the CPT adapter ended.
    cpt_end = read_events(cpt / "metrics.jsonl", event="eval")[-1]["val_loss"]
    ift_start = read_events(ift / "metrics.jsonl", event="eval")[0]["val_loss"]
    assert ift_start == pytest.approx(cpt_end, rel=1e-4)
    assert ift_start < read_events(cpt / "metrics.jsonl", event="eval")[0]["val_loss"] - 0.2  # the adapter moved it


def test_plain_progress_lines_off_a_terminal(workspace, tiny_model_dir):
    result = CliRunner().invoke(root, ["train", "--config", str(config_file(workspace, tiny_model_dir, run_name="p"))])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("step 1/20 loss ") and " tok/s " in line and " eta " in line for line in lines)
    assert any(line.startswith("step 20/20 loss ") for line in lines)
    assert any(line.startswith("step 20: val_loss ") for line in lines)
    assert result.stdout.strip() == str(workspace / "models/cpt/p")  # the run folder, alone on stdout


def test_progress_bar_on_a_terminal():
    import io

    from forgellm.training.callbacks import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = Progress(10, stream=screen)
    for step in (1, 2):
        progress({"event": "train", "step": step, "loss": 2.5, "tokens_per_second": 321.0, "learning_rate": 1e-3})
    progress({"event": "done", "step": 2})
    text = screen.getvalue()
    assert "2/10" in text and "loss=2.500" in text and "tok_s=321" in text and "<" in text  # "<" precedes the ETA
