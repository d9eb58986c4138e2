"""The web app in a real browser: Playwright drives Debian's Chromium against `forgellm start`.

One `forgellm start` (model server + web app, as a user runs it) in a workspace holding the
tiny model and the sample CPT documents serves every test of this module. Screenshots go to
test-artifacts/web/. Every test fails if the page raised a JavaScript error or logged one.
The tests run in file order and build on each other (the run trained in the first is compared,
the model it loads is unloaded, the web app and then the model server are killed last).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.training_helpers import prepared_data
from tests.web_helpers import StartedApp, alive, wait_for, write_long_run, write_run

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "web"
NETWORK_MESSAGES = ("Failed to load resource", "WebSocket connection to")


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[StartedApp]:
    workspace = tmp_path_factory.mktemp("web-ws")
    shutil.copytree(tiny_model_dir, workspace / "models" / "base" / "tiny")
    shutil.copytree(REPO / "dataset" / "sample" / "cpt", workspace / "dataset" / "sample" / "cpt")
    app = StartedApp(workspace)
    yield app
    assert app.stop() == 0, app.log()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/apt-packages.txt, `make setup`)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, started: StartedApp):
    """A fresh page on the web app; at the end, no JavaScript error may have happened on it."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    # Chromium also logs network failures as console errors: every non-2xx fetch, and sockets
    # refused while the web app restarts. The tests cause those on purpose; they are not script errors.
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console: {msg.text}")
            if msg.type == "error" and not msg.text.startswith(NETWORK_MESSAGES)
            else None
        ),
    )
    yield page
    context.close()
    assert errors == [], errors


def open_app(page, started: StartedApp, tab: str = "training") -> float:
    """Open the page on ``tab``; the seconds until the Training form is built from the schema."""
    begin = time.monotonic()
    page.goto(f"{started.url}/#{tab}")
    page.wait_for_selector("#f-learning_rate", state="attached")
    return time.monotonic() - begin


def pick_data(page, folder: str, stats_line: str) -> None:
    """Choose the tiny model and ``folder`` in the Training form, then wait until the data stats
    line under it satisfies ``stats_line``, a JavaScript predicate of its text ``t``."""
    page.select_option("#f-model_name", "tiny")
    page.select_option("#f-input_dir", folder)
    page.wait_for_function(
        f"(t => {stats_line})(document.querySelector('#dataset-stats').textContent)", timeout=120_000
    )


