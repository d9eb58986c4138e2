"""GGUF models other local apps keep: LM Studio (plain ``.gguf`` files under
``publisher/repo/``) and Ollama (content-addressed blobs named by manifests).

Nothing is copied here; `forgellm models import` converts one on request.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from forgellm.errors import NotFoundError, UserError

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_REGISTRY = "registry.ollama.ai"


@dataclass(frozen=True)
class LocalGGUF:
    name: str  # what `forgellm models import` accepts: lmstudio:<publisher/repo/file> or ollama:<model:tag>
    app: str  # lmstudio | ollama
    path: Path  # the GGUF file (an Ollama blob)
    size_bytes: int

    def to_dict(self) -> dict:
        return {"name": self.name, "app": self.app, "path": str(self.path), "size_bytes": self.size_bytes}


def lmstudio_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def ollama_dir() -> Path:
    """Ollama's store; ``OLLAMA_MODELS`` moves it, as it does for Ollama itself."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def find_local_gguf() -> list[LocalGGUF]:
    """Every LM Studio GGUF and every Ollama model whose blob is present."""
    found = []
    for root in lmstudio_dirs():
        if root.is_dir():
            for path in sorted(root.rglob("*.gguf")):
                if "mmproj" in path.name.lower():  # vision projectors, not language models
                    continue
                found.append(
                    LocalGGUF(f"lmstudio:{path.relative_to(root).as_posix()}", "lmstudio", path, path.stat().st_size)
                )
    for name, manifest in _ollama_manifests():
        try:
            blob = ollama_blob(manifest)
        except UserError:
            continue  # a broken manifest is reported when someone imports it by name
        found.append(LocalGGUF(f"ollama:{name}", "ollama", blob, blob.stat().st_size))
    return found


def _ollama_manifests() -> list[tuple[str, Path]]:
    """(model:tag, manifest file); models of the default registry's library by their short name."""
    root = ollama_dir() / "manifests"
    if not root.is_dir():
        return []
    out = []
    for manifest in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = manifest.relative_to(root).parts  # registry / namespace / model / tag
        if len(parts) != 4:
            continue
        registry, namespace, model, tag = parts
        if registry == OLLAMA_DEFAULT_REGISTRY:
            name = f"{model}:{tag}" if namespace == "library" else f"{namespace}/{model}:{tag}"
        else:
            name = f"{registry}/{namespace}/{model}:{tag}"
        out.append((name, manifest))
    return out


def ollama_blob(manifest: Path) -> Path:
    """The model layer's blob of an Ollama manifest."""
    try:
        layers = json.loads(manifest.read_text()).get("layers") or []
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"Ollama manifest {manifest} cannot be read: {exc}") from None
    digests = [layer.get("digest") for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER]
    if not digests or not isinstance(digests[0], str):
        raise UserError(f"Ollama manifest {manifest} names no model layer")
    blob = ollama_dir() / "blobs" / digests[0].replace(":", "-")
    if not blob.is_file():
        raise UserError(
            f"Ollama manifest {manifest} points to blob {digests[0]}, which is missing from "
            f"{blob.parent}; run `ollama pull` for this model again"
        )
    return blob


def resolve_local(name: str) -> LocalGGUF:
    """``lmstudio:...`` or ``ollama:model[:tag]`` to its file."""
    app, _, rest = name.partition(":")
    if app == "lmstudio":
        for root in lmstudio_dirs():
            path = root / rest
            if path.is_file():
                return LocalGGUF(name, "lmstudio", path, path.stat().st_size)
        raise NotFoundError(
            f"{name}: no such GGUF in LM Studio's folders "
            f"({', '.join(str(d) for d in lmstudio_dirs())}); `forgellm models list` shows them"
        )
    if app == "ollama":
        wanted = rest if ":" in rest.rsplit("/", 1)[-1] else f"{rest}:latest"
        for model, manifest in _ollama_manifests():
            if model == wanted:
                blob = ollama_blob(manifest)
                return LocalGGUF(f"ollama:{model}", "ollama", blob, blob.stat().st_size)
        raise NotFoundError(
            f"{name}: Ollama has no manifest for {wanted} under {ollama_dir() / 'manifests'}; "
            f"`forgellm models list` shows the models found"
        )
    raise UserError(f"{name!r} is not lmstudio:<path> or ollama:<model[:tag]>")
