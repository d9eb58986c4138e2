"""``forgellm runs``: list training runs and show one."""

from __future__ import annotations

import json

import click

from forgellm.workspace import Workspace


@click.group()
def runs() -> None:
    """Training runs: status, progress, best checkpoint, last metrics.

    \b
    Examples:
      forgellm runs list
      forgellm runs list --json
      forgellm runs show cpt-sample
      forgellm runs show models/ift/ift-sample --json
    """


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Every run under models/cpt and models/ift, newest first."""
    from forgellm.runs.summary import list_runs

    found = list_runs(Workspace.current())
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in found], indent=2))
        return
    if not found:
        click.echo("no runs yet: forgellm train --config configs/cpt-sample.yaml")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "kind", "status", "progress", "loss", "val loss", "best checkpoint")
    for r in found:
        loss = f"{r.last_train['loss']:.4f}" if r.last_train else "-"
        val = f"{r.last_eval['val_loss']:.4f}" if r.last_eval else "-"
        table.add_row(
            r.name,
            f"{r.kind} {r.fine_tune_type or ''}".strip(),
            r.status,
            f"{r.step}/{r.total_steps or '?'} ({r.progress:.0%})",
            loss,
            val,
            r.best_checkpoint or "-",
        )
    Console().print(table)


@runs.command("show")
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(run: str, as_json: bool) -> None:
    """One run (a folder path or a run name under models/cpt or models/ift)."""
    from forgellm.runs.summary import show_run

    summary = show_run(run, Workspace.current())
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
        return
    lines = [
        f"run:        {summary.name} ({summary.path})",
        f"status:     {summary.status}" + (f" - {summary.message}" if summary.message else ""),
        f"progress:   step {summary.step}/{summary.total_steps or '?'} ({summary.progress:.0%})" + _epochs(summary),
        f"training:   {summary.kind} {summary.fine_tune_type} on {summary.model} ({summary.engine or '?'} engine)",
        f"best:       {summary.best_checkpoint or '-'}"
        + (f" ({summary.best_metric} {summary.best_value:.4f})" if summary.best_value is not None else ""),
        f"checkpoints: {', '.join(summary.checkpoints) or '-'}",
    ]
    if summary.last_train:
        t = summary.last_train
        lines.append(f"last train: loss {t['loss']:.4f} lr {t['learning_rate']:.2e} tok/s {t['tokens_per_second']:.0f}")
    if summary.last_eval:
        e = summary.last_eval
        qa = (
            f" QA {e['qa_accuracy']:.1%} ({e['qa_correct']}/{e['qa_total']})"
            if e.get("qa_accuracy") is not None
            else ""
        )
        detail = f"ppl {e['val_ppl']:.2f}" if "val_ppl" in e else f"preference accuracy {e.get('val_accuracy', 0):.3f}"
        lines.append(f"last eval:  val loss {e['val_loss']:.4f} {detail}{qa}")
    click.echo("\n".join(lines))


def _epochs(summary) -> str:
    """ ", 3.0 of 10 epochs" when the run knows its length in epochs."""
    if summary.num_epochs is None:
        return ""
    return f", {summary.epoch or 0:g} of {summary.num_epochs:g} epochs"