def chart_points(page, canvas: str, dataset: int = 0) -> list[dict]:
    return page.evaluate(
        "([id, i]) => { const c = Chart.getChart(document.getElementById(id));"
        " const d = c && c.data.datasets[i]; return d ? d.data : []; }",
        [canvas, dataset],
    )


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_train_watch_live_stop_then_chat_with_streaming_tokens(page, started: StartedApp):
    seconds = open_app(page, started)
    assert seconds < 10, f"the page took {seconds:.1f} s to become usable"
    # Every config key has a field with its help and default.
    schema = page.evaluate("fetch('/api/config/schema').then(r => r.json())")["fields"]
    for field in schema:
        if field["name"] != "training_type":
            text = page.locator(f"#field-{field['name']} .help").text_content()
            help_text, _, default = text.rpartition(" Default: ")
            assert help_text == field["description"] and json.loads(default[:-1]) == field["default"], text

    # A refused value is shown beside its field, and nothing starts.
    page.fill("#f-learning_rate", "-1")
    page.click("#train-start")
    page.wait_for_selector("#field-learning_rate.invalid")
    assert "learning_rate" in page.inner_text("#err-learning_rate")
    assert page.evaluate("fetch('/api/training/status').then(r => r.json())")["jobs"] == []
    shot(page, "training-invalid-field")

    pick_data(page, "dataset/sample/cpt", "t.includes('documents')")
    page.click("#train-form details > summary")
    for name, value in {
        "learning_rate": "0.001",
        "max_iterations": "2000",
        "max_seq_length": "32",
        "batch_size": "1",
        "steps_per_eval": "5",
        "val_batches": "1",
        "save_every": "50",
        "warmup_steps": "2",
        "data_mixture_ratio": "1",
        "run_name": "browser-run",
    }.items():
        page.fill(f"#f-{name}", value)
    page.select_option("#f-engine", "torch")
    page.click("#train-start")
    assert page.wait_for_selector("#tab-monitoring", state="visible")
    page.wait_for_function("document.querySelector('#mon-run').value === 'cpt/browser-run'", timeout=120_000)

    # The chart gains points while the run trains: pushed over SocketIO, no reload.
    assert wait_for(lambda: len(chart_points(page, "chart-loss")) >= 3, 180), "no training points arrived"
    before = len(chart_points(page, "chart-loss"))
    assert wait_for(lambda: len(chart_points(page, "chart-loss")) > before + 2, 120), "the chart stopped growing"
    assert wait_for(lambda: len(chart_points(page, "chart-loss", 1)) >= 1, 120), "no validation point"
    assert "ETA" in page.inner_text("#mon-progress-text")
    assert page.inner_text("#mon-status") == "running"
    shot(page, "monitoring-live")

    page.click("nav.tabs [data-tab=training]")
    page.click("#train-stop")
    page.click("nav.tabs [data-tab=monitoring]")
    page.wait_for_function("document.querySelector('#mon-status').textContent === 'stopped'", timeout=120_000)
    assert "checkpoint" in page.inner_text("#mon-events")
    # The server's analysis follows the run (a stop between evaluations leaves no scored checkpoint yet).
    page.wait_for_function(
        "document.querySelector('#mon-analysis').textContent.includes('best validation loss')", timeout=30_000
    )

    # Testing: load the base model, chat, and watch the answer arrive piece by piece.
    page.click("nav.tabs [data-tab=testing]")
    page.wait_for_selector("#test-model option[value=tiny]", state="attached")
    page.select_option("#test-model", "tiny")
    page.click("#test-load")
    page.wait_for_function("document.querySelector('#test-loaded').textContent.startsWith('loaded: ')", timeout=120_000)
    page.click("#tab-testing details > summary")
    for name, value in {"max_tokens": "40", "temperature": "1", "seed": "7"}.items():
        page.fill(f"#s-{name}", value)
    page.evaluate("""() => {
        window.__updates = 0;
        new MutationObserver(() => window.__updates++).observe(
            document.querySelector('#chat-a'), {subtree: true, childList: true, characterData: true});
    }""")
    page.fill("#test-system", "You are terse.")
    page.fill("#chat-input", "Tell me about Orlemund.")
    page.press("#chat-input", "Enter")
    page.wait_for_selector("#chat-a .msg.assistant .meta", timeout=120_000)
    assert page.inner_text("#chat-a .msg.user") == "Tell me about Orlemund."
    assert page.evaluate("window.__updates") >= 4, "the answer did not stream"
    assert "tokens" in page.inner_text("#chat-a .msg.assistant .meta")

    # Side by side: the base model and the stopped run's adapter answer the same prompt.
    page.check("#test-compare")
    option = page.locator("#test-compare-with option", has_text="tiny + cpt/browser-run").first
    page.select_option("#test-compare-with", option.get_attribute("value"))
    page.fill("#chat-input", "And its river?")
    page.click("#chat-send")
    page.wait_for_function("document.querySelectorAll('#chat-b .msg.assistant .meta').length === 1", timeout=180_000)
    assert page.locator("#chat-a .msg.assistant .meta").count() == 2
    assert "tiny + cpt/browser-run" in page.inner_text("#pane-b-title")
    shot(page, "testing-side-by-side")

    with page.expect_download() as download:
        page.click("#chat-export")
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported["system"] == "You are terse." and len(exported["panes"]) == 2
    assert [m["role"] for m in exported["panes"][0]["messages"]] == ["user", "assistant", "user", "assistant"]


