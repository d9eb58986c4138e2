"""Which checkpoint to recommend and why, and what the curves say to do next.

The recommended checkpoint minimises a composite score (lower is better), each term relative so
runs of any loss scale compare:

    score = (val_loss / best_val_loss - 1)                         how far from the best validation loss
          + W_GAP          * max(0, val_loss - train_loss) / val_loss   generalisation gap
          + W_INSTABILITY  * std(residuals of recent losses) / mean      stability (variation of recent losses)
          + W_UNCONVERGED  * |slope of recent losses| * window / mean    convergence (still moving = less settled)

"Recent losses" are the last ``WINDOW`` training losses up to the checkpoint's step, fitted
with a straight line: its residuals measure noise, its slope how far from converged. A run
without validation uses the mean of the recent training losses in place of the validation
loss (and no gap).

The other terms break near-ties only: the recommended one is the lowest score among the checkpoints whose
validation loss is within ``NEAR_BEST`` of the lowest one, so a stable checkpoint never wins
over a clearly better validation loss (early in a short run the drift term alone can be large). docs/analysis.md explains the choice of weights and each rule.

Recommendations are small functions of the curves (``RULES``); each returns one or none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from forgellm.analysis.runs import RunMetrics

WINDOW = 20  # training losses that count as "recent"
W_GAP = 0.1
W_INSTABILITY = 0.5
W_UNCONVERGED = 0.25
NEAR_BEST = 0.02  # checkpoints within this share of the lowest validation loss compete on the score

OVERFIT_TOLERANCE = 0.01  # validation loss this far (relative) above its best counts as risen
OVERFIT_PATIENCE = 2  # ... for this many evaluations in a row
NOISE_MODERATE = 0.03  # relative noise of the recent training loss
NOISE_HIGH = 0.10
STILL_FALLING = 0.02  # relative drop over the last fifth of training that means "train longer"
PLATEAU_SHARE = 0.5  # loss reached its final level within this share of training
GAP_HIGH = 0.25  # validation above training loss by this share of the validation loss
THROUGHPUT_DROP = 0.7  # late tokens/s below this share of early tokens/s


@dataclass
class CheckpointScore:
    step: int
    name: str
    exists: bool
    val_loss: float | None
    train_loss: float | None
    gap: float
    instability: float
    unconverged: float
    score: float


@dataclass
class Recommendation:
    rule: str
    severity: str  # info | warning
    message: str
    step: int | None = None


@dataclass
class Analysis:
    run: str
    steps_done: int
    total_steps: int | None
    final_loss: float | None
    best_val_loss: float | None
    best_val_step: int | None
    recommended: CheckpointScore | None  # the composite score's pick; may differ from the trainer's best
    best_checkpoint: str | None  # the trainer's best (checkpoints/best.json, by best_metric)
    checkpoints: list[CheckpointScore]
    overfitting_onset: int | None  # first evaluation step of a sustained rise of the validation loss
    noise: float | None  # relative variation of the recent training losses
    stability: str  # stable | moderate | noisy | unknown
    throughput: dict[str, float | None]
    recommendations: list[Recommendation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _finite(asdict(self))


def _finite(value: Any) -> Any:
    """JSON has no NaN: nested floats that are not finite become None."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def window_fit(losses: np.ndarray) -> tuple[float, float, float]:
    """(mean, relative noise, relative drift) of a window of losses, from a straight-line fit.

    noise = std of the residuals / mean; drift = |slope| * len / mean (how much the loss moved
    over the window). NaNs are ignored; fewer than 3 values give zero noise and drift.
    """
    y = losses[np.isfinite(losses)]
    if len(y) == 0:
        return float("nan"), 0.0, 0.0
    mean = float(np.mean(y))
    if len(y) < 3 or mean == 0:
        return mean, 0.0, 0.0
    x = np.arange(len(y), dtype=np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (slope * x + intercept)
    return mean, float(np.std(residuals) / abs(mean)), float(abs(slope) * len(y) / abs(mean))


def _recent(metrics: RunMetrics, step: int) -> np.ndarray:
    train = metrics.train
    upto = int(np.searchsorted(train.step, step, side="right"))
    return train["loss"][max(0, upto - WINDOW) : upto]


def score_checkpoints(metrics: RunMetrics) -> list[CheckpointScore]:
    """Every checkpoint with its composite score (see the module docstring)."""
    rows = []
    for ckpt in metrics.checkpoints:
        mean, noise, drift = window_fit(_recent(metrics, ckpt.step))
        train_loss = _eval_value(metrics, ckpt.step, "train_loss")
        if not np.isfinite(train_loss):
            train_loss = mean
        rows.append((ckpt, ckpt.val_loss, train_loss, noise, drift))
    with_val = [r[1] for r in rows if r[1] is not None and np.isfinite(r[1])]
    use_val = bool(with_val)
    reference = min(with_val) if use_val else min((r[2] for r in rows if np.isfinite(r[2])), default=float("nan"))
    scored = []
    for ckpt, val, train_loss, noise, drift in rows:
        loss = val if use_val and val is not None else (train_loss if not use_val else float("nan"))
        gap = max(0.0, (loss - train_loss) / loss) if use_val and np.isfinite(loss) and np.isfinite(train_loss) else 0.0
        score = (
            (loss / reference - 1 if np.isfinite(loss) and reference else float("inf"))
            + W_GAP * gap
            + W_INSTABILITY * noise
            + W_UNCONVERGED * drift
        )
        scored.append(
            CheckpointScore(
                ckpt.step,
                ckpt.name,
                ckpt.exists,
                val if use_val else None,
                _none_if_nan(train_loss),
                gap,
                noise,
                drift,
                float(score),
            )
        )
    return scored


def _near_best(scores: list[CheckpointScore]) -> list[CheckpointScore]:
    """The checkpoints whose validation loss is within NEAR_BEST of the lowest (all without validation)."""
    vals = [s.val_loss for s in scores if s.val_loss is not None and np.isfinite(s.val_loss)]
    if not vals:
        return scores
    limit = min(vals) * (1 + NEAR_BEST) if min(vals) > 0 else min(vals)
    return [s for s in scores if s.val_loss is not None and s.val_loss <= limit]


def _eval_value(metrics: RunMetrics, step: int, key: str) -> float:
    hits = np.nonzero(metrics.evals.step == step)[0]
    return float(metrics.evals[key][hits[0]]) if len(hits) else float("nan")


def _none_if_nan(value: float) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def overfitting_onset(metrics: RunMetrics) -> int | None:
    """The first evaluation step from which the validation loss stays above its best so far
    (by more than OVERFIT_TOLERANCE) for OVERFIT_PATIENCE evaluations in a row."""
    steps, val = metrics.evals.step, metrics.evals["val_loss"]
    keep = np.isfinite(val)
    steps, val = steps[keep], val[keep]
    best = float("inf")
    run_start, run_len = 0, 0  # run_start is set by the first step of a run
    for step, v in zip(steps, val):
        if v > best * (1 + OVERFIT_TOLERANCE):
            run_start = step if run_len == 0 else run_start
            run_len += 1
            if run_len >= OVERFIT_PATIENCE:
                return int(run_start)
        else:
            run_len = 0
            best = min(best, v)
    return None


def throughput(metrics: RunMetrics) -> dict[str, float | None]:
    """Mean, first-half and last-tenth median tokens per second (the first steps warm up and are skipped)."""
    tps = metrics.train["tokens_per_second"]
    tps = tps[np.isfinite(tps)][min(3, len(tps) // 10) :] if len(tps) else tps
    if len(tps) == 0:
        return {"mean": None, "early": None, "late": None, "min": None, "max": None}
    tail = max(1, len(tps) // 10)
    return {
        "mean": float(np.mean(tps)),
        "early": float(np.median(tps[: max(1, len(tps) // 2)])),
        "late": float(np.median(tps[-tail:])),
        "min": float(np.min(tps)),
        "max": float(np.max(tps)),
    }


def analyze(metrics: RunMetrics) -> Analysis:
    """The whole analysis of one run."""
    losses = metrics.train["loss"]
    finite = losses[np.isfinite(losses)]
    tail = losses[-max(WINDOW, len(losses) // 4) :] if len(losses) else losses
    _, noise, _ = window_fit(tail)
    has_noise = int(np.isfinite(tail).sum()) >= 3
    val = metrics.evals["val_loss"]
    best_idx = int(np.nanargmin(val)) if np.isfinite(val).any() else None
    scores = score_checkpoints(metrics)
    available = [s for s in scores if s.exists]
    analysis = Analysis(
        run=metrics.name,
        steps_done=int(metrics.train.step[-1]) if len(metrics.train) else 0,
        total_steps=metrics.total_steps,
        final_loss=float(finite[-1]) if len(finite) else None,
        best_val_loss=float(val[best_idx]) if best_idx is not None else None,
        best_val_step=int(metrics.evals.step[best_idx]) if best_idx is not None else None,
        recommended=min(_near_best(available), key=lambda s: s.score) if available else None,
        best_checkpoint=(metrics.best or {}).get("checkpoint"),
        checkpoints=scores,
        overfitting_onset=overfitting_onset(metrics),
        noise=noise if has_noise else None,
        stability=(
            "unknown"
            if not has_noise
            else "stable"
            if noise < NOISE_MODERATE
            else "moderate"
            if noise < NOISE_HIGH
            else "noisy"
        ),
        throughput=throughput(metrics),
    )
    analysis.recommendations = [r for rule in RULES if (r := rule(metrics, analysis)) is not None]
    return analysis


# --- recommendation rules: (metrics, analysis) -> Recommendation | None ---------------------------


def rule_overfitting(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    onset = analysis.overfitting_onset
    if onset is None:
        return None
    val = metrics.evals["val_loss"]
    before = metrics.evals.step < onset
    best_step = int(metrics.evals.step[before][np.nanargmin(val[before])]) if before.any() else onset
    last = float(val[np.isfinite(val)][-1])
    return Recommendation(
        "overfitting",
        "warning",
        f"Validation loss rose after step {best_step} (from {np.nanmin(val[before]) if before.any() else last:.4f} "
        f"to {last:.4f} at the end): stop there - publish the checkpoint nearest step {best_step} - "
        f"or lower the learning rate / add more data.",
        best_step,
    )


def rule_noisy(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    if analysis.noise is None or analysis.noise < NOISE_HIGH:
        return None
    return Recommendation(
        "noisy_loss",
        "warning",
        f"Training loss is noisy ({analysis.noise:.0%} variation around its trend over the last steps): "
        f"raise batch_size or grad_accumulation_steps, or lower the learning rate.",
    )


def rule_still_improving(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    if analysis.overfitting_onset is not None:
        return None
    drop, span = _late_drop(metrics)
    if drop is None or drop < STILL_FALLING:
        return None
    return Recommendation(
        "still_improving",
        "info",
        f"Loss was still falling at the end ({drop:.1%} lower over the last {span} steps): "
        f"train longer (raise max_iterations) to gain more.",
        analysis.steps_done,
    )


def _late_drop(metrics: RunMetrics) -> tuple[float | None, int]:
    """Relative fall of the loss over the last fifth of training: validation loss when there
    are at least 3 evaluations in that span, else a line fitted to the training loss."""
    steps = metrics.train.step
    if len(steps) < 10:
        return None, 0
    start = steps[-1] - (steps[-1] - steps[0]) // 5
    ev_steps, ev = metrics.evals.step, metrics.evals["val_loss"]
    late = (ev_steps >= start) & np.isfinite(ev)
    if late.sum() >= 3:
        y, x = ev[late], ev_steps[late].astype(np.float64)
    else:
        keep = (steps >= start) & np.isfinite(metrics.train["loss"])
        y, x = metrics.train["loss"][keep], steps[keep].astype(np.float64)
    if len(y) < 3:
        return None, 0
    slope, intercept = np.polyfit(x, y, 1)
    begin = slope * x[0] + intercept
    return (float(-slope * (x[-1] - x[0]) / begin) if begin > 0 else None), int(steps[-1] - start)


def rule_diverged(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    losses = metrics.train["loss"]
    if len(losses) < WINDOW:
        return None
    head, tail = losses[: WINDOW // 2], losses[-(WINDOW // 2) :]
    bad_values = bool((~np.isfinite(losses)).any())
    rose = np.isfinite(head).any() and np.isfinite(tail).any() and np.nanmean(tail) > 1.1 * np.nanmean(head)
    if not bad_values and not rose:
        return None
    what = (
        "became NaN or infinite"
        if bad_values
        else (f"ended higher than it started ({np.nanmean(tail):.3f} vs {np.nanmean(head):.3f})")
    )
    return Recommendation(
        "diverged",
        "warning",
        f"Training loss {what}: the run diverged. Lower the learning rate (halve it), keep "
        f"max_grad_norm clipping on, and check the data for broken samples.",
    )


def rule_plateau(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    if analysis.overfitting_onset is not None:
        return None
    steps, losses = metrics.train.step, metrics.train["loss"]
    if len(steps) < 4 * WINDOW:
        return None
    smooth = np.convolve(np.nan_to_num(losses, nan=np.nanmean(losses)), np.ones(WINDOW) / WINDOW, mode="valid")
    first, final = smooth[0], smooth[-1]
    if first - final <= 0 or (_late_drop(metrics)[0] or 0) >= STILL_FALLING:
        return None
    # First point from which the smoothed loss stays within 10% of the total fall from its final level.
    close = np.abs(smooth - final) <= 0.1 * (first - final)
    reached = len(close) - int(np.argmin(close[::-1])) if not close.all() else 0
    if reached >= PLATEAU_SHARE * len(smooth):
        return None
    step = int(steps[reached + WINDOW - 1])
    return Recommendation(
        "plateau",
        "info",
        f"Loss reached its final level around step {step} of {int(steps[-1])} and stayed flat: more steps "
        f"of the same will not help; fewer steps save time, or try a higher learning rate or more varied data.",
        step,
    )


def rule_generalisation_gap(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    val, train = metrics.evals["val_loss"], metrics.evals["train_loss"]
    both = np.isfinite(val) & np.isfinite(train)
    if not both.any():
        return None
    v, t = float(val[both][-1]), float(train[both][-1])
    if v <= 0 or (v - t) / v < GAP_HIGH:
        return None
    return Recommendation(
        "generalisation_gap",
        "warning",
        f"Validation loss ({v:.3f}) is {(v - t) / v:.0%} above training loss ({t:.3f}): the model memorises "
        f"its training data. Add data, raise lora_dropout or weight_decay, or train fewer steps.",
    )


def rule_no_validation(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    if len(metrics.train) == 0 or np.isfinite(metrics.evals["val_loss"]).any():
        return None
    return Recommendation(
        "no_validation",
        "info",
        "No validation loss was recorded: the best checkpoint is chosen on training loss only. "
        "Keep a validation_split and a steps_per_eval below max_iterations.",
    )


def rule_throughput_drop(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    early, late = analysis.throughput["early"], analysis.throughput["late"]
    if not early or not late or late >= THROUGHPUT_DROP * early:
        return None
    memory = metrics.train["peak_memory_gb"]
    note = f" (peak memory {np.nanmax(memory):.1f} GB)" if np.isfinite(memory).any() else ""
    return Recommendation(
        "throughput_drop",
        "warning",
        f"Throughput fell from {early:.0f} to {late:.0f} tokens/s during the run{note}: the machine may be "
        f"swapping or throttling. Lower batch_size or max_seq_length, or turn on grad_checkpointing.",
    )


#: Fall of the chosen responses' mean log-probability per token (nats) that counts as a collapse.
CHOSEN_COLLAPSE = 0.5


def rule_chosen_collapse(metrics: RunMetrics, analysis: Analysis) -> Recommendation | None:
    """Preference runs: a falling loss while the chosen responses themselves grow less likely means the
    margin is won by pushing both responses down (the rejected faster): the model unlearns good answers."""
    chosen, losses = metrics.train["logps_chosen"], metrics.train["loss"]
    keep = np.isfinite(chosen) & np.isfinite(losses)
    if keep.sum() < 4:
        return None
    chosen, losses, steps = chosen[keep], losses[keep], metrics.train.step[keep]
    span = max(1, len(chosen) // 4)
    chosen_start, chosen_end = float(np.mean(chosen[:span])), float(np.mean(chosen[-span:]))
    loss_start, loss_end = float(np.mean(losses[:span])), float(np.mean(losses[-span:]))
    if not (loss_end < loss_start and chosen_start - chosen_end > CHOSEN_COLLAPSE):
        return None
    onset = int(steps[int(np.argmax(chosen < chosen_start - CHOSEN_COLLAPSE))])
    return Recommendation(
        "chosen_logps_collapse",
        "warning",
        f"The loss fell ({loss_start:.4f} -> {loss_end:.4f}) while the chosen responses' log-probability fell from "
        f"{chosen_start:.2f} to {chosen_end:.2f} per token: the margin is won by making both responses unlikely, "
        f"and the model is unlearning the good answers too. Lower learning_rate, raise beta (dpo), or use "
        f"preference_loss: orpo, which also trains on the chosen responses.",
        onset,
    )


Rule = Callable[[RunMetrics, Analysis], "Recommendation | None"]
RULES: tuple[Rule, ...] = (
    rule_diverged,
    rule_overfitting,
    rule_generalisation_gap,
    rule_noisy,
    rule_still_improving,
    rule_plateau,
    rule_no_validation,
    rule_throughput_drop,
    rule_chosen_collapse,
)
