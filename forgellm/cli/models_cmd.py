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
      forgellm models import-default
    """


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Every model and adapter in the workspace and the local Hugging Face cache."""
    found = list_models(Workspace.current())
    if as_json:
        click.echo(json.dumps([m.to_dict() for m in found], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "source", "kind", "architecture", "params", "dtype", "context", "base model")
    for m in found:
        kind = "adapter" if m.is_adapter else ("instruct" if m.is_instruct else "base")
        params = f"{m.num_parameters / 1e6:.1f}M" if m.num_parameters else "-"
        table.add_row(m.name, m.source, kind, m.architecture or "-", params, m.dtype or "-",
                      str(m.context_length or "-"), m.base_model or "-")
    Console().print(table) if found else click.echo("no models yet: run `forgellm models import-default`")


@models.command("show")
@click.argument("model")
def show_cmd(model: str) -> None:
    """Everything detected about one model (JSON)."""
    click.echo(json.dumps(resolve(model).to_dict(), indent=2))


@models.command("import-default")
@click.option("--force", is_flag=True, help="Convert again even if the folder exists.")
def import_default_cmd(force: bool) -> None:
    """Convert the embedded SmolLM2-135M-Instruct GGUF into models/base/ (once)."""
    from forgellm.models.embedded import import_default

    path = import_default(Workspace.current(), force=force)
    click.echo(str(path))
