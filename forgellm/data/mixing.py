"""Mixing domain data with general data (``data_mixture_ratio`` = the share of domain data), and
an IFT run's chats with its documents (``documents_dir``, ``documents_share``).

The general part is either a folder the user names (``general_data_dir``), processed like
the domain data, or a *replay set*: text the base model itself writes before training,
in answer to varied everyday prompts. Training on a little of its own output keeps the
model close to what it could already do, with nothing downloaded. Replay texts are
generated once through the engine interface and cached under ``data/replay-<key>/``.

Only training sequences are mixed: validation stays domain-only, so the validation loss
measures the domain.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgellm.data.packing import SplitWriter
from forgellm.data.sequences import TokenSequences
from forgellm.data.settings import DataSettings
from forgellm.errors import UserError
from forgellm.workspace import Workspace

if TYPE_CHECKING:
    from forgellm.data.pipeline import PreparedData
    from forgellm.engines.base import LoadedModel

log = logging.getLogger(__name__)

REPLAY_FILE = "replay.jsonl"
REPLAY_BATCH = 16  # replay texts sampled together
#: Everyday requests the replay set answers: varied, general, short answers.
REPLAY_PROMPTS = (
    "Explain how rainbows form.",
    "Write a short paragraph about the history of bread.",
    "What are three tips for staying focused while studying?",
    "Describe a busy market in the morning.",
    "Explain what a prime number is, with an example.",
    "Write a friendly email inviting a colleague to lunch.",
    "Why do leaves change colour in autumn?",
    "Summarise the water cycle in a few sentences.",
    "Give advice to someone learning to cook.",
    "Describe the planet Mars.",
    "What is the difference between weather and climate?",
    "Write a short story about a lost umbrella.",
    "How does a bicycle stay upright?",
    "List some healthy breakfast ideas and explain why they are good.",
    "Explain what photosynthesis does for a plant.",
    "Describe how to plant a tree.",
    "What makes a good team leader?",
    "Write a poem about the sea.",
    "How do vaccines help the body?",
    "Explain why the sky is blue.",
    "Describe the rules of chess briefly.",
    "What should a traveller pack for a rainy week?",
    "Explain how a library organises its books.",
    "Write a thank-you note to a teacher.",
)


def prepare_general(settings: DataSettings, tokenizer: Any, workspace: Workspace) -> PreparedData:
    """The general data, processed with the same settings (training side only) and cached."""
    from forgellm.data.pipeline import prepare_dataset

    if not settings.samples_replay:
        assert settings.general_data_dir is not None  # called only when general text is mixed in
        folder, source = settings.general_data_dir, f"folder {settings.general_data_dir}"
    elif settings.replay_model:
        folder, source = ensure_replay_set(settings, workspace), f"replay from {settings.replay_model}"
    else:
        raise UserError(
            f"data_mixture_ratio={settings.data_mixture_ratio} needs general data: set general_data_dir "
            f"to a folder of general text, set replay_model to sample it from the base model, "
            f"or set data_mixture_ratio=1.0"
        )
    # General data is text, whatever the run trains on: cut into sequences, every token a target.
    # Read as IFT records, a prose file (or a replay text) longer than max_seq_length would be
    # dropped whole (at 128 tokens, 18 of the 24 replay texts were).
    general_settings = settings.model_copy(
        update={
            "input_dir": Path(folder),
            "training_type": "cpt",
            "validation_split": 0.0,
            "data_mixture_ratio": 1.0,
            "general_data_dir": None,
            "validation_dir": None,
            "documents_dir": None,
            "ift_format": "auto",
        }
    )
    general = prepare_dataset(general_settings, tokenizer, workspace)
    general.stats["source"] = source
    return general


def replay_key(settings: DataSettings, model_path: Path) -> str:
    """Identity of a replay set: the model's config and weight files (name, size, mtime), and the sampling settings.

    Weights are identified by metadata, not content: hashing gigabytes on every run would cost more than it saves.
    """
    digest = hashlib.blake2b(digest_size=12)
    for path in sorted(model_path.iterdir()):
        if path.name.endswith((".json", ".jinja")) and path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".npz", ".gguf"):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(
        json.dumps([settings.replay_samples, settings.replay_max_tokens, settings.seed, REPLAY_PROMPTS]).encode()
    )
    return digest.hexdigest()


def ensure_replay_set(settings: DataSettings, workspace: Workspace) -> Path:
    """The folder holding the replay set, generating it on first use."""
    from forgellm.engines import load_model
    from forgellm.models.resolve import resolve

    assert settings.replay_model is not None
    info = resolve(settings.replay_model, workspace)
    folder = workspace.data_dir / f"replay-{replay_key(settings, info.path)}"
    if (folder / REPLAY_FILE).is_file():
        return folder
    log.info("data: writing a replay set of %d texts with %s", settings.replay_samples, info.name)
    model = load_model(settings.replay_model, engine=settings.replay_engine, workspace=workspace)
    try:
        records = _replay_records(model, settings)
    finally:
        model.close()
    if not records:
        raise UserError(f"{info.name} generated only empty replay texts; set general_data_dir instead")
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / REPLAY_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.rename(folder)
    return folder


def _replay_records(model: LoadedModel, settings: DataSettings) -> list[dict[str, Any]]:
    """The replay texts, sampled a batch of prompts at a time (one forward pass per token for the
    batch: several times faster than one text after another on a CPU). Each is usable as CPT text
    (``text``) and as an IFT conversation (``messages``); empty ones are left out."""
    from forgellm.engines.batched import BatchSampling

    prompts = [REPLAY_PROMPTS[i % len(REPLAY_PROMPTS)] for i in range(settings.replay_samples)]
    records = []
    for start in range(0, len(prompts), REPLAY_BATCH):
        batch = prompts[start : start + REPLAY_BATCH]
        sample = BatchSampling(temperature=0.8, top_p=0.95, seed=settings.seed + start)
        outputs = model.sample_batch(
            [model.encode(model.format_prompt(p)) for p in batch], settings.replay_max_tokens, sample
        )
        for prompt, ids in zip(batch, outputs):
            if text := model.tokenizer.decode(ids, skip_special_tokens=True).strip():
                records.append(
                    {
                        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}],
                        "text": text,
                    }
                )
    return records


def prepare_documents(settings: DataSettings, tokenizer: Any, workspace: Workspace) -> PreparedData:
    """An IFT run's ``documents_dir``, processed as CPT documents (cut into sequences, every token a
    target, training side only) and cached."""
    from forgellm.data.pipeline import prepare_dataset

    if settings.training_type != "ift":
        raise UserError(
            f"documents_dir mixes documents into the chats of an ift run; this run is "
            f"{settings.training_type}: put the documents in input_dir instead",
            field="documents_dir",
        )
    documents = prepare_dataset(
        settings.model_copy(
            update={
                "input_dir": settings.documents_dir,
                "training_type": "cpt",
                "validation_split": 0.0,
                "data_mixture_ratio": 1.0,
                "general_data_dir": None,
                "validation_dir": None,
                "documents_dir": None,
            }
        ),
        tokenizer,
        workspace,
    )
    documents.stats["source"] = f"folder {settings.documents_dir}"
    return documents


def _sequences(data: PreparedData) -> TokenSequences:
    """The training sequences of general data or documents (prepared as CPT or IFT, never pairs)."""
    if not isinstance(data.train, TokenSequences):
        raise TypeError(f"{data.stats.get('source')} was prepared as preference pairs, not sequences")
    return data.train


def _add_part(
    parts: list[tuple[TokenSequences, np.ndarray]],
    stats: dict[str, Any],
    name: str,
    data: PreparedData,
    count: int,
    rng: np.random.Generator,
    *,
    fix: str,
) -> None:
    """Add ``count`` rows of ``data`` (``documents`` or ``general``) to the mix and its counts to ``stats``."""
    pool = len(data.train)
    if count and pool == 0:
        raise UserError(
            f"the {name} data ({data.stats.get('source')}) produced no sequences; add text there or {fix}",
            field="documents_dir" if name == "documents" else "general_data_dir",
        )
    parts.append((_sequences(data), _picks(pool, count, rng)))
    stats.update(
        {
            f"{name}_sequences": count,
            f"{name}_unique_sequences": int(min(count, pool)),
            f"{name}_source": data.stats.get("source"),
            f"{name}_cache": data.stats["cache"]["key"],
        }
    )


def _picks(pool: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` row numbers of a pool of ``pool`` rows: each row once (shuffled) before any repeats."""
    return np.tile(rng.permutation(pool), math.ceil(count / pool) if pool else 0)[:count]


