"""The `forgellm bench` harness (the benchmarks themselves run in `make test` as a smoke test)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from forgellm.bench import _checked, discover
from forgellm.bench.machine import describe_machine
from forgellm.cli.main import root
from tests.cli_helpers import forgellm_error


def test_every_benchmark_module_is_discovered_and_listed() -> None:
    result = CliRunner().invoke(root, ["bench", "--list"])
    assert result.exit_code == 0
    assert result.output.split() == list(discover())


def test_unknown_benchmark_is_a_clear_error() -> None:
    assert "unknown benchmark nope" in forgellm_error("bench", "--only", "nope")


def test_results_must_name_value_and_unit() -> None:
    assert _checked("x", {"name": "a", "value": 1.0, "unit": "s"})["ratio"] is None
    with pytest.raises(ValueError, match="without"):
        _checked("x", {"name": "a"})


def test_machine_description_names_cores_and_versions() -> None:
    machine = describe_machine()
    assert machine["cores"] >= 1 and machine["versions"]["torch"].startswith("2.13")
