"""`forgellm bench`: side-by-side benchmarks.

Each module in this package that defines ``run(quick: bool) -> list[dict]`` is one
benchmark. A result is ``{"name", "value", "unit", "baseline", "ratio", "notes"}``: ForgeLLM's
figure, the contender's figure measured in the same run, and their ratio, because on a
noisy machine only ratios measured side by side mean anything.

It ships in the runtime package, not beside the tests, because it is a user command: people
measure ForgeLLM on their own machine (`forgellm bench`), and its contenders are imported only
when a benchmark runs, so it costs an installation nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HARNESS_MODULES = {"machine"}


@dataclass
class SuiteResult:
    module: str
    seconds: float
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def discover() -> dict[str, Callable[[bool], list[dict[str, Any]]]]:
    """Benchmark modules by name (the module's name), in alphabetical order."""
    found = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name in HARNESS_MODULES or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if callable(getattr(module, "run", None)):
            found[mod.name] = module.run
    return found


def run_suites(*, quick: bool, only: list[str] | None = None) -> list[SuiteResult]:
    suites = discover()
    if only:
        unknown = sorted(set(only) - set(suites))
        if unknown:
            from forgellm.errors import UserError

            raise UserError(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(suites)}")
        suites = {name: fn for name, fn in suites.items() if name in only}
    out = []
    for name, fn in suites.items():
        start = time.perf_counter()
        try:
            results = fn(quick)
            out.append(SuiteResult(name, time.perf_counter() - start, [_checked(name, r) for r in results]))
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            out.append(SuiteResult(name, time.perf_counter() - start, error=f"{exc!r}\n{traceback.format_exc()}"))
    return out


REQUIRED_KEYS = ("name", "value", "unit")


def _checked(module: str, result: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"benchmark {module} returned a result without {missing}: {result}")
    result.setdefault("baseline", None)
    result.setdefault("ratio", None)
    result.setdefault("notes", "")
    return result
