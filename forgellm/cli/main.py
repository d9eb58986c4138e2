"""The ``forgellm`` command. Subcommands live in their own modules and load lazily,
so ``forgellm --help`` stays fast and one command's imports never slow another."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

import click

from forgellm import __version__
from forgellm.cpu_env import apply_cpu_env_defaults
from forgellm.errors import ForgeError, os_error_message

# name -> "module:attribute". Each module owns one command or group.
COMMANDS: dict[str, str] = {
    "info": "forgellm.cli.info_cmd:info",
    "models": "forgellm.cli.models_cmd:models",
    "cli": "forgellm.cli.generate_cmd:cli_group",
    "web": "forgellm.cli.web_cmd:web",
    "start": "forgellm.cli.start_cmd:start",
    "server": "forgellm.cli.server_cmd:server",
    "bench": "forgellm.cli.bench_cmd:bench",
    "dashboard": "forgellm.cli.dashboard_cmd:dashboard",
    "fuse": "forgellm.cli.publish_cmd:fuse",
    "adapter": "forgellm.cli.adapter_cmd:adapter",
    "quantize": "forgellm.cli.publish_cmd:quantize",
    "publish": "forgellm.cli.publish_cmd:publish",
    "export": "forgellm.cli.publish_cmd:export",
    "train": "forgellm.cli.train_cmd:train",
    "runs": "forgellm.cli.runs_cmd:runs",
    "eval": "forgellm.cli.eval_cmd:eval_cmd",
    "data": "forgellm.cli.data_cmd:data",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="forgellm")
@click.option("--debug", is_flag=True, envvar="FORGELLM_DEBUG", help="Show tracebacks and debug logs.")
@click.pass_context
def root(ctx: click.Context, debug: bool) -> None:
    """ForgeLLM: continued pre-training and instruction fine-tuning on your own machine.

    \b
    Examples:
      forgellm start                                  # model server + web app, opens the browser
      forgellm cli generate --model default --prompt "What is the capital of France?"
      forgellm train --config configs/cpt-sample.yaml
      forgellm models list
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    apply_cpu_env_defaults()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns ForgeLLM errors and the operating system's (a file that cannot be read
    or written: permission, full disk, missing) into one line on stderr and exit status 2;
    ``--debug`` or ``FORGELLM_DEBUG=1`` also prints the traceback."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("FORGELLM_DEBUG"))
    try:
        root.main(args=argv, prog_name="forgellm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except ForgeError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {os_error_message(exc)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
