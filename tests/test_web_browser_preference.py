"""A preference run started from the Training form and watched to completion in a real browser
(Chromium through Playwright, as test_web_browser.py), in a web app of its own: in the shared
module's app an earlier test's run was still counted as active and the start got 409."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_web_browser import browser, chart_points, open_app, page, shot  # noqa: F401 (fixtures)
from tests.web_helpers import StartedApp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[StartedApp]:
    workspace = tmp_path_factory.mktemp("web-pref-ws")
    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    app = StartedApp(workspace)
    yield app
    assert app.stop() == 0, app.log()


def test_a_preference_run_from_the_form_watched_to_completion(page, started: StartedApp):
    pairs = [
        {"prompt": f"Question {i}?", "chosen": f"The grounded answer {i}.", "rejected": f"A fluent guess {i * 7}."}
        for i in range(24)
    ]
    folder = started.workspace / "dataset" / "pref"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    open_app(page, started)
    page.click("#train-form details > summary")
    # The loss parameters show only where they apply.
    assert page.locator("#field-beta").is_hidden() and page.locator("#field-preference_loss").is_hidden()
    page.check("input[name=training_type][value=preference]")
    assert page.locator("#field-beta").is_visible() and page.locator("#field-orpo_lambda").is_hidden()
    page.select_option("#f-preference_loss", "orpo")
    assert page.locator("#field-beta").is_hidden() and page.locator("#field-orpo_lambda").is_visible()
    page.select_option("#f-preference_loss", "dpo")
    page.select_option("#f-model_name", "tiny")
    page.select_option("#f-input_dir", "dataset/pref")
    page.wait_for_function("document.querySelector('#dataset-stats').textContent.includes('pairs')", timeout=120_000)
    for name, value in {
        "learning_rate": "0.005",
        "max_iterations": "12",
        "max_seq_length": "64",
        "batch_size": "2",
        "steps_per_eval": "6",
        "val_batches": "-1",
        "save_every": "6",
        "warmup_steps": "2",
        "data_mixture_ratio": "1",
        "beta": "0.2",
        "run_name": "pref-run",
    }.items():
        page.fill(f"#f-{name}", value)
    page.select_option("#f-engine", "torch")
    page.click("#train-start")
    page.wait_for_function("document.querySelector('#mon-run').value === 'ift/pref-run'", timeout=120_000)
    page.wait_for_function("document.querySelector('#mon-status').textContent === 'done'", timeout=300_000)
    assert page.locator(".pref-panel").first.is_visible()
    assert len(chart_points(page, "chart-accuracy", 1)) >= 2  # validation accuracy at the start and after training
    assert len(chart_points(page, "chart-rewards")) >= 6
    config = (started.workspace / "models" / "ift" / "pref-run" / "config.yaml").read_text()
    assert "training_type: preference" in config and "beta: 0.2" in config
    shot(page, "monitoring-preference")
