"""What the numbers were measured on, and the machine's matmul peak (the physical limit
against which model FLOPs utilisation is reported)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any


def describe_machine() -> dict[str, Any]:
    versions = {}
    for pkg in ("torch", "transformers", "peft", "mlx", "mlx-lm", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": _torch_threads(),
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _torch_threads() -> int | None:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def torch_matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained float32 matmul GFLOP/s of torch on the CPU (the peak MFU is measured against)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


MLX_MATMUL_SNIPPET = """
import time, mlx.core as mx
n = {n}
a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
for _ in range(3): mx.eval(a @ b)
count, start = 0, time.perf_counter()
while time.perf_counter() - start < {seconds}:
    mx.eval(a @ b); count += 1
print(2 * n**3 * count / (time.perf_counter() - start) / 1e9)
"""


def mlx_matmul_gflops(n: int = 1024, seconds: float = 1.0, env: dict[str, str] | None = None) -> float | None:
    """MLX float32 matmul GFLOP/s, measured in a subprocess so the BLAS preload of ``env`` applies."""
    try:
        out = subprocess.run([sys.executable, "-c", MLX_MATMUL_SNIPPET.format(n=n, seconds=seconds)],
                             capture_output=True, text=True, timeout=120, env=env, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None
