"""Preference runs through `forgellm train`: the tiny model learns to prefer the chosen responses
on held-out pairs, the metrics reach the events, resume equals an uninterrupted run, the full
fine-tune's reference is computed once and stored beside the prepared data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.runs.events import read_events
from tests.cli_helpers import forgellm, forgellm_error
from tests.training_helpers import preference_pairs, tiny_config_values, write_config

PREFERENCE_METRICS = ("reward_chosen", "reward_rejected", "margin", "accuracy", "logps_chosen", "logps_rejected")


def train_cli(*args: str) -> Path:
    result = CliRunner().invoke(root, ["train", *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return Path(result.stdout.strip().splitlines()[-1])


def pairs_config(workspace: Path, model: Path, **overrides) -> Path:
    if not (workspace / "pairs").exists():
        preference_pairs(48, 32, seed=0).save(workspace / "pairs", "train")
        preference_pairs(16, 32, seed=1).save(workspace / "pairs", "val")
    values = tiny_config_values(
        model, **{"input_dir": "pairs", "training_type": "preference", "val_batches": -1, **overrides}
    )
    return write_config(workspace / "c.yaml", **values)


@pytest.mark.parametrize(
    "engine,fine_tune_type,loss",
    [
        ("torch", "lora", "dpo"),
        ("torch", "full", "dpo"),
        # the loss formulas are checked against TRL's and torch's in the fast suite; training runs with the slow tests
        pytest.param("torch", "lora", "simpo", marks=pytest.mark.slow),
        pytest.param("torch", "lora", "orpo", marks=pytest.mark.slow),
        pytest.param("mlx", "lora", "dpo", marks=pytest.mark.slow),
    ],
)
def test_a_tiny_model_learns_to_prefer_the_chosen_responses(workspace, tiny_model_dir, engine, fine_tune_type, loss):
    lr = 5e-3 if fine_tune_type == "lora" else 1e-3
    run = train_cli(
        "--config",
        str(
            pairs_config(
                workspace,
                tiny_model_dir,
                run_name=f"p-{loss}",
                preference_loss=loss,
                fine_tune_type=fine_tune_type,
                learning_rate=lr,
                max_iterations=24,
                steps_per_eval=12,
                save_every=12,
                engine=engine,
            )
        ),
    )
    assert run.parent == workspace / "models/ift"  # a preference run lives beside the IFT runs
    evals = read_events(run / "metrics.jsonl", event="eval")
    first, last = evals[0], evals[-1]
    assert set(f"val_{m}" for m in PREFERENCE_METRICS) <= set(last) and "val_ppl" not in last
    assert last["val_accuracy"] >= 0.9 > first["val_accuracy"] - 0.3  # held-out pairs: well above chance
    assert last["val_loss"] < first["val_loss"] and last["val_margin"] > first["val_margin"]
    train = read_events(run / "metrics.jsonl", event="train")
    assert all(set(PREFERENCE_METRICS) <= set(e) for e in train)
    assert (run / "final").is_dir()
    stored = list((workspace / "pairs").glob("reference-*/train.npy"))
    # the reference is stored only where it cannot come from the adapter switched off
    assert len(stored) == (1 if loss == "dpo" and (fine_tune_type == "full" or engine == "mlx") else 0)


def test_resume_mid_run_equals_the_uninterrupted_run(workspace, tiny_model_dir):
    cfg = pairs_config(
        workspace,
        tiny_model_dir,
        run_name="whole",
        fine_tune_type="full",
        learning_rate=1e-3,
        max_iterations=8,
        save_every=4,
        steps_per_eval=4,
        max_checkpoints=5,
        grad_accumulation_steps=2,
    )
    whole = train_cli("--config", str(cfg))
    cut = whole.parent / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints/step_000008")
    shutil.rmtree(cut / "final")
    train_cli("--resume", str(cut))

    def after_resume(run: Path, event: str) -> dict[int, dict]:
        events = read_events(run / "metrics.jsonl")
        start = max((i for i, e in enumerate(events) if e["event"] == "resume"), default=0)
        return {e["step"]: e for e in events[start:] if e["event"] == event}

    expected, got = after_resume(whole, "train"), after_resume(cut, "train")
    assert sorted(got) == [5, 6, 7, 8]
    for step in got:
        for key in ("loss", *PREFERENCE_METRICS):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-4, abs=1e-4), (step, key)
    assert after_resume(cut, "eval")[8]["val_accuracy"] == after_resume(whole, "eval")[8]["val_accuracy"]
    # forgellm eval on a preference run: the perplexity of its held-out chosen responses
    code, out, err = forgellm("eval", str(whole), "--json")
    assert code == 0, err
    assert math.isfinite(json.loads(out)["domain_ppl"])


def test_preference_training_refuses_cpt_data_and_the_reverse(workspace, tiny_model_dir):
    from tests.training_helpers import prepared_data

    prepared_data(workspace / "prepared")
    cfg = write_config(workspace / "c.yaml", **tiny_config_values(tiny_model_dir, training_type="preference"))
    assert "training_type: preference cannot train on token sequences" in forgellm_error("train", "--config", str(cfg))
    preference_pairs(8, 32).save(workspace / "pairs", "train")
    preference_pairs(4, 32, seed=1).save(workspace / "pairs", "val")
    cfg = write_config(workspace / "c.yaml", **tiny_config_values(tiny_model_dir, input_dir="pairs"))
    assert "training_type: cpt cannot train on preference pairs" in forgellm_error("train", "--config", str(cfg))


def test_eval_pairs_scores_the_held_out_pairs_without_a_reference(workspace, tiny_model_dir):
    """`forgellm eval --pairs`: the share of validation pairs whose chosen response the model finds more
    likely per token; the same pairs with chosen and rejected swapped score the complement."""
    from forgellm.data.sequences import PreferencePairs

    val = preference_pairs(6, 32, seed=1)
    for folder, pairs in (("pairs", val), ("swapped", PreferencePairs(val.tokens[:, ::-1], val.mask[:, ::-1]))):
        preference_pairs(8, 32).save(workspace / folder, "train")
        pairs.save(workspace / folder, "val")
    reports = {}
    for folder in ("pairs", "swapped"):
        code, out, err = forgellm("eval", str(tiny_model_dir), "--pairs", folder, "--json")
        assert code == 0, err
        reports[folder] = json.loads(out)
    straight, swapped = reports["pairs"], reports["swapped"]
    assert straight["preference_total"] == swapped["preference_total"] == 6
    assert straight["preference_correct"] + swapped["preference_correct"] == 6  # a random model: no exact ties
    assert straight["preference_accuracy"] == pytest.approx(straight["preference_correct"] / 6)
    assert straight["preference_margin"] == pytest.approx(-swapped["preference_margin"], rel=1e-4)
    code, out, _ = forgellm("eval", str(tiny_model_dir), "--pairs", "pairs")
    assert code == 0 and f"preference:   {straight['preference_accuracy']:.1%} (" in out


def test_eval_pairs_refuses_a_folder_without_pairs(workspace, tiny_model_dir):
    from tests.training_helpers import prepared_data

    prepared_data(workspace / "prepared")
    assert "--pairs prepared has no validation preference pairs" in forgellm_error(
        "eval", str(tiny_model_dir), "--pairs", "prepared"
    )
