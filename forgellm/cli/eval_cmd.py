"""``forgellm eval``: measure what a model or a training run learned."""

from __future__ import annotations

import json
from pathlib import Path

import click

from forgellm.workspace import Workspace


@click.command("eval")
@click.argument("model_or_run")
@click.option("--checkpoint", help="For a run: best, latest, final or a step number (default: final, else best).")
@click.option(
    "--qa",
    "qa",
    type=click.Path(path_type=Path),
    help="JSONL file (or folder of them) of held-out {question, answer, aliases} records: greedy answers are scored.",
)
@click.option("--data", help="Dataset folder for domain perplexity (default: the run's input_dir).")
@click.option("--general", help="Folder of general text for perplexity (forgetting).")
@click.option(
    "--pairs",
    help="Folder of preference pairs: share of its validation pairs whose chosen response the model finds "
    "more likely per token than the rejected one.",
)
@click.option("--engine", type=click.Choice(["auto", "torch", "mlx"]), help="Engine for a plain model.")
@click.option("--max-tokens", default=48, show_default=True, help="Tokens per generated answer.")
@click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Questions answered together (one forward pass per token for the batch); 1: one at a time.",
)
@click.option(
    "--max-seq-length",
    type=int,
    help="Sequence length for the perplexities (default: the run's, else 1024); use one value to compare models.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every answer).")
def eval_cmd(
    model_or_run: str,
    checkpoint: str | None,
    qa: Path | None,
    data: str | None,
    general: str | None,
    pairs: str | None,
    engine: str | None,
    max_tokens: int,
    batch_size: int,
    max_seq_length: int | None,
    as_json: bool,
) -> None:
    """Held-out QA accuracy, domain validation perplexity, general-text perplexity, preference accuracy.

    \b
    Examples:
      forgellm eval default --qa dataset/sample/qa
      forgellm eval cpt-sample --checkpoint best --qa dataset/sample/qa
      forgellm eval models/ift/ift-sample --qa dataset/sample/qa --data dataset/sample/cpt --json
      forgellm eval models/ift/preference-sample --pairs dataset/sample/preference
    """
    from forgellm.training.evaluate import evaluate_model

    if qa is None and data is None and general is None and pairs is None:
        click.echo("note: no --qa given; only perplexities are measured", err=True)
    report = evaluate_model(
        model_or_run,
        checkpoint=checkpoint,
        qa=qa,
        data=data,
        general=general,
        pairs=pairs,
        engine=engine,
        max_tokens=max_tokens,
        max_seq_length=max_seq_length,
        qa_batch_size=batch_size,
        workspace=Workspace.current(),
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"model:        {report.model} ({report.path}, {report.engine} engine)")
    if report.qa_accuracy is not None:
        click.echo(f"QA accuracy:  {report.qa_accuracy:.1%} ({report.qa_correct}/{report.qa_total})")
        for name, part in report.qa_files.items():
            click.echo(f"  {name}: {part['accuracy']:.1%} ({part['correct']}/{part['total']})")
    if report.domain_ppl is not None:
        click.echo(f"domain ppl:   {report.domain_ppl:.2f} (val loss {report.domain_val_loss:.4f})")
    if report.general_ppl is not None:
        click.echo(f"general ppl:  {report.general_ppl:.2f} (loss {report.general_loss:.4f})")
    if report.preference_accuracy is not None:
        click.echo(
            f"preference:   {report.preference_accuracy:.1%} ({report.preference_correct}/"
            f"{report.preference_total} pairs), margin {report.preference_margin:+.3f} nats/token"
        )
