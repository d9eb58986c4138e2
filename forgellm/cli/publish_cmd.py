"""``forgellm fuse``, ``forgellm quantize`` and ``forgellm publish``: from a run to a model other tools load."""

from __future__ import annotations

from pathlib import Path

import click

checkpoint_option = click.option(
    "--checkpoint", default="best", show_default=True,
    help="best (the analysis' pick), latest, final, or a step (50 or step_000050).")


@click.command()
@click.argument("run")
@checkpoint_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (must not exist); default <run>/fused-<checkpoint>.")
def fuse(run: str, checkpoint: str, out: Path | None) -> None:
    """Merge a checkpoint of RUN into a full model folder (safetensors + tokenizer).

    mlx-lm adapters are fused with mlx-lm, PEFT adapters with merge_and_unload; both
    engines and plain transformers/mlx-lm load the result.

    \b
    Examples:
      forgellm fuse models/cpt/my-run
      forgellm fuse cpt/my-run --checkpoint 500 --out models/base/my-model
    """
    from forgellm.publishing.fuse import fuse_run

    result = fuse_run(run, checkpoint, out)
    click.echo(f"fused {result.checkpoint.name} onto {result.base.name} ({result.method})")
    click.echo(str(result.out))
