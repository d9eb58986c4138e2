"""``forgellm server``: the model server (reference API + OpenAI-compatible API) on waitress."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from forgellm.cli.access_options import access_options, resolve_access_token
from forgellm.security import configure_logging
from forgellm.serving.main import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_THREADS, ServerOptions, create_server


@click.command()
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on; anything but loopback needs an access token.",
)
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option("--model", default=None, help="Model to load at start (path, name under models/, 'default', run).")
@click.option("--adapter", default=None, help="Adapter to apply to --model (adapter folder, run or checkpoint).")
@click.option(
    "--engine",
    default=None,
    type=click.Choice(["auto", "torch", "mlx"]),
    help="Engine for models loaded without one [default: $FORGELLM_ENGINE or auto].",
)
@click.option(
    "--memory-budget",
    "memory_budget",
    default=None,
    type=click.FloatRange(min=0.01),
    metavar="GB",
    help="Memory for the model cache, in GB; least recently used models are unloaded beyond it "
    "[default: half the RAM].",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Record the loaded model and adapter in this file, and load them again at start when no --model "
    "is given (`forgellm start` uses it so a restarted server comes back with its model).",
)
@click.option(
    "--threads",
    default=DEFAULT_THREADS,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Request threads (requests queue on their model in these).",
)
@access_options
def server(
    host: str,
    port: int,
    model: str | None,
    adapter: str | None,
    engine: str | None,
    memory_budget: float | None,
    state_file: Path | None,
    threads: int,
    token: str | None,
    generate_token: bool,
) -> None:
    """Run the model server: load, switch and stream from models and adapters.

    Serves the reference API (/api/model/load, unload, status, generate; /api/health) and an
    OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions). The OpenAPI
    document is at /api/openapi.json. See docs/server.md.

    \b
    Examples:
      forgellm server
      forgellm server --model default --port 5001
      forgellm server --model default --adapter models/ift/my-run --memory-budget 8
      curl -s localhost:5001/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "default", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    from forgellm.serving.app import create_app, registry_of

    if adapter and not model:
        raise click.UsageError("--adapter needs --model (the model the adapter applies to)")
    logging.getLogger("forgellm").setLevel(logging.INFO)
    access_token = resolve_access_token(host, token, generate_token)
    log_file = configure_logging("server")  # JSON lines under <workspace>/logs/, rotated, secrets redacted
    app = create_app(
        {
            "FORGELLM_HOST": host,
            "FORGELLM_TOKEN": access_token,
            "FORGELLM_MEMORY_BUDGET_GB": memory_budget,
            "FORGELLM_ENGINE": engine,
            "FORGELLM_STATE_FILE": state_file,
        }
    )
    # Bind first: a taken port is reported before minutes of model loading.
    wsgi = create_server(app, ServerOptions(host=host, port=port, threads=threads))
    url = f"http://{host}:{wsgi.effective_port}"
    registry = registry_of(app)
    try:
        if model:
            click.echo(f"loading {model}{f' with adapter {adapter}' if adapter else ''} ...", err=True)
            worker = registry.load(model, adapter)
            click.echo(f"loaded {worker.name} ({worker.engine.name}) in {worker.load_seconds:.1f} s", err=True)
        elif state_file:
            _restore(registry)
        click.echo(f"model server on {url}  (OpenAI API: {url}/v1; log: {log_file}); Ctrl-C stops it", err=True)
        wsgi.run()
    finally:
        wsgi.close()
        registry.close()


def _restore(registry: Any) -> None:
    """Start loading the model the state file names; requests for it wait while it loads."""
    from forgellm.errors import ForgeError

    try:
        worker = registry.restore()
    except ForgeError as exc:  # e.g. the adapter was deleted since: serve without a model
        click.echo(f"not reloading the model loaded before the restart: {exc}", err=True)
        return
    if worker is not None:
        click.echo(f"reloading {worker.name} (loaded before the server restarted) ...", err=True)