def test_the_estimate_box_shows_the_servers_length_of_the_forms_config(page, started: StartedApp):
    """The length line under the form is the server's (`POST /api/training/estimate`), for the
    config the form would start: shuffled copies change the sequences it counts. At the default
    data_mixture_ratio (0.8) the run samples a replay set: the server counts the domain data alone
    and the stats line says so, as it does not at ratio 1."""
    open_app(page, started)
    pick_data(
        page,
        "dataset/sample/cpt",
        "t.includes(' documents, ') && t.endsWith('. Domain data only: the replay set (20% general text "
        "sampled from tiny) is generated when the run starts.')",
    )
    page.click("#train-form details > summary")
    for name, value in {"max_iterations": "", "num_epochs": "2", "max_seq_length": "32", "batch_size": "2",
                        "data_mixture_ratio": "1", "shuffled_copies": "2"}.items():  # fmt: skip
        page.fill(f"#f-{name}", value)
    page.select_option("#f-engine", "torch")
    page.wait_for_function(
        "/^\\d+ steps = 2 epochs of \\d+ sequences \\(the documents and 2 shuffled copies of each; /"
        ".test(document.querySelector('#train-estimate').textContent)",
        timeout=120_000,
    )
    # The numbers are the endpoint's for the same config (its data stats are cached by now).
    config = {"model_name": "tiny", "input_dir": "dataset/sample/cpt", "num_epochs": 2, "max_seq_length": 32,
              "batch_size": 2, "data_mixture_ratio": 1, "shuffled_copies": 2, "engine": "torch"}  # fmt: skip
    estimate = page.evaluate(
        "(config) => fetch('/api/training/estimate', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({config})}).then(r => r.json())",
        config,
    )
    assert "max_iterations" in estimate, estimate
    expected = f"{estimate['max_iterations']} steps = 2 epochs of {estimate['sequences']} sequences"
    assert page.inner_text("#train-estimate").startswith(expected)
    page.locator("#f-shuffled_copies").blur()  # the stats line follows a field once it is left (change)
    page.wait_for_function(
        "(t => t.includes(' documents, ') && !t.includes('replay'))(document.querySelector('#dataset-stats').textContent)",
        timeout=120_000,
    )
    page.fill("#f-num_epochs", "")
    page.fill("#f-max_iterations", "7")
    page.wait_for_function(
        "document.querySelector('#train-estimate').textContent.startsWith('7 steps = ')", timeout=60_000
    )
    shot(page, "training-estimate")


def test_a_429_is_asked_again_when_its_retry_after_says(page, started: StartedApp):
    """The stats line and the estimate ask again after a 429 (the app's stats processes are busy)
    when the answer's Retry-After says, and after 3 s when it gives no number of seconds."""
    asked: dict[str, list[float]] = {"stats": [], "estimate": []}

    def busy_once(kind: str, retry_after: str):
        def handle(route) -> None:
            asked[kind].append(time.monotonic())
            if len(asked[kind]) > 1:
                return route.continue_()
            error = {"error": {"message": "busy", "type": "rate_limit_error"}}
            route.fulfill(status=429, headers={"Retry-After": retry_after}, json=error)

        return handle

    open_app(page, started)
    page.select_option("#f-model_name", "tiny")
    page.route(lambda url: "/api/datasets/stats?path=sample%2Fcpt&" in url, busy_once("stats", "1"))
    page.select_option("#f-input_dir", "dataset/sample/cpt")
    page.wait_for_function(
        "document.querySelector('#dataset-stats').textContent.includes(' documents, ')", timeout=120_000
    )
    gap = asked["stats"][1] - asked["stats"][0]
    assert 0.9 <= gap < 2.5, asked  # Retry-After: 1, not the 3 s of an answer without one

    page.route("**/api/training/estimate", busy_once("estimate", "soon"))  # not seconds: 3 s
    page.click("#train-form details > summary")
    page.fill("#f-num_epochs", "")
    page.fill("#f-max_iterations", "7")
    page.wait_for_function(
        "document.querySelector('#train-estimate').textContent.startsWith('7 steps = ')", timeout=120_000
    )
    gap = asked["estimate"][1] - asked["estimate"][0]
    assert 2.9 <= gap < 5, asked


def test_the_stats_line_of_prepared_splits_says_they_are_trained_on_as_they_are(page, started: StartedApp):
    folder = prepared_data(started.workspace / "dataset" / "prepared", train=21, val=5, length=32)
    try:
        open_app(page, started)
        pick_data(
            page,
            "dataset/prepared",
            "t === 'dataset/prepared: prepared splits, trained on as they are (the data settings do not apply): "
            "21 / 5 train / validation sequences of 32 tokens.'",
        )
    finally:
        shutil.rmtree(folder)  # the later tests of this module list dataset/


