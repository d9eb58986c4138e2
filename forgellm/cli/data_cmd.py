"""``forgellm data``: inspect what the data pipeline makes of a dataset folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from forgellm.workspace import Workspace

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def _pipeline_options(fn):
    """Options shared by stats and preview: they build the same `DataSettings` (see docs/data.md)."""
    for option in reversed([
        click.argument("path", type=click.Path(path_type=Path)),
        click.option("--mode", "training_type", type=click.Choice(["cpt", "ift", "preference"]), default="cpt",
                     show_default=True, help="cpt: raw text; ift: instruction records with an assistant-only loss "
                                             "mask; preference: {prompt, chosen, rejected} pairs."),
        click.option("--model", default="default", show_default=True,
                     help="Model whose tokenizer (and chat template) to use: path, name under models/, or 'default'."),
        click.option("--max-seq-length", type=int, default=1024, show_default=True, help="Tokens per packed sequence."),
        click.option("--validation-split", type=float, default=0.1, show_default=True,
                     help="Share of documents held out for validation."),
        click.option("--seed", type=int, default=42, show_default=True, help="Seed of the split hash and of mixing."),
        click.option("--format", "ift_format", default="auto", show_default=True,
                     type=click.Choice(["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"]),
                     help="IFT record format; auto detects it per file."),
        click.option("--overlong", type=click.Choice(["drop", "truncate"]), default="drop", show_default=True,
                     help="IFT records longer than --max-seq-length: drop or truncate them (counted either way)."),
        click.option("--text-column", default="text", show_default=True,
                     help="Column or field holding the text in .csv, .parquet, .jsonl/.json and datasets folders."),
        click.option("--no-dedupe", "dedupe", is_flag=True, flag_value=False, default=True,
                     help="Keep exact duplicates."),
        click.option("--near-dedupe-threshold", type=float, default=0.8, show_default=True,
                     help="Estimated Jaccard similarity above which a document is a near duplicate; 0 turns it off."),
        click.option("--no-filters", "quality_filters", is_flag=True, flag_value=False, default=True,
                     help="Turn the quality filters (length, letter share, repeated lines) off."),
        click.option("--min-chars", type=int, default=40, show_default=True,
                     help="Quality filter: drop documents shorter than this many characters."),
        click.option("--mixture-ratio", "data_mixture_ratio", type=float, default=1.0, show_default=True,
                     help="Share of domain data in training; the rest comes from --general-data, or else is "
                          "sampled from --model (a replay set)."),
        click.option("--general-data", "general_data_dir", type=click.Path(path_type=Path), default=None,
                     help="Folder of general text mixed in when --mixture-ratio < 1."),
        click.option("--max-file-mb", type=float, default=256.0, show_default=True,
                     help="Skip files read whole (and .jsonl lines, .csv fields) larger than this."),
        click.option("--strict", is_flag=True, help="Stop at the first skipped file or line instead of reporting it."),
    ]):
        fn = option(fn)
    return fn


def _settings(path: Path, model: str, **options: Any) -> Any:
    """`DataSettings` from the shared options; the replay set (if any) is written by ``model``."""
    from pydantic import ValidationError

    from forgellm.data import DataSettings
    from forgellm.errors import UserError

    general = options.pop("general_data_dir")
    try:
        return DataSettings(input_dir=path.resolve(), general_data_dir=general.resolve() if general else None,
                            replay_model=model, **options)
    except ValidationError as exc:
        raise UserError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


def load_tokenizer(model: str, workspace: Workspace) -> Any:
    """The fast tokenizer of a model (of an adapter's base model)."""
    from transformers import AutoTokenizer

    from forgellm.models.resolve import resolve

    info = resolve(model, workspace)
    if info.is_adapter and not (info.path / "tokenizer.json").exists() and info.base_model:
        info = resolve(info.base_model, workspace)
    return AutoTokenizer.from_pretrained(str(info.path))


@click.group()
def data() -> None:
    """Inspect datasets: what would be trained on, and what was skipped and why.

    \b
    Examples:
      forgellm data stats dataset/sample/cpt
      forgellm data stats dataset/sample/ift --mode ift --json
      forgellm data preview dataset/sample/ift --mode ift -n 3
      forgellm data sample
    """


@data.command("stats")
@_pipeline_options
@click.option("--json", "as_json", is_flag=True, help="Print the full stats as JSON.")
def stats_cmd(path: Path, model: str, as_json: bool, **options: Any) -> None:
    """Run the pipeline on PATH (cached under data/) and report documents, tokens, sequences and skips.

    \b
    Examples:
      forgellm data stats dataset/sample/cpt
      forgellm data stats my_docs --max-seq-length 512 --json
      forgellm data stats chats --mode ift --format sharegpt --strict
    """
    from forgellm.data import prepare_dataset

    workspace = Workspace.current()
    settings = _settings(path, model, **options)
    prepared = prepare_dataset(settings, load_tokenizer(model, workspace), workspace)
    if as_json:
        click.echo(json.dumps(prepared.stats, indent=2, default=str))
        return
    _print_stats(prepared.stats)


def _print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("measure", "value", show_header=False)
    rows = [
        ("files", stats["files"]), ("documents read", stats["documents"]),
        ("exact duplicates removed", stats["duplicates_removed"]),
        ("near duplicates removed", stats["near_duplicates_removed"]),
        ("filtered", ", ".join(f"{k} {v}" for k, v in stats["filtered"].items())),
        ("skipped inputs", stats["skipped_total"]),
        ("documents train / val", f"{stats['train_documents']} / {stats['val_documents']}"),
        ("tokens train / val", f"{stats['train_tokens']} / {stats['val_tokens']}"),
        ("sequences train / val", f"{stats['sequences']['train']} / {stats['sequences']['val']} x {stats['seq_length']}"),
        ("padding", f"{stats['padding_fraction']:.2%}"),
    ]
    if stats.get("format"):
        rows.append(("formats", ", ".join(f"{f}: {fmt}" for f, fmt in stats["format"].items())))
    if stats.get("truncated"):
        rows.append(("truncated pairs" if stats.get("mode") == "preference" else "truncated records", stats["truncated"]))
    if stats.get("mode") == "preference":
        rows.insert(6, ("pairs train / val", f"{stats['pairs']['train']} / {stats['pairs']['val']}"))
    rows.append(("cache", f"{'hit' if stats['cache']['hit'] else 'built'} {stats['cache']['path']}"))
    for name, value in rows:
        table.add_row(name, str(value))
    console = Console()
    console.print(table)
    for skip in stats["skipped"][:20]:
        where = f"{skip['file']}:{skip['line']}" if skip["line"] is not None else skip["file"]
        console.print(f"[yellow]skipped[/yellow] {where}: {skip['reason']}", highlight=False, markup=True)
    if stats["skipped_total"] > 20:
        console.print(f"... and {stats['skipped_total'] - 20} more (see --json)")
    for hint in stats.get("hints", []):
        console.print(f"[yellow]hint[/yellow]: {hint}", highlight=False, markup=True)


@data.command("preview")
@_pipeline_options
@click.option("-n", "count", type=int, default=3, show_default=True, help="How many records or documents to show.")
def preview_cmd(path: Path, model: str, count: int, **options: Any) -> None:
    """Show the first records of PATH as the model sees them, trained spans between ⟦ and ⟧.

    Text outside the brackets is context only (no loss): prompts, system messages, template markup.

    \b
    Examples:
      forgellm data preview dataset/sample/ift --mode ift -n 2
      forgellm data preview dataset/sample/cpt -n 1
    """
    from forgellm.data.pipeline import preview

    workspace = Workspace.current()
    settings = _settings(path, model, **options)
    tokenizer = load_tokenizer(model, workspace)
    items, report = preview(settings, tokenizer, workspace, count)
    for number, item in enumerate(items, start=1):
        where = f"{item.file}:{item.line}" if item.line is not None else item.file
        trained = int(item.mask.sum())
        click.echo(click.style(f"── #{number} {where} · {len(item.ids)} tokens, {trained} trained", bold=True))
        click.echo(render_marked(tokenizer, item.ids, item.mask))
        click.echo()
    for skip in report.skipped[:10]:
        where = f"{skip['file']}:{skip['line']}" if skip["line"] is not None else skip["file"]
        click.echo(click.style(f"skipped {where}: {skip['reason']}", fg="yellow"), err=True)
    if report.filtered or report.duplicates_removed:
        removed = [f"{reason} {n}" for reason, n in sorted(report.filtered.items())]
        removed += [f"duplicate {report.duplicates_removed}"] if report.duplicates_removed else []
        click.echo(click.style(f"not shown (removed by cleaning): {', '.join(removed)}", fg="yellow"), err=True)
    if not items:
        click.echo(f"nothing to show: no record of {settings.input_dir} survived reading and cleaning "
                   f"(see the lines above, or `forgellm data stats`)", err=True)


def render_marked(tokenizer: Any, ids: Any, mask: Any) -> str:
    """Decoded text with each run of trained tokens between ⟦ and ⟧ (and green on a terminal)."""
    parts, start = [], 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            text = tokenizer.decode([int(t) for t in ids[start:end]])
            parts.append(click.style(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}", fg="green") if mask[start]
                         else click.style(text, dim=True))
            start = end
    return "".join(parts)


@data.command("sample")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder to write into; default dataset/sample in the workspace.")
def sample_cmd(out: Path | None) -> None:
    """(Re)generate the sample dataset (Vendrasil, an invented island nation): the same bytes every time.

    \b
    Writes cpt/*.md (documents), ift/train.jsonl (chat records), qa/heldout.jsonl (held-out questions).

    \b
    Examples:
      forgellm data sample
      forgellm data sample --out /tmp/sample
    """
    from forgellm.data.sample.generator import write_sample

    target = out or Workspace.current().dataset_dir / "sample"
    files = write_sample(target)
    size = sum(len(text.encode()) for name, text in files.items() if name.startswith("cpt/"))
    click.echo(f"wrote {len(files)} files to {target} ({size / 1024:.0f} KB of CPT documents)")
