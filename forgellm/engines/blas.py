"""An optimized BLAS for MLX on Linux, and the numbers that show it matters.

The ``mlx[cpu]`` wheel links a reference BLAS that multiplies matrices about 30-50x slower
than OpenBLAS. Loading the system's OpenBLAS with ``RTLD_GLOBAL`` *before* MLX is imported
makes the dynamic linker bind MLX's ``cblas_*`` calls to it: the same effect as
``LD_PRELOAD``, without restarting the process. `activate` does that (the mlx engine calls it
before importing mlx); `subprocess_env` gives child processes ``LD_PRELOAD`` so they are
covered even if they import mlx first. ``FORGELLM_NO_BLAS_PRELOAD=1`` turns both off,
``FORGELLM_BLAS_LIBRARY`` points to another library.

OpenBLAS picks its kernels by CPU model, and a release older than the CPU does not know it: Debian
12's 0.3.21 takes a 2023 Xeon (family 6, model 207) for a Prescott, its generic SSE3 kernels, and
multiplies at 11 GFLOP/s where its AVX-512 kernels reach 66 (BENCHMARKS.md). Both paths therefore
also name the kernel family the CPU's instruction sets support (``OPENBLAS_CORETYPE``, see
`coretype`), unless the user set it.

``python -m forgellm.engines.blas torch|mlx`` prints the float32 matmul GFLOP/s of one backend
as JSON; `forgellm info` runs it with and without the library to show the difference.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DISABLE_ENV = "FORGELLM_NO_BLAS_PRELOAD"
LIBRARY_ENV = "FORGELLM_BLAS_LIBRARY"
CORETYPE_ENV = "OPENBLAS_CORETYPE"  # read by OpenBLAS once, when it is loaded
# OpenBLAS's kernel families by the x86-64 instruction sets they need, best first. AVX2-only AMD
# CPUs are left to OpenBLAS: it knows every one of them (Zen 1-3) and has its own Zen tuning.
_CORETYPES = (
    ("SkylakeX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}, None),
    ("Haswell", {"avx2", "fma"}, "GenuineIntel"),
)
# Debian/Ubuntu's libopenblas0-pthread first (what `make setup` installs), then other layouts.
_CANDIDATES = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib/*-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
MATMUL_SIZE = 1024

_activated: Path | None = None


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def find_blas_library() -> Path | None:
    """The optimized BLAS to give MLX, or None (not Linux, disabled, or not installed)."""
    if not sys.platform.startswith("linux") or disabled():
        return None
    if os.environ.get(LIBRARY_ENV):
        path = Path(os.environ[LIBRARY_ENV])
        return path if path.exists() else None
    for pattern in _CANDIDATES:
        for match in sorted(glob.glob(pattern)):
            return Path(match)
    found = ctypes.util.find_library("openblas")
    return Path(found) if found and Path(found).is_absolute() else None


def coretype(cpuinfo: str | None = None) -> str | None:
    """The OpenBLAS kernel family for this CPU's instruction sets (``/proc/cpuinfo`` flags), or None
    where OpenBLAS's own choice stands: not x86-64 Linux, a CPU without AVX2, or an AMD one without AVX-512.

    OpenBLAS would pick the same family for the CPU models it knows (SkylakeX and its successors
    share the float32 kernels); naming it only matters for those it does not, which it takes for
    the oldest, slowest cores.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    found = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    flags = set(found.group(1).split()) if found else set()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, re.M)
    for name, needed, only_vendor in _CORETYPES:
        if needed <= flags and (only_vendor is None or (vendor and vendor.group(1) == only_vendor)):
            return name
    return None


def _coretype_env(env: MutableMapping[str, str]) -> None:
    """Name the kernel family in ``env`` (in place) unless the user did."""
    if CORETYPE_ENV not in env and (name := coretype()) is not None:
        env[CORETYPE_ENV] = name


def loaded_in_process(library: Path) -> bool:
    """Whether ``library`` is mapped into this process (LD_PRELOAD or an earlier `activate`)."""
    target = library.resolve()
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return any(line.rsplit(" ", 1)[-1] == str(target) for line in maps.splitlines())


