"""Chart data (downsampling), PNG and HTML dashboards through the CLI."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from forgellm.analysis.series import dashboard_data, downsample, lttb_indices, qa_series
from forgellm.cli.main import root
from tests.analysis_helpers import curve, make_events, write_run
from tests.cli_helpers import forgellm_error

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str):
    return CliRunner().invoke(root, list(args))


def test_lttb_keeps_endpoints_and_a_spike():
    x = np.arange(10_000, dtype=np.float64)
    y = np.sin(x / 500)
    y[4321] = 50.0
    idx = lttb_indices(x, y, 200)
    assert len(idx) == 200 and idx[0] == 0 and idx[-1] == 9999 and 4321 in idx
    assert np.all(np.diff(idx) > 0)


def test_downsample_never_drops_best_or_last_point():
    rng = np.random.default_rng(3)
    for trial in range(20):
        y = curve(5000, noise=0.2, seed=trial) + rng.random(5000)
        x = np.arange(5000)
        xs, ys = downsample(x, y, 100)
        assert len(xs) <= 100
        assert ys.min() == y.min() and xs[-1] == x[-1]


def test_downsample_drops_missing_values_and_keeps_short_series_whole():
    y = np.array([1.0, np.nan, 3.0])
    xs, ys = downsample(np.arange(3), y, 100)
    assert xs.tolist() == [0, 2] and ys.tolist() == [1.0, 3.0]


def test_dashboard_data_shape(tmp_path):
    events = make_events(curve(3000), val={s: 2.0 for s in range(500, 3001, 500)}, checkpoints=[1500, 3000])
    run = write_run(tmp_path, "r", events, checkpoint_dirs=[1500, 3000])
    data = dashboard_data([run], max_points=200)
    json.dumps(data, allow_nan=False)  # the web app sends it as strict JSON
    (entry,) = data["runs"]
    assert entry["name"] == "r" and entry["config"]["engine"] == "torch"
    assert len(entry["series"]["train_loss"]["x"]) <= 200
    assert entry["series"]["train_loss"]["x"][-1] == 3000
    assert entry["series"]["val_loss"]["x"] == list(range(500, 3001, 500))
    assert entry["analysis"]["recommended"]["name"] in ("step_001500", "step_003000")


QA = {200: {"document-facts": (1, 4), "chat-facts": (2, 8)}, 400: {"document-facts": (2, 4), "chat-facts": (6, 8)}}


def test_qa_accuracy_is_charted_overall_and_per_qa_file(tmp_path):
    run = write_run(tmp_path, "r", make_events(curve(400), val={200: 2.0, 400: 1.9}, qa=QA))
    (entry,) = dashboard_data([run])["runs"]
    assert entry["series"]["qa_accuracy"] == {"x": [200, 400], "y": [0.25, 8 / 12]}
    assert entry["series"]["qa_accuracy:chat-facts"] == {"x": [200, 400], "y": [0.25, 0.75]}
    assert entry["series"]["qa_accuracy:document-facts"] == {"x": [200, 400], "y": [0.25, 0.5]}
    plain = write_run(tmp_path, "plain", make_events(curve(400), val={200: 2.0}))
    assert qa_series(dashboard_data([plain, run])["runs"]) == [
        "qa_accuracy",
        "qa_accuracy:chat-facts",
        "qa_accuracy:document-facts",
    ]
    assert qa_series(dashboard_data([plain])["runs"]) == []

    out = tmp_path / "d.html"
    assert invoke("dashboard", str(run), "--out", str(out)).exit_code == 0
    page = out.read_text()
    panels = json.loads(re.search(r'<script type="application/json" id="panels">(.*?)</script>', page, re.S).group(1))
    assert ["qa_accuracy", "qa_accuracy:chat-facts", "qa_accuracy:document-facts"] in [p[1] for p in panels]
    labels = json.loads(re.search(r'<script type="application/json" id="labels">(.*?)</script>', page, re.S).group(1))
    assert labels["qa_accuracy:chat-facts"] == "QA chat-facts"


def test_png_dashboard_draws_a_line_per_qa_file(tmp_path, monkeypatch):
    from forgellm.analysis import dashboard_png

    drawn: list[str] = []
    plot = dashboard_png.plt.Axes.plot
    monkeypatch.setattr(
        dashboard_png.plt.Axes, "plot", lambda ax, *a, **k: drawn.append(k.get("label")) or plot(ax, *a, **k)
    )
    run = write_run(tmp_path, "r", make_events(curve(400), val={200: 2.0, 400: 1.9}, qa=QA))
    assert invoke("dashboard", str(run)).exit_code == 0
    assert {"qa accuracy", "QA chat-facts", "QA document-facts"} <= set(drawn)


def test_png_dashboard_of_one_run(tmp_path):
    run = write_run(
        tmp_path,
        "r",
        make_events(curve(500), val={250: 2.0, 500: 1.9}, checkpoints=[250, 500]),
        checkpoint_dirs=[250, 500],
    )
    result = invoke("dashboard", str(run))
    assert result.exit_code == 0, result.output
    assert (run / "dashboard.png").read_bytes().startswith(PNG_MAGIC)
    assert "recommended step_000500" in result.output


def test_html_dashboard_compares_runs_and_is_self_contained(tmp_path):
    a = write_run(tmp_path, "run-a", make_events(curve(400), val={200: 2.2, 400: 2.1}))
    b = write_run(tmp_path, "run-b", make_events(curve(400, tau=50, noise=0.3), val={200: 2.0, 400: 2.3}))
    out = tmp_path / "cmp.html"
    result = invoke("dashboard", str(a), str(b), "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "run-a" in page and "run-b" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource in the dashboard"
    assert "Chart.js v4" in page and "new Chart(" in page  # the plotting library is inline
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    assert [r["name"] for r in data["runs"]] == ["run-a", "run-b"]
    assert "Training loss is noisy" in page  # run-b's recommendation is written out


def test_html_escapes_run_names(tmp_path):
    run = write_run(tmp_path, "x<script>alert(1)</script>", make_events(curve(50)))
    out = tmp_path / "d.html"
    assert invoke("dashboard", str(run), "--format", "html", "--out", str(out)).exit_code == 0
    page = out.read_text()
    assert "<script>alert(1)" not in page


def test_dashboard_of_a_missing_run_is_a_clear_error(workspace):
    assert "run 'no-such-run' not found" in forgellm_error("dashboard", "no-such-run")


def test_dashboard_accepts_a_run_name_in_the_workspace(workspace):
    write_run(workspace, "named", make_events(curve(60)))
    out = workspace / "named.png"
    result = invoke("dashboard", "cpt/named", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.slow
def test_html_dashboard_draws_in_a_browser_without_network(tmp_path):
    """Chromium opens the file with every non-file request refused: all five charts (QA per file
    included) draw, no error."""
    from playwright.sync_api import sync_playwright

    val = {s: 2.0 + 0.002 * abs(s - 200) for s in range(20, 401, 20)}
    a = write_run(
        tmp_path, "run-a", make_events(curve(400), val=val, checkpoints=[200, 400], qa=QA), checkpoint_dirs=[200, 400]
    )
    b = write_run(tmp_path, "run-b", make_events(curve(400, noise=0.3), val={200: 2.0, 400: 2.3}))
    out = tmp_path / "cmp.html"
    assert invoke("dashboard", str(a), str(b), "--out", str(out)).exit_code == 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or None, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            requests, errors = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route(
                "**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort()
            )
            page.goto(out.as_uri())
            page.wait_for_function("window.CHARTS !== undefined", timeout=30_000)
            charts = page.evaluate(
                "window.CHARTS.map(c => c && {labels: c.data.datasets.map(d => d.label), "
                "width: c.width, drawn: c.chartArea.width})"
            )
        finally:
            browser.close()
    assert errors == [] and requests == [out.as_uri()]
    assert len(charts) == 5 and all(c and c["drawn"] > 100 for c in charts)
    assert charts[4]["labels"] == ["run-a qa accuracy", "run-a QA chat-facts", "run-a QA document-facts"]
    assert "run-a recommended step_000200" in charts[0]["labels"]  # the score's pick, not called best
    assert "run-a overfitting onset" in charts[0]["labels"] and "run-b val loss" in charts[0]["labels"]
