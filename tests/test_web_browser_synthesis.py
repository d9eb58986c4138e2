"""The Datasets tab's synthesis in a real browser (Chromium through Playwright, as test_web_browser.py):
a folder chosen, a synthesis started with the tiny model as teacher, its progress shown to the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_web_browser import ARTIFACTS, browser, open_app, page, shot  # noqa: F401 (fixtures)
from tests.web_helpers import StartedApp

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    import shutil

    workspace = tmp_path_factory.mktemp("web-synth-ws")
    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    notes = workspace / "dataset" / "notes"
    notes.mkdir(parents=True)
    (notes / "orlemund.md").write_text(
        "Orlemund is a harbour town on the west coast of Vendrasil. It was founded "
        "in 1642 by the merchant Tavel Orne.\n"
    )
    app = StartedApp(workspace)
    yield app
    assert app.stop() == 0, app.log()


def test_synthesize_a_folder_from_the_datasets_tab(page, started: StartedApp) -> None:  # noqa: F811
    open_app(page, started, "datasets")
    page.click("#ds-list li.folder:has-text('notes/')")
    page.click("#ds-synth summary")
    page.fill("#ds-synth-teacher", "tiny")
    page.fill("#ds-synth-questions", "1")
    page.fill("#ds-synth-paraphrases", "1")
    page.click("#ds-synth-btn")
    page.wait_for_function("document.querySelector('#ds-synth-msg').textContent.startsWith('done')", timeout=240_000)
    message = page.inner_text("#ds-synth-msg")
    assert "1 / 1 chunks" in message and "into dataset/notes-synth" in message
    assert page.evaluate("document.querySelector('#ds-synth-bar').style.width") == "100%"
    assert (started.workspace / "dataset/notes-synth/summary.json").exists()
    page.wait_for_selector("#ds-list li:has-text('qa.jsonl')")  # the list shows the new folder
    shot(page, "datasets-synthesis")
