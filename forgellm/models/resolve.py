"""Model resolution and detection.

A model argument may be a path, a name under ``models/``, an alias, or a hub id present
in the local Hugging Face cache. Nothing here downloads anything.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from forgellm.access import ROOTS_ENV, Roots, request_model
from forgellm.errors import AccessError, NotFoundError, UserError
from forgellm.jsonio import read_json as _read_json
from forgellm.runs.checkpoints import choose_checkpoint
from forgellm.runs.layout import is_run
from forgellm.workspace import MODEL_KINDS, Workspace

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
ALIASES = {"default": EMBEDDED_NAME}
MODEL_MARKER = ".forgellm-model"


@dataclass
class ModelInfo:
    """What ForgeLLM knows about a model or adapter folder, read from its files."""

    name: str
    path: Path
    source: str  # base | cpt | ift | published | path | hf-cache
    is_adapter: bool = False
    base_model: str | None = None  # for adapters: the model they were trained on
    adapter_format: str | None = None  # peft | mlx (adapters only)
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    dtype: str | None = None
    context_length: int | None = None
    is_instruct: bool = False
    size_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def resolve(
    name: str, workspace: Workspace | None = None, *, roots: Roots | None = None, field: str = "model"
) -> ModelInfo:
    """Find a model or adapter by path, alias, workspace name or cached hub id.

    ``roots`` is given for names that came in a request: the name must then follow the request
    rule of `forgellm.access`, the current folder is not searched, and the folder found must lie
    inside the roots (AccessError naming ``field`` if not).
    """
    if not name or not name.strip():
        raise UserError(
            "the model name is empty: pass --model with a path, a name under models/, or 'default'", field=field
        )
    workspace = workspace or Workspace.current()
    if roots is not None:
        request_model(name, field, roots)
    tried: list[str] = []
    for path, source in _candidates(name.strip(), workspace, from_request=roots is not None):
        tried.append(_shown(path, workspace))
        if path.is_dir() and _looks_like_model(path):
            if roots is not None:
                roots.contain(path, field, "model", given=name)
            return describe(path, source=source, name=_display_name(name, path))
    searched = "\n  ".join(dict.fromkeys(tried))
    raise NotFoundError(
        f"model {name!r} not found. Searched:\n  {searched}\n"
        f"Use a model folder path, a name from `forgellm models list`, or run `forgellm models import-default`.",
        field=field,
    )


def _shown(path: Path, workspace: Workspace) -> str:
    """A searched place as the error shows it: relative to the workspace, never a resolved path
    outside it (an HTTP caller must not learn the server's folders)."""
    try:
        return f"<workspace>/{path.relative_to(workspace.root).as_posix()}"
    except ValueError:
        pass
    try:
        return f"<Hugging Face cache>/{path.relative_to(hf_cache_dir()).as_posix()}"
    except ValueError:
        return str(path)


def resolve_adapter(
    name: str, workspace: Workspace | None = None, *, roots: Roots | None = None, field: str = "adapter"
) -> ModelInfo:
    """Resolve an adapter: an adapter folder, a run folder (its final weights, else its best
    intact checkpoint: `forgellm.runs.checkpoints.choose_checkpoint`) or a checkpoint."""
    workspace = workspace or Workspace.current()
    info = resolve(name, workspace, roots=roots, field=field)
    if is_run(info.path):
        chosen = choose_checkpoint(info.path)
        if roots is not None:
            roots.contain(chosen, field, "model", given=name)
        return describe(chosen, source=info.source, name=f"{info.name}/{chosen.relative_to(info.path).as_posix()}")
    return info


def _candidates(name: str, workspace: Workspace, *, from_request: bool = False) -> list[tuple[Path, str]]:
    name = ALIASES.get(name, name)
    out: list[tuple[Path, str]] = []
    as_path = Path(name) if from_request else Path(name).expanduser()
    if as_path.is_absolute() or not from_request:  # a request's relative name is a workspace name
        out.append(((as_path if as_path.is_absolute() else Path.cwd() / as_path), "path"))
    if not as_path.is_absolute():
        out.append((workspace.root / as_path, "path"))
        out.append((workspace.models_dir / as_path, _kind_of(as_path)))
        for kind in MODEL_KINDS:
            out.append((workspace.models(kind) / as_path, kind))
    if name.count("/") == 1 and not as_path.exists():
        cached = hf_cache_snapshot(name)
        out.append((cached or hf_cache_dir() / f"models--{name.replace('/', '--')}", "hf-cache"))
    return out


def _kind_of(rel: Path) -> str:
    return rel.parts[0] if rel.parts and rel.parts[0] in MODEL_KINDS else "path"


def _display_name(requested: str, path: Path) -> str:
    requested = ALIASES.get(requested, requested)
    return requested if not Path(requested).is_absolute() else path.name


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring HF_HUB_CACHE and HF_HOME."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    return home / "hub"


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model, or None; never downloads."""
    repo = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.exists():
        snap = repo / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = (
        sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if (repo / "snapshots").is_dir() else []
    )
    return snaps[-1] if snaps else None


def list_cached_hub_models() -> list[str]:
    cache = hf_cache_dir()
    if not cache.is_dir():
        return []
    return sorted(
        p.name[len("models--") :].replace("--", "/")
        for p in cache.glob("models--*")
        if hf_cache_snapshot(p.name[len("models--") :].replace("--", "/"))
    )


def _looks_like_model(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "adapter_config.json").exists() or is_run(path)


def describe(path: Path, *, source: str = "path", name: str | None = None) -> ModelInfo:
    """Detect what a folder holds: a full model or an adapter, and its properties."""
    path = path.resolve()
    info = ModelInfo(name=name or path.name, path=path, source=source)
    info.size_bytes = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    adapter_cfg = _read_json(path / "adapter_config.json")
    if adapter_cfg is not None:
        info.is_adapter = True
        if "peft_type" in adapter_cfg:
            info.adapter_format = "peft"
            info.base_model = adapter_cfg.get("base_model_name_or_path")
        else:
            info.adapter_format = "mlx"
            info.base_model = adapter_cfg.get("model")
        info.extra["adapter_config"] = adapter_cfg
        info.num_parameters = _count_safetensors_params(path)
        return info
    config = _read_json(path / "config.json") or {}
    archs = config.get("architectures") or []
    info.architecture = archs[0] if archs else None
    info.model_type = config.get("model_type")
    info.context_length = next(
        (
            config[k]
            for k in ("max_position_embeddings", "n_positions", "seq_length", "max_seq_len")
            if isinstance(config.get(k), int)
        ),
        None,
    )
    info.num_parameters = _count_safetensors_params(path)
    info.dtype = config.get("dtype") or config.get("torch_dtype") or _safetensors_dtype(path)
    info.is_instruct = has_chat_template(path)
    if "quantization" in config:
        info.extra["quantization"] = config["quantization"]
    return info


def resolve_pair(
    model: str,
    adapter: str | None,
    workspace: Workspace | None = None,
    *,
    model_arg: str = "--model",
    adapter_arg: str = "--adapter",
    roots: Roots | None = None,
) -> tuple[ModelInfo, ModelInfo | None]:
    """(model, adapter) to load. A run (its final or best checkpoint) or an adapter given as the
    model brings its base model. ``model_arg``/``adapter_arg`` name the inputs in error messages
    (and, stripped of dashes and backquotes, as the error's field); ``roots`` confines a request."""
    model_field, adapter_field = model_arg.strip("-`"), adapter_arg.strip("-`")
    info = resolve(model, workspace, roots=roots, field=model_field)
    if is_run(info.path):
        info = resolve_adapter(model, workspace, roots=roots, field=model_field)
    adapter_info = resolve_adapter(adapter, workspace, roots=roots, field=adapter_field) if adapter else None
    if info.is_adapter:
        if adapter_info is not None:
            raise UserError(
                f"{info.name} is an adapter, not a model: give its base model as {model_arg}", field=model_field
            )
        if not info.base_model:
            raise UserError(
                f"adapter {info.name} does not name its base model: give the base model as "
                f"{model_arg} and this adapter as {adapter_arg}",
                field=model_field,
            )
        # The adapter's own file names its base model: a path from the workspace, not the request,
        # so it is looked up as a path (the roots still apply).
        adapter_info, info = info, _resolve_base(info.base_model, workspace, roots, model_field)
    if adapter_info is not None and not adapter_info.is_adapter:
        raise UserError(
            f"{adapter_info.name} is a full model, not an adapter: give it as {model_arg} instead", field=adapter_field
        )
    return info, adapter_info


def _resolve_base(base_model: str, workspace: Workspace | None, roots: Roots | None, field: str) -> ModelInfo:
    if roots is None:
        return resolve(base_model, workspace, field=field)
    path = Path(base_model)
    if path.is_absolute() and path.is_dir() and _looks_like_model(path):
        try:
            roots.contain(path, field, "model")
        except AccessError:
            raise AccessError(
                f"{field}: the base model this adapter was trained on is outside the workspace, the "
                f"Hugging Face cache and {ROOTS_ENV}; the server's user can add its folder to "
                f"{ROOTS_ENV}",
                field=field,
            ) from None
        return describe(path, source="path", name=path.name)
    return resolve(base_model, workspace, roots=roots, field=field)


def has_chat_template(path: Path) -> bool:
    if (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists():
        return True
    tok_cfg = _read_json(path / "tokenizer_config.json") or {}
    return bool(tok_cfg.get("chat_template"))


def _safetensors_headers(path: Path) -> list[dict[str, Any]]:
    headers = []
    for file in sorted(path.glob("*.safetensors")):
        try:
            with open(file, "rb") as fh:
                (length,) = struct.unpack("<Q", fh.read(8))
                if length > file.stat().st_size - 8:  # not a safetensors file, or a damaged one
                    continue
                headers.append(json.loads(fh.read(length)))
        except (OSError, ValueError, struct.error):
            continue
    return headers


def _count_safetensors_params(path: Path) -> int | None:
    headers = _safetensors_headers(path)
    if not headers:
        return None
    total = 0
    for header in headers:
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in meta.get("shape", []):
                count *= dim
            total += count
    return total


def _safetensors_dtype(path: Path) -> str | None:
    for header in _safetensors_headers(path):
        for key, meta in header.items():
            if key != "__metadata__" and meta.get("dtype"):
                return {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}.get(meta["dtype"], meta["dtype"])
    return None


def list_models(workspace: Workspace | None = None) -> list[ModelInfo]:
    """Every model and adapter in the workspace, then the cached hub models."""
    workspace = workspace or Workspace.current()
    found: list[ModelInfo] = []
    for kind in MODEL_KINDS:
        folder = workspace.models(kind)
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and _looks_like_model(child):
                if is_run(child):
                    info = describe(child, source=kind, name=f"{kind}/{child.name}")
                    info.extra["run"] = True
                    found.append(info)
                else:
                    found.append(
                        describe(child, source=kind, name=child.name if kind == "base" else f"{kind}/{child.name}")
                    )
    for repo_id in list_cached_hub_models():
        snap = hf_cache_snapshot(repo_id)
        if snap is not None and _looks_like_model(snap):
            found.append(describe(snap, source="hf-cache", name=repo_id))
    return found
