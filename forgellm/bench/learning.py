"""Learning quality of the shipped sample recipes: what a user's model knows after CPT, after IFT, then
after preference tuning.

The suite does what the README tells a user to do, in a temporary workspace: the sample dataset
written there (`write_sample`), the general-text set copied in as ``dataset/general``, the
embedded model linked as ``models/base/SmolLM2-135M-Instruct`` (what ``default`` resolves to), then
the stages of `STAGES` in order, each ``forgellm train --config configs/<stage>-sample.yaml``
continuing the previous stage's run (CPT; IFT on the CPT adapter; DPO on the IFT adapter), through
the real CLI in subprocesses, so each stage's wall time is the one a user sees (start-up, data
preparation, training, evaluations and checkpoints included). Paths the configs name
(``input_dir``, ``documents_dir``, ``general_data_dir``, ``eval_qa``...) are workspace-relative, so
they resolve in the temporary workspace.

Then the base model (``default``) and every stage's run are evaluated alike with
`forgellm.training.evaluate.evaluate_model`, as ``forgellm eval NAME --qa dataset/sample/qa
--data dataset/sample/cpt --general dataset/general --pairs PAIRS --max-seq-length 1024`` would:
held-out QA accuracy per file (``chat-facts``: facts the chats also teach, in other words;
``document-facts``: facts only the documents hold), domain perplexity on the validation split of
the sample documents, general-text perplexity, and preference accuracy on the held-out pairs
(``PAIRS``: the preference run's prepared data, so its validation split: the pairs it did not
train on; the share whose correct answer the model finds more likely per token than the fluent
wrong one, which needs no reference and so compares every stage alike). Rows per stage: both
accuracies, both perplexities, the preference accuracy and margin; for the trained stages the
general perplexity has the base model's as baseline (its ratio - 1 is the rise), and the stage's
training wall time. A preference stage adds the run's own reward accuracy and margin on those
pairs from its ``eval`` events, at the end against step 0 (for DPO 0 there by construction: its
rewards are relative to the model it starts from). `readme_table` (``python -m
forgellm.bench.learning RESULTS.json`` on the output of ``forgellm bench --only learning --json``)
prints them as the README's table.

The recipes are read from ``$FORGELLM_BENCH_CONFIGS`` when set, else from the ``configs/`` folder
of the source checkout this package runs from, else from ``configs/`` of the current workspace;
the general-text set likewise from ``dataset/general`` of the checkout, else of the workspace.

Quick mode (``make test``): the same flow on the tests' tiny random llama (linked where the
embedded model would be), the recipes cut to two steps each (``--set max_iterations=2``, no
``num_epochs`` or ``min_iterations`` (and its fill), no ``eval_qa``, the sequence length cut to the tiny model's context where the recipe's
is longer), three questions per QA file, 8-token answers and 128-token perplexity windows: it checks
the harness, not the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forgellm.bench._common import embedded_model, suite_results, tiny_model
from forgellm.runs.events import read_events
from forgellm.runs.layout import DATA_STATS_FILE, METRICS_FILE

REPO = Path(__file__).resolve().parents[2]
CONFIGS_ENV = "FORGELLM_BENCH_CONFIGS"
# (stage, recipe, README label), in training order: each recipe continues the previous stage's run.
STAGES = (
    ("cpt", "cpt-sample.yaml", "after CPT"),
    ("ift", "ift-sample.yaml", "after IFT (on the CPT adapter)"),
    ("preference", "preference-sample.yaml", "after DPO (on the IFT adapter)"),
)
RECIPES = {stage: recipe for stage, recipe, _ in STAGES}
QA_FILES = ("chat-facts", "document-facts")
FULL = {"max_tokens": 48, "max_seq_length": 1024}  # `forgellm eval`'s answer length; the table's window
QUICK = {"max_tokens": 8, "max_seq_length": 128, "questions": 3}
QUICK_SETS = (
    "max_iterations=2",
    "num_epochs=",  # a recipe stated in epochs would conflict with max_iterations
    "min_iterations=",  # and so would its floor of steps
    "min_iterations_fill=repeat",  # which has nothing to fill then
    "eval_qa=",
    "best_metric=val_loss",  # qa_accuracy needs eval_qa
    "warmup_steps=0",
    "steps_per_eval=2",
    "val_batches=2",
    "save_every=2",
)


def run(quick: bool) -> list[dict[str, Any]]:
    configs, general = configs_dir(), general_dir()
    with tempfile.TemporaryDirectory(prefix="forgellm-bench-learning-") as tmp:
        workspace = Path(tmp)
        model = _prepare(workspace, general, quick)
        qa = _quick_qa(workspace) if quick else workspace / "dataset" / "sample" / "qa"
        settings = QUICK if quick else FULL
        measured: list[tuple[str, str, float | None]] = [("base", "default", None)]
        for stage, config, _ in STAGES:
            sets = quick_sets(configs / config, workspace) if quick else ()
            run_dir, seconds = train(workspace, configs / config, sets)
            measured.append((stage, str(run_dir), seconds))
        engine = _engine_of(Path(measured[1][1]))  # the base model is evaluated on the engine the runs used
        pairs = held_out_pairs([Path(name) for _, name, _ in measured[1:]])
        reports = {stage: _evaluate(name, workspace, qa, settings, engine, pairs) for stage, name, _ in measured}
        evals = {stage: read_events(Path(name) / METRICS_FILE, event="eval") for stage, name, _ in measured[1:]}
    what = f"{model}, {engine} engine" + (", first 3 questions" if quick else "")
    rows: list[dict[str, Any]] = []
    for stage, _, wall in measured:
        rows += stage_rows(stage, reports[stage], reports["base"], wall, what)
        rows += reward_rows(stage, evals.get(stage, []))
    return rows


def configs_dir() -> Path:
    """Where the recipes are read from (see the module docstring)."""
    chosen = os.environ.get(CONFIGS_ENV)
    candidates = [Path(chosen)] if chosen else [REPO / "configs", Path.cwd() / "configs"]
    for folder in candidates:
        if all((folder / name).is_file() for name in RECIPES.values()):
            return folder.resolve()
    wanted = ", ".join(RECIPES.values())
    raise RuntimeError(
        f"the learning benchmark needs {wanted} in one of {', '.join(map(str, candidates))}; "
        f"set {CONFIGS_ENV} to the folder that holds them"
    )


def general_dir() -> Path:
    for folder in (REPO / "dataset" / "general", Path.cwd() / "dataset" / "general"):
        if any(folder.glob("*.md")):
            return folder
    raise RuntimeError(
        "the learning benchmark needs the general-text set dataset/general (run it from a "
        "ForgeLLM source checkout or a workspace that has it)"
    )


def _prepare(workspace: Path, general: Path, quick: bool) -> str:
    """The temporary workspace: sample data, general text, and the model ``default`` resolves to."""
    from forgellm.data.sample.generator import write_sample
    from forgellm.models.resolve import EMBEDDED_NAME

    write_sample(workspace / "dataset" / "sample")
    # The general-text sets beside it: dataset/general (the forgetting measure) and the general
    # prose the recipes mix in (dataset/general-replay).
    for folder in sorted(general.parent.glob("general*")):
        if folder.is_dir():
            shutil.copytree(folder, workspace / "dataset" / folder.name)
    base = workspace / "models" / "base" / EMBEDDED_NAME
    base.parent.mkdir(parents=True)
    if quick:  # the tiny model stands where the embedded one would, so the recipes run unchanged
        tiny_model(base)
        return "tiny random llama (quick)"
    base.symlink_to(embedded_model(), target_is_directory=True)
    return EMBEDDED_NAME


def quick_sets(config: Path, workspace: Path) -> tuple[str, ...]:
    """The quick run's overrides of one recipe: `QUICK_SETS`, and its sequence length cut to the tiny
    model's context where the recipe's is longer (the run would refuse it)."""
    from forgellm.models.resolve import describe, resolve
    from forgellm.training.config import TrainingConfig, read_config_file
    from forgellm.workspace import Workspace

    length = read_config_file(config).get("max_seq_length") or TrainingConfig.model_fields["max_seq_length"].default
    context = describe(resolve("default", Workspace(workspace)).path).context_length or length
    return (*QUICK_SETS, f"max_seq_length={min(length, context)}")


def _quick_qa(workspace: Path) -> Path:
    """A few questions of each held-out file, under the same file names (the per-file scores)."""
    source, out = workspace / "dataset" / "sample" / "qa", workspace / "quick-qa"
    out.mkdir()
    for name in QA_FILES:
        lines = (source / f"{name}.jsonl").read_text().splitlines()
        (out / f"{name}.jsonl").write_text("\n".join(lines[: QUICK["questions"]]) + "\n")
    return out


def train(workspace: Path, config: Path, sets: tuple[str, ...]) -> tuple[Path, float]:
    """One ``forgellm train --config`` in a subprocess, as a user runs it: (run folder, wall seconds)."""
    command = [sys.executable, "-m", "forgellm", "train", "--config", str(config)]
    command += [arg for pair in sets for arg in ("--set", pair)]
    env = {**os.environ, "FORGELLM_HOME": str(workspace)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"`forgellm train --config {config.name}` failed ({done.returncode}): {done.stderr[-3000:]}")
    run_dir = Path(done.stdout.strip().splitlines()[-1])  # the command prints the run folder last
    return (run_dir if run_dir.is_absolute() else workspace / run_dir), seconds


def _engine_of(run_dir: Path) -> str:
    from forgellm.training.run import load_run_config

    return load_run_config(run_dir).resolved_engine()


def held_out_pairs(run_dirs: list[Path]) -> str | None:
    """The prepared data of the preference run among ``run_dirs`` (its validation split is the
    held-out pairs every stage is scored on), or None without one."""
    from forgellm.training.run import load_run_config

    for run_dir in run_dirs:
        if load_run_config(run_dir).training_type == "preference":
            return str(json.loads((run_dir / DATA_STATS_FILE).read_text())["prepared_path"])
    return None


def _evaluate(name: str, workspace: Path, qa: Path, settings: dict[str, int], engine: str, pairs: str | None):
    from forgellm.training.evaluate import evaluate_model
    from forgellm.workspace import Workspace

    sample = workspace / "dataset" / "sample"
    return evaluate_model(
        name,
        qa=qa,
        data=str(sample / "cpt"),
        general=str(workspace / "dataset" / "general"),
        max_tokens=settings["max_tokens"],
        max_seq_length=settings["max_seq_length"],
        pairs=pairs,
        engine=engine,
        workspace=Workspace(workspace),
    )


def stage_rows(stage: str, report: Any, base: Any, seconds: float | None, what: str) -> list[dict[str, Any]]:
    """The result rows of one stage (``base`` or one of `STAGES`) from its `EvalReport` and the base model's."""
    rows = []
    for qa_file in QA_FILES:
        score = report.qa_files.get(qa_file)
        if score is None:
            raise RuntimeError(f"the {stage} evaluation has no {qa_file} score: {sorted(report.qa_files)}")
        rows.append(
            {
                "name": f"learning_{stage}_{qa_file.replace('-', '_')}_qa",
                "value": round(100 * score["accuracy"], 1),
                "unit": "%",
                "notes": f"{score['correct']}/{score['total']} right, dataset/sample/qa/{qa_file}.jsonl; {what}",
                "correct": score["correct"],
                "total": score["total"],
            }
        )
    rows.append(
        {
            "name": f"learning_{stage}_domain_ppl",
            "value": round(report.domain_ppl, 3),
            "unit": "ppl",
            "baseline": None if stage == "base" else round(base.domain_ppl, 3),
            "ratio": None if stage == "base" else round(report.domain_ppl / base.domain_ppl, 4),
            "notes": "validation split of dataset/sample/cpt" + ("" if stage == "base" else "; baseline: base model"),
        }
    )
    general = {
        "name": f"learning_{stage}_general_ppl",
        "value": round(report.general_ppl, 3),
        "unit": "ppl",
        "notes": "dataset/general",
    }
    if stage != "base":
        rise = report.general_ppl / base.general_ppl - 1
        general.update(baseline=round(base.general_ppl, 3), ratio=round(report.general_ppl / base.general_ppl, 4))
        general["notes"] += f"; {rise:+.1%} vs the base model (baseline)"
    rows.append(general)
    if report.preference_accuracy is not None:
        pairs = f"held-out pairs of dataset/sample/preference ({report.preference_total}, the preference run's validation split)"
        rows.append(
            {
                "name": f"learning_{stage}_preference_accuracy",
                "value": round(100 * report.preference_accuracy, 1),
                "unit": "%",
                "notes": f"{report.preference_correct}/{report.preference_total} {pairs} whose correct answer "
                "the model finds more likely per token than the wrong one",
                "correct": report.preference_correct,
                "total": report.preference_total,
            }
        )
        rows.append(
            {
                "name": f"learning_{stage}_preference_margin",
                "value": round(report.preference_margin, 4),
                "unit": "nats/token",
                "notes": f"mean over the {pairs} of the correct answer's mean log-probability per token "
                "minus the wrong one's",
            }
        )
    if seconds is not None:
        rows.append(
            {
                "name": f"learning_{stage}_train_wall_s",
                "value": round(seconds, 1),
                "unit": "s",
                "notes": f"`forgellm train --config configs/{RECIPES[stage]}` in a subprocess, start to exit",
            }
        )
    return rows


