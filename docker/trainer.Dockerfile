# syntax=docker/dockerfile:1
# Trainer image for the benchmark Jobs: CUDA runtime + torch + vitbench[train] (+ the kubernetes client).
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t ghcr.io/vitbench/trainer:0.1.0 .
# torch 2.14.1's Linux wheels from PyPI are built for CUDA 13 and carry their CUDA/cuDNN/NCCL libraries as
# nvidia-* wheels; the CUDA base image provides the driver-facing runtime and the container toolkit env.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md docker/constraints.txt ./
COPY trainer ./trainer
COPY registry ./registry
COPY service ./service
COPY deploy ./deploy
COPY vitbench ./vitbench
# torch==2.14.1 / torchvision==0.29.1 are pinned in pyproject.toml's [train] extra.
RUN pip install --no-cache-dir --constraint constraints.txt ".[train,deploy]" \
    && python -c "import torch, torchvision, vitbench.trainer, vitbench.cli.main; print('torch', torch.__version__)"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 vitbench \
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
