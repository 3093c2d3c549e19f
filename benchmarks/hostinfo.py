"""What the benchmark ran on, for its results: CPU model and widest vector instructions.

The same command gives different ratios on different CPUs (oneDNN and ONNX Runtime's MLAS pick their
kernels by instruction set), so every figure should say which CPU produced it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Widest first: the first of these the CPU reports is the one named.
_VECTOR_FLAGS = ("avx512f", "avx2", "avx", "sve", "asimd", "neon")


def cpu_description(cpuinfo: str | None = None) -> str:
    """``"AMD EPYC, avx2, 2 CPUs"``: model name, widest vector flag and CPU count, from
    ``/proc/cpuinfo`` (or the ``cpuinfo`` text given); ``platform.processor()`` where there is none."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    vector = next((flag for flag in _VECTOR_FLAGS if flag in flags), None)
    parts = [model] + ([vector] if vector else []) + [f"{os.cpu_count()} CPUs"]
    return ", ".join(parts)
