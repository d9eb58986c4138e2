"""The training configuration: one typed object, merged from defaults < YAML file < ``--set``.

Every key has a default and a description, so ``forgellm train --print-config`` and the
docs are generated from this one place. Unknown keys and wrong types are refused with a
message that names the key (and the closest valid key for a typo).
"""

from __future__ import annotations

import difflib
import logging
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails

from forgellm.errors import NotFoundError, UserError

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow")  # the names report_to accepts
DEFAULT_MAX_ITERATIONS = 1000  # training length when neither max_iterations nor num_epochs is set


def _has_documents(values: dict[str, Any]) -> bool:
    """Whether a run has documents to copy (shuffled_copies): a cpt run's, or an ift run's
    documents_dir; chats and preference pairs keep their order."""
    kind = values.get("training_type")
    return kind == "cpt" or (kind == "ift" and bool(values.get("documents_dir")))


MAX_SHUFFLED_COPIES = 32  # copies of a document beyond this add nothing a floor of repeats would not


class TrainingConfig(BaseModel):
    """Everything a training run needs; stored resolved as ``config.yaml`` in the run folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What to train.
    model_name: str = Field(
        "default",
        description="Base model: a path, a name under models/, 'default' (the embedded model), or a CPT run/adapter to keep training.",
    )
    training_type: Literal["cpt", "ift", "preference"] = Field(
        "cpt",
        description="cpt: continued pre-training on raw text; ift: instruction fine-tuning (loss on assistant tokens only); preference: DPO, ORPO or SimPO on {prompt, chosen, rejected} pairs.",
    )
    fine_tune_type: Literal["lora", "dora", "full"] = Field(
        "lora", description="lora or dora adapters, or full fine-tuning of the top num_layers layers."
    )
    engine: Literal["auto", "torch", "mlx"] = Field(
        "auto", description="Training engine; auto picks mlx on Apple Silicon, torch elsewhere."
    )

    # Data.
    input_dir: str = Field(
        "dataset", description="Folder of documents (cpt) or instruction data (ift), relative to the workspace."
    )
    data_mixture_ratio: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Share of domain data in the training mix; the rest is general text (limits forgetting). 1.0 = domain only.",
    )
    general_data_dir: str | None = Field(
        None,
        description="Folder of general text mixed in when data_mixture_ratio < 1; unset: a replay set sampled from the base model before training.",
    )
    documents_dir: str | None = Field(
        None,
        description="ift: folder of documents trained on every token (as in cpt) in the same run as the chats, so the chats teach the answer form without overwriting the facts the documents hold.",
        json_schema_extra={"applies": {"training_type": ["ift"]}},
    )
    documents_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="ift with documents_dir: share of the domain training sequences that are document sequences (the rest are the chats); documents are repeated or sampled to fit.",
        json_schema_extra={"applies": {"training_type": ["ift"]}},
    )
    shuffled_copies: int = Field(
        0,
        ge=0,
        le=MAX_SHUFFLED_COPIES,
        description="cpt, and ift's documents_dir: extra copies of each training document with its paragraphs and sentences in a new random order, so that each fact is seen in several contexts (validation documents are never copied). An epoch includes the copies.",
        json_schema_extra={"applies": {"training_type": ["cpt", "ift"]}},
    )
    validation_split: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of the domain data held out for validation."
    )
    text_column: str = Field(
        "text", description="Column or field holding the text in .csv, .parquet, .jsonl/.json and datasets folders."
    )
    ift_format: Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"] = Field(
        "auto", description="Record format of IFT files; auto detects it per file."
    )
    dedupe: bool = Field(True, description="Remove exact duplicate documents or records.")
    near_dedupe_threshold: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Estimated Jaccard similarity above which a document is a near duplicate; 0 disables near-dedupe.",
    )
    quality_filters: bool = Field(
        True, description="Drop CPT documents that are too short, mostly non-letters or mostly repeated lines."
    )
    max_seq_length: int = Field(
        1024, ge=16, description="Tokens per training sequence (documents are packed to this length)."
    )
    # Data: validation from its own folder (a dataset too small to split, or a held-out set of one's own).
    validation_dir: str | None = Field(
        None,
        description="Folder of documents (or records) used as the validation set instead of a share of input_dir; then all of input_dir trains and validation_split is not used.",
    )

    # Where to write.
    output_dir: str | None = Field(
        None, description="Parent folder of the run folder; default models/cpt or models/ift."
    )
    run_name: str | None = Field(None, description="Run folder name; default <model>_<type>_lr<lr>_bs<bs>_<timestamp>.")

    # Optimisation.
    max_iterations: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps to train for; the alternative to num_epochs (set one, the other is derived). Neither set: 1000.",
    )
    batch_size: int = Field(2, ge=1, description="Sequences per micro-batch.")
    grad_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step (effective batch = batch_size x this)."
    )
    learning_rate: float = Field(5e-5, gt=0.0, description="Peak learning rate (AdamW).")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Decay after warm-up: cosine, linear or constant."
    )
    warmup_steps: int = Field(10, ge=0, description="Steps of linear warm-up from 0 to learning_rate.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Floor of the decay as a fraction of learning_rate.")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(
        1.0, ge=0.0, description="Clip the global gradient norm to this (0 disables clipping)."
    )
    grad_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% slower."
    )
    compile: bool = Field(
        False,
        description="torch: compile the model's forward and backward (torch.compile): faster steps after minutes of compiling at the start; pays off in long runs. mlx always compiles its step.",
    )
    seed: int = Field(42, description="Seed for data order, adapter initialisation and dropout.")
    fsdp: bool = Field(
        False,
        description="torch, full fine-tuning with --nproc N: shard weights, gradients and optimizer state across the workers (FSDP) so each holds about 1/N.",
    )

    # Adapters.
    lora_rank: int = Field(8, ge=1, description="LoRA/DoRA rank.")
    lora_alpha: float = Field(16.0, gt=0.0, description="LoRA/DoRA alpha; the update is scaled by alpha / rank.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Linear layers (by name inside each block) that get adapters.",
    )
    num_layers: int = Field(-1, ge=-1, description="How many of the top transformer blocks to train; -1 = all.")

    # Evaluation, checkpoints, stopping.
    steps_per_eval: int = Field(
        50, ge=1, description="Evaluate on the validation set every this many steps (and at the end)."
    )
    val_batches: int = Field(25, ge=-1, description="Validation batches per evaluation; -1 = the whole validation set.")
    steps_per_report: int = Field(1, ge=1, description="Write a train event every this many steps.")
    save_every: int = Field(50, ge=1, description="Write a checkpoint every this many steps (and at the end).")
    max_checkpoints: int = Field(
        3, ge=1, description="Keep the last this many checkpoints, plus the best (by best_metric)."
    )
    overfitting_threshold: float = Field(
        0.1,
        gt=0.0,
        description="Relative rise of the validation loss above its best (or of the validation-train gap) that counts as overfitting.",
    )
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many overfitting evaluations in a row; 0 never stops early."
    )

    # Experiment tracking (issue 22): the run's metrics also go to the tools people already use.
    report_to: list[str] = Field(
        default_factory=list,
        description="Trackers that also get the run's parameters and metrics: tensorboard (event files under tensorboard/ in the run folder), mlflow.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow store for report_to: [mlflow]: a folder, sqlite:///FILE or http(s)://SERVER; unset: the workspace's mlflow/ folder.",
    )

    # QLoRA (issue 22): adapters on a quantized base.
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Quantize the base model's linear layers while training adapters (QLoRA). mlx: in memory (affine, groups of 64); torch: bitsandbytes (4bit = NF4 with bf16 compute), CUDA only.",
    )

    # Training length in epochs and question-answering accuracy during training (issue 19, qa).
    num_epochs: float | None = Field(
        None,
        gt=0.0,
        description="Passes over the packed training split; the alternative to max_iterations (set one: the other is derived from the sequence count and the effective batch = batch_size x grad_accumulation_steps x workers).",
    )
    min_iterations: int | None = Field(
        None,
        ge=1,
        description="With num_epochs: train at least this many optimizer steps, as many more epochs as that takes (a small dataset gets too few steps at a recipe's epochs for its facts to stick).",
    )
    min_iterations_fill: Literal["repeat", "shuffled_copies"] = Field(
        "repeat",
        description="How min_iterations adds steps: repeat (more epochs of the same data) or shuffled_copies (train one epoch of the documents and as many shuffled copies of each as make it reach the floor, so each version is read once; cpt, or ift with documents_dir).",
    )
    eval_qa: str | None = Field(
        None,
        description="JSONL file or folder of {question, answer, aliases} records (the format of `forgellm eval --qa`): every evaluation also answers them greedily and records qa_accuracy.",
    )
    eval_qa_max_tokens: int = Field(32, ge=1, le=1024, description="Tokens generated per eval_qa answer.")
    best_metric: Literal["val_loss", "qa_accuracy"] = Field(
        "val_loss",
        description="What picks the best checkpoint (kept from pruning, named in checkpoints/best.json): lowest val_loss or highest qa_accuracy (needs eval_qa).",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> list[str]:
        if isinstance(value, str):  # --set report_to=tensorboard,mlflow
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ValueError("report_to is a list of trackers, e.g. [tensorboard, mlflow]")
        for name in value:
            if name not in TRACKERS:
                raise ValueError(f"unknown tracker {name!r}; the trackers are: {', '.join(TRACKERS)}")
        return list(dict.fromkeys(value))

    # Preference tuning (training_type: preference). The loss parameters default to None ("not
    # given"), so a parameter set for a loss that does not use it is refused by name; the
    # loss's own default is `preference_parameter`.
    preference_loss: Literal["dpo", "orpo", "simpo"] = Field(
        "dpo",
        description="training_type preference: dpo (against a reference: the model as training starts), orpo (odds ratio plus the chosen response's loss, no reference) or simpo (length-normalised margin, no reference).",
        json_schema_extra={"applies": {"training_type": ["preference"]}},
    )
    beta: float | None = Field(
        None,
        gt=0.0,
        description="dpo, simpo: scale of the reward (dpo default 0.1, simpo 2.0); higher keeps dpo closer to the reference.",
        json_schema_extra={"applies": {"training_type": ["preference"], "preference_loss": ["dpo", "simpo"]}},
    )
    dpo_label_smoothing: float | None = Field(
        None,
        ge=0.0,
        lt=0.5,
        description="dpo: assumed share of pairs whose labels are flipped (conservative DPO); default 0.",
        json_schema_extra={"applies": {"training_type": ["preference"], "preference_loss": ["dpo"]}},
    )
    orpo_lambda: float | None = Field(
        None,
        gt=0.0,
        description="orpo: weight of the odds-ratio term beside the chosen response's loss (TRL's ORPOConfig.beta); default 0.1.",
        json_schema_extra={"applies": {"training_type": ["preference"], "preference_loss": ["orpo"]}},
    )
    simpo_gamma: float | None = Field(
        None,
        ge=0.0,
        description="simpo: target reward margin gamma; default 0.5.",
        json_schema_extra={"applies": {"training_type": ["preference"], "preference_loss": ["simpo"]}},
    )

    @field_validator("fsdp")
    @classmethod
    def _fsdp_needs_full(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("fine_tune_type") != "full":
            raise ValueError(
                "fsdp: true shards a full fine-tune; set fine_tune_type: full, or fsdp: false for adapters"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_length(cls, values: Any) -> Any:
        """Neither training length set: DEFAULT_MAX_ITERATIONS steps."""
        if isinstance(values, dict) and values.get("max_iterations") is None and values.get("num_epochs") is None:
            return {**values, "max_iterations": DEFAULT_MAX_ITERATIONS}
        return values

    @field_validator("num_epochs")
    @classmethod
    def _one_length(cls, value: float | None, info: ValidationInfo) -> float | None:
        """Both set is an error, except in a run's resolved config.yaml, which records the one the
        user chose and the one derived from it."""
        steps = info.data.get("max_iterations")
        if value is not None and steps is not None and not (info.context or {}).get("resolved"):
            raise ValueError(
                f"max_iterations={steps} and num_epochs={value:g} are both set; set one of them "
                f"(the other is derived from the dataset)"
            )
        return value

    @field_validator("min_iterations")
    @classmethod
    def _floor_needs_epochs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("num_epochs") is None:
            raise ValueError(
                f"min_iterations={value} is a floor for a length in epochs; set num_epochs too, "
                f"or give the steps as max_iterations alone"
            )
        return value

    @field_validator("eval_qa")
    @classmethod
    def _qa_without_fsdp(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and info.data.get("fsdp"):
            raise ValueError(
                "eval_qa is not supported with fsdp: true (generation needs the whole model); set one of them off"
            )
        return value

    @field_validator("best_metric")
    @classmethod
    def _metric_needs_qa(cls, value: str, info: ValidationInfo) -> str:
        if value == "qa_accuracy" and not info.data.get("eval_qa"):
            raise ValueError(
                "best_metric: qa_accuracy needs eval_qa (a JSONL file of question/answer records); "
                "set eval_qa or best_metric: val_loss"
            )
        return value

    @field_validator("documents_dir")
    @classmethod
    def _documents_for_ift(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("training_type") != "ift":
            raise ValueError(
                f"documents_dir mixes documents into the chats of an ift run, not "
                f"{info.data.get('training_type')}; put the documents in input_dir instead"
            )
        return value

    @field_validator("min_iterations_fill")
    @classmethod
    def _fill_needs_floor_and_documents(cls, value: str, info: ValidationInfo) -> str:
        if value == "repeat":
            return value
        if info.data.get("min_iterations") is None:
            raise ValueError("min_iterations_fill: shuffled_copies fills a floor of steps; set min_iterations too")
        if not _has_documents(info.data):
            raise ValueError(
                "min_iterations_fill: shuffled_copies copies documents (cpt, or the documents_dir of an ift "
                "run); set min_iterations_fill: repeat"
            )
        return value

    @field_validator("shuffled_copies")
    @classmethod
    def _copies_need_documents(cls, value: int, info: ValidationInfo) -> int:
        """Copies are made of documents: a cpt run's, or an ift run's documents_dir (chats keep their order)."""
        kind = info.data.get("training_type")
        if value and not _has_documents(info.data):
            where = "an ift run without documents_dir" if kind == "ift" else f"a {kind} run"
            raise ValueError(
                f"shuffled_copies copies documents (cpt, or the documents_dir of an ift run); {where} has "
                f"none to copy: remove it{', or set documents_dir' if kind == 'ift' else ''}"
            )
        return value

    @field_validator("beta", "dpo_label_smoothing", "orpo_lambda", "simpo_gamma")
    @classmethod
    def _preference_parameter_applies(cls, value: float | None, info: ValidationInfo) -> float | None:
        """A preference parameter set where it has no effect is a mistake worth naming."""
        if value is None:
            return value
        # A field validator always has its field's name; None only for model validators.
        name, training_type, loss = (
            str(info.field_name),
            info.data.get("training_type"),
            info.data.get("preference_loss"),
        )
        if training_type != "preference":
            raise ValueError(f"{name} applies to training_type: preference, not {training_type}; remove it")
        losses = PREFERENCE_PARAMETERS[name]
        if loss not in losses:
            raise ValueError(f"{name} is a parameter of preference_loss {' or '.join(losses)}, not {loss}; remove it")
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.num_layers == 0:
            raise ValueError("num_layers must be -1 (all layers) or at least 1")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module, e.g. [q_proj, v_proj]")
        if self.quantization != "none" and self.fine_tune_type == "full":
            raise ValueError(
                f"quantization: {self.quantization} trains adapters on a frozen quantized base; "
                f"set fine_tune_type: lora or dora, or quantization: none"
            )
        if self.compile and self.fsdp:
            raise ValueError("compile: true is not supported with fsdp: true; set one of them to false")
        return self

    def preference_parameter(self, name: str) -> float:
        """The value of a preference loss parameter: as given, else its loss's default."""
        value = getattr(self, name)
        if value is not None:
            return float(value)
        default = PREFERENCE_DEFAULTS[name]
        return float(default[self.preference_loss] if isinstance(default, dict) else default)

    def resolved_engine(self) -> str:
        if self.engine != "auto":
            return self.engine
        return "mlx" if sys.platform == "darwin" and _is_arm() else "torch"

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


