"""``forgellm bench``: benchmarks measured side by side in one run."""

from __future__ import annotations

import json
import sys

import click


@click.command()
@click.option("--quick", is_flag=True, help="Small sizes: checks the harness works in about a minute per benchmark.")
@click.option("--json", "as_json", is_flag=True, help="Print the machine and all results as JSON.")
@click.option("--only", multiple=True, help="Run only this benchmark (repeatable), e.g. --only training.")
@click.option("--markdown", is_flag=True, help="Print the results as a Markdown table (as in BENCHMARKS.md).")
@click.option("--list", "list_only", is_flag=True, help="List the benchmarks and exit.")
def bench(quick: bool, as_json: bool, markdown: bool, only: tuple[str, ...], list_only: bool) -> None:
    """Measure ForgeLLM against the tools users would pick instead, on this machine.

    Ratios are measured side by side in one run (the machine is noisy); absolute figures
    are context. Results for BENCHMARKS.md come from a full (not --quick) run.

    \b
    Examples:
      forgellm bench --list
      forgellm bench --quick
      forgellm bench --only generation --json > gen.json
      forgellm bench --markdown
    """
    from forgellm.bench import discover, run_suites
    from forgellm.bench.machine import describe_machine

    if list_only:
        click.echo("\n".join(discover()))
        return
    suites = run_suites(quick=quick, only=list(only) or None)
    if as_json:
        click.echo(
            json.dumps(
                {"machine": describe_machine(), "quick": quick, "suites": [s.__dict__ for s in suites]},
                indent=2,
                default=str,
            )
        )
    elif markdown:
        click.echo(markdown_table([s.__dict__ for s in suites]))
    else:
        _print_table(suites)
    failed = [s.module for s in suites if s.error]
    if failed:
        click.echo(f"benchmarks failed: {', '.join(failed)}", err=True)
        sys.exit(1)


def markdown_table(suites: list[dict]) -> str:
    """The results (``SuiteResult`` fields as dicts, as ``--json`` writes them) as a Markdown table."""
    lines = ["| benchmark | measure | ForgeLLM | contender | ratio | notes |", "|---|---|---|---|---|---|"]
    for suite in suites:
        if suite["error"]:
            lines.append(f"| {suite['module']} | failed | | | | {suite['error'].splitlines()[0]} |")
        for r in suite["results"]:
            baseline = "" if r["baseline"] is None else f"{r['baseline']:.4g} {r['unit']}"
            ratio = "" if r["ratio"] is None else f"**{r['ratio']:.3f}**"
            lines.append(
                f"| {suite['module']} | {r['name']} | {r['value']:.4g} {r['unit']} | {baseline} | {ratio} | "
                f"{r['notes'].replace('|', '/')} |"
            )
    return "\n".join(lines)


def _print_table(suites) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("benchmark", "measure", "ForgeLLM", "contender", "ratio", "notes")
    for suite in suites:
        if suite.error:
            table.add_row(suite.module, "[red]failed[/red]", "", "", "", suite.error.splitlines()[0])
        for r in suite.results:
            table.add_row(
                suite.module,
                r["name"],
                f"{r['value']:.4g} {r['unit']}",
                "" if r["baseline"] is None else f"{r['baseline']:.4g} {r['unit']}",
                "" if r["ratio"] is None else f"{r['ratio']:.3f}",
                r["notes"],
            )
    Console().print(table)
