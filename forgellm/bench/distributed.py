"""Data-parallel scaling: training throughput of 2 workers against 1 process, side by side.

The same tiny random llama and the same global batch (1 process x batch 4 against
``forgellm train --nproc 2`` x batch 2) train for a fixed number of steps, one run after the
other in this benchmark; the figure is global target tokens per second over the steps after
the first report (start-up and warm-up excluded), read from each run's metrics.jsonl. The
machine's cores are shared: one process uses all of them, each of two workers half. The
runs alternate (1, 2, 1, 2 ...) and the best of each is kept, so a burst of load from
other programs hurts neither side alone; the load average is in the notes.

Full run: 30 steps per run, 2 rounds, both engines. Quick run: 8 steps, 1 round, torch only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from forgellm.bench._common import tiny_model
from forgellm.data.sequences import TokenSequences
from forgellm.runs.events import Event, read_events

SEQ_LENGTH = 128
GLOBAL_BATCH = 4
RUN_TIMEOUT_S = 900


def run(quick: bool) -> list[dict[str, Any]]:
    steps, rounds, engines = (8, 1, ["torch"]) if quick else (30, 2, ["torch", "mlx"])
    return [scaling(engine, steps, rounds) for engine in engines]


def scaling(engine: str, steps: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="forgellm-dist-bench-") as tmp:
        workspace = Path(tmp)
        model = workspace / "models" / "base" / "tiny-llama"
        tiny_model(model)
        _data(workspace / "prepared", sequences=GLOBAL_BATCH * steps)
        one = two = 0.0
        for i in range(rounds):
            one = max(one, _train(workspace, model, engine, steps, nproc=1, name=f"{engine}-1-{i}"))
            two = max(two, _train(workspace, model, engine, steps, nproc=2, name=f"{engine}-2-{i}"))
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    return {
        "name": f"distributed_{engine}_2_workers",
        "value": round(two, 1),
        "unit": "tokens/s",
        "baseline": round(one, 1),
        "ratio": round(two / one, 3) if one else None,
        "notes": f"{engine}, {cores} cores; global batch {GLOBAL_BATCH} x {SEQ_LENGTH} tokens, {steps} steps, "
        f"tiny llama (LoRA); baseline: 1 process with all cores; value: 2 local workers "
        f"({max(1, (cores or 1) // 2)} threads each) through forgellm train --nproc 2; best of "
        f"{rounds} alternating round(s); load average {load:.1f} at the end",
    }


def _data(folder: Path, *, sequences: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", sequences), ("val", GLOBAL_BATCH)):
        tokens = rng.integers(100, 40000, size=(count, SEQ_LENGTH)).astype(np.int32)
        TokenSequences(tokens, np.ones_like(tokens, dtype=np.uint8)).save(folder, split)


def _train(workspace: Path, model: Path, engine: str, steps: int, *, nproc: int, name: str) -> float:
    """Global target tokens per second of one run after its first report."""
    config = dict(
        model_name=str(model),
        input_dir="prepared",
        max_seq_length=SEQ_LENGTH,
        engine=engine,
        batch_size=GLOBAL_BATCH // nproc,
        max_iterations=steps,
        steps_per_report=1,
        steps_per_eval=steps,
        save_every=steps,
        val_batches=1,
        lora_rank=8,
        run_name=name,
    )
    (workspace / f"{name}.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "forgellm", "train", "--config", f"{name}.yaml"]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    done = subprocess.run(
        command,
        cwd=workspace,
        env={**os.environ, "FORGELLM_HOME": str(workspace)},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{engine} training with {nproc} process(es) failed: {done.stderr[-2000:]}")
    reports = [
        e for e in read_events(workspace / "models" / "cpt" / name / "metrics.jsonl") if e["event"] == Event.TRAIN
    ][1:]
    seconds = sum(e["tokens"] / e["tokens_per_second"] for e in reports)
    return sum(e["tokens"] for e in reports) / seconds
