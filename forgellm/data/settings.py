"""`DataSettings`: every knob of the data pipeline, validated in one place.

The fields a training run sets too are *derived* from `TrainingConfig` (default, bounds and
description come from there), so each default exists once; only the knobs a training config
has no key for are declared here. The trainer builds these settings from its config
(`from_config`); the ``forgellm data`` commands build their options from these fields
(`forgellm.cli.data_options`). `cache_fields` says which fields are part of the cache key.

`forgellm.training.config` is a schema module with no imports from the rest of ForgeLLM
beyond `forgellm.errors`, so importing it from the data layer pulls nothing heavy in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from forgellm.training.config import TrainingConfig

IFTFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"]

#: The `TrainingConfig` keys that are data settings too (same name, default and meaning).
SHARED_KEYS = (
    "input_dir",
    "training_type",
    "max_seq_length",
    "validation_split",
    "validation_dir",
    "seed",
    "data_mixture_ratio",
    "general_data_dir",
    "text_column",
    "ift_format",
    "dedupe",
    "near_dedupe_threshold",
    "quality_filters",
    "documents_dir",
    "documents_share",
    "shuffled_copies",
)
#: The data settings that name a folder besides input_dir (resolved and, in the web app, confined like it).
FOLDER_KEYS = ("general_data_dir", "validation_dir", "documents_dir")


def _config_field(name: str) -> Any:
    """`TrainingConfig`'s declaration of ``name`` (default, bounds, description), reused as is."""
    return TrainingConfig.model_fields[name]


class DataSettings(BaseModel):
    """How to turn a dataset folder into packed training and validation sequences."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Shared with TrainingConfig: what to read and how to split and mix it.
    input_dir: Path = _config_field("input_dir")
    training_type: Literal["cpt", "ift", "preference"] = _config_field("training_type")
    max_seq_length: int = _config_field("max_seq_length")
    # The config's default and description; 0 is allowed here (nothing held out), which the general
    # data and a dataset validated by validation_dir use.
    validation_split: float = Field(
        TrainingConfig.model_fields["validation_split"].default,
        ge=0.0,
        lt=1.0,
        description=TrainingConfig.model_fields["validation_split"].description,
    )
    validation_dir: Path | None = _config_field("validation_dir")
    seed: int = _config_field("seed")
    data_mixture_ratio: float = _config_field("data_mixture_ratio")
    general_data_dir: Path | None = _config_field("general_data_dir")
    documents_dir: Path | None = _config_field("documents_dir")
    documents_share: float = _config_field("documents_share")
    shuffled_copies: int = _config_field("shuffled_copies")
    text_column: str = _config_field("text_column")
    ift_format: IFTFormat = _config_field("ift_format")
    dedupe: bool = _config_field("dedupe")
    near_dedupe_threshold: float = _config_field("near_dedupe_threshold")
    quality_filters: bool = _config_field("quality_filters")

    # Data pipeline only.
    replay_model: str | None = Field(
        None,
        description="Model that writes the replay set (a path, a name under models/, or 'default'); normally the base model being trained.",
    )
    replay_engine: str = Field("auto", description="Engine that generates the replay set: auto, torch or mlx.")
    replay_samples: int = Field(
        24, ge=1, description="Replay texts to generate; they are repeated as needed to fill the general share."
    )
    replay_max_tokens: int = Field(160, ge=8, description="Tokens per replay text.")
    overlong: Literal["drop", "truncate"] = Field(
        "drop",
        description="IFT records longer than max_seq_length: drop them or cut them at max_seq_length (counted either way).",
    )
    min_chars: int = Field(
        40, ge=0, description="Quality filter: documents shorter than this (characters) are dropped."
    )
    min_letter_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Quality filter: documents whose share of letters among non-space characters is below this are dropped.",
    )
    max_repeated_line_share: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Quality filter: documents whose share of repeated non-empty lines is above this are dropped.",
    )
    max_file_mb: float = Field(
        256.0,
        gt=0.0,
        description="Files read whole (.txt, .md, .rst, .html, .pdf, .json) larger than this are skipped; .jsonl, .csv and .parquet stream at any size, but a .jsonl line or .csv field larger than this is skipped.",
    )
    strict: bool = Field(False, description="Turn every skipped file or line into an error.")

    @classmethod
    def from_config(cls, config: TrainingConfig, **values: Any) -> DataSettings:
        """The settings of a training run: its shared keys, then ``values`` (resolved paths, the replay model)."""
        return cls(**{**{key: getattr(config, key) for key in SHARED_KEYS}, **values})

    @property
    def mixes_general(self) -> bool:
        """Whether general text is mixed into the training sequences: data_mixture_ratio < 1,
        except for preference pairs, which have no general counterpart."""
        return self.data_mixture_ratio < 1.0 and self.training_type != "preference"

    @property
    def samples_replay(self) -> bool:
        """Whether that general text is a replay set the base model writes (no general_data_dir
        is set). The one rule of it: the pipeline samples one then, and the web app's stats line
        and estimate count the domain data alone, since sampling takes minutes."""
        return self.mixes_general and self.general_data_dir is None

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change the output.

        Left out: `strict`, where the inputs live (their content is keyed instead), and how the
        general, documents and validation data are obtained (their own cache keys, built from their
        content, are).
        """
        return self.model_dump(
            mode="json",
            exclude={
                "strict",
                "input_dir",
                "general_data_dir",
                "validation_dir",
                "documents_dir",
                "replay_model",
                "replay_engine",
                "replay_samples",
                "replay_max_tokens",
                # only when used, so that the keys of caches made before the setting existed stay valid
                *(() if self.shuffled_copies else ("shuffled_copies",)),
            },
        )
