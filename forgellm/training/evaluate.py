"""Learning quality, measured: held-out question accuracy, domain perplexity, general-text perplexity.

- QA accuracy: greedy answer to each held-out question (chat template for instruct models)
  counts as correct when its first sentence contains the expected answer, both normalised.
- Domain perplexity: on the validation split of the run's dataset, with the training loss.
- General perplexity: on a folder of general text, to see forgetting.
- Preference accuracy: on the validation pairs of a folder of preference pairs, the share whose
  chosen response the model finds more likely than the rejected one, per token (mean
  log-probability over the response's tokens, as SimPO and ORPO compare them). It needs no
  reference model, so it compares any models alike: the model a preference run started from with
  the run's result, where the run's own DPO accuracy starts at 0 by construction (its rewards are
  relative to that starting model).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.errors import NotFoundError, UserError
from forgellm.jsonio import write_json_atomic
from forgellm.models.resolve import ModelInfo, describe, resolve
from forgellm.runs.checkpoints import choose_checkpoint
from forgellm.runs.layout import find_run
from forgellm.training.config import TrainingConfig
from forgellm.training.qa import DEFAULT_BATCH_SIZE, QASet, read_qa
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class EvalReport:
    model: str
    path: str
    engine: str
    qa_accuracy: float | None = None
    qa_correct: int = 0
    qa_total: int = 0
    qa_files: dict[str, dict[str, Any]] = field(default_factory=dict)  # per QA file, when there are several
    domain_val_loss: float | None = None
    domain_ppl: float | None = None
    general_loss: float | None = None
    general_ppl: float | None = None
    preference_accuracy: float | None = None
    preference_correct: int = 0
    preference_total: int = 0
    preference_margin: float | None = None  # mean over pairs of (chosen - rejected) mean log-probability per token
    answers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_checkpoint(name: str, checkpoint: str | None, workspace: Workspace) -> tuple[Path, Path | None]:
    """(folder to load, run folder or None). For a run: ``best``, ``latest``, ``final`` or a step number;
    by default its final weights, else its best checkpoint (see `forgellm.runs.checkpoints`)."""
    try:
        run_dir = find_run(name, workspace)
    except NotFoundError:
        if checkpoint:
            raise UserError(f"--checkpoint needs a training run; {name!r} is not one") from None
        return resolve(name, workspace).path, None
    return choose_checkpoint(run_dir, checkpoint), run_dir


def _split_model(folder: Path, workspace: Workspace) -> tuple[ModelInfo, ModelInfo | None]:
    info = describe(folder)
    if info.is_adapter:
        if not info.base_model:
            raise UserError(f"adapter {folder} does not name its base model")
        return resolve(info.base_model, workspace), info
    return info, None


def evaluate_model(
    name: str,
    *,
    checkpoint: str | None = None,
    qa: Path | None = None,
    data: str | None = None,
    general: str | None = None,
    engine: str | None = None,
    max_tokens: int = 48,
    max_seq_length: int | None = None,
    qa_batch_size: int = DEFAULT_BATCH_SIZE,
    val_batches: int = -1,
    pairs: str | None = None,
    workspace: Workspace | None = None,
) -> EvalReport:
    workspace = workspace or Workspace.current()
    folder, run_dir = resolve_checkpoint(name, checkpoint, workspace)
    base, adapter = _split_model(folder, workspace)
    run_config = _run_config(run_dir)
    if adapter is not None:
        engine = "torch" if adapter.adapter_format == "peft" else "mlx"
    elif engine is None and run_config is not None:
        engine = run_config.resolved_engine()
    engine = engine or "auto"
    config = (run_config or TrainingConfig()).model_copy(update={"engine": engine})
    report = EvalReport(model=name, path=str(folder), engine=config.resolved_engine())
    if qa is not None:
        _qa(report, str(folder), read_qa(qa), config.resolved_engine(), max_tokens, workspace, qa_batch_size)
    if max_seq_length is not None:
        config = config.model_copy(update={"max_seq_length": max_seq_length})
    domain_dir = data or (run_config.input_dir if run_config else None)
    if data and (run_config is None or data != run_config.input_dir):
        config = _plain_text(config)  # another folder: read as plain text
    if domain_dir or general or pairs:
        from forgellm.training.engine_api import create_trainable

        scorer = create_trainable(config.model_copy(update={"fine_tune_type": "full", "num_layers": -1}), base, adapter)
        if domain_dir:
            report.domain_val_loss = _loss_on(scorer, config, base, domain_dir, "val", val_batches, workspace)
            report.domain_ppl = math.exp(report.domain_val_loss)
        if general:
            report.general_loss = _loss_on(
                scorer,
                _plain_text(config),
                base,
                general,
                "train",
                val_batches,
                workspace,
            )
            report.general_ppl = math.exp(report.general_loss)
        if pairs:
            _preference_on(report, scorer, config, base, pairs, workspace)
    if run_dir is not None:
        _record(report, run_dir / "evaluation" / f"{folder.name}.json")
    return report


def _plain_text(config: TrainingConfig) -> TrainingConfig:
    """The run's settings for reading another folder as plain text: CPT, and none of the run's other
    folders (an IFT run's documents_dir, its validation_dir), which belong to its own dataset."""
    from forgellm.data.settings import FOLDER_KEYS

    return config.model_copy(update={"training_type": "cpt", **dict.fromkeys(FOLDER_KEYS)})


def _record(report: EvalReport, path: Path) -> None:
    """Keep the results with the run (``forgellm publish`` puts them in the model card); a run folder
    that cannot be written costs the record, not the evaluation."""
    try:
        path.parent.mkdir(exist_ok=True)
        write_json_atomic(path, report.to_dict())
    except OSError as exc:
        log.warning("could not record the evaluation in %s: %s", path, exc)


def _run_config(run_dir: Path | None) -> TrainingConfig | None:
    if run_dir is None:
        return None
    from forgellm.training.run import load_run_config

    return load_run_config(run_dir)


def _qa(
    report: EvalReport,
    model: str,
    items: list[dict[str, Any]],
    engine: str,
    max_tokens: int,
    workspace: Workspace,
    batch_size: int,
) -> None:
    from forgellm.engines import load_model

    loaded = load_model(model, engine=engine, workspace=workspace)
    try:
        result = QASet(items, loaded.tokenizer).answer(loaded.greedy_batch, max_tokens, batch_size)
    finally:
        loaded.close()
    report.qa_correct, report.qa_total, report.qa_accuracy = result.correct, result.total, result.accuracy
    report.qa_files = result.by_file()
    report.answers = result.answers


def _loss_on(
    scorer, config: TrainingConfig, base: ModelInfo, folder: str, split: str, max_batches: int, workspace: Workspace
) -> float:
    """Mean target-token loss of the model on one split of a dataset folder (CPT-style, all tokens)."""
    from forgellm.data.sequences import PreferencePairs, TokenSequences
    from forgellm.training.loop import evaluate
    from forgellm.training.run import load_data

    data_config = config.model_copy(update={"input_dir": folder, "data_mixture_ratio": 1.0, "batch_size": 1})
    train, val, _ = load_data(data_config, base, workspace)
    chosen = val if split == "val" else train
    if isinstance(chosen, PreferencePairs):  # a preference run's pairs: the loss of the chosen responses
        chosen = TokenSequences(chosen.tokens[:, 0], chosen.mask[:, 0])
    return evaluate(scorer, chosen, 1, max_batches)


def _preference_on(
    report: EvalReport, scorer, config: TrainingConfig, base: ModelInfo, folder: str, workspace: Workspace
) -> None:
    """The model's preference accuracy and margin on the validation pairs of ``folder`` (JSONL pairs
    prepared with the run's settings, or a prepared folder such as a preference run's, used as is)."""
    import numpy as np

    from forgellm.data.sequences import PreferencePairs
    from forgellm.data.settings import FOLDER_KEYS
    from forgellm.training.run import load_data

    update: dict[str, Any] = {"training_type": "preference", "input_dir": folder, "data_mixture_ratio": 1.0}
    prepared = workspace.path(folder) / "val.tokens.npy"
    if prepared.exists():  # a prepared folder keeps its own sequence length
        update["max_seq_length"] = int(np.load(prepared, mmap_mode="r").shape[-1])
    data_config = config.model_copy(update={**update, **dict.fromkeys(FOLDER_KEYS), "batch_size": 1})
    _, val, _ = load_data(data_config, base, workspace)
    if not isinstance(val, PreferencePairs) or len(val) == 0:
        raise UserError(
            f"--pairs {folder} has no validation preference pairs; name a folder of {{prompt, chosen, "
            f"rejected}} records (docs/data.md) with enough pairs for a validation split"
        )
    margins = []
    for start in range(0, len(val), 8):
        batch = val.rows(slice(start, start + 8))
        n, length = batch.tokens.shape[0], batch.tokens.shape[2]
        sums = scorer.sequence_logps(batch.tokens.reshape(2 * n, length), batch.mask.reshape(2 * n, length))
        counts = np.maximum(batch.mask[:, :, 1:].sum(axis=2), 1)  # the target tokens sequence_logps sums
        average = np.asarray(sums, dtype=np.float64).reshape(n, 2) / counts
        margins.append(average[:, 0] - average[:, 1])
    margin = np.concatenate(margins)
    report.preference_correct, report.preference_total = int((margin > 0).sum()), len(margin)
    report.preference_accuracy = report.preference_correct / len(margin)
    report.preference_margin = float(margin.mean())