#: Which losses each preference parameter belongs to, and its default (per loss where they differ).
PREFERENCE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "beta": ("dpo", "simpo"),
    "dpo_label_smoothing": ("dpo",),
    "orpo_lambda": ("orpo",),
    "simpo_gamma": ("simpo",),
}
PREFERENCE_DEFAULTS: dict[str, float | dict[str, float]] = {
    "beta": {"dpo": 0.1, "simpo": 2.0},
    "dpo_label_smoothing": 0.0,
    "orpo_lambda": 0.1,
    "simpo_gamma": 0.5,
}


def _is_arm() -> bool:
    import platform

    return platform.machine() == "arm64"


def config_keys() -> list[tuple[str, Any, str]]:
    """(key, default, description) for every key, in declaration order."""
    rows = []
    for name, field in TrainingConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append((name, default, field.description or ""))
    return rows


def parse_overrides(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["key=value", ...]`` -> dict, each value read as a YAML scalar (``1e-4``, ``true``, ``[a, b]``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r} is not key=value, e.g. --set learning_rate=1e-4")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise UserError(f"--set {pair!r}: the value is not valid YAML ({exc})") from None
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"config file {str(path)!r} not found; see `forgellm train --print-config` for the keys")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of key: value, not {type(data).__name__}")
    return data


