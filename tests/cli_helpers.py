"""Running the `forgellm` entry point the way a user's shell does, inside the test process."""

from __future__ import annotations

from click.testing import CliRunner

from forgellm.cli.main import main


def forgellm(*args: str, input: str | None = None) -> tuple[int, str, str]:
    """Run the `forgellm` entry point in this process: (exit status, stdout, stderr)."""
    with CliRunner().isolation(input=input) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue().decode(), err.getvalue().decode()
