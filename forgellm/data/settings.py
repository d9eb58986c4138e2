"""`DataSettings`: every knob of the data pipeline, validated in one place.

The trainer builds it from its `TrainingConfig`; the ``forgellm data`` commands build it
from their options. `cache_fields` says which fields are part of the cache key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

IFTFormat = Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"]


class DataSettings(BaseModel):
    """How to turn a dataset folder into packed training and validation sequences."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What to read and how to use it.
    input_dir: Path = Field(description="Dataset folder, read recursively (or a single file).")
    training_type: Literal["cpt", "ift", "preference"] = Field("cpt", description="cpt: raw text, loss on every token; ift: chat records, loss on assistant tokens only; preference: {prompt, chosen, rejected} pairs, loss on the responses.")
    max_seq_length: int = Field(1024, ge=16, description="Tokens per packed sequence.")
    validation_split: float = Field(0.1, ge=0.0, lt=1.0, description="Share of documents (by a stable hash of each document) held out for validation.")
    seed: int = Field(42, description="Seed of the split hash and of the mixing order.")

    # Mixing with general data (limits forgetting).
    data_mixture_ratio: float = Field(1.0, gt=0.0, le=1.0, description="Share of domain data in the training sequences; the rest is general data. 1.0 = domain only.")
    general_data_dir: Path | None = Field(None, description="Folder of general data; when unset and data_mixture_ratio < 1, text is sampled from replay_model (a replay set).")
    replay_model: str | None = Field(None, description="Model that writes the replay set (a path, a name under models/, or 'default'); normally the base model being trained.")
    replay_engine: str = Field("auto", description="Engine that generates the replay set: auto, torch or mlx.")
    replay_samples: int = Field(24, ge=1, description="Replay texts to generate; they are repeated as needed to fill the general share.")
    replay_max_tokens: int = Field(160, ge=8, description="Tokens per replay text.")

    # IFT.
    ift_format: IFTFormat = Field("auto", description="Record format of IFT files; auto detects it per file.")
    overlong: Literal["drop", "truncate"] = Field("drop", description="IFT records longer than max_seq_length: drop them or cut them at max_seq_length (counted either way).")

    # Cleaning.
    dedupe: bool = Field(True, description="Remove exact duplicates (after normalisation).")
    near_dedupe_threshold: float = Field(0.8, ge=0.0, le=1.0, description="Estimated Jaccard similarity (token 5-grams) above which a later document is a near duplicate; 0 disables near-dedupe.")
    quality_filters: bool = Field(True, description="Apply the quality filters below (CPT documents only).")
    min_chars: int = Field(40, ge=0, description="Quality filter: documents shorter than this (characters) are dropped.")
    min_letter_share: float = Field(0.5, ge=0.0, le=1.0, description="Quality filter: documents whose share of letters among non-space characters is below this are dropped.")
    max_repeated_line_share: float = Field(0.3, ge=0.0, le=1.0, description="Quality filter: documents whose share of repeated non-empty lines is above this are dropped.")

    # Input handling.
    text_column: str = Field("text", description="Column or field holding the text in .csv, .parquet, .jsonl/.json and datasets folders.")
    max_file_mb: float = Field(256.0, gt=0.0, description="Files read whole (.txt, .md, .rst, .html, .pdf, .json) larger than this are skipped; .jsonl, .csv and .parquet stream at any size, but a .jsonl line or .csv field larger than this is skipped.")
    strict: bool = Field(False, description="Turn every skipped file or line into an error.")

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change the output.

        Left out: `strict`, where the inputs live (their content is keyed instead), and how the
        general data is obtained (the general data's own cache key, built from its content, is).
        """
        return self.model_dump(mode="json", exclude={"strict", "input_dir", "general_data_dir", "replay_model",
                                                     "replay_engine", "replay_samples", "replay_max_tokens"})
