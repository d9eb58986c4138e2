"""``forgellm server`` as a user starts it: a separate process that loads --model at start and
serves the OpenAI client."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.slow


def test_forgellm_server_process_loads_its_model_and_serves(tiny_model_dir: Path, tmp_path: Path) -> None:
    forgellm = Path(sys.executable).with_name("forgellm")
    env = {**{k: v for k, v in os.environ.items() if k != "FORGELLM_TOKEN"}, "FORGELLM_HOME": str(tmp_path)}
    process = subprocess.Popen(
        [str(forgellm), "server", "--port", "0", "--model", str(tiny_model_dir), "--engine", "torch"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = []
        for line in process.stderr:
            seen.append(line)
            if match := re.search(r"model server on (http://127\.0\.0\.1:\d+)", line):
                break
        else:
            pytest.fail(f"the server did not start: {''.join(seen)}")
        assert any(f"loaded {tiny_model_dir.name} (torch)" in line for line in seen)
        client = openai.OpenAI(base_url=f"{match.group(1)}/v1", api_key="none", max_retries=0, timeout=120)
        assert client.models.list().data[0].id == tiny_model_dir.name  # the model loaded at start
        answer = client.chat.completions.create(
            model=tiny_model_dir.name, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.usage.completion_tokens == 3
        # Its log: one JSON object per line, the requests among them with their ids.
        records = [json.loads(line) for line in (tmp_path / "logs" / "server.log").read_text().splitlines()]
        assert any("/v1/chat/completions" in r.get("message", "") and r.get("request_id") for r in records), records
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: the server unloads and exits
        try:
            assert process.wait(timeout=30) in (0, 1, 130, -signal.SIGINT)
        finally:
            if process.poll() is None:
                process.kill()
            process.stderr.close()
