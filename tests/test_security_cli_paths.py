"""The CLI takes any path the person at the terminal names (the servers confine requests)."""

from __future__ import annotations

import json

from forgellm.cli.main import main
from tests.training_helpers import prepared_data, tiny_config_values, write_config


def test_train_reads_and_writes_outside_the_workspace(workspace, tiny_model_dir, tmp_path, capsys):
    corpus = prepared_data(tmp_path / "disk2" / "corpus")  # another disk, in the user's words
    scratch = tmp_path / "scratch" / "runs"
    values = tiny_config_values(
        tiny_model_dir,
        input_dir=str(corpus),
        output_dir=str(scratch),
        run_name="far",
        max_iterations=2,
        steps_per_eval=2,
        save_every=2,
    )
    main(["train", "--config", str(write_config(workspace / "c.yaml", **values))])  # returns: exit status 0
    run = scratch / "far"
    assert (run / ".forgellm-run").exists() and (run / "final").is_dir()
    assert json.loads((run / "status.json").read_text())["status"] == "done"
    assert "outside" not in capsys.readouterr().err


def test_info_shows_what_requests_may_reach(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FORGELLM_ROOTS", f"{tmp_path / 'corpora'}:{tmp_path / 'runs'}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    main(["info", "--json"])
    roots = json.loads(capsys.readouterr().out)["request_roots"]
    assert roots == {
        "env": "FORGELLM_ROOTS",
        "listed": [str(tmp_path / "corpora"), str(tmp_path / "runs")],
        "model_cache": str(tmp_path / "hub"),
        "error": None,
    }
    monkeypatch.setenv("FORGELLM_ROOTS", "relative/dir")
    main(["info"])
    assert "is not an absolute path" in capsys.readouterr().out
