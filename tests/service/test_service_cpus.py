"""Cores the service sizes its thread pools and sessions by: the CPU quota of a container (cgroup v2
``cpu.max``) and the affinity mask, never more than the machine's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vitbench.service import cpus


@pytest.mark.parametrize(
    ("content", "cores"),
    [
        ("400000 100000\n", 4),  # limits.cpu: 4
        ("150000 100000\n", 2),  # 1.5 CPUs: rounded up
        ("50000 100000\n", 1),  # 500m
        ("max 100000\n", None),  # no limit
        ("garbage\n", None),
        ("100 0\n", None),
    ],
)
def test_quota_cores_reads_cgroup_v2_cpu_max(tmp_path: Path, content: str, cores: int | None) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text(content)
    assert cpus.quota_cores(cpu_max, tmp_path / "no-v1") == cores


@pytest.mark.parametrize(("quota", "cores"), [("200000", 2), ("-1", None), ("50000", 1)])
def test_quota_cores_falls_back_to_cgroup_v1(tmp_path: Path, quota: str, cores: int | None) -> None:
    (tmp_path / "cpu.cfs_quota_us").write_text(quota + "\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.quota_cores(tmp_path / "no-cpu.max", tmp_path) == cores


def test_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert cpus.quota_cores(tmp_path / "missing", tmp_path / "missing-v1") is None


def test_available_cores_is_the_affinity_mask_capped_by_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu_max = tmp_path / "cpu.max"  # present, so the (absent) cgroup v1 files are not read
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    cpu_max.write_text("max 100000\n")
    assert cpus.available_cores(cpu_max) == 8  # a CPU set of 8 on a 16-core machine
    assert cpus.limited_cores(cpu_max) == 8
    cpu_max.write_text("200000 100000\n")
    assert cpus.available_cores(cpu_max) == cpus.limited_cores(cpu_max) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    cpu_max.write_text("max 100000\n")
    assert cpus.available_cores(cpu_max) == 16
    assert cpus.limited_cores(cpu_max) is None  # nothing limits it: ORT's own default applies
