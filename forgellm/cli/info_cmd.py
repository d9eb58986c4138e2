"""``forgellm info``: what this installation has and how fast its matrix products are."""

from __future__ import annotations

import json
import platform
import sys
from typing import Any

import click

from forgellm import __version__


def collect_info() -> dict[str, Any]:
    """Version, engines, devices, BLAS speed, workspace and default model, as plain data."""
    from forgellm.access import ROOTS_ENV, Roots
    from forgellm.engines import all_engines, blas, resolve_engine_name
    from forgellm.errors import UserError
    from forgellm.models.resolve import ALIASES, EMBEDDED_NAME
    from forgellm.workspace import Workspace

    engines: list[dict[str, Any]] = []
    for engine in all_engines():
        usable, reason = engine.availability()
        engines.append(
            {
                "name": engine.name,
                "version": engine.version() or None,
                "available": usable,
                "reason": reason or None,
                "device": engine.device() if usable else None,
            }
        )
    try:
        selected: str | None = resolve_engine_name(None)
    except UserError:
        selected = None
    ws = Workspace.current()
    try:
        roots: Roots | None = Roots.of(ws)
        roots_error = None
    except UserError as exc:
        roots, roots_error = None, str(exc)
    default_dir = ws.models("base") / ALIASES["default"]
    return {
        "version": __version__,
        "python": platform.python_version(),
        "platform": f"{sys.platform} {platform.machine()}",
        "engines": engines,
        "default_engine": selected,
        "blas": _blas_info(blas, {e["name"]: e["available"] for e in engines}),
        "workspace": {
            "root": str(ws.root),
            "dataset": str(ws.dataset_dir),
            "models": str(ws.models_dir),
            "data": str(ws.data_dir),
            "configs": str(ws.configs_dir),
            "logs": str(ws.logs_dir),
        },
        # What HTTP requests to `forgellm web`/`server` may reach; the CLI itself takes any path.
        "request_roots": {
            "env": ROOTS_ENV,
            "listed": [str(p) for p in roots.listed] if roots else [],
            "model_cache": str(roots.model_cache) if roots and roots.model_cache else None,
            "error": roots_error,
        },
        "default_model": {
            "name": EMBEDDED_NAME,
            "path": str(default_dir),
            "imported": (default_dir / "config.json").exists(),
        },
    }


def _blas_info(blas: Any, available: dict[str, bool]) -> dict[str, Any]:
    """Float32 1024x1024 matmul GFLOP/s, each measured in a fresh process (the BLAS is fixed at import)."""
    library = blas.find_blas_library()
    info: dict[str, Any] = {
        "optimized_library": str(library) if library else None,
        "preload_disabled": blas.disabled(),
        "matmul_size": blas.MATMUL_SIZE,
    }
    if available.get("torch"):
        torch = blas.measure_in_subprocess("torch")
        info["torch"] = {"library": torch["library"], "gflops": torch["gflops"], "error": torch["error"]}
    if available.get("mlx"):
        optimized = blas.measure_in_subprocess("mlx") if library else None
        reference = blas.measure_in_subprocess("mlx", optimized=False)
        info["mlx"] = {
            "library": optimized["library"] if optimized else reference["library"],
            "gflops": (optimized or reference)["gflops"],
            "gflops_without_preload": reference["gflops"],
            "speedup": (
                round(optimized["gflops"] / reference["gflops"], 1)
                if optimized and optimized["gflops"] and reference["gflops"]
                else None
            ),
            "error": (optimized or {}).get("error") or reference["error"],
        }
    return info


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(as_json: bool) -> None:
    """Version, engines, device, BLAS speed, workspace paths and the default model.

    Measures a 1024x1024 float32 matrix product for torch, and for mlx with and without the
    optimized BLAS (a few seconds).

    \b
    Examples:
      forgellm info
      forgellm info --json
    """
    data = collect_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"forgellm {data['version']} (Python {data['python']}, {data['platform']})")
    click.echo("engines:")
    for e in data["engines"]:
        mark = "default" if e["name"] == data["default_engine"] else ""
        state = f"available on {e['device']}" if e["available"] else f"unavailable: {e['reason']}"
        click.echo(f"  {e['name']:<6} {e['version'] or 'not installed'}; {state} {mark}".rstrip())
    b = data["blas"]
    click.echo(f"BLAS (float32 {b['matmul_size']}x{b['matmul_size']} matmul):")
    if "torch" in b:
        click.echo(f"  torch  {_gflops(b['torch']['gflops'])} ({b['torch']['library'] or b['torch']['error']})")
    if "mlx" in b:
        m = b["mlx"]
        if b["optimized_library"]:
            click.echo(
                f"  mlx    {_gflops(m['gflops'])} with {b['optimized_library']}, "
                f"{_gflops(m['gflops_without_preload'])} without it" + (f" ({m['speedup']}x)" if m["speedup"] else "")
            )
        else:
            why = "disabled by FORGELLM_NO_BLAS_PRELOAD" if b["preload_disabled"] else "no optimized BLAS found"
            click.echo(f"  mlx    {_gflops(m['gflops'])} ({m['library']}; {why})")
        if m["error"]:
            click.echo(f"         measurement failed: {m['error']}")
    w = data["workspace"]
    click.echo(f"workspace: {w['root']}")
    for key in ("dataset", "models", "data", "configs", "logs"):
        click.echo(f"  {key:<8} {w[key]}")
    r = data["request_roots"]
    click.echo(
        f"HTTP requests may reach: the workspace, {r['env']} "
        f"({', '.join(r['listed']) if r['listed'] else 'not set'}), and for models the Hugging Face cache "
        f"({r['model_cache']}); the CLI takes any path"
    )
    if r["error"]:
        click.echo(f"  {r['error']}")
    d = data["default_model"]
    state = "imported" if d["imported"] else "not imported: run `forgellm models import-default`"
    click.echo(f"default model: {d['name']} ({state}) at {d['path']}")


def _gflops(value: float | None) -> str:
    return f"{value:.1f} GFLOP/s" if value is not None else "n/a"
