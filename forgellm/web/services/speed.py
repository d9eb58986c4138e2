"""Measured training speed of earlier runs, for the Training form's duration estimate.

The speed of a run is the median ``tokens_per_second`` of its train events (target tokens per
second of training steps, evaluation excluded); the estimate uses the median over the earlier
runs of the same model and engine.
"""

from __future__ import annotations

import statistics
from typing import Any

from forgellm.runs.events import Event, iter_events
from forgellm.runs.layout import METRICS_FILE
from forgellm.web.services.runs import run_dirs
from forgellm.workspace import Workspace

MAX_RUNS = 10  # the most recent runs of the model and engine that count


def measured_speed(workspace: Workspace, model: str, engine: str) -> dict[str, Any]:
    """``{"tokens_per_second": median or None, "runs": [names]}`` over earlier runs of ``model`` on ``engine``."""
    speeds, names = [], []
    for path in run_dirs(workspace):
        start, rates = None, []
        for event in iter_events(path / METRICS_FILE):
            if event["event"] == Event.START:
                start = event
            elif event["event"] == Event.TRAIN and isinstance(event.get("tokens_per_second"), (int, float)):
                rates.append(float(event["tokens_per_second"]))
        if start and start.get("model") == model and start.get("engine") == engine and rates:
            speeds.append(statistics.median(rates))
            names.append(path.name)
            if len(speeds) == MAX_RUNS:
                break
    return {"tokens_per_second": statistics.median(speeds) if speeds else None, "runs": names}
