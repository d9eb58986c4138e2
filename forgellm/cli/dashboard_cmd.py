"""``forgellm dashboard``: a PNG or self-contained HTML dashboard of one run or several."""

from __future__ import annotations

from pathlib import Path

import click

from forgellm.errors import UserError


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "html"]),
    default=None,
    help="Output format; default from --out's extension, else png.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file; default <run>/dashboard.<format> for one run, ./compare.<format> for several.",
)
@click.option(
    "--max-points",
    type=click.IntRange(50, 100_000),
    default=600,
    show_default=True,
    help="Points per curve after downsampling (the best and last points are always kept).",
)
def dashboard(runs: tuple[str, ...], fmt: str | None, out: Path | None, max_points: int) -> None:
    """Draw the training curves of RUN (or compare several), with the best checkpoint and
    recommendations from the analysis.

    \b
    Examples:
      forgellm dashboard models/cpt/my-run
      forgellm dashboard cpt/my-run --format html --out report.html
      forgellm dashboard cpt/run-a cpt/run-b --out compare.png
    """
    from forgellm.analysis.series import dashboard_data
    from forgellm.runs.layout import find_run

    if fmt is None:
        fmt = out.suffix.lstrip(".").lower() if out is not None and out.suffix.lower() in (".png", ".html") else "png"
    run_dirs = [find_run(r) for r in runs]
    if out is None:
        out = run_dirs[0] / f"dashboard.{fmt}" if len(run_dirs) == 1 else Path.cwd() / f"compare.{fmt}"
    if out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder: give a file name such as {out / ('dashboard.' + fmt)}")
    data = dashboard_data(run_dirs, max_points=max_points)
    if fmt == "png":
        from forgellm.analysis.dashboard_png import render_png

        render_png(data, out)
    else:
        from forgellm.analysis.dashboard_html import render_html

        render_html(data, out)
    for run in data["runs"]:
        analysis = run["analysis"]
        best, recommended = analysis["best_checkpoint"], analysis["recommended"]
        click.echo(
            f"{run['name']}: best checkpoint "
            + (best or "none yet")
            + (f"; recommended {recommended['name']} (score {recommended['score']:.4f})" if recommended else "")
        )
        for rec in analysis["recommendations"]:
            click.echo(f"  [{rec['severity']}] {rec['message']}")
    click.echo(str(out))