def test_a_20000_step_run_is_drawn_downsampled_keeping_best_and_last(page, started: StartedApp):
    write_long_run(started.workspace, "cpt/long", steps=20_000, best_step=12_345)
    open_app(page, started, "monitoring")
    page.wait_for_selector("#mon-run option[value='cpt/long']", state="attached")
    begin = time.monotonic()
    page.select_option("#mon-run", "cpt/long")
    assert wait_for(lambda: (chart_points(page, "chart-loss") or [{}])[-1].get("x") == 20_000, 60)
    seconds = time.monotonic() - begin
    points = chart_points(page, "chart-loss")
    assert len(points) <= 1000, f"{len(points)} points drawn for one curve"
    assert {"x": 12_345, "y": 0.05} in points, "the best point was dropped"
    assert points[-1] == {"x": 20_000, "y": 0.777}, "the last point was dropped"
    assert seconds < 15, f"20,000 steps took {seconds:.1f} s to draw"
    # The page stays responsive: a tab switch and back answers at once.
    begin = time.monotonic()
    page.click("nav.tabs [data-tab=compare]")
    page.click("nav.tabs [data-tab=monitoring]")
    assert time.monotonic() - begin < 2
    shot(page, "monitoring-20000-steps")


def chart_lines(page, canvas: str) -> dict[str, list[dict]]:
    return page.evaluate(
        "(id) => { const c = Chart.getChart(document.getElementById(id));"
        " return Object.fromEntries((c ? c.data.datasets : []).map(d => [d.label, d.data])); }",
        canvas,
    )


def test_qa_accuracy_is_drawn_per_qa_file_in_monitoring_and_compare(page, started: StartedApp):
    write_run(started.workspace, "cpt/qa", steps=10, qa=True)  # evaluations at steps 5 and 10
    open_app(page, started, "monitoring")
    page.wait_for_selector("#mon-run option[value='cpt/qa']", state="attached")
    page.select_option("#mon-run", "cpt/qa")
    assert wait_for(lambda: len(chart_lines(page, "chart-qa")) == 3, 30), chart_lines(page, "chart-qa")
    lines = chart_lines(page, "chart-qa")
    assert lines["QA accuracy"] == [{"x": 5, "y": 0.4}, {"x": 10, "y": 12 / 15}]
    assert lines["chat-facts"] == [{"x": 5, "y": 0.5}, {"x": 10, "y": 1.0}]
    assert lines["document-facts"] == [{"x": 5, "y": 0.2}, {"x": 10, "y": 0.4}]
    assert "QA 80% (10/10 chat-facts, 2/5 document-facts)" in page.inner_text("#mon-progress-text")
    shot(page, "monitoring-qa-files")

    page.click("nav.tabs [data-tab=compare]")
    page.wait_for_selector("#cmp-runs option[value='cpt/qa']", state="attached")
    page.select_option("#cmp-runs", ["cpt/qa"])
    page.click("#cmp-go")
    assert wait_for(lambda: len(chart_lines(page, "cmp-qa")) == 3, 30), chart_lines(page, "cmp-qa")
    lines = chart_lines(page, "cmp-qa")
    assert set(lines) == {"cpt/qa QA accuracy", "cpt/qa chat-facts", "cpt/qa document-facts"}
    assert lines["cpt/qa document-facts"] == [{"x": 5, "y": 0.2}, {"x": 10, "y": 0.4}]


