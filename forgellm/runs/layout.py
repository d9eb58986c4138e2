"""Where things are in a run folder, and the one rule for "is this a run folder"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from forgellm.errors import NotFoundError
from forgellm.workspace import Workspace

RUN_MARKER = ".forgellm-run"  # written first when the trainer creates the folder
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"
LOCK_FILE = "run.lock"
LOG_FILE = "train.log"
DATA_STATS_FILE = "data_stats.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "final"
FINAL_STAGING_DIR = ".tmp-final"
RUN_KINDS = ("cpt", "ift")


def run_kind(training_type: str) -> str:
    """The ``models/<kind>`` a run of ``training_type`` is saved under: a preference run tunes an
    instruction model further, so it lives beside the IFT runs."""
    return "ift" if training_type == "preference" else training_type


def is_run(path: Path) -> bool:
    """A folder the trainer created: it holds the marker (written before anything else)."""
    return (Path(path) / RUN_MARKER).is_file()


def run_dirs(workspace: Workspace) -> list[Path]:
    """Every run folder under models/cpt and models/ift (unordered)."""
    return [
        child
        for kind in RUN_KINDS
        if (folder := workspace.models(kind)).is_dir()
        for child in folder.iterdir()
        if child.is_dir() and is_run(child)
    ]


def find_run(name: str | Path, workspace: Workspace | None = None) -> Path:
    """A run folder by path, by path under the workspace or models/, or by name under models/cpt|ift."""
    workspace = workspace or Workspace.current()
    as_path = Path(name).expanduser()
    candidates = [
        as_path,
        workspace.root / as_path,
        workspace.models_dir / as_path,
        *(workspace.models(kind) / as_path for kind in RUN_KINDS),
    ]
    for path in candidates:
        if path.is_dir() and is_run(path):
            return path.resolve()
    raise NotFoundError(
        f"run {str(name)!r} not found: pass a run folder (models/cpt/<run> or models/ift/<run>) "
        f"or its name; `forgellm runs list` shows the runs"
    )


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict; {} when it is missing or unreadable."""
    try:
        data = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}
