# syntax=docker/dockerfile:1
# Trainer image for the benchmark Jobs: torch + vitbench[train] (+ the kubernetes client) on CUDA 13.
# Build from the repository root:
#   make images            (or: docker build -f docker/trainer.Dockerfile -t vitbench/trainer:0.1.0 .)
# torch 2.14.1's Linux wheels from PyPI are built for CUDA 13 and carry their CUDA/cuDNN/NCCL libraries as
# nvidia-* wheels (nvidia/cu13/lib, nvidia/cudnn/lib, ... under site-packages; torch loads them itself).
# So the base is CUDA's `-base-` image: the container-toolkit settings (NVIDIA_VISIBLE_DEVICES,
# NVIDIA_DRIVER_CAPABILITIES) and the driver mount point, without a second copy of the CUDA runtime
# libraries the runtime image would add. No compiler: every dependency installs from a wheel.
ARG CUDA_IMAGE=docker.io/nvidia/cuda:13.0.2-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_CONFIG_FILE=/run/vitbench-build/pip.conf \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md docker/constraints.txt ./
COPY trainer ./trainer
COPY registry ./registry
COPY service ./service
COPY deploy ./deploy
COPY vitbench ./vitbench
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml's [train] extra.
RUN pip install --no-cache-dir --constraint constraints.txt ".[train,deploy]" \
    && pip check \
    && test -e /opt/venv/lib/python3.12/site-packages/nvidia/cudnn/lib/libcudnn.so.9 \
    && python -c "import torch, torchvision, vitbench.trainer, vitbench.cli.main; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM python
RUN groupadd --gid 10001 vitbench \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vitbench
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TORCH_HOME=/tmp/cache/torch \
    MLFLOW_DISABLE_TELEMETRY=true
# The Jobs mount /data (ro), /outputs, /dev/shm and /tmp; the root filesystem stays read-only.
WORKDIR /tmp
USER 10001:10001
CMD ["vitbench", "--help"]
