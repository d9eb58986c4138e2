"""What the numbers were measured on (the matmul peak is `forgellm.bench.peak`'s)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any


def describe_machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
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
