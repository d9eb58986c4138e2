"""``forgellm fuse``, ``forgellm quantize`` and ``forgellm publish``: from a run to a model other tools load."""

from __future__ import annotations

from pathlib import Path

import click

checkpoint_option = click.option(
    "--checkpoint",
    default="best",
    show_default=True,
    help="best (the analysis' pick), latest, final, or a step (50 or step_000050).",
)


@click.command()
@click.argument("run")
@checkpoint_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (must not exist); default <run>/fused-<checkpoint>.",
)
@click.option(
    "--dequantize",
    is_flag=True,
    help="mlx QLoRA run on a quantized base: write the fused model in full precision (default: keep it quantized).",
)
def fuse(run: str, checkpoint: str, out: Path | None, dequantize: bool) -> None:
    """Merge a checkpoint of RUN into a full model folder (safetensors + tokenizer).

    mlx-lm adapters are fused with mlx-lm, PEFT adapters with merge_and_unload; both
    engines and plain transformers/mlx-lm load the result.

    \b
    Examples:
      forgellm fuse models/cpt/my-run
      forgellm fuse cpt/my-run --checkpoint 500 --out models/base/my-model
    """
    from forgellm.publishing.fuse import fuse_run

    result = fuse_run(run, checkpoint, out, dequantize=dequantize)
    click.echo(f"fused {result.checkpoint.name} onto {result.base.name} ({result.method})")
    click.echo(str(result.out))


@click.command()
@click.argument("model")
@click.option("--bits", type=click.Choice(["4", "8"]), required=True, help="Bits per weight.")
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128"]),
    default="64",
    show_default=True,
    help="Weights sharing one scale and bias.",
)
@click.option(
    "--engine",
    type=click.Choice(["mlx", "torch"]),
    default="mlx",
    show_default=True,
    help="Whose quantisation to use; only mlx writes a quantised model that loads back.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (must not exist); default models/published/<model>-mlx-q<bits>-g<group>.",
)
def quantize(model: str, bits: str, group_size: str, engine: str, out: Path | None) -> None:
    """Quantise MODEL (a full model: base, fused or published) for the mlx engine and check it loads.

    \b
    Examples:
      forgellm quantize published/my-model --bits 4
      forgellm quantize default --bits 8 --group-size 32 --out models/published/smol-q8
    """
    from forgellm.publishing.quantize import quantize as run_quantize

    result = run_quantize(model, bits=int(bits), group_size=int(group_size), engine=engine, out=out)
    click.echo(
        f"quantised {result.quantized_layers} layers ({result.skipped_layers} kept in full precision): "
        f"{result.source_bytes / 1e6:.1f} MB -> {result.size_bytes / 1e6:.1f} MB; loads with the mlx engine"
    )
    click.echo(str(result.out))


@click.command()
@click.argument("run")
@checkpoint_option
@click.option("--name", default=None, help="Folder name under models/published; default <run>-<checkpoint>.")
@click.option(
    "--gguf", is_flag=True, help="Also write a GGUF file (verified by reading it back) and an Ollama Modelfile."
)
@click.option(
    "--gguf-type",
    type=click.Choice(["f16", "bf16", "q8_0"]),
    default="f16",
    show_default=True,
    help="Tensor type of the GGUF matrices (norms stay f32).",
)
def publish(run: str, checkpoint: str, name: str | None, gguf: bool, gguf_type: str) -> None:
    """Publish a checkpoint of RUN to models/published/NAME: fused weights, tokenizer, a model
    card (README.md) with data stats, config, metrics and the dashboard, optionally a GGUF.

    \b
    Examples:
      forgellm publish models/ift/my-run --name my-assistant
      forgellm publish cpt/my-run --checkpoint 1500 --gguf
      forgellm publish ift/my-run --gguf --gguf-type q8_0
    """
    from forgellm.publishing.publish import publish_run

    result = publish_run(run, checkpoint=checkpoint, name=name, gguf=gguf, gguf_type=gguf_type)
    click.echo(f"published {result.checkpoint.name} ({result.method})")
    if result.gguf:
        click.echo(
            f"GGUF {result.gguf['file']}: {result.gguf['tensors']} tensors, logits match "
            f"(max difference {result.gguf['max_abs_diff']:.2g})"
        )
    click.echo(str(result.out))


@click.group("export")
def export() -> None:
    """Write a model in another tool's format."""


@export.command("gguf")
@click.argument("model")
@click.option(
    "--type",
    "dtype",
    type=click.Choice(["f16", "bf16", "q8_0"]),
    default="f16",
    show_default=True,
    help="Tensor type of the GGUF matrices (norms stay f32).",
)
@click.option("--name", default=None, help="Model name in the file and file name; default the model folder's name.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Folder to create; default models/published/NAME-gguf."
)
def export_gguf(model: str, dtype: str, name: str | None, out: Path | None) -> None:
    """MODEL (a model folder or name: base, fused, published) as NAME-TYPE.gguf plus an Ollama
    Modelfile, for llama.cpp and Ollama. The file is read back and its logits compared with MODEL's.

    \b
    Architectures: llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3.
    Examples:
      forgellm export gguf published/my-assistant --type q8_0
      forgellm export gguf default --out smollm2-gguf
    """
    from forgellm.publishing.gguf_export import export_model

    folder, result = export_model(model, dtype=dtype, out=out, name=name)
    click.echo(
        f"GGUF {result['file']}: {result['tensors']} tensors, logits match "
        f"(max difference {result['max_abs_diff']:.2g}); Modelfile chat template: {result['template'] or 'none'}"
    )
    click.echo(str(folder))