def mix_into(
    domain: TokenSequences,
    folder: Path,
    settings: DataSettings,
    *,
    general: PreparedData | None = None,
    documents: PreparedData | None = None,
) -> dict[str, Any]:
    """Write ``folder/train.*``: the domain sequences, document sequences making ``documents_share``
    of the domain part (an IFT run's ``documents_dir``), then enough general ones for
    ``data_mixture_ratio``, shuffled together.

    Documents and general sequences are repeated (each once before any twice) when there are
    fewer than needed, and sampled when there are more.
    """
    rng = np.random.default_rng(settings.seed)
    parts: list[tuple[TokenSequences, np.ndarray]] = [(domain, np.arange(len(domain)))]
    stats: dict[str, Any] = {"domain_sequences": len(domain)}
    if documents is not None:
        share = settings.documents_share
        n_documents = round(len(domain) * share / (1 - share))
        stats["documents_share"] = share
        _add_part(parts, stats, "documents", documents, n_documents, rng, fix="unset documents_dir")
    if general is not None:
        ratio = settings.data_mixture_ratio
        n_general = round(sum(len(rows) for _, rows in parts) * (1 - ratio) / ratio)
        stats["domain_ratio"] = ratio
        _add_part(parts, stats, "general", general, n_general, rng, fix="set data_mixture_ratio=1.0")
    # Row r of the result is row row_of[order[r]] of part part_of[order[r]].
    part_of = np.concatenate([np.full(len(rows), p) for p, (_, rows) in enumerate(parts)])
    row_of = np.concatenate([rows for _, rows in parts])
    order = rng.permutation(len(row_of))
    out = SplitWriter(folder, "train", len(order), domain.seq_length)
    for start in range(0, len(order), 4096):
        block = order[start : start + 4096]
        tokens = np.empty((len(block), domain.seq_length), dtype=np.int32)
        mask = np.empty_like(tokens, dtype=np.uint8)
        for p, (sequences, _) in enumerate(parts):
            here = part_of[block] == p
            tokens[here], mask[here] = sequences.tokens[row_of[block][here]], sequences.mask[row_of[block][here]]
        out.write(tokens.reshape(-1), mask.reshape(-1))
    out.close()
    stats["sequences"] = len(order)
    return stats