def build_config(file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """Merge defaults < YAML file < overrides into a validated `TrainingConfig`."""
    values: dict[str, Any] = {}
    source = "config"
    if file is not None:
        values.update(read_config_file(file))
        source = str(file)
    values.update(overrides or {})
    return validate_config(values, source=source)


def validate_config(values: dict[str, Any], *, source: str = "config", resolved: bool = False) -> TrainingConfig:
    """A `TrainingConfig` from user values; ``resolved``: a run's own config.yaml, which may hold both
    max_iterations and the num_epochs derived from it (or the reverse)."""
    values = _migrate(values, source)
    known = list(TrainingConfig.model_fields)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else "; see `forgellm train --print-config`"
            raise UserError(f"{source}: unknown key {key!r}{hint}", field=str(key))
    try:
        return TrainingConfig.model_validate(values, context={"resolved": resolved})
    except ValidationError as exc:
        errors = exc.errors()
        first = str((errors[0].get("loc") or ("",))[0]) or None  # the field the web form marks
        raise UserError(f"{source}: " + "; ".join(_describe_error(e) for e in errors), field=first) from None


def _migrate(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Configs (and run folders) written before ``report_to`` said ``tensorboard: true|false``."""
    if "tensorboard" not in values:
        return values
    values = dict(values)
    if values.pop("tensorboard"):
        trackers = values.get("report_to") or []
        trackers = [trackers] if isinstance(trackers, str) else list(trackers)
        values["report_to"] = trackers if "tensorboard" in trackers else [*trackers, "tensorboard"]
        log.warning("%s: tensorboard: true is now report_to: [tensorboard]; read it that way", source)
    return values


def _describe_error(error: ErrorDetails) -> str:
    key = ".".join(str(p) for p in error.get("loc", ())) or "config"
    if error.get("type") == "value_error":  # our own validators' messages name the problem and the fix
        message = str(error.get("msg")).removeprefix("Value error, ")
        return f"{key}={error.get('input')!r}: {message}" if error.get("loc") else f"{key}: {message}"
    field = TrainingConfig.model_fields.get(str((error.get("loc") or ("",))[0]))
    expected = f" (expected {_type_name(field.annotation)})" if field is not None else ""
    return f"{key}={error.get('input')!r}: {error.get('msg')}{expected}"


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "")
