"""Chart data for dashboards and the web app (``/api/dashboard/data``).

Each run's curves are downsampled for display with Largest-Triangle-Three-Buckets (LTTB),
which keeps the visual shape of a curve; the first, last, lowest and highest points are
always kept, so the best loss and the latest value are never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from forgellm.analysis.analyze import analyze
from forgellm.analysis.runs import RunMetrics, load_run
from forgellm.runs.summary import read_status

DEFAULT_MAX_POINTS = 600
# series name -> (event kind, key)
SERIES = {
    "train_loss": ("train", "loss"),
    "val_loss": ("eval", "val_loss"),
    "eval_train_loss": ("eval", "train_loss"),
    "qa_accuracy": ("eval", "qa_accuracy"),
    "learning_rate": ("train", "learning_rate"),
    "tokens_per_second": ("train", "tokens_per_second"),
    "grad_norm": ("train", "grad_norm"),
    "peak_memory_gb": ("train", "peak_memory_gb"),
    # preference runs only (a series with no finite value is left out)
    "val_accuracy": ("eval", "val_accuracy"),
    "val_margin": ("eval", "val_margin"),
    "logps_chosen": ("train", "logps_chosen"),
}
QA_FILE_PREFIX = "qa_accuracy:"  # + a QA file's name: its accuracy, beside the overall qa_accuracy
CONFIG_KEYS = (
    "model_name",
    "engine",
    "training_type",
    "fine_tune_type",
    "learning_rate",
    "lr_schedule",
    "batch_size",
    "grad_accumulation_steps",
    "max_iterations",
    "num_epochs",
    "max_seq_length",
    "lora_rank",
    "lora_alpha",
    "num_layers",
    "warmup_steps",
)


def lttb_indices(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    """Indices of ``n_out`` points chosen by LTTB (Steinarsson 2013); every index when n_out >= len."""
    n = len(x)
    if n_out >= n:
        return np.arange(n)
    n_out = max(n_out, 3)
    # Points 1..n-2 split into n_out-2 buckets; the first and last points are always chosen.
    edges = (np.arange(n_out - 1) * (n - 2) / (n_out - 2)).astype(np.int64) + 1
    edges[-1] = n - 1
    chosen = np.empty(n_out, dtype=np.int64)
    chosen[0], chosen[-1] = 0, n - 1
    # Mean point of every bucket (and of the last point, the final "next bucket"), computed once.
    starts = np.append(edges[:-1], n - 1)
    counts = np.diff(np.append(starts, n))
    mean_x = np.add.reduceat(x, starts) / counts
    mean_y = np.add.reduceat(y, starts) / counts
    for b in range(n_out - 2):
        lo, hi = edges[b], edges[b + 1]
        ax, ay = x[chosen[b]], y[chosen[b]]
        cx, cy = mean_x[b + 1], mean_y[b + 1]
        # Twice the area of the triangle (previous pick, candidate, mean of the next bucket).
        area = np.abs((ax - cx) * (y[lo:hi] - ay) - (ax - x[lo:hi]) * (cy - ay))
        chosen[b + 1] = lo + int(np.argmax(area))
    return chosen


def downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` finite points; first, last, minimum and maximum always among them."""
    keep = np.isfinite(y)
    x, y = x[keep].astype(np.float64), y[keep]
    if len(x) <= max_points:
        return x, y
    forced = np.unique([0, len(x) - 1, int(np.argmin(y)), int(np.argmax(y))])
    picked = np.union1d(lttb_indices(x, y, max(3, max_points - len(forced))), forced)
    return x[picked], y[picked]


def run_series(metrics: RunMetrics, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, dict[str, list]]:
    series: dict[str, dict[str, list]] = {}
    for name, (kind, key) in SERIES.items():
        columns = metrics.train if kind == "train" else metrics.evals
        x, y = downsample(columns.step, columns[key], max_points)
        if len(x):
            series[name] = {"x": [int(v) for v in x], "y": [float(v) for v in y]}
    for file, columns in metrics.qa_files.items():
        x, y = downsample(columns.step, columns["accuracy"], max_points)
        if len(x):
            series[QA_FILE_PREFIX + file] = {"x": [int(v) for v in x], "y": [float(v) for v in y]}
    return series


def qa_series(runs: list[dict[str, Any]]) -> list[str]:
    """The QA series the runs of `dashboard_data` hold: ``qa_accuracy``, then one per QA file."""
    names = {name for run in runs for name in run["series"] if name.startswith(QA_FILE_PREFIX)}
    overall = ["qa_accuracy"] if any("qa_accuracy" in run["series"] for run in runs) else []
    return overall + sorted(names)


def series_label(name: str) -> str:
    """``val loss``; a QA file's series by its file name: ``QA chat-facts``."""
    return f"QA {name[len(QA_FILE_PREFIX) :]}" if name.startswith(QA_FILE_PREFIX) else name.replace("_", " ")


def run_dashboard(metrics: RunMetrics, max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
    """One run's chart data, its analysis and the settings worth showing beside it."""
    analysis = analyze(metrics).to_dict()
    status = read_status(metrics.run_dir) if metrics.run_dir else None
    return {
        "name": metrics.name,
        "path": str(metrics.run_dir) if metrics.run_dir else None,
        "status": (status or {}).get("status") or ("done" if metrics.done else None),
        "config": {
            k: metrics.config.get(k, metrics.start.get(k))
            for k in CONFIG_KEYS
            if metrics.config.get(k, metrics.start.get(k)) is not None
        },
        "total_steps": metrics.total_steps,
        "series": run_series(metrics, max_points),
        "analysis": analysis,
    }


def dashboard_data(run_dirs: Iterable[str | Path], max_points: int = DEFAULT_MAX_POINTS) -> dict[str, Any]:
    """Chart data for one run or several compared: ``{"runs": [...], "max_points": n}``."""
    return {"runs": [run_dashboard(load_run(Path(d)), max_points) for d in run_dirs], "max_points": max_points}
