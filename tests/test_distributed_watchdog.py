"""Rank 0 records a lost worker even when its own collective never fails (it waits inside the
engine, where no signal reaches Python): the watch's thread writes the error and ends the process.
Real sockets, metrics and status files, in a child process (the path ends it with os._exit)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from forgellm.runs.events import read_events

RANK_ZERO = """
import socket, sys, threading, time
from pathlib import Path
from forgellm.training import distributed_watchdog as watch, run
from forgellm.training.callbacks import MetricsFile, StatusFile
from forgellm.training.checkpoints import CheckpointStore
from forgellm.training.distributed import Group

class RankZeroOfTwo(Group):
    world_size = 2

folder, main_records_first = Path(sys.argv[1]), sys.argv[2] == "yes"
errors = run.ErrorRecorder([MetricsFile(folder / "metrics.jsonl"), StatusFile(folder / "status.json", 10)])
run.STUCK_COLLECTIVE_SECONDS = 0.5
watch.on_loss(lambda: run._record_if_stuck(errors, RankZeroOfTwo(), CheckpointStore(folder, 3)))
ours, worker = socket.socketpair()
threading.Thread(target=watch._follow, args=(ours, 1), daemon=True).start()
if main_records_first:
    errors.record("the collective failed: connection closed by peer", 0)
worker.close()  # rank 1 dies: the kernel closes its end
time.sleep(5)  # the main thread, waiting in a collective that does not fail
"""


def _rank_zero(folder: Path, main_records_first: bool) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RANK_ZERO, str(folder), "yes" if main_records_first else "no"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_stuck_rank_zero_records_the_lost_worker_and_exits(tmp_path: Path) -> None:
    result = _rank_zero(tmp_path, main_records_first=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: worker rank 1 of 2 stopped (rank 0 saw: no collective had failed" in result.stderr
    events = read_events(tmp_path / "metrics.jsonl")
    assert [e["event"] for e in events] == ["error"] and "--resume" in events[0]["message"]
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"


def test_the_main_threads_own_error_is_the_only_one(tmp_path: Path) -> None:
    result = _rank_zero(tmp_path, main_records_first=True)
    assert result.returncode == 0, result.stderr[-2000:]  # the watch left the process alone
    events = read_events(tmp_path / "metrics.jsonl")
    assert [e["message"] for e in events] == ["the collective failed: connection closed by peer"]
