"""Analysis of crafted metrics: the composite score, overfitting onset, stability and every rule."""

from __future__ import annotations

import numpy as np
import pytest

from forgellm.analysis import analyze as an
from forgellm.analysis.runs import RunMetrics, load_run
from tests.analysis_helpers import curve, make_events, write_run


def metrics_of(losses, **kw) -> RunMetrics:
    return RunMetrics.from_events(make_events(losses, **kw))


def rules_fired(m: RunMetrics) -> set[str]:
    return {r.rule for r in an.analyze(m).recommendations}


def u_shaped_val(steps: int, every: int, bottom: int) -> dict[int, float]:
    """Validation loss falling until ``bottom`` then rising steadily."""
    return {s: 2.0 + 0.002 * abs(s - bottom) for s in range(every, steps + 1, every)}


# --- score --------------------------------------------------------------------------------------


def test_window_fit_separates_noise_from_drift():
    flat_noisy = 2 + 0.2 * np.random.default_rng(0).standard_normal(200)
    falling_clean = np.linspace(3, 2, 200)
    _, noise_a, drift_a = an.window_fit(flat_noisy)
    _, noise_b, drift_b = an.window_fit(falling_clean)
    assert noise_a > 0.05 and drift_a < 0.1
    assert noise_b < 1e-9 and drift_b == pytest.approx(1 / 2.5, rel=0.01)


def test_score_follows_the_documented_formula():
    losses = curve(200, tau=40)
    val = {100: 1.9, 200: 1.8}
    m = metrics_of(losses, val=val, eval_train={100: 1.7, 200: 1.5}, checkpoints=[100, 200])
    rows = {s.step: s for s in an.score_checkpoints(m)}
    for step, train in ((100, 1.7), (200, 1.5)):
        _, noise, drift = an.window_fit(losses[step - an.WINDOW : step])
        expected = (
            (val[step] / 1.8 - 1)
            + an.W_GAP * (val[step] - train) / val[step]
            + an.W_INSTABILITY * noise
            + an.W_UNCONVERGED * drift
        )
        assert rows[step].score == pytest.approx(expected)
        assert rows[step].gap == pytest.approx((val[step] - train) / val[step])


def test_best_is_the_lowest_validation_loss_on_a_clean_curve():
    m = metrics_of(curve(300, tau=80), val=u_shaped_val(300, 50, 150), checkpoints=[50, 100, 150, 200, 250, 300])
    assert an.analyze(m).recommended.step == 150


def test_a_noisy_checkpoint_loses_to_a_stable_one_with_slightly_higher_val_loss():
    losses = curve(200, tau=20)
    losses[80:100] *= 1 + 0.3 * np.random.default_rng(1).standard_normal(20)  # noisy just before step 100
    m = metrics_of(losses, val={100: 1.500, 200: 1.505}, eval_train={100: 1.5, 200: 1.5}, checkpoints=[100, 200])
    result = an.analyze(m)
    assert result.recommended.step == 200
    assert result.best_val_step == 100


def test_a_clearly_better_validation_loss_wins_over_stability():
    # Early in a short run the loss falls steeply: the drift term of a later checkpoint is large,
    # but its validation loss is 10% lower, so it wins; the score only breaks near-ties.
    losses = np.concatenate([np.linspace(6, 2.5, 10), np.full(10, 2.5)])
    m = metrics_of(
        losses, val={2: 5.4, 10: 4.9, 20: 5.5}, eval_train={2: 5.4, 10: 3.0, 20: 2.5}, checkpoints=[2, 10, 20]
    )
    rows = {s.step: s for s in an.score_checkpoints(m)}
    assert rows[10].score > rows[2].score  # on the raw score alone the early checkpoint would win
    assert an.analyze(m).recommended.step == 10


def test_deleted_checkpoints_are_scored_but_never_chosen(tmp_path):
    events = make_events(curve(300), val=u_shaped_val(300, 100, 100), checkpoints=[100, 200, 300])
    run = write_run(tmp_path, "r", events, checkpoint_dirs=[200, 300])  # step 100 (the best) was pruned
    result = an.analyze(load_run(run))
    assert [c.step for c in result.checkpoints] == [100, 200, 300]
    assert result.recommended.step == 200


def test_without_validation_the_recent_training_loss_decides():
    m = metrics_of(curve(300, tau=50), checkpoints=[100, 200, 300])
    result = an.analyze(m)
    assert result.recommended.step == 300 and result.recommended.val_loss is None
    assert "no_validation" in rules_fired(m)


def test_torn_last_line_and_unknown_keys_are_ignored(tmp_path):
    events = make_events(curve(50), val={50: 2.0}, checkpoints=[50])
    events[3]["something_new"] = {"nested": True}
    result = an.analyze(load_run(write_run(tmp_path, "r", events, checkpoint_dirs=[50], torn_tail=True)))
    assert result.steps_done == 50 and result.recommended.name == "step_000050"


def test_empty_run_is_analysed_without_error():
    result = an.analyze(RunMetrics.from_events([]))
    assert result.recommended is None and result.steps_done == 0 and result.stability == "unknown"
    assert result.to_dict()["final_loss"] is None


# --- overfitting onset and stability -----------------------------------------------------------


def test_overfitting_onset_is_the_first_eval_of_a_sustained_rise():
    m = metrics_of(curve(400), val=u_shaped_val(400, 20, 200))
    # 2.0 at 200; 2.0 * 1.01 = 2.02 is passed when |s - 200| > 10 -> first at 220
    assert an.overfitting_onset(m) == 220


def test_a_single_blip_is_not_overfitting():
    val = {s: 3.0 - s / 1000 for s in range(20, 401, 20)}
    val[200] += 0.2
    assert an.overfitting_onset(metrics_of(curve(400), val=val)) is None


