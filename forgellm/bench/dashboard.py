"""Dashboard render time for a 20,000-step run (the target is under 1 s, PNG or HTML).

A run folder is written the way the trainer writes one (a ``train`` event every step, an
``eval`` every 100 steps, a ``checkpoint`` every 1,000), then the dashboard is built from the
folder as ``forgellm dashboard`` builds it: read ``metrics.jsonl``, analyse, downsample with
LTTB, draw. Each figure is the median of several renders in this process (imports done).

Baselines, measured in the same run: the same dashboard drawn from every point, without
downsampling (what plotting the raw curves costs), and for one step the analysis alone.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS = 20_000
EVAL_EVERY = 100
CHECKPOINT_EVERY = 1_000


def run(quick: bool) -> list[dict[str, Any]]:
    repeats = 2 if quick else 5
    from forgellm.analysis.dashboard_html import render_html
    from forgellm.analysis.dashboard_png import render_png
    from forgellm.analysis.series import DEFAULT_MAX_POINTS, dashboard_data

    with tempfile.TemporaryDirectory(prefix="forgellm-bench-dashboard-") as tmp:
        root = Path(tmp)
        runs = [write_run(root / f"run-{i}", seed=i) for i in range(3)]
        one = runs[:1]

        def build(folders: list[Path], points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
            return dashboard_data(folders, max_points=points)

        def png(folders: list[Path], points: int = DEFAULT_MAX_POINTS) -> Callable[[], object]:
            return lambda: render_png(build(folders, points), root / "d.png")

        def html(folders: list[Path], points: int = DEFAULT_MAX_POINTS) -> Callable[[], object]:
            return lambda: render_html(build(folders, points), root / "d.html")

        from forgellm.runs.events import read_events

        parse = _median(lambda: read_events(one[0] / "metrics.jsonl"), repeats)
        setting = f"{STEPS:,}-step run, {DEFAULT_MAX_POINTS} points per curve, median of {repeats}"
        raw = f"every point ({STEPS:,}) drawn, no downsampling"
        out = [
            _result(
                "dashboard_png_20k_steps",
                _median(png(one), repeats),
                _median(png(one, STEPS), repeats),
                f"read + analyse + draw + write PNG; {setting}; baseline: {raw}",
            ),
            _result(
                "dashboard_html_20k_steps",
                _median(html(one), repeats),
                _median(html(one, STEPS), repeats),
                f"read + analyse + write self-contained HTML (Chart.js inlined); {setting}; baseline: {raw}",
            ),
            _result(
                "dashboard_data_20k_steps",
                _median(lambda: build(one), repeats),
                _median(lambda: build(one, STEPS), repeats),
                f"metrics.jsonl read + analysis + LTTB (what /api/dashboard/data does); {setting}; "
                f"baseline: {raw}; parsing metrics.jsonl alone takes {parse:.3f} s",
            ),
            _result(
                "dashboard_png_3_runs_compared",
                _median(png(runs), repeats),
                None,
                f"three {STEPS:,}-step runs on one PNG; median of {repeats}",
            ),
        ]
        (root / "d.png").unlink(missing_ok=True)
    return out


def _result(name: str, seconds: float, baseline: float | None, notes: str) -> dict[str, Any]:
    return {
        "name": name,
        "value": round(seconds, 3),
        "unit": "s",
        "baseline": round(baseline, 3) if baseline is not None else None,
        "ratio": round(seconds / baseline, 3) if baseline else None,
        "notes": notes,
    }


def _median(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm: first-use imports and font caches are not render time
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_run(folder: Path, *, seed: int = 0) -> Path:
    """A finished run folder of ``STEPS`` steps in the trainer's format (docs/run-format.md):
    a decaying, slightly noisy loss whose validation loss turns up after 60% of the run."""
    import numpy as np

    rng = np.random.default_rng(seed)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / ".forgellm-run").write_text("ForgeLLM training run\n")
    (folder / "config.yaml").write_text(
        f"model_name: default\nengine: torch\ntraining_type: cpt\nfine_tune_type: lora\nmax_iterations: {STEPS}\n"
    )
    lines = [
        {
            "event": "start",
            "time": 0.0,
            "step": 0,
            "total_steps": STEPS,
            "engine": "torch",
            "training_type": "cpt",
            "fine_tune_type": "lora",
            "model": "default",
        }
    ]
    losses = 1.5 + 1.5 * np.exp(-np.arange(1, STEPS + 1) / (STEPS / 8)) + 0.05 * rng.standard_normal(STEPS)
    for step in range(1, STEPS + 1):
        loss = float(losses[step - 1])
        lines.append(
            {
                "event": "train",
                "time": float(step),
                "step": step,
                "loss": loss,
                "learning_rate": 1e-4 * 0.5 * (1 + math.cos(math.pi * step / STEPS)),
                "tokens": 2048,
                "trained_tokens": 2048 * step,
                "tokens_per_second": 4000 + 100 * float(rng.standard_normal()),
                "grad_norm": 1 + abs(float(rng.standard_normal())),
                "peak_memory_gb": 3.2,
                "elapsed": step * 0.5,
            }
        )
        if step % EVAL_EVERY == 0:
            val = 1.6 + 1.5 * math.exp(-step / (STEPS / 8)) + max(0.0, step / STEPS - 0.6) * 0.5
            lines.append(
                {
                    "event": "eval",
                    "time": float(step),
                    "step": step,
                    "val_loss": val,
                    "val_ppl": math.exp(val),
                    "train_loss": float(np.mean(losses[step - EVAL_EVERY : step])),
                }
            )
        if step % CHECKPOINT_EVERY == 0:
            name = f"step_{step:06d}"
            (folder / "checkpoints" / name).mkdir()
            lines.append(
                {
                    "event": "checkpoint",
                    "time": float(step),
                    "step": step,
                    "path": f"checkpoints/{name}",
                    "val_loss": lines[-1].get("val_loss"),
                }
            )
    lines.append(
        {"event": "done", "time": float(STEPS), "step": STEPS, "status": "completed", "final_loss": float(losses[-1])}
    )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return folder
