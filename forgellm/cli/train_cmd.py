"""``forgellm train``: run one training job in this process."""

from __future__ import annotations

import click

from forgellm.training.config import build_config, config_keys, parse_overrides


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML training config.")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one config key (repeatable); the value is read as YAML.",
)
@click.option("--resume", metavar="RUN_DIR", help="Continue a run from its latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder of the same name.")
@click.option("--print-config", is_flag=True, help="Print every config key with its default and meaning, then exit.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    metavar="N",
    help="Data-parallel workers per machine, started by torchrun (torch) or mlx.launch (mlx).",
)
@click.option(
    "--hostfile",
    type=click.Path(dir_okay=False, exists=True),
    help="JSON host file for several machines (see docs/distributed.md); needs --nproc.",
)
def train(
    config_file: str | None,
    sets: tuple[str, ...],
    resume: str | None,
    overwrite: bool,
    print_config: bool,
    nproc: int | None,
    hostfile: str | None,
) -> None:
    """Train a model (CPT or IFT; LoRA, DoRA or full) and print the run folder.

    Settings merge in this order: defaults < --config FILE < --set key=value.

    \b
    Examples:
      forgellm train --config configs/cpt-sample.yaml
      forgellm train --config configs/cpt-sample.yaml --set learning_rate=1e-4 --set max_iterations=200
      forgellm train --resume models/cpt/my-run
      forgellm train --config configs/cpt-sample.yaml --nproc 2
      forgellm train --print-config
    """
    if print_config:
        _print_config()
        return
    if hostfile and not nproc:
        raise click.UsageError("--hostfile needs --nproc (workers per machine)")
    if nproc:
        from forgellm.training.distributed_launch import launch_training

        if not resume and not config_file and not sets:
            raise click.UsageError("pass --config FILE (see configs/cpt-sample.yaml) or --resume RUN_DIR")
        launch_training(
            config_file=config_file, sets=sets, resume=resume, overwrite=overwrite, nproc=nproc, hostfile=hostfile
        )
        return
    from forgellm.training.run import start_run

    overrides = parse_overrides(sets)
    if resume:
        if config_file:
            raise click.UsageError(
                "--resume continues with the run's own config.yaml; drop --config (use --set to change a key)"
            )
        result = start_run(resume=resume, overrides=overrides)
    else:
        if not config_file and not overrides:
            raise click.UsageError("pass --config FILE (see configs/cpt-sample.yaml) or --resume RUN_DIR")
        result = start_run(build_config(config_file, overrides), overwrite=overwrite)
    if not result.is_main:
        return  # rank 0 of a distributed run speaks for all
    if result.status == "stopped":
        click.echo(
            f"stopped at step {result.state.step}; continue with: forgellm train --resume {result.run_dir}", err=True
        )
    click.echo(str(result.run_dir))


def _print_config() -> None:
    import yaml

    for key, default, meaning in config_keys():
        value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        click.echo(f"{key}: {value}")
        click.echo(f"    {meaning}")