@pytest.mark.parametrize("noise,label", [(0.0, "stable"), (0.05, "moderate"), (0.3, "noisy")])
def test_stability_labels(noise, label):
    assert an.analyze(metrics_of(curve(400, noise=noise))).stability == label


def test_throughput_summary_skips_warmup():
    tps = [10.0] * 3 + [1000.0] * 97
    summary = an.throughput(metrics_of(curve(100), tokens_per_second=tps))
    assert summary["min"] == 1000.0 and summary["early"] == 1000.0


# --- rules: each fires on its crafted curve and stays quiet on a healthy one ---------------------

HEALTHY = dict(losses=curve(400, tau=40, noise=0.005), val={s: 1.6 + 0.5 * np.exp(-s / 40) for s in range(50, 401, 50)})


def test_healthy_run_has_no_warnings():
    m = metrics_of(HEALTHY["losses"], val=HEALTHY["val"])
    fired = an.analyze(m).recommendations
    assert [r for r in fired if r.severity == "warning"] == []


def test_rule_overfitting():
    m = metrics_of(curve(400), val=u_shaped_val(400, 20, 200))
    rec = an.rule_overfitting(m, an.analyze(m))
    assert rec is not None and rec.step == 200 and "rose after step 200" in rec.message
    healthy = metrics_of(HEALTHY["losses"], val=HEALTHY["val"])
    assert an.rule_overfitting(healthy, an.analyze(healthy)) is None


def test_rule_noisy():
    m = metrics_of(curve(400, noise=0.3))
    rec = an.rule_noisy(m, an.analyze(m))
    assert rec is not None and "grad_accumulation_steps" in rec.message
    assert "noisy_loss" not in rules_fired(metrics_of(curve(400, noise=0.01)))


def test_rule_still_improving():
    m = metrics_of(np.linspace(3, 1, 400), val={s: 3 - s / 200 for s in range(40, 401, 20)})
    rec = an.rule_still_improving(m, an.analyze(m))
    assert rec is not None and "train longer" in rec.message
    assert "still_improving" not in rules_fired(metrics_of(curve(400, tau=20)))


def test_rule_diverged():
    assert "diverged" in rules_fired(metrics_of(np.linspace(2, 5, 100)))
    with_nan = curve(100)
    with_nan[60] = np.nan
    assert "diverged" in rules_fired(metrics_of(with_nan))
    assert "diverged" not in rules_fired(metrics_of(curve(100)))


def test_rule_plateau():
    m = metrics_of(curve(1000, tau=30))  # flat from about step 100 of 1000
    rec = an.rule_plateau(m, an.analyze(m))
    assert rec is not None and rec.step < 300
    assert "plateau" not in rules_fired(metrics_of(curve(1000, tau=600)))


def test_rule_generalisation_gap():
    m = metrics_of(curve(200), val={100: 2.5, 200: 2.4}, eval_train={100: 1.6, 200: 1.4})
    rec = an.rule_generalisation_gap(m, an.analyze(m))
    assert rec is not None and "memorises" in rec.message
    assert "generalisation_gap" not in rules_fired(metrics_of(curve(200), val={200: 1.55}, eval_train={200: 1.5}))


def test_rule_no_validation():
    assert "no_validation" in rules_fired(metrics_of(curve(100)))
    assert "no_validation" not in rules_fired(metrics_of(curve(100), val={100: 1.6}))


def test_rule_throughput_drop():
    m = metrics_of(curve(200), tokens_per_second=[1000.0] * 150 + [400.0] * 50)
    rec = an.rule_throughput_drop(m, an.analyze(m))
    assert rec is not None and "1000 to 400" in rec.message
    assert "throughput_drop" not in rules_fired(metrics_of(curve(200)))


def preference_metrics(losses: np.ndarray, chosen_logps: np.ndarray) -> RunMetrics:
    events = make_events(losses)
    for event in events:
        if event["event"] == "train":
            event["logps_chosen"] = float(chosen_logps[event["step"] - 1])
    return RunMetrics.from_events(events, name="pref")


def test_rule_chosen_logps_collapse_warns_when_the_loss_falls_with_the_chosen_likelihood():
    steps = np.arange(100)
    losses = 0.69 * np.exp(-steps / 30)
    collapsing = preference_metrics(losses, -1.0 - 0.03 * steps)
    rec = an.rule_chosen_collapse(collapsing, an.analyze(collapsing))
    assert rec is not None and rec.severity == "warning" and "unlearning the good answers" in rec.message
    assert 10 < rec.step < 40
    holding = preference_metrics(losses, -1.0 + 0.002 * steps)  # chosen responses grow more likely: healthy
    assert an.rule_chosen_collapse(holding, an.analyze(holding)) is None
    cpt = metrics_of(HEALTHY["losses"], val=HEALTHY["val"])  # no preference metrics: nothing to say
    assert an.rule_chosen_collapse(cpt, an.analyze(cpt)) is None


def test_preference_series_reach_the_dashboard_data_and_only_for_preference_runs():
    from forgellm.analysis.series import run_series

    events = make_events(curve(20), val={10: 0.5, 20: 0.4})
    for event in events:
        if event["event"] == "eval":
            event.update(val_accuracy=0.5 + event["step"] / 50, val_margin=event["step"] / 10)
        elif event["event"] == "train":
            event["logps_chosen"] = -1.0
    series = run_series(RunMetrics.from_events(events))
    assert series["val_accuracy"]["y"] == [0.7, 0.9] and series["val_margin"]["x"] == [10, 20]
    assert len(series["logps_chosen"]["x"]) == 20
    assert not {"val_accuracy", "val_margin", "logps_chosen"} & set(run_series(metrics_of(curve(20))))