def activate() -> Path | None:
    """Load the optimized BLAS globally so MLX (imported afterwards) uses it. Idempotent.

    Returns the library in use, or None. Warns if MLX was imported before without it.
    """
    global _activated
    library = find_blas_library()
    if library is None or _activated is not None:
        return _activated
    if loaded_in_process(library):
        _activated = library
        return library
    if "mlx.core" in sys.modules:
        log.warning(
            "mlx was imported before the optimized BLAS could be loaded; matrix products will be slow. "
            "Import forgellm.engines.mlx_engine (or call forgellm.engines.blas.activate()) first."
        )
        return None
    _coretype_env(os.environ)  # OpenBLAS reads it from the process environment as it loads
    try:
        ctypes.CDLL(str(library), mode=os.RTLD_GLOBAL | os.RTLD_NOW)
    except OSError as exc:
        log.warning("could not load %s (%s); mlx keeps its reference BLAS", library, exc)
        return None
    _activated = library
    return library


def subprocess_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that will use MLX: ``LD_PRELOAD`` names the optimized BLAS."""
    env = dict(os.environ if env is None else env)
    library = find_blas_library()
    if library is not None:
        preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p]
        if str(library) not in preload:
            env["LD_PRELOAD"] = ":".join([str(library), *preload])
        _coretype_env(env)
    return env


def _reference_env() -> dict[str, str]:
    """Environment for a child that must run MLX with its own (reference) BLAS."""
    env = dict(os.environ)
    env[DISABLE_ENV] = "1"
    library = find_blas_library()
    if library is not None and env.get("LD_PRELOAD"):
        env["LD_PRELOAD"] = ":".join(p for p in env["LD_PRELOAD"].split(":") if p and Path(p) != library)
    return env


def matmul_step(backend: str, m: int, k: int, n: int) -> Callable[[], None]:
    """One float32 (m x k) by (k x n) product on the CPU in ``backend`` (torch or mlx), its inputs made once."""
    if backend == "torch":
        import torch

        a, b = torch.randn(m, k), torch.randn(k, n)

        def step() -> None:
            torch.mm(a, b)
    elif backend == "mlx":
        activate()
        import mlx.core as mx

        a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
        mx.eval(a, b)

        def step() -> None:
            mx.eval(a @ b)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return step


def measure_matmul_gflops(backend: str, size: int = MATMUL_SIZE, min_seconds: float = 0.5) -> float:
    """GFLOP/s of a ``size``x``size`` float32 matmul on the CPU, in this process."""
    step = matmul_step(backend, size, size, size)
    step()  # warm-up: thread pools, allocations
    count, started = 0, time.perf_counter()
    while count < 2 or time.perf_counter() - started < min_seconds:
        step()
        count += 1
    seconds = (time.perf_counter() - started) / count
    return 2 * size**3 / seconds / 1e9


def measure_in_subprocess(backend: str, *, optimized: bool = True, timeout: float = 120) -> dict[str, Any]:
    """Run the measurement in a fresh process (the BLAS is chosen at MLX's import, once per process).

    Returns ``{"gflops": float | None, "library": str | None, "error": str | None}``.
    """
    env = os.environ.copy() if optimized else _reference_env()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "forgellm.engines.blas", backend],
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return json.loads(done.stdout.strip().splitlines()[-1])
        error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError) as exc:
        error = str(exc)
    return {"gflops": None, "library": None, "error": error}


def openblas_core() -> str | None:
    """The kernel family the loaded OpenBLAS runs (``SkylakeX``, ``Prescott``...), or None."""
    if _activated is None:
        return None
    try:
        name = ctypes.CDLL(str(_activated)).openblas_get_corename
    except (OSError, AttributeError):
        return None
    name.restype = ctypes.c_char_p
    return name().decode()


def torch_blas_name() -> str | None:
    """The BLAS torch was built with (from its build configuration)."""
    import torch

    found = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    return found.group(1) if found else None


def _main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("torch", "mlx"):
        print("usage: python -m forgellm.engines.blas torch|mlx", file=sys.stderr)
        return 2
    backend = argv[0]
    gflops = measure_matmul_gflops(backend)
    if backend == "torch":
        library = torch_blas_name()
    elif _activated is not None:
        library = f"{_activated} ({openblas_core()} kernels)"
    else:
        library = "reference (bundled)"
    print(json.dumps({"gflops": round(gflops, 2), "library": library, "error": None}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
