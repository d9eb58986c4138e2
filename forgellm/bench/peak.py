"""This machine's float32 matmul peak: the physical limit model FLOPs utilisation is measured against.

Square float32 products of a few sizes, measured for torch and for MLX (MLX with the
optimized BLAS preloaded, as the mlx engine runs), each in a fresh process, interleaved
(torch, mlx, torch, mlx) so both see the same machine load. The best figure of each library
is its peak; the machine's peak is the better of the two, so an engine's MFU says how much
of what this CPU can do for a matmul it gets, whichever library it uses.

``python -m forgellm.bench.peak torch|mlx SIZE,SIZE...`` prints one process's figures as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from forgellm.engines import blas

FULL_SIZES = (512, 1024, 2048)
QUICK_SIZES = (256, 512)
BACKENDS = ("torch", "mlx")

_measured: dict[str, Any] | None = None  # the peak of this run, shared with the training benchmark


def measure_peaks(*, quick: bool, rounds: int | None = None) -> dict[str, Any]:
    """``{"torch": GFLOP/s, "mlx": GFLOP/s or None, "machine": GFLOP/s, "sizes": {...}}``; cached per run."""
    global _measured
    if _measured is not None and (quick or not _measured["quick"]):
        return _measured
    sizes = QUICK_SIZES if quick else FULL_SIZES
    best: dict[str, float | None] = dict.fromkeys(BACKENDS)
    best_size: dict[str, int | None] = dict.fromkeys(BACKENDS)
    for _ in range(rounds or (1 if quick else 3)):
        for backend in BACKENDS:
            for size, gflops in _measure_in_subprocess(backend, sizes, 0.2 if quick else 1.0).items():
                current = best[backend]
                if gflops is not None and (current is None or gflops > current):
                    best[backend], best_size[backend] = gflops, size
    if best["torch"] is None:
        raise RuntimeError("could not measure torch's matmul speed")
    machine = max(v for v in best.values() if v is not None)
    _measured = {
        **best,
        "machine": machine,
        "sizes": best_size,
        "quick": quick,
        "mlx_blas": str(blas.find_blas_library() or "reference (bundled)"),
        "torch_blas": blas.torch_blas_name(),
    }
    return _measured


def _measure_in_subprocess(backend: str, sizes: tuple[int, ...], seconds: float) -> dict[int, float | None]:
    arg = ",".join(map(str, sizes))
    env = blas.subprocess_env() if backend == "mlx" else None
    try:
        done = subprocess.run(
            [sys.executable, "-m", "forgellm.bench.peak", backend, arg, str(seconds)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=True,
        )
        return {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return dict.fromkeys(sizes)


def run(quick: bool) -> list[dict[str, Any]]:
    peaks = measure_peaks(quick=quick)
    notes = {
        "torch": f"torch BLAS {peaks['torch_blas']}, best of n={peaks['sizes']['torch']}",
        "mlx": f"MLX with {peaks['mlx_blas']}, best of n={peaks['sizes']['mlx']}",
    }
    out = [
        {
            "name": f"matmul_peak_{backend}",
            "value": round(peaks[backend], 2),
            "unit": "GFLOP/s",
            "baseline": round(peaks["machine"], 2),
            "ratio": round(peaks[backend] / peaks["machine"], 3),
            "notes": f"{notes[backend]}; baseline: the machine peak (best library)",
        }
        for backend in BACKENDS
        if peaks[backend] is not None
    ]
    return out


def _main(argv: list[str]) -> int:
    backend, sizes, seconds = argv[0], [int(s) for s in argv[1].split(",")], float(argv[2])
    if backend == "mlx":
        blas.activate()
    print(json.dumps({size: blas.measure_matmul_gflops(backend, size, seconds) for size in sizes}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
