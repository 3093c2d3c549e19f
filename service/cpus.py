"""How many cores this process may use: the machine's, or fewer in a container or under an affinity mask.

Python's ``os.cpu_count()`` and ONNX Runtime's default thread count see the whole node (ORT sizes its
intra-op pool to the host's physical cores: microsoft/onnxruntime#29510). In a Kubernetes pod with
``resources.limits.cpu: 4`` on a 64-core node, that means pools of 32–64 threads throttled by a 4-CPU
CFS quota; an explicit thread count also keeps ORT from pinning threads to cores a CPU set excludes.
The limit lives in the cgroup v2 file ``cpu.max`` ("QUOTA PERIOD", or "max PERIOD" without one;
https://docs.kernel.org/admin-guide/cgroup-v2.html#cpu-interface-files), or on cgroup v1 nodes in
``cpu.cfs_quota_us`` (-1 without one) and ``cpu.cfs_period_us``; a CPU set (e.g. the kubelet's static
CPU manager) shows in the affinity mask.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # cpu.cfs_quota_us, cpu.cfs_period_us


def quota_cores(cpu_max: Path = CGROUP_CPU_MAX, v1_cpu: Path = CGROUP_V1_CPU) -> int | None:
    """Cores allowed by the cgroup CPU quota (quota ÷ period, rounded up, at least 1): cgroup v2's
    ``cpu_max``, else cgroup v1's ``v1_cpu`` folder; None when there is no quota or nothing readable."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (v1_cpu / "cpu.cfs_quota_us").read_text().strip()
            period = (v1_cpu / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def machine_cores() -> int:
    """The machine's logical cores (``os.cpu_count()``, at least 1)."""
    return os.cpu_count() or 1


def available_cores(cpu_max: Path = CGROUP_CPU_MAX, v1_cpu: Path = CGROUP_V1_CPU) -> int:
    """Cores this process may use: the affinity mask's size (the machine's where there is none),
    capped by the cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine_cores()
    quota = quota_cores(cpu_max, v1_cpu)
    return max(1, min(cores, quota) if quota is not None else cores)


def limited_cores(cpu_max: Path = CGROUP_CPU_MAX, v1_cpu: Path = CGROUP_V1_CPU) -> int | None:
    """:func:`available_cores` when a quota or affinity mask holds it below the machine's cores, else
    None (nothing limits this process: ONNX Runtime's own default thread count is right)."""
    cores = available_cores(cpu_max, v1_cpu)
    return cores if cores < machine_cores() else None
