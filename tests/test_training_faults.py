"""Faults a training run must survive: SIGKILL during a checkpoint write, a full disk, a read-only
output folder. Each keeps what was saved and says clearly what happened."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgellm.cli.main import root
from forgellm.runs.events import read_events
from tests.cli_helpers import forgellm_error
from tests.training_helpers import prepared_data, tiny_config_values, write_config

FORGELLM = Path(sys.executable).with_name("forgellm")


def _config(workspace: Path, model: Path, **overrides) -> Path:
    if not (workspace / "prepared").exists():
        prepared_data(workspace / "prepared")
    return write_config(workspace / "c.yaml", **tiny_config_values(model, **overrides))


def _forgellm(workspace: Path, *args: str, preexec=None) -> subprocess.Popen:
    return subprocess.Popen(
        [str(FORGELLM), *args],
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FORGELLM_HOME": str(workspace)},
        preexec_fn=preexec,
    )


def _checkpoint_weights_finite(checkpoint: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    files = list(checkpoint.glob("*.safetensors"))
    return bool(files) and all(torch.isfinite(t).all() for f in files for t in load_file(str(f)).values())


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(workspace, tiny_model_dir):
    # Full fine-tuning saves the weights and the optimizer every step: most of the run's time is
    # spent writing checkpoints, so the kill lands inside one (the test checks that it did).
    cfg = _config(
        workspace,
        tiny_model_dir,
        fine_tune_type="full",
        run_name="k",
        max_iterations=100000,
        save_every=1,
        steps_per_eval=100000,
        max_checkpoints=2,
    )
    run = workspace / "models/cpt/k"
    for _attempt in range(5):
        proc = _forgellm(workspace, "train", "--config", str(cfg), "--overwrite")
        caught = False
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            folder = run / "checkpoints"
            names = [e.name for e in os.scandir(folder)] if folder.is_dir() else []
            if any(n.startswith("step_") for n in names) and any(n.startswith(".tmp-") for n in names):
                proc.kill()
                caught = True
                break
        proc.communicate(timeout=60)
        if caught and any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir()):
            break  # killed mid-write: a partial temporary folder is left behind
    else:
        pytest.fail("could not kill the trainer while it wrote a checkpoint")
    # The torn state: a partial checkpoint under a temporary name, perhaps a half-written metrics line.
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"event": "train", "step": 99, "lo')
    complete = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    last = int(complete[-1].removeprefix("step_"))
    assert _checkpoint_weights_finite(run / "checkpoints" / complete[-1])
    shown = json.loads(CliRunner().invoke(root, ["runs", "show", str(run), "--json"]).stdout)
    assert shown["status"] == "failed" and shown["step"] >= last  # the torn line is ignored, the rest is read

    resumed = _forgellm(workspace, "train", "--resume", str(run), "--set", f"max_iterations={last + 2}")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    events = read_events(run / "metrics.jsonl")
    resume = next(e for e in events if e["event"] == "resume")
    assert resume["step"] == last  # continued from the last complete checkpoint
    assert events[-1]["event"] == "done" and events[-1]["status"] == "completed"
    assert not any(p.name.startswith(".tmp-") for p in (run / "checkpoints").iterdir())
    with open(run / "metrics.jsonl") as fh:
        torn = [line for line in fh if line.strip() and not line.strip().endswith("}")]
    assert torn == ['{"event": "train", "step": 99, "lo\n']  # the next event started on its own line


def _limit_file_size(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing

    return preexec


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_stops_clearly_and_keeps_the_saved_ones(workspace, tiny_model_dir):
    cfg = _config(workspace, tiny_model_dir, fine_tune_type="full", run_name="d", max_iterations=2, save_every=2)
    first = _forgellm(workspace, "train", "--config", str(cfg))
    assert first.wait(timeout=300) == 0
    run = workspace / "models/cpt/d"
    saved = run / "checkpoints/step_000002"
    before = {p.name: p.stat().st_size for p in saved.iterdir()}
    # Continue it where files larger than 1 MB cannot be written: the step-4 checkpoint fails.
    proc = _forgellm(
        workspace, "train", "--resume", str(run), "--set", "max_iterations=4", preexec=_limit_file_size(1 << 20)
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "error: cannot write" in err and "file size limit" in err and "Traceback" not in err
    assert f"forgellm train --resume {run}" in err
    assert {p.name: p.stat().st_size for p in saved.iterdir()} == before
    assert _checkpoint_weights_finite(saved)
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["step_000002"]  # no partial one
    error = read_events(run / "metrics.jsonl", event="error")[-1]
    assert "cannot write" in error["message"]
    assert json.loads((run / "status.json").read_text())["status"] == "failed"


@contextlib.contextmanager
def _mounted_tmpfs(folder: Path, options: str):
    """A small or read-only file system at ``folder`` (needs root and mount rights; skips otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_clearly_and_keeps_the_saved_checkpoint(workspace, tiny_model_dir):
    with _mounted_tmpfs(workspace / "small", "size=48m"):
        # One full checkpoint of the tiny model (weights + optimizer) is about 37 MB: the second does not fit.
        cfg = _config(
            workspace,
            tiny_model_dir,
            fine_tune_type="full",
            output_dir="small",
            run_name="f",
            max_iterations=10,
            save_every=1,
            steps_per_eval=100,
        )
        proc = _forgellm(workspace, "train", "--config", str(cfg))
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err
        assert "the disk is full" in err and "Traceback" not in err
        checkpoints = sorted(p.name for p in (workspace / "small/f/checkpoints").iterdir() if p.is_dir())
        assert checkpoints == ["step_000001"]
        assert _checkpoint_weights_finite(workspace / "small/f/checkpoints/step_000001")


def test_a_read_only_output_folder_is_a_clear_error(workspace, tiny_model_dir):
    cfg = _config(workspace, tiny_model_dir, output_dir="ro", run_name="r", max_iterations=2)
    with _read_only(workspace / "ro"):
        message = forgellm_error("train", "--config", str(cfg))
    assert message.startswith("error: cannot write") and str(workspace / "ro") in message
    assert "read-only file system" in message or "permission denied" in message
    assert "make the folder writable or set output_dir" in message


@contextlib.contextmanager
def _read_only(folder: Path):
    if os.geteuid() != 0:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
    else:
        with _mounted_tmpfs(folder, "ro,size=1m"):
            yield
