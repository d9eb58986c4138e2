"""``forgellm adapter``: move LoRA adapters between engines."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def adapter() -> None:
    """Work with adapters.

    \b
    Examples:
      forgellm adapter convert models/ift/my-run --to mlx
      forgellm adapter convert models/cpt/my-run/checkpoints/step_000500 --to peft --out my-peft-adapter
    """


@adapter.command("convert")
@click.argument("src")
@click.option(
    "--to",
    "to",
    type=click.Choice(["mlx", "peft"]),
    required=True,
    help="Target format: mlx (mlx-lm, mlx engine) or peft (torch engine).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (must not exist); default <src>-<format> beside the source.",
)
@click.option("--base", default=None, help="Base model the adapter belongs to; default the one it records.")
def convert_cmd(src: str, to: str, out: Path | None, base: str | None) -> None:
    """Convert the LoRA adapter SRC (an adapter folder, a checkpoint, or a run: its final or best
    checkpoint) between PEFT and mlx-lm formats; greedy outputs stay the same."""
    from forgellm.models.resolve import resolve_adapter
    from forgellm.publishing.adapters import convert_adapter, default_output

    info = resolve_adapter(src)
    written = convert_adapter(info, to, out or default_output(info, to), base=base)
    click.echo(f"converted {info.adapter_format} adapter {info.name} to {to}")
    click.echo(str(written))