def test_compare_models_datasets_and_dark_mode(page, started: StartedApp):
    open_app(page, started, "compare")
    page.wait_for_selector("#cmp-runs option[value='cpt/long']", state="attached")
    page.select_option("#cmp-runs", ["cpt/long", "cpt/browser-run"])
    page.click("#cmp-go")
    page.wait_for_function("document.querySelectorAll('#cmp-table tbody tr').length === 2")
    assert len(chart_points(page, "cmp-train", 1)) > 0
    assert "1.2" in page.inner_text("#cmp-table tbody tr:first-child")  # best val loss of cpt/long
    page.click("#theme-toggle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    shot(page, "compare-dark")

    page.click("nav.tabs [data-tab=models]")
    row = page.locator("#models-table tbody tr", has_text="cpt/browser-run")
    row.wait_for()
    page.wait_for_function("document.querySelector('#models-loaded').textContent.includes('tiny')")
    assert not page.is_disabled("#models-unload")
    page.click("#models-unload")
    page.wait_for_function(
        "document.querySelector('#models-loaded').textContent.startsWith('no model')", timeout=30_000
    )
    page.once("dialog", lambda dialog: dialog.dismiss())  # the confirmation: dismissed, nothing is deleted
    page.locator("#models-table tbody tr", has_text="cpt/long").locator("button", has_text="Delete").click()
    assert (started.workspace / "models" / "cpt" / "long").exists()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#models-table tbody tr", has_text="cpt/long").locator("button", has_text="Delete").click()
    assert wait_for(lambda: not (started.workspace / "models" / "cpt" / "long").exists(), 10)
    page.wait_for_function(
        "![...document.querySelectorAll('#models-table td')].some(td => td.textContent === 'cpt/long')"
    )
    shot(page, "models-dark")

    page.click("nav.tabs [data-tab=datasets]")
    page.click("#ds-list li:has-text('001-town-orlemund.md')")
    page.wait_for_function("document.querySelector('#ds-preview').textContent.includes('Orlemund')")
    page.select_option("#ds-model", "tiny")
    page.click("#ds-stats-btn")
    page.wait_for_selector("#ds-stats dl.kv dt", timeout=120_000)
    assert "documents" in page.inner_text("#ds-stats")
    shot(page, "datasets-dark")


def test_a_page_that_reconnects_catches_up_without_gaps_or_duplicates(page, started: StartedApp):
    run = write_run(started.workspace, "cpt/reconnect", steps=4, status="running", pid=os.getpid())

    def append(steps: range) -> None:
        with open(run / "metrics.jsonl", "a") as fh:
            fh.writelines(json.dumps({"event": "train", "step": s, "loss": 3.0 - 0.1 * s}) + "\n" for s in steps)

    def drawn_steps() -> list[int]:
        return [p["x"] for p in chart_points(page, "chart-loss")]

    open_app(page, started, "monitoring")
    page.wait_for_selector("#mon-run option[value='cpt/reconnect']", state="attached")
    page.select_option("#mon-run", "cpt/reconnect")
    assert wait_for(lambda: drawn_steps() == [1, 2, 3, 4], 30), drawn_steps()
    # The web app dies (the supervisor starts a new one) while the run writes on.
    web = started.child("forgellm.web.main")
    os.kill(web, signal.SIGKILL)
    append(range(5, 10))
    assert wait_for(lambda: drawn_steps() == list(range(1, 10)), 120), drawn_steps()
    assert started.child("forgellm.web.main") != web
    append(range(10, 13))  # and live again after the catch-up
    assert wait_for(lambda: drawn_steps() == list(range(1, 13)), 30), drawn_steps()
    (run / "status.json").write_text(json.dumps({"status": "stopped", "pid": 1, "step": 12}))


def test_a_model_server_killed_mid_answer_comes_back_with_its_model_and_the_page_says_so(page, started: StartedApp):
    open_app(page, started, "testing")
    page.wait_for_function("document.querySelector('#server-badge').textContent.startsWith('server: up')")
    page.wait_for_selector("#test-model option[value=tiny]", state="attached")
    page.select_option("#test-model", "tiny")
    page.click("#test-load")
    page.wait_for_function(
        "document.querySelector('#test-loaded').textContent.startsWith('loaded: tiny')", timeout=120_000
    )
    page.click("#tab-testing details > summary")
    page.fill("#s-max_tokens", "4000")
    page.fill("#s-temperature", "1")
    page.fill("#chat-input", "Tell me everything about Orlemund.")
    page.press("#chat-input", "Enter")
    page.wait_for_function(
        "(document.querySelector('#chat-a .msg.assistant:last-child .text') || {}).textContent", timeout=60_000
    )
    server = started.child("forgellm server")
    os.kill(server, signal.SIGKILL)

    # The cut answer ends with an error mark that says what happened, not silently.
    page.wait_for_selector("#chat-a .msg.assistant:last-child .meta.error", timeout=60_000)
    mark = page.inner_text("#chat-a .msg.assistant:last-child .meta.error")
    assert "the model server restarted; reloading" in mark, mark
    page.wait_for_function(
        "document.querySelector('#server-badge').textContent.includes('restarted 1×')", timeout=120_000
    )
    assert not alive(server) and started.child("forgellm server") != server
    assert "reloading tiny" in page.inner_text("#toast")
    shot(page, "server-restarted")
    # Back with its model, no load needed: the next question is answered.
    page.wait_for_function(
        "document.querySelector('#test-loaded').textContent.startsWith('loaded: tiny')", timeout=120_000
    )
    page.fill("#s-max_tokens", "8")
    page.fill("#chat-input", "And its river?")
    page.press("#chat-input", "Enter")
    page.wait_for_function(
        "(document.querySelector('#chat-a .msg.assistant:last-child .meta') || {}).textContent?.includes('tokens')",
        timeout=120_000,
    )
