"""``forgellm data``: inspect what the data pipeline makes of a dataset folder; synthesize data from documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from forgellm.cli.data_options import data_options
from forgellm.workspace import Workspace

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


def _pipeline_options(fn):
    """Options shared by stats and preview: PATH, ``--model`` and every data setting (see docs/data.md)."""
    fn = data_options(fn)
    fn = click.option(
        "--model",
        default="default",
        show_default=True,
        help="Model whose tokenizer (and chat template) to use, and that writes the replay set "
        "when --mixture-ratio < 1 without --general-data: path, name under models/, or 'default'.",
    )(fn)
    return click.argument("path", type=click.Path(path_type=Path))(fn)


def _settings(path: Path, model: str, **options: Any) -> Any:
    """`DataSettings` from the shared options; the replay set (if any) is written by ``model``."""
    from pydantic import ValidationError

    from forgellm.data import DataSettings
    from forgellm.data.settings import FOLDER_KEYS
    from forgellm.errors import UserError

    folders = {key: options[key].resolve() for key in FOLDER_KEYS if options[key]}
    try:
        return DataSettings(**{**options, **folders}, input_dir=path.resolve(), replay_model=model)
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
      forgellm data synthesize dataset/sample/cpt --out dataset/sample-synth --teacher default
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
    from forgellm.data.sequences import prepared_stats

    if (prepared_splits := prepared_stats(path.resolve())) is not None:  # trained on as it is
        if as_json:
            click.echo(json.dumps(prepared_splits, indent=2, default=str))
        else:
            _print_prepared(prepared_splits)
        return
    workspace = Workspace.current()
    settings = _settings(path, model, **options)
    prepared = prepare_dataset(settings, load_tokenizer(model, workspace), workspace)
    if as_json:
        click.echo(json.dumps(prepared.stats, indent=2, default=str))
        return
    _print_stats(prepared.stats)


def validation_source(validation: dict[str, Any]) -> str:
    """Where the validation split came from, in words (see `forgellm.data.validation`)."""
    source = validation["source"]
    if source == "validation_dir":
        return f"from validation_dir {validation['path']} ({validation['documents']} documents; all of PATH trains)"
    if source == "packed_sequences":
        return (
            f"the last {validation['sequences']} packed sequence(s) of the training text "
            f"(too few documents to hold one out)"
        )
    if source == "none":
        return f"none: {validation['reason']}"
    return "held-out documents (validation_split)"


def _print_prepared(stats: dict[str, Any]) -> None:
    unit = "pairs" if stats.get("mode") == "preference" else "sequences"
    counts = stats[unit]
    click.echo(
        f"{stats['prepared_path']} holds prepared splits, trained on as they are (the data settings "
        f"do not apply): {counts['train']} / {counts['val']} train / val {unit} of {stats['seq_length']} tokens"
    )


def _print_stats(stats: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("measure", "value", show_header=False)
    rows = [
        ("files", stats["files"]),
        ("documents read", stats["documents"]),
        ("exact duplicates removed", stats["duplicates_removed"]),
        ("near duplicates removed", stats["near_duplicates_removed"]),
        ("filtered", ", ".join(f"{k} {v}" for k, v in stats["filtered"].items())),
        ("skipped inputs", stats["skipped_total"]),
        ("documents train / val", f"{stats['train_documents']} / {stats['val_documents']}"),
        ("tokens train / val", f"{stats['train_tokens']} / {stats['val_tokens']}"),
        (
            "sequences train / val",
            f"{stats['sequences']['train']} / {stats['sequences']['val']} x {stats['seq_length']}",
        ),
        ("validation", validation_source(stats.get("validation") or {"source": "documents"})),
        ("padding", f"{stats['padding_fraction']:.2%}"),
    ]
    if copies := stats.get("shuffled_copies"):
        rows.append(
            (
                "shuffled copies",
                f"{copies['copies']} of each training document, {copies['tokens']} tokens (in tokens train)"
                if copies["copies"]
                else f"none: {copies['reason']}",
            )
        )
    if stats.get("format"):
        rows.append(("formats", ", ".join(f"{f}: {fmt}" for f, fmt in stats["format"].items())))
    if stats.get("truncated"):
        rows.append(
            ("truncated pairs" if stats.get("mode") == "preference" else "truncated records", stats["truncated"])
        )
    if mixture := stats.get("mixture"):
        if "documents_sequences" in mixture:
            rows.append(
                (
                    "mixed in: documents",
                    f"{mixture['documents_sequences']} sequences "
                    f"({mixture['documents_unique_sequences']} distinct) from {mixture['documents_source']}",
                )
            )
        if "general_sequences" in mixture:
            rows.append(
                (
                    "mixed in: general",
                    f"{mixture['general_sequences']} sequences "
                    f"({mixture['general_unique_sequences']} distinct) from {mixture['general_source']}",
                )
            )
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
        click.echo(
            f"nothing to show: no record of {settings.input_dir} survived reading and cleaning "
            f"(see the lines above, or `forgellm data stats`)",
            err=True,
        )


def render_marked(tokenizer: Any, ids: Any, mask: Any) -> str:
    """Decoded text with each run of trained tokens between ⟦ and ⟧ (and green on a terminal)."""
    parts, start = [], 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or mask[end] != mask[start]:
            text = tokenizer.decode([int(t) for t in ids[start:end]])
            parts.append(
                click.style(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}", fg="green")
                if mask[start]
                else click.style(text, dim=True)
            )
            start = end
    return "".join(parts)


@data.command("sample")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write into; default dataset/sample in the workspace.",
)
def sample_cmd(out: Path | None) -> None:
    """(Re)generate the sample dataset (Vendrasil, an invented island nation): the same bytes every time.

    \b
    Writes cpt/*.md (documents), ift/train.jsonl (chat records), qa/chat-facts.jsonl and
    qa/document-facts.jsonl (held-out questions on facts the chats teach, and on facts only the
    documents hold).

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


@data.command("synthesize")
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write into: ift/qa.jsonl, cpt/paraphrases.jsonl, summary.json. Rerun to resume.",
)
@click.option(
    "--teacher",
    required=True,
    help="Model that writes the data: a model name or path (loaded here), or the URL of an "
    "OpenAI-compatible server (ForgeLLM, llama.cpp, Ollama, vLLM), e.g. http://127.0.0.1:5001/v1.",
)
@click.option(
    "--questions-per-chunk",
    type=int,
    default=3,
    show_default=True,
    help="Question/answer pairs asked for each chunk (0: none).",
)
@click.option(
    "--paraphrases", type=int, default=2, show_default=True, help="Paraphrases written of each chunk (0: none)."
)
@click.option("--teacher-model", default=None, help="Model id to ask at a teacher URL (default: the server's first).")
@click.option(
    "--api-key-env",
    default=None,
    metavar="NAME",
    help="Environment variable holding the teacher URL's API key (sent as a Bearer token).",
)
@click.option("--engine", default=None, help="Engine for a teacher model: auto, mlx or torch.")
@click.option(
    "--chunk-chars",
    type=int,
    default=2000,
    show_default=True,
    help="Largest chunk, in characters; documents are cut at paragraphs, then sentences.",
)
@click.option(
    "--text-column",
    default="text",
    show_default=True,
    help="Column or field holding the text in .csv, .parquet, .jsonl/.json and datasets folders.",
)
@click.option(
    "--min-grounding",
    type=float,
    default=0.8,
    show_default=True,
    help="Share of an answer's content words that must appear in its chunk (numbers: all of them).",
)
@click.option("--max-tokens", type=int, default=1024, show_default=True, help="Longest teacher reply, in tokens.")
@click.option("--temperature", type=float, default=0.7, show_default=True, help="Teacher sampling temperature.")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for one answer of a teacher URL."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def synthesize_cmd(
    source: Path,
    out: Path,
    teacher: str,
    questions_per_chunk: int,
    paraphrases: int,
    teacher_model: str | None,
    api_key_env: str | None,
    engine: str | None,
    chunk_chars: int,
    text_column: str,
    min_grounding: float,
    max_tokens: int,
    temperature: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Write question/answer chats (IFT) and paraphrases (CPT) grounded in the documents of SOURCE.

    SOURCE is anything the data pipeline reads (a folder or a file). Each chunk of it is given to
    the teacher; answers whose words are not in the chunk are rejected, duplicates removed, and
    every record keeps the file and chunk it came from. An interrupted run resumes where it
    stopped when run again with the same arguments.

    \b
    Examples:
      forgellm data synthesize dataset/my-docs --out dataset/my-docs-synth --teacher default
      forgellm data synthesize docs --out synth --teacher http://127.0.0.1:8080/v1 --questions-per-chunk 5
      OPENAI_KEY=... forgellm data synthesize docs --out synth --teacher https://host/v1 \\
          --teacher-model qwen2.5-7b-instruct --api-key-env OPENAI_KEY
    """
    import signal

    from forgellm.data.synthesis import Sampling, Synthesis, SynthesisOptions, open_teacher
    from forgellm.errors import UserError

    for name, value, ok, expected in [
        ("--max-tokens", max_tokens, 1 <= max_tokens <= 32768, "1 to 32768"),
        ("--temperature", temperature, 0 <= temperature <= 2, "0 to 2"),
        ("--timeout", timeout, timeout > 0, "over 0 seconds"),
    ]:
        if not ok:
            raise UserError(f"{name} {value} is out of range: give {expected}")
    options = SynthesisOptions(
        source=source,
        out=out,
        questions_per_chunk=questions_per_chunk,
        paraphrases=paraphrases,
        chunk_chars=chunk_chars,
        text_column=text_column,
        min_grounding=min_grounding,
        sampling=Sampling(max_tokens, temperature),
    )
    synthesis = Synthesis(options)  # reads SOURCE and opens --out: bad input fails before a model loads
    model = open_teacher(
        teacher,
        workspace=Workspace.current(),
        engine=engine,
        model=teacher_model,
        api_key_env=api_key_env,
        timeout=timeout,
    )
    # SIGTERM (the web app's Stop, a service manager) ends the run like Ctrl-C: summary saved, resumable.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        summary = synthesis.run(model)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted: {synthesis.chunks_done} of {len(synthesis.chunks)} chunks done and kept in {out}; "
            f"run the same command again to resume",
            err=True,
        )
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        model.close()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    _print_synthesis(summary)


def _print_synthesis(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("measure", "value", show_header=False)
    run = summary["this_run"]
    for name, value in [
        (
            "chunks done",
            f"{summary['chunks_done']} / {summary['chunks']} "
            f"({run['chunks']} this run, {run['teacher_calls']} teacher calls, {run['seconds']} s)",
        ),
        ("questions written", f"{summary['qa_written']} of {summary['qa_generated']} generated"),
        (
            "rejected: not in the chunk",
            f"{summary['qa_ungrounded']} answers, {summary['paraphrases_ungrounded']} paraphrases",
        ),
        (
            "duplicates removed",
            f"{summary['qa_duplicates']} questions, {summary['paraphrases_duplicates']} paraphrases",
        ),
        ("replies not JSON (skipped)", summary["not_json"]),
        ("paraphrases written", f"{summary['paraphrases_written']} of {summary['paraphrases_generated']} generated"),
        ("skipped inputs", summary["skipped_total"]),
        ("IFT chats", summary["outputs"]["qa"]),
        ("CPT paraphrases", summary["outputs"]["paraphrases"]),
    ]:
        table.add_row(name, str(value))
    Console().print(table)