def reward_rows(stage: str, evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A preference run's own held-out metrics from its ``eval`` events: reward accuracy and margin at
    its last evaluation, with step 0 (the model it started from) as baseline; none for other runs."""
    if not evals or "val_accuracy" not in evals[0]:
        return []
    first, last = evals[0], evals[-1]
    where = f"the run's eval events on its validation pairs: step {last['step']}, baseline step {first['step']}"
    return [
        {
            "name": f"learning_{stage}_reward_accuracy",
            "value": round(100 * last["val_accuracy"], 1),
            "unit": "%",
            "baseline": round(100 * first["val_accuracy"], 1),
            "notes": f"share of pairs whose chosen reward is above the rejected one; {where}",
        },
        {
            "name": f"learning_{stage}_reward_margin",
            "value": round(last["val_margin"], 4),
            "unit": "reward",
            "baseline": round(first["val_margin"], 4),
            "notes": f"mean chosen minus rejected reward; {where}",
        },
    ]


def readme_table(results: list[dict[str, Any]]) -> str:
    """The README's table (model | chat-facts QA | document-facts QA | preference accuracy | domain ppl
    | general ppl (rise) | training time) from this suite's result rows, then a line per preference
    stage with its run's own reward accuracy and margin."""
    rows = {r["name"]: r for r in results}
    lines = [
        "| model | chat-facts QA | document-facts QA | preference accuracy | domain ppl | general ppl (rise) "
        "| training time |",
        "|---|---|---|---|---|---|---|",
    ]
    labels = {"base": "base model", **{stage: label for stage, _, label in STAGES}}
    notes = []
    for stage, label in labels.items():
        if f"learning_{stage}_general_ppl" not in rows:
            continue
        qa = [rows[f"learning_{stage}_{f.replace('-', '_')}_qa"] for f in QA_FILES]
        qa_cells = [_share(r) for r in qa]
        preference = rows.get(f"learning_{stage}_preference_accuracy")
        general = rows[f"learning_{stage}_general_ppl"]
        rise = f" ({100 * (general['ratio'] - 1):+.1f}%)" if general.get("ratio") else ""
        wall = rows.get(f"learning_{stage}_train_wall_s")
        time_cell = _duration(wall["value"]) if wall else "-"
        domain = rows[f"learning_{stage}_domain_ppl"]["value"]
        lines.append(
            f"| {label} | {' | '.join(qa_cells)} | {_share(preference) if preference else '-'} | {domain:.2f} "
            f"| {general['value']:.2f}{rise} | {time_cell} |"
        )
        accuracy, margin = rows.get(f"learning_{stage}_reward_accuracy"), rows.get(f"learning_{stage}_reward_margin")
        if accuracy and margin:
            notes.append(
                f"{label[0].upper()}{label[1:]}, the run's own reward accuracy on the held-out pairs: "
                f"{accuracy['baseline']:.1f}% at step 0, {accuracy['value']:.1f}% at the end; reward margin "
                f"{margin['baseline']:.3f} -> {margin['value']:.3f}."
            )
    return "\n".join(lines + ([""] + notes if notes else []))


def _share(row: dict[str, Any]) -> str:
    return f"{row['value']:.1f}% ({row['correct']}/{row['total']})"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m forgellm.bench.learning RESULTS.json  (from forgellm bench --json)")
    print(readme_table(suite_results(Path(sys.argv[1]), "learning")))
