"""Mixing domain data with general data (``data_mixture_ratio`` = the share of domain data).

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

log = logging.getLogger(__name__)

REPLAY_FILE = "replay.jsonl"
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

    if settings.general_data_dir is not None:
        folder, source = settings.general_data_dir, f"folder {settings.general_data_dir}"
    elif settings.replay_model:
        folder, source = ensure_replay_set(settings, workspace), f"replay from {settings.replay_model}"
    else:
        raise UserError(
            f"data_mixture_ratio={settings.data_mixture_ratio} needs general data: set general_data_dir "
            f"to a folder of general text, set replay_model to sample it from the base model, "
            f"or set data_mixture_ratio=1.0"
        )
    general_settings = settings.model_copy(
        update={
            "input_dir": Path(folder),
            "validation_split": 0.0,
            "data_mixture_ratio": 1.0,
            "general_data_dir": None,
            "validation_dir": None,
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
        records = [
            record
            for i in range(settings.replay_samples)
            if (record := _replay_record(model, REPLAY_PROMPTS[i % len(REPLAY_PROMPTS)], settings, i))
        ]
    finally:
        model.close()
    if not records:
        raise UserError(f"{info.name} generated only empty replay texts; set general_data_dir instead")
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / REPLAY_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.rename(folder)
    return folder


def _replay_record(model: Any, prompt: str, settings: DataSettings, index: int) -> dict[str, Any] | None:
    """One replay text: usable as CPT text (``text``) and as an IFT conversation (``messages``)."""
    from forgellm.engines import SamplingParams

    params = SamplingParams(
        max_tokens=settings.replay_max_tokens, temperature=0.8, top_p=0.95, seed=settings.seed + index
    )
    text = "".join(chunk.text for chunk in model.generate(model.format_prompt(prompt), params)).strip()
    if not text:
        return None
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}], "text": text}


def mix_into(domain: TokenSequences, general: PreparedData, folder: Path, settings: DataSettings) -> dict[str, Any]:
    """Write ``folder/train.*``: the domain sequences plus enough general ones for the ratio, shuffled together.

    General sequences are repeated (in a shuffled order) when there are fewer than needed.
    """
    ratio = settings.data_mixture_ratio
    n_domain, n_pool = len(domain), len(general.train)
    n_general = round(n_domain * (1 - ratio) / ratio)
    if n_general and n_pool == 0:
        raise UserError(
            f"the general data ({general.stats.get('source')}) produced no sequences; "
            f"add text there or set data_mixture_ratio=1.0"
        )
    rng = np.random.default_rng(settings.seed)
    picks = np.tile(rng.permutation(n_pool), math.ceil(n_general / n_pool) if n_pool else 0)[:n_general]
    # Row r of the result comes from domain row source[r] when source[r] < n_domain, else general row picks[...].
    source = rng.permutation(n_domain + n_general)
    out = SplitWriter(folder, "train", n_domain + n_general, domain.seq_length)
    for start in range(0, len(source), 4096):
        block = source[start : start + 4096]
        from_domain = block < n_domain
        d_rows, g_rows = block[from_domain], picks[block[~from_domain] - n_domain]
        tokens = np.empty((len(block), domain.seq_length), dtype=np.int32)
        mask = np.empty_like(tokens, dtype=np.uint8)
        tokens[from_domain], mask[from_domain] = domain.tokens[d_rows], domain.mask[d_rows]
        tokens[~from_domain], mask[~from_domain] = general.train.tokens[g_rows], general.train.mask[g_rows]
        out.write(tokens.reshape(-1), mask.reshape(-1))
    out.close()
    return {
        "domain_ratio": ratio,
        "domain_sequences": n_domain,
        "general_sequences": n_general,
        "general_unique_sequences": int(min(n_general, n_pool)),
        "general_source": general.stats.get("source"),
        "general_cache": general.stats["cache"]["key"],
    }
