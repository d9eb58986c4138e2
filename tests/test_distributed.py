"""Data-parallel training through `forgellm train --nproc 2` (torchrun / mlx.launch on this machine).

Two workers with batch_size B train exactly what one process with batch_size 2B trains:
same global batch, same rows in the same order, gradients summed with one 1/targets scale.
The only difference is the order of floating-point additions, so the loss curves agree to
LOSS_TOLERANCE (relative); a real bug (a rank training on the wrong rows, gradients not
summed, a wrong scale) moves the losses by 1e-2 or more on this data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from forgellm.errors import UserError
from forgellm.runs.events import read_events
from forgellm.training.distributed import SINGLE, reshard_position
from forgellm.training.distributed_launch import mlx_command, read_hostfile, torch_commands
from tests.cli_helpers import forgellm as run_main
from tests.cli_helpers import forgellm_error
from tests.training_helpers import preference_pairs, prepared_data, tiny_config_values, write_config

LOSS_TOLERANCE = 1e-4  # relative, per logged step
ENGINES = ["torch", "mlx"]
RANK_ENV = {"torch": "RANK", "mlx": "MLX_RANK"}


def forgellm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forgellm", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def events(run_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_events(run_dir / "metrics.jsonl") if e["event"] == kind]


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir, "train")}


def assert_same_curve(got: dict[int, float], want: dict[int, float]) -> None:
    assert got.keys() == want.keys()
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=LOSS_TOLERANCE), f"step {step}"


@pytest.fixture
def setup(workspace, tiny_model_dir):
    prepared_data(workspace / "prepared", train=32, val=8)

    def config(name: str, engine: str, **values) -> str:
        base = dict(
            max_iterations=6,
            steps_per_eval=2,
            save_every=2,
            batch_size=2,
            val_batches=-1,
            lr_schedule="constant",
            warmup_steps=2,
            engine=engine,
        )
        write_config(workspace / f"{name}.yaml", **tiny_config_values(tiny_model_dir, **{**base, **values}))
        return f"{name}.yaml"

    return config


# --- fast: the pieces --------------------------------------------------------------------------


def test_position_moves_to_the_first_unseen_sequence():
    assert reshard_position(5, 32, old_rows=4, new_rows=4) == 5
    assert reshard_position(4, 32, old_rows=4, new_rows=8) == 2  # 16 sequences seen of epoch 0
    assert reshard_position(3, 32, old_rows=4, new_rows=8) == 2  # 12 seen: round up, never repeat
    assert reshard_position(9, 32, old_rows=4, new_rows=2) == 16 + 2  # epoch 1, 4 seen
    assert reshard_position(7, 32, old_rows=4, new_rows=8) == 4  # 28 seen: the next epoch
    assert reshard_position(7, 32, old_rows=0, new_rows=8) == 7  # a checkpoint from before: as saved


def test_single_process_group_is_the_identity():
    assert SINGLE.sum([1.5, 2]) == [1.5, 2.0]
    assert SINGLE.broadcast_text("run") == "run" and SINGLE.is_main


def test_launch_commands(tmp_path):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps([{"ssh": "a", "ips": ["10.0.0.1"]}, {"ssh": "b", "ips": ["10.0.0.2"]}]))
    two = read_hostfile(hosts)
    commands = torch_commands(2, two, ["--config", "c.yaml"])
    assert [c[-4:] for c in commands] == [["forgellm", "train", "--config", "c.yaml"]] * 2
    assert "--node-rank=1" in commands[1] and "--rdzv-endpoint=10.0.0.1:29500" in commands[1]
    command, expanded = mlx_command(2, two, ["--resume", "r"], 40000)
    assert [h["ssh"] for h in json.loads(expanded)] == ["a", "a", "b", "b"]
    assert command[-4:] == ["forgellm", "train", "--resume", "r"]


def test_bad_hostfile_and_options_are_clear_errors(tmp_path, workspace):
    bad = tmp_path / "hosts.json"
    bad.write_text('[{"ips": ["10.0.0.1"]}]')
    with pytest.raises(UserError, match="entry 0 must look like"):
        read_hostfile(bad)
    code, _, err = run_main("train", "--config", "x.yaml", "--hostfile", str(bad))  # click's usage error
    assert code == 2 and "--hostfile needs --nproc" in err


# --- slow: two real workers ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_two_workers_match_one_process_and_resume_with_one(setup, workspace, engine):
    """2 workers x batch 2 == 1 process x batch 4; the 2-worker checkpoint at step 4 resumes in 1 process."""
    single = forgellm("--config", setup("single", engine, batch_size=4, max_iterations=8, save_every=4))
    assert single.returncode == 0, single.stderr[-3000:]
    single_dir = Path(single.stdout.strip().splitlines()[-1])

    pair = forgellm("--config", setup("pair", engine, max_iterations=4, save_every=4), "--nproc", "2")
    assert pair.returncode == 0, pair.stderr[-3000:]
    pair_dir = Path(pair.stdout.strip().splitlines()[-1])
    (start,) = events(pair_dir, "start")  # rank 0 alone writes: one start, one line per event
    assert start["world_size"] == 2 and start["global_batch_size"] == 4
    assert all(e["world_size"] == 2 and e["tokens_per_second"] > 0 for e in events(pair_dir, "train"))
    want = losses(single_dir)
    assert_same_curve(losses(pair_dir), {s: v for s, v in want.items() if s <= 4})
    want_val = {e["step"]: e["val_loss"] for e in events(single_dir, "eval")}
    assert [e["step"] for e in events(pair_dir, "eval")] == [0, 2, 4]
    for e in events(pair_dir, "eval"):
        assert e["val_loss"] == pytest.approx(want_val[e["step"]], rel=LOSS_TOLERANCE)

    # one process, the same global batch: the rest of the single-process curve
    resumed = forgellm("--resume", str(pair_dir), "--set", "max_iterations=8", "--set", "batch_size=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert events(pair_dir, "resume")[-1]["world_size"] == 1
    assert_same_curve(losses(pair_dir), want)
    assert json.loads((pair_dir / "status.json").read_text())["status"] == "done"


@pytest.mark.slow
def test_fsdp_full_fine_tune_matches_one_process_and_resumes_alone(setup):
    """Sharded weights, gradients and AdamW state (torch FSDP2 over gloo) train what one process trains."""
    full = dict(fine_tune_type="full", learning_rate=1e-3)
    single = forgellm("--config", setup("single", "torch", batch_size=4, max_iterations=6, **full))
    assert single.returncode == 0, single.stderr[-3000:]
    pair = forgellm("--config", setup("pair", "torch", max_iterations=4, fsdp=True, **full), "--nproc", "2")
    assert pair.returncode == 0, pair.stderr[-3000:]
    pair_dir = Path(pair.stdout.strip().splitlines()[-1])
    want = losses(Path(single.stdout.strip().splitlines()[-1]))
    assert_same_curve(losses(pair_dir), {s: v for s, v in want.items() if s <= 4})
    assert (pair_dir / "final" / "model.safetensors").exists()  # full weights, gathered from the shards

    resumed = forgellm("--resume", str(pair_dir), "--set", "max_iterations=6", "--set", "batch_size=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_curve(losses(pair_dir), want)


PREFERENCE_KEYS = ("loss", "reward_chosen", "reward_rejected", "margin", "logps_chosen", "logps_rejected")


@pytest.mark.slow
@pytest.mark.parametrize(
    "engine,fine_tune_type,learning_rate,fsdp",
    [
        ("torch", "full", 1e-3, True),
        # mlx stores the reference of an adapter too: the same shared computation without sharding
        ("mlx", "lora", 5e-3, False),
    ],
)
def test_two_workers_dpo_matches_one_process(workspace, tiny_model_dir, engine, fine_tune_type, learning_rate, fsdp):
    """DPO over 2 workers (torch: sharded, fsdp: true): both workers compute the stored reference,
    then train and evaluate what one process with the same global batch does. 10 validation pairs
    in batches of 2: one worker has a batch more than the other, which sharded forwards must survive."""
    preference_pairs(48, 32, seed=0).save(workspace / "pairs", "train")
    preference_pairs(10, 32, seed=1).save(workspace / "pairs", "val")

    def run(name: str, *args: str, **values) -> Path:
        settings = dict(
            input_dir="pairs",
            training_type="preference",
            fine_tune_type=fine_tune_type,
            engine=engine,
            learning_rate=learning_rate,
            max_iterations=6,
            steps_per_eval=2,
            save_every=2,
            val_batches=-1,
            lr_schedule="constant",
            warmup_steps=2,
            run_name=name,
            **values,
        )
        write_config(workspace / f"{name}.yaml", **tiny_config_values(tiny_model_dir, **settings))
        done = forgellm("--config", f"{name}.yaml", *args)
        assert done.returncode == 0, done.stderr[-3000:]
        return Path(done.stdout.strip().splitlines()[-1])

    def stored_reference() -> dict[str, np.ndarray]:
        (folder,) = (workspace / "pairs").glob("reference-*")
        values = {split: np.load(folder / f"{split}.npy") for split in ("train", "val")}
        shutil.rmtree(folder)  # the next run computes its own
        return values

    pair_dir = run("pair", "--nproc", "2", batch_size=2, fsdp=fsdp)
    two_workers = stored_reference()
    single_dir = run("single", batch_size=4)
    for split, values in stored_reference().items():
        np.testing.assert_allclose(two_workers[split], values, rtol=1e-5, err_msg=split)

    (start,) = events(pair_dir, "start")
    assert start["world_size"] == 2 and start["global_batch_size"] == 4
    for kind, prefix in (("train", ""), ("eval", "val_")):
        got, want = ({e["step"]: e for e in events(d, kind)} for d in (pair_dir, single_dir))
        assert got.keys() == want.keys()
        for step in want:
            for key in (f"{prefix}{k}" for k in PREFERENCE_KEYS):
                assert got[step][key] == pytest.approx(want[step][key], rel=LOSS_TOLERANCE, abs=1e-5), (kind, step, key)
    evals = events(pair_dir, "eval")
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] and evals[-1]["val_accuracy"] > 0.5
    assert (pair_dir / "final").is_dir()


def test_fsdp_is_for_full_fine_tuning(setup, workspace):
    message = forgellm_error("train", "--config", setup("bad", "torch", fsdp=True), "--nproc", "2")
    assert "fsdp: true shards a full fine-tune" in message


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_killed_worker_ends_the_run_with_an_error_naming_it(setup, workspace, engine):
    run_dir, launcher, workers = _two_workers_past_a_checkpoint(setup, workspace, engine)
    os.kill(workers[1].pid, signal.SIGKILL)
    _assert_failed_naming_rank_1(launcher, run_dir, seen="rank 0 saw")
    assert not [p for p in psutil.Process().children(recursive=True) if "forgellm" in " ".join(p.cmdline())]

    # the last checkpoint is whole: one process continues from it
    step = events(run_dir, "checkpoint")[-1]["step"]
    resumed = forgellm("--resume", str(run_dir), "--set", f"max_iterations={step + 2}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert events(run_dir, "resume")[-1]["step"] == step
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_a_lost_worker_that_takes_rank_0_with_it_is_named_by_the_launcher(setup, workspace, engine):
    """Rank 0 frozen while rank 1 dies, then killed: it never records why, so the launcher does."""
    run_dir, launcher, workers = _two_workers_past_a_checkpoint(setup, workspace, engine)
    os.kill(workers[0].pid, signal.SIGSTOP)
    os.kill(workers[1].pid, signal.SIGKILL)
    time.sleep(2.0)  # the launcher looks at its workers every 0.5 s
    os.kill(workers[0].pid, signal.SIGKILL)
    _assert_failed_naming_rank_1(launcher, run_dir, seen="the launcher saw")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_ctrl_c_stops_every_worker_at_one_step_and_saves(setup, workspace, engine):
    run_dir, launcher, _ = _two_workers_past_a_checkpoint(setup, workspace, engine)
    first = events(run_dir, "checkpoint")[-1]["step"]
    launcher.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends to `forgellm train`
    stderr = _stderr_at_end(launcher)
    assert launcher.returncode == 0, stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "stopped"
    assert events(run_dir, "checkpoint")[-1]["step"] > first


def _stderr_at_end(launcher: subprocess.Popen) -> str:
    try:
        return launcher.communicate(timeout=180)[1]
    finally:
        if launcher.poll() is None:
            launcher.kill()


def _assert_failed_naming_rank_1(launcher: subprocess.Popen, run_dir: Path, seen: str) -> None:
    """The launch ends non-zero, and the run's last event and status say rank 1 stopped, as ``seen``."""
    stderr = _stderr_at_end(launcher)
    assert launcher.returncode != 0
    last = read_events(run_dir / "metrics.jsonl")[-1]
    assert last["event"] == "error" and f"worker rank 1 of 2 stopped ({seen}" in last["message"], last
    assert "worker rank 1 of 2 stopped" in stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"


