"""How the CPU's OpenMP threads wait, set for every ForgeLLM process before torch is imported.

The CLI applies it at start; the benchmark's workers apply it as ``forgellm train`` does and run
their baselines without it.
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin briefly (20,000 turns of libgomp's wait loop), then sleep. OpenMP's
# default spin (300,000) holds cores other work needs on a shared CPU (a LoRA step ran 1.6-3x slower
# than this under load), while sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs about a fifth on an
# idle machine (BENCHMARKS.md). Set before anything loads OpenMP (torch reads it once, at import).
CPU_ENV_DEFAULTS = {"GOMP_SPINCOUNT": "20000"}
# Variables by which the user already chose how OpenMP threads wait: then ForgeLLM sets none.
USER_WAIT_CHOICES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
APPLIED_ENV: set[str] = set()  # the variables ForgeLLM set (the user had not): benchmarks' baselines run without


def apply_cpu_env_defaults() -> None:
    """ForgeLLM's threading defaults, unless the user chose how OpenMP threads wait."""
    if any(name in os.environ for name in USER_WAIT_CHOICES):
        return
    for name, value in CPU_ENV_DEFAULTS.items():
        os.environ[name] = value
        APPLIED_ENV.add(name)
