"""A PNG dashboard (matplotlib, Agg backend) of one run or several compared.

It draws the same data the HTML dashboard and the web app show (`series.dashboard_data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from forgellm.analysis.series import QA_FILE_PREFIX, qa_series, series_label  # noqa: E402

PANELS = (  # (title, series names, y-axis scale)
    ("Loss", ("train_loss", "val_loss"), "linear"),
    ("Learning rate", ("learning_rate",), "linear"),
    ("Tokens per second", ("tokens_per_second",), "linear"),
    ("Gradient norm", ("grad_norm",), "log"),
    ("QA accuracy (eval_qa)", ("qa_accuracy",), "linear"),
)
COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
FILE_MARKERS = ("s", "^", "D", "v")  # a run's QA files: its colour, dotted, one marker each


def render_png(data: dict[str, Any], out: Path, *, dpi: int = 100) -> Path:
    """Write the dashboard of ``data`` (from `dashboard_data`) to ``out``."""
    runs = data["runs"]
    # The QA panel (overall and per file) only for runs that measured it (eval_qa): otherwise the usual 2 x 2.
    panels = [
        (title, tuple(qa_series(runs)) if names == ("qa_accuracy",) else names, scale) for title, names, scale in PANELS
    ]
    panels = [p for p in panels if p[1]]
    fig, axes = plt.subplots(2, 3 if len(panels) > 4 else 2, figsize=(19 if len(panels) > 4 else 13, 8), dpi=dpi)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for (title, names, scale), ax in zip(panels, axes.flat):
        drawn = False
        for i, run in enumerate(runs):
            color = COLORS[i % len(COLORS)]
            label = run["name"] if len(runs) > 1 else None
            for k, name in enumerate(names):
                s = run["series"].get(name)
                if not s:
                    continue
                val = name in ("val_loss", "qa_accuracy")  # measured at evaluations: points
                file = name.startswith(QA_FILE_PREFIX)
                ax.plot(
                    s["x"],
                    s["y"],
                    color=color,
                    lw=1.8 if val or file else 1.0,
                    ls=":" if file else "--" if val else "-",
                    marker=FILE_MARKERS[k % len(FILE_MARKERS)] if file else "o" if val else None,
                    ms=3,
                    label=(f"{label} " if label else "") + series_label(name),
                )
                drawn = True
            if title == "Loss":
                _mark_analysis(ax, run["analysis"], color)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.set_yscale(scale)
            if title == "Loss" or len(runs) > 1 or len(names) > 1:
                ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(_headline(runs), fontsize=12)
    # Fixed margins: tight_layout measures every tick label and costs more than all the drawing.
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.07, top=0.92, wspace=0.15, hspace=0.3)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", pil_kwargs={"compress_level": 1})  # zlib level 6 took half the render time
    plt.close(fig)
    return out


def _mark_analysis(ax: Any, analysis: dict[str, Any], color: str) -> None:
    best = analysis.get("recommended")
    if best and best.get("val_loss") is not None:
        ax.scatter(
            [best["step"]],
            [best["val_loss"]],
            marker="*",
            s=160,
            color=color,
            edgecolor="black",
            zorder=5,
            label=f"recommended {best['name']}",
        )
    if analysis.get("overfitting_onset") is not None:
        ax.axvline(analysis["overfitting_onset"], color=color, ls=":", lw=1, label="overfitting onset")


def _headline(runs: list[dict[str, Any]]) -> str:
    if len(runs) != 1:
        return f"{len(runs)} runs compared: " + ", ".join(r["name"] for r in runs)
    run, a = runs[0], runs[0]["analysis"]
    parts = [run["name"], f"step {a['steps_done']}" + (f"/{a['total_steps']}" if a.get("total_steps") else "")]
    if a.get("best_checkpoint"):
        parts.append(f"best {a['best_checkpoint']}")
    if a.get("recommended"):
        parts.append(f"recommended {a['recommended']['name']}")
    if a.get("best_val_loss") is not None:
        parts.append(f"best val loss {a['best_val_loss']:.4f}")
    return " | ".join(parts)
