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


def forgellm_error(*args: str, input: str | None = None) -> str:
    """Run a command that must refuse its input, and check what the user sees: exit status 2 and
    the message, "error: ...", ending stderr (one line; a few name what was searched), no
    traceback. Returns the message."""
    code, out, err = forgellm(*args, input=input)
    start = err.rfind("error: ")
    assert code == 2 and start != -1 and (start == 0 or err[start - 1] == "\n"), (code, out, err)
    assert "Traceback" not in err, err
    return err[start:].rstrip("\n")
