"""Checkpoints as readers see them: manifests, the one "best checkpoint" rule, choosing one.

Every checkpoint folder (``checkpoints/step_NNNNNN`` and ``final/``) ends with a
``manifest.json`` listing its files with their sizes and SHA-256, written last, just before
the folder gets its real name. A checkpoint is intact when every listed file is there with its
size and hash. Resume, eval, fuse, publish and model resolution only use intact checkpoints:
a broken one is skipped with a warning naming the file, and the newest intact one is used.

The best checkpoint is the one the trainer recorded in ``checkpoints/best.json`` (chosen by
the run's ``best_metric``); nothing else is called "best".
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from forgellm.errors import NotFoundError, UserError
from forgellm.jsonio import read_json, write_json_atomic
from forgellm.runs.layout import CHECKPOINTS_DIR, FINAL_DIR

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
BEST_FILE = "best.json"
MANIFEST_FILE = "manifest.json"
STEP_DIR = re.compile(r"^step_(\d+)$")
CHOICES = "best, latest, final, a step number or a folder name like step_000050"
_CHUNK = 1 << 20


class BrokenCheckpointError(UserError):
    """No intact checkpoint to use (each one's problem is in the message)."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def step_of(folder: Path) -> int:
    match = STEP_DIR.match(folder.name)
    if match is None:
        raise ValueError(f"{folder} is not a step checkpoint")
    return int(match.group(1))


def step_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints (renamed into place: they hold trainer_state.json), oldest first.
    Their files are not checked here; see `problem`."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if STEP_DIR.match(p.name) and (p / STATE_FILE).is_file()), key=step_of)


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` with its size and hash; called last, before the rename."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    write_json_atomic(folder / MANIFEST_FILE, {"files": files})


def problem(folder: Path, *, hashes: bool = True) -> str | None:
    """What is wrong with checkpoint ``folder`` (naming the file), or None when it is intact
    (``hashes=False``: files and sizes only, for listings that must stay fast).

    A folder without a manifest was written before manifests existed; it is trusted as it is."""
    if not folder.is_dir():
        return f"{folder} is missing"
    manifest = folder / MANIFEST_FILE
    if not manifest.exists():
        return None
    listed = (read_json(manifest) or {}).get("files")
    if not isinstance(listed, dict):
        return f"{manifest} is unreadable"
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != entry.get("size"):
            return f"{path} has {size} bytes, the manifest says {entry.get('size')} (truncated or overwritten)"
        if hashes and _sha256(path) != entry.get("sha256"):
            return f"{path} does not match its hash in {MANIFEST_FILE} (corrupted)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_best(run_dir: Path) -> dict[str, Any] | None:
    """``checkpoints/best.json`` (``checkpoint``, ``step``, the metric it was chosen by and its value)
    when the checkpoint it names exists; None otherwise."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    data = read_json(folder / BEST_FILE)
    if data is None or not isinstance(data.get("checkpoint"), str) or not STEP_DIR.match(data["checkpoint"]):
        return None
    return data if (folder / data["checkpoint"]).is_dir() else None


def latest_intact(run_dir: Path, *, below: Path | None = None) -> Path | None:
    """The newest intact step checkpoint (older than ``below`` if given); each broken one on the
    way is logged as a warning naming its file."""
    for folder in reversed(step_checkpoints(run_dir)):
        if below is not None and step_of(folder) >= step_of(below):
            continue
        trouble = problem(folder)
        if trouble is None:
            return folder
        log.warning("skipping broken checkpoint %s: %s", folder.name, trouble)
    return None


def choose_checkpoint(run_dir: Path, which: str | None = None) -> Path:
    """The intact checkpoint folder to use: ``best`` (the trainer's), ``latest``, ``final``, a step
    number or ``step_NNNNNN``; by default ``final/`` when it exists, else the best.

    A broken ``final``, ``best`` or ``latest`` falls back, with a warning naming the file, to the
    newest intact checkpoint; a step asked for by number must itself be intact. No intact
    checkpoint: `BrokenCheckpointError` (or NotFoundError when there is none at all)."""
    run_dir = Path(run_dir)
    final = run_dir / FINAL_DIR
    which = str(which).strip() if which else ("final" if final.is_dir() else "best")
    steps = step_checkpoints(run_dir)
    if which == "final":
        if not final.is_dir():
            raise NotFoundError(
                f"run {run_dir.name} has no {FINAL_DIR}/ folder yet (it is still training or "
                f"stopped early); use --checkpoint best, latest or a step"
            )
        trouble = problem(final)
        if trouble is None:
            return final
        log.warning("skipping broken %s/: %s", FINAL_DIR, trouble)
        return _newest_intact(run_dir, steps, trouble)
    if not steps:
        raise NotFoundError(
            f"run {run_dir.name} has no checkpoints yet: wait for the first one "
            f"(every save_every steps) or train longer"
        )
    if which in ("best", "latest"):
        chosen = steps[-1]
        if which == "best" and (best := read_best(run_dir)) is not None:
            chosen = run_dir / CHECKPOINTS_DIR / best["checkpoint"]
        trouble = problem(chosen)
        if trouble is None:
            return chosen
        log.warning("skipping broken checkpoint %s: %s", chosen.name, trouble)
        return _newest_intact(run_dir, steps, trouble)
    match = re.fullmatch(r"(?:step_)?(\d+)", which)
    if not match:
        raise UserError(f"--checkpoint {which!r} is not understood: use {CHOICES}")
    wanted = [p for p in steps if step_of(p) == int(match.group(1))]
    if not wanted:
        available = ", ".join(p.name for p in steps)
        raise NotFoundError(
            f"run {run_dir.name} has no checkpoint at step {int(match.group(1))}; available: {available}"
        )
    trouble = problem(wanted[0])
    if trouble is not None:
        intact = latest_intact(run_dir)
        hint = f"; the newest intact one is {intact.name}" if intact else ""
        raise BrokenCheckpointError(f"checkpoint {wanted[0].name} is broken: {trouble}{hint}")
    return wanted[0]


def _newest_intact(run_dir: Path, steps: list[Path], first_trouble: str) -> Path:
    found = latest_intact(run_dir)
    if found is None:
        raise BrokenCheckpointError(
            f"run {run_dir.name} has no intact checkpoint ({first_trouble}); train it again with --overwrite"
        )
    log.warning("using %s, the newest intact checkpoint", found.name)
    return found


def resume_point(run_dir: Path) -> Path | None:
    """The checkpoint a resume continues from: the newest intact one (broken newer ones are skipped
    with a warning); None when the run has none yet (it starts over). `BrokenCheckpointError` when
    it has checkpoints and none is intact."""
    skipped: list[tuple[Path, str]] = []
    for folder in reversed(step_checkpoints(run_dir)):
        trouble = problem(folder)
        if trouble is None:
            for broken, why in skipped:  # warned only when there is a way on: otherwise one error line
                log.warning("skipping broken checkpoint %s: %s", broken.name, why)
            if skipped:
                log.warning("resuming from %s, the newest intact checkpoint", folder.name)
            return folder
        skipped.append((folder, trouble))
    if not skipped:
        return None
    raise BrokenCheckpointError(
        f"run {Path(run_dir).name} has no intact checkpoint to resume from "
        f"({skipped[0][1]}); start it again with --overwrite"
    )
