"""How many cores this process may use: the machine's, or fewer in a container or under an affinity mask.

Python's ``os.cpu_count()`` and ONNX Runtime's default thread count see the whole node (ORT sizes its
intra-op pool to the host's physical cores: microsoft/onnxruntime#29510). In a Kubernetes pod with
``resources.limits.cpu: 4`` on a 64-core node, that means pools of 32–64 threads throttled by a 4-CPU
CFS quota; an explicit thread count also keeps ORT from pinning threads to cores a CPU set excludes.
The limit lives in the cgroup v2 file ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" without one;
https://docs.kernel.org/admin-guide/cgroup-v2.html#cpu-interface-files), and a CPU set (e.g. the
kubelet's static CPU manager) shows in the affinity mask.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def quota_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """Cores allowed by the cgroup v2 CPU quota (quota ÷ period, rounded up, at least 1); None when
    there is no quota or no readable ``cpu.max``."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def machine_cores() -> int:
    """The machine's logical cores (``os.cpu_count()``, at least 1)."""
    return os.cpu_count() or 1


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: the affinity mask's size (the machine's where there is none),
    capped by the cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine_cores()
    quota = quota_cores(cpu_max)
    return max(1, min(cores, quota) if quota is not None else cores)


def limited_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """:func:`available_cores` when a quota or affinity mask holds it below the machine's cores, else
    None (nothing limits this process: ONNX Runtime's own default thread count is right)."""
    cores = available_cores(cpu_max)
    return cores if cores < machine_cores() else None
