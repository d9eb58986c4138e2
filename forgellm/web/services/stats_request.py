"""What a data count a request asks for is computed with: the data settings of the Training form
(its folders confined to what requests may reach), the tokenizer folder of the model it names,
and whether a replay set is left out of the count. Both the Datasets tab's stats
(``/api/datasets/stats``) and the Training form's estimate (``/api/training/estimate``) count
through `DatasetStats` with these, so the two agree on what a run trains on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forgellm.access import Roots, request_path
from forgellm.data.settings import FOLDER_KEYS, SHARED_KEYS, DataSettings
from forgellm.errors import UserError
from forgellm.models.resolve import resolve_pair
from forgellm.workspace import Workspace

#: The training config keys the Training form sends so its stats line shows what the run will train on.
FORM_KEYS = tuple(k for k in SHARED_KEYS if k not in ("input_dir", "training_type"))

#: The answer of `without_replay` when no replay set is sampled.
NO_REPLAY = {"replay_pending": False, "replay_share": 0.0}


def model_tokenizer(model: str, field: str, workspace: Workspace, roots: Roots) -> Path:
    """The folder whose tokenizer counts for ``model``, resolved here, inside the roots (the stats
    process gets a folder, not a name); an adapter or run counts by its base model, which must lie
    inside the roots too."""
    return resolve_pair(model, None, workspace, model_arg=field, roots=roots)[0].path


def form_settings(values: dict[str, Any], roots: Roots) -> dict[str, Any]:
    """The data settings given (``None``: not given) of the Training form, its folders confined."""
    settings = {name: value for name, value in values.items() if value is not None}
    for name in FOLDER_KEYS:
        if name in settings:
            settings[name] = workspace_folder(str(settings[name]), name, roots)
    return settings


def without_replay(mode: str | None, settings: dict[str, Any], data: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The form ``settings`` to count ``data`` with, and ``{"replay_pending", "replay_share"}``:
    whether the run samples a replay set (the data layer's rule, `DataSettings.samples_replay`;
    never into a folder of prepared splits, trained on as it is) and the share of its training
    data that will be. Sampling takes minutes, so it is done when the run starts, not for a
    count: then the domain data is counted alone (data_mixture_ratio 1)."""
    from forgellm.data.sequences import is_prepared

    replay = DataSettings(**settings, training_type=mode or "cpt")
    if not replay.samples_replay or is_prepared(data):
        return settings, NO_REPLAY
    share = round(1.0 - replay.data_mixture_ratio, 6)  # 1 - 0.8 is 0.19999999999999996 in floats
    return {**settings, "data_mixture_ratio": 1.0}, {"replay_pending": True, "replay_share": share}


def workspace_folder(raw: str, field: str, roots: Roots) -> Path:
    """A folder a request names (relative to the workspace, as in a training config), confined."""
    path = request_path(raw, field, roots, "read")
    if not path.is_dir():
        raise UserError(f"{field}: {raw!r} is not a folder in the workspace", field=field)
    return path
