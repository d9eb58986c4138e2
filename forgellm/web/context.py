"""Access to the app's services from inside a request."""

from __future__ import annotations

from flask import current_app

from forgellm.web.services.dataset_stats import DatasetStats
from forgellm.web.services.live_metrics import LiveMetrics
from forgellm.web.services.server_watch import ServerWatch
from forgellm.web.services.tasks import Tasks
from forgellm.web.services.training_jobs import TrainingJobs
from forgellm.workspace import Workspace


def workspace() -> Workspace:
    return current_app.config["WORKSPACE"]


def jobs() -> TrainingJobs:
    return current_app.extensions["forgellm"]["jobs"]


def live() -> LiveMetrics:
    return current_app.extensions["forgellm"]["live"]


def tasks() -> Tasks:
    return current_app.extensions["forgellm"]["tasks"]


def server_url() -> str:
    return current_app.config["MODEL_SERVER_URL"].rstrip("/")


def server_watch() -> ServerWatch:
    return current_app.extensions["forgellm"]["server_watch"]


def dataset_stats() -> DatasetStats:
    """The app's one `DatasetStats` (its cache and its bound on processes are per app)."""
    return current_app.extensions["forgellm"].setdefault("dataset_stats", DatasetStats(workspace()))
