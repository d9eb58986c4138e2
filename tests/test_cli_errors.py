"""The CLI's error boundary: what a user reads when the operating system refuses a file.

An `OSError` that reaches `forgellm.cli.main.main` becomes one line naming the path and the
problem, with exit status 2 and no traceback (``--debug`` or ``FORGELLM_DEBUG=1`` shows it)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.analysis_helpers import curve, make_events, write_run
from tests.cli_helpers import forgellm, forgellm_error
from tests.training_helpers import prepared_data, tiny_config_values, write_config

NOBODY = 65534


@contextlib.contextmanager
def _unprivileged() -> Iterator[None]:
    """File permissions apply: as root, act as user nobody for the block (the effective uid only,
    so root comes back after it)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)


def _config(workspace: Path, model: Path, name: str = "c.yaml", **overrides) -> Path:
    prepared_data(workspace / "prepared")
    path = workspace / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_config(path, **tiny_config_values(model, **overrides))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """``path`` without any permission for the block, for this process too."""
    import forgellm.cli.train_cmd  # noqa: F401  # imported while this process may still read everything

    path.chmod(0)
    try:
        with _unprivileged():
            yield
    finally:
        path.chmod(0o755)


def test_an_unreadable_config_file_is_one_line_naming_it(workspace, tiny_model_dir):
    config = _config(workspace, tiny_model_dir, "private/c.yaml")
    with _locked(config.parent):  # the folder: the file cannot even be looked at
        message = forgellm_error("train", "--config", str(config))
    assert message == f"error: {config}: permission denied; check its permissions or choose another path"
    with _locked(config):  # the file itself: click's check of the option says so where it can look
        code, _, err = forgellm("train", "--config", str(config))
    assert code == 2 and str(config) in err and "Traceback" not in err
    assert "is not readable" in err or "permission denied" in err


def test_an_output_dir_that_cannot_be_written_is_one_line_naming_it(workspace, tiny_model_dir):
    (workspace / "taken").write_text("a file where the runs folder should be")
    config = _config(workspace, tiny_model_dir, output_dir="taken/runs", run_name="r", max_iterations=2)
    message = forgellm_error("train", "--config", str(config))
    assert str(workspace / "taken") in message and "cannot write" in message
    assert "\n" not in message


def test_an_os_error_of_any_command_is_translated_at_the_edge(workspace):
    run = write_run(workspace, "r", make_events(curve(20), val={10: 1.5}, checkpoints=[10]))
    (workspace / "taken").write_text("a file, not a folder")
    message = forgellm_error("dashboard", str(run), "--out", str(workspace / "taken" / "chart.png"))
    assert message == f"error: {workspace / 'taken'}: a file or folder of that name exists already"


def test_debug_shows_the_traceback_too(workspace, tiny_model_dir, monkeypatch):
    config = _config(workspace, tiny_model_dir, "private/c.yaml")
    monkeypatch.setenv("FORGELLM_DEBUG", "1")
    with _locked(config.parent):
        code, _, err = forgellm("train", "--config", str(config))
    assert code == 2 and "Traceback" in err and "PermissionError" in err
    assert err.rstrip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("argv", [["--version"], ["--help"]])
def test_normal_exits_are_untouched(argv):
    code, out, _ = forgellm(*argv)
    assert code == 0 and out