def _two_workers_past_a_checkpoint(
    setup, workspace: Path, engine: str
) -> tuple[Path, subprocess.Popen, dict[int, psutil.Process]]:
    """A long 2-worker run, once it has saved a checkpoint: its folder, launcher, and workers by rank."""
    config = setup("long", engine, max_iterations=2000, save_every=2, steps_per_eval=1000, run_name="long")
    run_dir = workspace / "models" / "cpt" / "long"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "forgellm", "train", "--config", config, "--nproc", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "metrics.jsonl").exists() or not events(run_dir, "checkpoint"):
        if launcher.poll() is not None or time.monotonic() > deadline:
            launcher.kill()
            pytest.fail(launcher.communicate()[1][-3000:])
        time.sleep(0.5)
    workers = {
        int(_environ(p)[RANK_ENV[engine]]): p
        for p in psutil.Process(launcher.pid).children(recursive=True)
        if RANK_ENV[engine] in _environ(p) and "forgellm" in " ".join(p.cmdline())
    }
    return run_dir, launcher, workers


def _environ(process: psutil.Process) -> dict[str, str]:
    try:
        return process.environ()
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return {}


@pytest.mark.slow
def test_scaling_benchmark_reports_both_sides_with_the_cores():
    from forgellm.bench.distributed import run

    (result,) = run(quick=True)
    assert result["unit"] == "tokens/s" and result["value"] > 0 and result["baseline"] > 0
    assert result["ratio"] == pytest.approx(result["value"] / result["baseline"], rel=1e-2)
    assert f"{os.cpu_count()} cores" in result["notes"]
