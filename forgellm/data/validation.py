"""Where the validation set comes from when held-out documents cannot make one.

The pipeline normally holds out whole documents (`split.assign_validation`). Two other
sources, recorded in the stats' ``validation`` entry so ``forgellm data stats`` says which
was used:

- ``validation_dir``: a folder the user names is prepared like the domain data (same
  settings, nothing held out, cached on its own) and becomes the validation split; all of
  ``input_dir`` then trains.
- packed sequences: with fewer documents than a split needs (one large document, say) the
  last sequences of the packed training split are held out instead. They are the end of the
  text, so no held-out token is also trained on; packed CPT sequences carry no context across
  their boundary, so the loss on them is an honest held-out loss.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgellm.data.packing import Packed, SplitWriter
from forgellm.data.sequences import TokenSequences

if TYPE_CHECKING:
    from forgellm.data.pipeline import PreparedData
    from forgellm.data.settings import DataSettings
    from forgellm.workspace import Workspace

#: Sequences copied at a time when a split is cut in two (bounded memory for any corpus).
BLOCK_ROWS = 1024


def prepare_validation_dir(settings: DataSettings, tokenizer: Any, workspace: Workspace) -> PreparedData:
    """``settings.validation_dir`` prepared with the same settings; its *training* split is the validation set."""
    from forgellm.data.pipeline import prepare_dataset

    assert settings.validation_dir is not None
    held_out = settings.model_copy(
        update={
            "input_dir": Path(settings.validation_dir),
            "validation_dir": None,
            "validation_split": 0.0,
            "data_mixture_ratio": 1.0,
            "general_data_dir": None,
        }
    )
    return prepare_dataset(held_out, tokenizer, workspace)


def copy_split(source: Path, target: Path, split: str = "val") -> None:
    """The training split of a prepared folder ``source`` as ``split`` in ``target`` (file copies)."""
    for kind in ("tokens", "mask"):
        shutil.copyfile(source / f"train.{kind}.npy", target / f"{split}.{kind}.npy")


def hold_out_tail(train_folder: Path, val_folder: Path, fraction: float) -> tuple[Packed, Packed] | None:
    """Move the last ``fraction`` of the packed training sequences in ``train_folder`` (at least one,
    never all) to a validation split in ``val_folder``; None when there are fewer than two sequences."""
    packed = TokenSequences.load(train_folder, "train")
    rows, seq_length = len(packed), packed.seq_length
    if rows < 2:
        return None
    held = min(max(1, round(rows * fraction)), rows - 1)
    kept = rows - held
    staging = train_folder / ".hold-out"
    train_writer = SplitWriter(staging, "train", kept, seq_length)
    val_writer = SplitWriter(val_folder, "val", held, seq_length)
    for start in range(0, rows, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, rows)
        for writer, lo, hi in ((train_writer, start, min(stop, kept)), (val_writer, max(start, kept), stop)):
            if lo < hi:
                writer.write(np.asarray(packed.tokens[lo:hi]).reshape(-1), np.asarray(packed.mask[lo:hi]).reshape(-1))
    del packed  # release the memory maps before their files are replaced
    train, val = train_writer.close(), val_writer.close()
    for kind in ("tokens", "mask"):
        (staging / f"train.{kind}.npy").replace(train_folder / f"train.{kind}.npy")
    staging.rmdir()
    return train, val
