"""Which checkpoint of a run to use: ``best``, ``latest``, ``final`` or a step."""

from __future__ import annotations

import re
from pathlib import Path

from forgellm.analysis.analyze import analyze
from forgellm.analysis.runs import STEP_DIR, load_run
from forgellm.errors import NotFoundError, UserError
from forgellm.jsonio import read_json


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint folders (``checkpoints/step_*``), oldest first."""
    folder = run_dir / "checkpoints"
    found = [p for p in folder.iterdir() if p.is_dir() and STEP_DIR.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def choose_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The folder of the chosen checkpoint.

    ``best`` is the analysis' pick (lowest composite score, see forgellm.analysis.analyze),
    else the trainer's ``checkpoints/best.json``, else the latest. ``latest`` is the highest
    step; ``final`` the run's ``final/`` folder; a number or ``step_000050`` names one step.
    """
    which = str(which).strip()
    checkpoints = list_checkpoints(run_dir)
    if which == "final":
        if (run_dir / "final").is_dir():
            return run_dir / "final"
        raise NotFoundError(f"run {run_dir.name} has no final/ folder yet (it is still training or stopped early); "
                            f"use --checkpoint best, latest or a step")
    if not checkpoints:
        raise NotFoundError(f"run {run_dir.name} has no checkpoints yet: wait for the first one "
                            f"(every save_every steps) or train longer")
    if which == "latest":
        return checkpoints[-1]
    if which == "best":
        return _best(run_dir, checkpoints)
    match = re.fullmatch(r"(?:step_)?(\d+)", which)
    if not match:
        raise UserError(f"--checkpoint {which!r} is not understood: use best, latest, final, a step number "
                        f"or a folder name like {checkpoints[-1].name}")
    step = int(match.group(1))
    for ckpt in checkpoints:
        if int(STEP_DIR.match(ckpt.name).group(1)) == step:
            return ckpt
    available = ", ".join(c.name for c in checkpoints)
    raise NotFoundError(f"run {run_dir.name} has no checkpoint at step {step}; available: {available}")


def _best(run_dir: Path, checkpoints: list[Path]) -> Path:
    best = analyze(load_run(run_dir)).best
    if best is not None and (run_dir / "checkpoints" / best.name).is_dir():
        return run_dir / "checkpoints" / best.name
    named = (read_json(run_dir / "checkpoints" / "best.json") or {}).get("checkpoint")
    for candidate in (run_dir / "checkpoints" / str(named or "best.json"), run_dir / "checkpoints" / "best"):
        if candidate.is_dir() and STEP_DIR.match(candidate.resolve().name):
            return run_dir / "checkpoints" / candidate.resolve().name
    return checkpoints[-1]
