"""The ``--token`` / ``--generate-token`` options every server command shares, and the bind policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from forgellm.security.auth import TOKEN_ENV, bind_policy, generate_token

F = TypeVar("F", bound=Callable[..., object])


def access_options(command: F) -> F:
    """Add ``--token`` (or $FORGELLM_TOKEN) and ``--generate-token`` to a server command."""
    command = click.option(
        "--generate-token",
        is_flag=True,
        help="Generate a random access token and print it once (for binding beyond localhost).",
    )(command)
    return click.option(
        "--token",
        envvar=TOKEN_ENV,
        show_envvar=True,
        default=None,
        metavar="TOKEN",
        help="Access token every request must carry; required when --host is not 127.0.0.1/localhost.",
    )(command)


def resolve_access_token(host: str, token: str | None, generate: bool) -> str | None:
    """The token the server will require (None: open on loopback); prints a generated one once."""
    if generate and not token:
        token = generate_token()
        click.echo(f"access token (send as 'Authorization: Bearer <token>' or log in at /login): {token}", err=True)
    return bind_policy(host, token)
