"""The data pipeline: a dataset folder in, packed token sequences for the trainer out.

Public API (stable; the trainer and the ``forgellm data`` commands use exactly this)::

    from forgellm.data import DataSettings, PreparedData, prepare_dataset

    settings = DataSettings(input_dir=Path("dataset/sample/cpt"), training_type="cpt",
                            max_seq_length=1024, validation_split=0.1, seed=42,
                            data_mixture_ratio=0.8, replay_model="default")
    data = prepare_dataset(settings, tokenizer, workspace)   # tokenizer: the model's fast HF tokenizer
    data.train, data.val    # TokenSequences: (N, max_seq_length) int32 tokens + uint8 loss mask, memory-mapped
    data.stats              # dict: the JSON of `forgellm data stats`
    data.path               # the cache folder <workspace>/data/<key>/

``workspace`` is a `forgellm.workspace.Workspace` or its root path. Relative ``input_dir`` and
``general_data_dir`` are relative to the workspace root. Errors are `UserError`/`NotFoundError`
with a message that names the problem and the fix. See docs/data.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from forgellm.data.pipeline import PreparedData, prepare_dataset
    from forgellm.data.sequences import TokenSequences
    from forgellm.data.settings import DataSettings

__all__ = ["DataSettings", "PreparedData", "TokenSequences", "prepare_dataset"]

_HOMES = {
    "DataSettings": "settings",
    "PreparedData": "pipeline",
    "TokenSequences": "sequences",
    "prepare_dataset": "pipeline",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so a worker process that needs one stage (forgellm.data.cpt_batches)
    # does not import the whole pipeline and its dependencies.
    if name not in _HOMES:
        raise AttributeError(f"module 'forgellm.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"forgellm.data.{_HOMES[name]}"), name)
