"""The Datasets tab's synthesis: started as its own process, its progress and samples read back, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from forgellm.web.app import create_app
from tests.web_helpers import free_port


@pytest.fixture
def client(workspace: Path):
    app = create_app(
        {"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    )
    yield app.test_client()
    app.extensions["forgellm"]["tasks"].stop_all()


def _docs(workspace: Path) -> None:
    docs = workspace / "dataset" / "notes"
    docs.mkdir(parents=True)
    (docs / "orlemund.md").write_text(
        "Orlemund is a harbour town on the west coast of Vendrasil. It was founded in "
        "1642 by the merchant Tavel Orne.\n"
    )


@pytest.mark.slow  # a second process, loading a model
def test_synthesis_runs_in_its_own_process_and_reports_progress(client, workspace: Path, tiny_model_dir: Path) -> None:
    _docs(workspace)
    started = client.post(
        "/api/datasets/synthesize",
        json={"path": "notes", "teacher": str(tiny_model_dir), "questions_per_chunk": 1, "paraphrases": 1},
    )
    assert started.status_code == 202, started.get_json()
    assert started.get_json()["out"] == "notes-synth"
    assert "data synthesize" in started.get_json()["task"]["command"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        data = client.get("/api/datasets/synthesis?out=notes-synth").get_json()
        if data["task"]["state"] != "running":
            break
        time.sleep(0.5)
    assert data["task"]["state"] == "done", data["task"]["log_tail"]
    summary = data["summary"]
    assert summary["state"] == "done" and summary["chunks_done"] == summary["chunks"] == 1
    assert summary["teacher_calls"] == 2 and isinstance(summary["samples"], list)
    assert (workspace / "dataset/notes-synth/ift/qa.jsonl").exists()
    # The output folder is listed with the other datasets, to train on.
    paths = {e["path"] for e in client.get("/api/datasets").get_json()["entries"]}
    assert {"notes-synth/ift/qa.jsonl", "notes-synth/cpt/paraphrases.jsonl"} <= paths


def test_synthesis_bad_input(client, workspace: Path) -> None:
    _docs(workspace)

    def refused(body: dict, status: int, field: str) -> str:
        response = client.post("/api/datasets/synthesize", json=body)
        assert response.status_code == status, response.get_json()
        error = response.get_json()["error"]
        assert error["field"] == field
        return error["message"]

    refused({"path": "../outside"}, 403, "path")
    assert client.post("/api/datasets/synthesize", json={"path": "missing"}).status_code == 404
    refused({"path": "notes", "out": "../../elsewhere"}, 403, "out")
    assert "inside" in refused({"path": "notes", "out": "notes/synth"}, 400, "out")
    assert "ForgeLLM's own" in refused(
        {"path": "notes", "teacher": "http://x/v1", "api_key_env": "FORGELLM_TOKEN"}, 400, "api_key_env"
    )
    refused({"path": "notes", "questions_per_chunk": 0, "paraphrases": 0}, 400, "out")
    refused({"path": "notes", "questions_per_chunk": 99}, 400, "questions_per_chunk")
    assert client.get("/api/datasets/synthesis?out=notes").status_code == 404
    assert client.get("/api/tasks").get_json()["tasks"] == []  # nothing was started
