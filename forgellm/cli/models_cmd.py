"""``forgellm models``: list, inspect and import models."""

from __future__ import annotations

import json

import click

from forgellm.models.resolve import list_models, resolve
from forgellm.workspace import Workspace


@click.group()
def models() -> None:
    """List and import models.

    \b
    Examples:
      forgellm models list
      forgellm models list --json
      forgellm models show default
      forgellm models import ~/Downloads/qwen2.5-0.5b-instruct-q8_0.gguf
      forgellm models import ollama:llama3.2:1b --name llama-1b
      forgellm models import-default
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Every model and adapter in the workspace and the local Hugging Face cache, then the GGUF
    models LM Studio and Ollama hold (importable with `forgellm models import NAME`)."""
    from forgellm.models.local_apps import find_local_gguf

    found = list_models(Workspace.current())
    importable = find_local_gguf()
    if as_json:
        click.echo(
            json.dumps(
                [m.to_dict() for m in found]
                + [{**g.to_dict(), "source": g.app, "importable": True} for g in importable],
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "source", "kind", "architecture", "params", "dtype", "context", "base model")
    for m in found:
        kind = "adapter" if m.is_adapter else ("instruct" if m.is_instruct else "base")
        params = f"{m.num_parameters / 1e6:.1f}M" if m.num_parameters else "-"
        table.add_row(
            m.name,
            m.source,
            kind,
            m.architecture or "-",
            params,
            m.dtype or "-",
            str(m.context_length or "-"),
            m.base_model or "-",
        )
    Console().print(table) if found else click.echo("no models yet: run `forgellm models import-default`")
    if importable:
        apps = Table("importable (forgellm models import NAME)", "app", "size", "file")
        for g in importable:
            apps.add_row(g.name, g.app, f"{g.size_bytes / 1e9:.2f} GB", str(g.path))
        Console().print(apps)


@models.command("show")
@click.argument("model")
def show_cmd(model: str) -> None:
    """Everything detected about one model (JSON)."""
    click.echo(json.dumps(resolve(model).to_dict(), indent=2))


@models.command("import")
@click.argument("source")
@click.option("--name", help="Folder name under models/base (default: from the file or model name).")
@click.option("--link", is_flag=True, help="Link a model folder instead of copying it.")
@click.option("--force", is_flag=True, help="Replace a model of the same name.")
def import_cmd(source: str, name: str | None, link: bool, force: bool) -> None:
    """Import a GGUF file, an LM Studio or Ollama model, or a Hugging Face model folder.

    \b
    SOURCE is one of:
      a .gguf file          any architecture transformers reads from GGUF (llama, mistral, qwen2,
                            qwen3, gemma2, gemma3, phi3...), any quantization: dequantized to float32
      lmstudio:PATH         a GGUF under LM Studio's models folder (see `forgellm models list`)
      ollama:MODEL[:TAG]    an Ollama model, by its manifest name (tag default: latest)
      a model folder        config.json + *.safetensors: copied (or linked with --link)
    The result is models/base/NAME, with the tokenizer and chat template, ready for both engines.
    """
    from forgellm.models.importing import import_model

    click.echo(str(import_model(source, name=name, link=link, force=force, workspace=Workspace.current())))


@models.command("import-default")
@click.option("--force", is_flag=True, help="Convert again even if the folder exists.")
def import_default_cmd(force: bool) -> None:
    """Convert the embedded SmolLM2-135M-Instruct GGUF into models/base/ (once)."""
    from forgellm.models.embedded import import_default

    path = import_default(Workspace.current(), force=force)
    click.echo(str(path))
