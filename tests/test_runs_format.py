"""The run-folder owner (`forgellm.runs`): one writer per run (the run lock), checkpoints checked by
their manifests, resume writing its configuration back, `done` only after `final/`, status files on a
full disk, and the one summary and best rule that every reader uses. Run folders are made by the trainer."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from forgellm.runs import lock
from forgellm.runs.checkpoints import choose_checkpoint, read_best
from forgellm.runs.events import Event, read_events
from forgellm.runs.summary import summarize
from tests.cli_helpers import forgellm
from tests.training_helpers import prepared_data, tiny_config_values, write_config


@pytest.fixture
def tiny_run(workspace, tiny_model_dir) -> Path:
    """A finished 6-step run with checkpoints at steps 3 and 6 (and final/)."""
    prepared_data(workspace / "prepared")
    cfg = write_config(
        workspace / "c.yaml",
        **tiny_config_values(tiny_model_dir, run_name="tiny", max_iterations=6, steps_per_eval=3, save_every=3),
    )
    code, _, err = forgellm("train", "--config", str(cfg))
    assert code == 0, err
    return workspace / "models/cpt/tiny"


def status_of(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)


# --------------------------------------------------------------------------- one writer per run


def test_resume_and_overwrite_are_refused_while_a_live_process_holds_the_run(tiny_run, workspace):
    before = (tiny_run / "metrics.jsonl").read_bytes()
    with lock.RunLock(tiny_run).acquire():  # what a live trainer holds for its whole life
        code, _, err = forgellm("train", "--resume", "tiny", "--set", "max_iterations=9")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"process {os.getpid()} on {socket.gethostname()}" in err and "kill -TERM" in err
        code, _, err = forgellm("train", "--config", str(workspace / "c.yaml"), "--overwrite")
        assert code == 2 and "cannot overwrite run tiny" in err
        code, _, err = forgellm("train", "--resume", "tiny", "--nproc", "2")  # refused before any worker starts
        assert code == 2 and f"process {os.getpid()}" in err
        assert forgellm("runs", "show", "tiny", "--json")[1] and summarize(tiny_run).status == "running"
    # nothing of the run was touched, and its lock, now stale (no process holds it), blocks nobody
    assert (tiny_run / "metrics.jsonl").read_bytes() == before and status_of(tiny_run)["status"] == "done"
    assert (tiny_run / lock.LOCK_FILE).exists() and lock.holder(tiny_run) is None
    code, _, err = forgellm("train", "--resume", "tiny", "--set", "max_iterations=8")
    assert code == 0, err
    assert status_of(tiny_run)["status"] == "done" and summarize(tiny_run).step == 8


@pytest.mark.slow
def test_a_second_trainer_process_is_refused_and_the_first_keeps_its_run(tiny_run, workspace):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env["PYTHONPATH"]
    first = subprocess.Popen(
        [sys.executable, "-m", "forgellm", "train", "--resume", "tiny", "--set", "max_iterations=100000"],
        cwd=workspace,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and summarize(tiny_run).step < 8:
            time.sleep(0.2)
        holder = lock.holder(tiny_run)
        assert holder is not None and holder.pid == first.pid
        for args in (("train", "--resume", "tiny"), ("train", "--config", str(workspace / "c.yaml"), "--overwrite")):
            second = subprocess.run(
                [sys.executable, "-m", "forgellm", *args],
                cwd=workspace,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert second.returncode == 2 and f"process {first.pid}" in second.stderr, second.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(120) == 0
    finally:
        first.kill()
    steps = [e["step"] for e in read_events(tiny_run / "metrics.jsonl", event=Event.TRAIN)]
    assert steps == sorted(set(steps))  # one writer: no step twice
    assert status_of(tiny_run)["status"] == "stopped" and lock.holder(tiny_run) is None


# --------------------------------------------------------------------------- checkpoints you can trust


def test_a_truncated_optimizer_resumes_from_the_newest_intact_checkpoint(tiny_run, caplog):
    broken = tiny_run / "checkpoints/step_000006/optimizer.pt"
    truncate(broken)
    with caplog.at_level(logging.WARNING, logger="forgellm"):
        code, _, err = forgellm("train", "--resume", "tiny", "--set", "max_iterations=9")
    assert code == 0, err
    assert str(broken) in caplog.text and "step_000003" in caplog.text
    resume = read_events(tiny_run / "metrics.jsonl", event=Event.RESUME)[-1]
    assert resume["step"] == 3 and status_of(tiny_run)["status"] == "done"


def test_no_intact_checkpoint_is_one_line_and_leaves_the_finished_run_as_it_was(tiny_run):
    for name in ("step_000003", "step_000006"):
        truncate(tiny_run / "checkpoints" / name / "optimizer.pt")
    status, events = status_of(tiny_run), (tiny_run / "metrics.jsonl").read_bytes()
    code, _, err = forgellm("train", "--resume", "tiny", "--set", "max_iterations=9")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no intact checkpoint" in err and "optimizer.pt" in err
    assert status_of(tiny_run) == status and (tiny_run / "metrics.jsonl").read_bytes() == events


def test_a_truncated_adapter_is_skipped_by_eval_fuse_and_publish(tiny_run, workspace, caplog):
    broken = tiny_run / "checkpoints/step_000006/adapter_model.safetensors"
    truncate(broken)
    with caplog.at_level(logging.WARNING, logger="forgellm"):
        assert choose_checkpoint(tiny_run, "latest").name == "step_000003"
        qa = workspace / "qa.jsonl"
        qa.write_text(json.dumps({"question": "Say hi", "answer": "hi"}) + "\n")
        code, out, err = forgellm(
            "eval", "tiny", "--checkpoint", "latest", "--qa", str(qa), "--max-tokens", "2", "--json"
        )
    assert code == 0, err
    assert json.loads(out)["path"].endswith("step_000003") and str(broken) in caplog.text
    code, _, err = forgellm("eval", "tiny", "--checkpoint", "6", "--qa", str(qa))
    assert code == 2 and "adapter_model.safetensors" in err and "step_000003" in err


# --------------------------------------------------------------------------- resume keeps its configuration


def test_resume_writes_its_configuration_back(tiny_run):
    code, _, err = forgellm("train", "--resume", "tiny", "--set", "max_iterations=9")
    assert code == 0, err
    assert yaml.safe_load((tiny_run / "config.yaml").read_text())["max_iterations"] == 9
    assert yaml.safe_load((tiny_run / "config.1.yaml").read_text())["max_iterations"] == 6
    resume = read_events(tiny_run / "metrics.jsonl", event=Event.RESUME)[-1]
    # num_epochs (8 steps an epoch here) is derived again from the new length, and said so
    assert resume["changed"] == {"max_iterations": [6, 9], "num_epochs": [0.75, 1.125]}
    assert resume["total_steps"] == 9 and resume["num_epochs"] == 1.125
    code, out, _ = forgellm("runs", "show", "tiny")
    assert "step 9/9 (100%)" in out
    # a second resume without --set keeps the new value: nothing to change, nothing archived
    code, _, err = forgellm("train", "--resume", "tiny")
    assert code == 0, err
    assert read_events(tiny_run / "metrics.jsonl", event=Event.RESUME)[-1]["changed"] == {}
    assert not (tiny_run / "config.2.yaml").exists() and summarize(tiny_run).total_steps == 9
    # a new length in epochs gives new steps: both are written back and both are in `changed`
    code, _, err = forgellm("train", "--resume", "tiny", "--set", "num_epochs=1.5")
    assert code == 0, err
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert (config["max_iterations"], config["num_epochs"]) == (12, 1.5)
    resume = read_events(tiny_run / "metrics.jsonl", event=Event.RESUME)[-1]
    assert resume["changed"] == {"max_iterations": [9, 12], "num_epochs": [1.125, 1.5]}
    assert summarize(tiny_run).total_steps == 12 and summarize(tiny_run).num_epochs == 1.5


# --------------------------------------------------------------------------- done only after final/


def test_a_run_is_done_only_after_its_final_weights_exist(workspace, tiny_model_dir, monkeypatch):
    from forgellm.training import run as run_module

    def killed_while_saving(trainable, run_dir):
        (run_dir / ".tmp-final").mkdir()
        raise KeyboardInterrupt  # as a kill during the final save leaves it

    monkeypatch.setattr(run_module, "_save_final", killed_while_saving)
    prepared_data(workspace / "prepared")
    cfg = write_config(
        workspace / "c.yaml",
        **tiny_config_values(tiny_model_dir, run_name="cut", max_iterations=3, steps_per_eval=3, save_every=3),
    )
    forgellm("train", "--config", str(cfg))
    run = workspace / "models/cpt/cut"
    assert not (run / "final").exists() and not read_events(run / "metrics.jsonl", event=Event.DONE)
    assert status_of(run)["status"] != "done" and summarize(run).status == "failed"


# --------------------------------------------------------------------------- status files on a full disk


def test_the_status_is_updated_on_a_full_disk_without_temporary_files(tmp_path, monkeypatch):
    import builtins

    from forgellm.training.callbacks import StatusFile

    status = StatusFile(tmp_path / "status.json", 10)
    status.write("running", 4)
    real_open = builtins.open

    def full_disk(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    status.write("failed", 5, message="cannot write: the disk is full")
    monkeypatch.undo()
    assert status_of(tmp_path)["status"] == "failed" and status_of(tmp_path)["step"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


# --------------------------------------------------------------------------- one best, one summary


def test_every_reader_names_the_trainers_best_checkpoint(tiny_run, workspace):
    from forgellm.analysis.analyze import analyze
    from forgellm.analysis.runs import load_run
    from forgellm.models.resolve import resolve_adapter
    from forgellm.web.app import create_app
    from tests.web_helpers import free_port

    best = read_best(tiny_run)["checkpoint"]
    (tiny_run / "final").rename(tiny_run / "final-aside")  # so "the run" means its best checkpoint
    assert choose_checkpoint(tiny_run, "best").name == best
    assert resolve_adapter("tiny").path.name == best
    assert json.loads(forgellm("runs", "show", "tiny", "--json")[1])["best_checkpoint"] == best
    assert analyze(load_run(tiny_run)).best_checkpoint == best
    client = create_app(
        {"WORKSPACE": workspace, "START_BACKGROUND": False, "MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}"}
    ).test_client()
    shown = client.get("/api/runs/cpt/tiny").get_json()
    assert shown["best_checkpoint"] == best
    assert [c["name"] for c in shown["checkpoints"] if c["best"]] == [best]


# --------------------------------------------------------------------------- the web app across its own restart


def test_the_server_restart_count_survives_a_restart_of_the_web_app(tmp_path, monkeypatch):
    from forgellm.web.services.server_watch import ServerWatch

    class Sink:
        def emit(self, *args, **kwargs):
            pass

    state = tmp_path / "server-watch.json"
    starts = iter([1000.0, 1000.0, 2000.0, 2000.0, 3000.0])  # the server's start time, as /api/health tells it
    monkeypatch.setattr(ServerWatch, "_ask", lambda self: (next(starts), {"loaded": []}))
    first = ServerWatch(Sink(), "http://127.0.0.1:1", state_file=state)
    first.check(), first.check()
    assert first.check()["restarts"] == 1  # the server restarted once
    again = ServerWatch(Sink(), "http://127.0.0.1:1", state_file=state)  # the web app restarted
    assert again.check()["restarts"] == 1  # same server process: still one
    assert again.check()["restarts"] == 2  # and a later server restart counts on from there


@pytest.mark.slow
def test_a_restarted_web_app_stops_the_training_it_started(workspace, tiny_model_dir):
    import httpx

    from tests.web_helpers import StartedApp, alive, command_line, descendants, wait_for

    prepared_data(workspace / "prepared")
    app = StartedApp(workspace)
    try:
        config = tiny_config_values(tiny_model_dir, run_name="web-run", max_iterations=100000, save_every=50)
        started = httpx.post(f"{app.url}/api/training/start", json={"config": config}, timeout=30)
        assert started.status_code == 202, started.text
        run = workspace / "models/cpt/web-run"
        assert wait_for(lambda: lock.holder(run) is not None and summarize(run).step >= 2, 180)
        trainer = lock.holder(run)
        assert trainer.origin == "web"
        # a second writer through the web app is refused while it trains
        again = httpx.post(
            f"{app.url}/api/training/start", json={"config": config, "allow_concurrent": True}, timeout=30
        )
        assert again.status_code == 409 and f"process {trainer.pid}" in again.json()["error"]["message"]

        def web_app() -> int | None:
            return next((p for p in descendants(app.process.pid) if "forgellm.web.main" in command_line(p)), None)

        web = web_app()
        os.kill(web, signal.SIGKILL)
        assert wait_for(lambda: web_app() not in (None, web) and app.server_status().get("up"), 120)
        assert alive(trainer.pid)  # the training went on without its web app

        def jobs() -> list[dict]:
            return httpx.get(f"{app.url}/api/training/status", timeout=30).json()["jobs"]

        assert wait_for(lambda: any(j["run"] == "cpt/web-run" and j["state"] == "running" for j in jobs()), 60)
        stopped = httpx.post(f"{app.url}/api/training/stop", json={"run": "cpt/web-run"}, timeout=30)
        assert stopped.status_code == 200, stopped.text
        assert wait_for(lambda: not alive(trainer.pid), 120)
        assert status_of(run)["status"] == "stopped" and lock.holder(run) is None
    finally:
        app.stop()
