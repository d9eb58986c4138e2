"""How soon the web app is usable after opening it (the target is under 1 s on this machine).

A real ``forgellm web`` process serves the current workspace; Debian's Chromium, driven by
Playwright, opens the page in a fresh browser context each time (nothing cached) and the clock
stops when the Training form has been built from the config schema: the page has fetched its
scripts, the front-end libraries, the schema, the model and dataset lists, and answers input.
The first load is a warm-up (the server's own first requests), then the median of the rest.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
TARGET_SECONDS = 1.0


def run(quick: bool) -> list[dict[str, Any]]:
    chromium = next((p for p in CHROMIUM_CANDIDATES if Path(p).exists()), None) or shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("no Chromium found: install Debian's chromium (apt-packages.txt, `make setup`)")
    from playwright.sync_api import sync_playwright

    loads = 3 if quick else 8
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "forgellm", "web", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        _wait_healthy(url, server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True)
            try:
                times = [_open(browser, url) for _ in range(loads)][1:]
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
    seconds = statistics.median(times)
    return [
        {
            "name": "web_page_usable",
            "value": round(seconds, 3),
            "unit": "s",
            "baseline": TARGET_SECONDS,
            "ratio": round(seconds / TARGET_SECONDS, 3),
            "notes": f"fresh browser context to the Training form built from the schema; median of "
            f"{len(times)} loads after a warm-up (min {min(times):.3f}, max {max(times):.3f}); "
            f"baseline: the 1 s target",
        }
    ]


def _open(browser: Any, url: str) -> float:
    context = browser.new_context()
    try:
        page = context.new_page()
        start = time.perf_counter()
        page.goto(f"{url}/#training")
        page.wait_for_selector("#f-learning_rate", state="attached", timeout=60_000)
        return time.perf_counter() - start
    finally:
        context.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"forgellm web exited with status {process.returncode} before it answered")
        try:
            if httpx.get(f"{url}/api/health", timeout=1.0).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"forgellm web did not answer on {url} within {timeout:.0f} s")
