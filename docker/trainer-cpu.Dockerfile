# syntax=docker/dockerfile:1
# CPU-only trainer (laptops, CI, CPU clusters) on Debian's own Python.
# torch comes from the CPU wheel index (TORCH_INDEX_URL, ~200 MB) where it can be reached; otherwise the
# build falls back to the pinned torch of the main index (its Linux wheel is the CUDA 13 build: about
# 3.2 GB of nvidia-* libraries, unused on a CPU). Either way torch==2.14.1 / torchvision==0.29.1.
#   make images            (or: docker build -f docker/trainer-cpu.Dockerfile -t vitbench/trainer:0.1.0-cpu .)
ARG DEBIAN_IMAGE=docker.io/library/debian:12.12-slim

FROM ${DEBIAN_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
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
# `==2.14.1` also matches the CPU index's `2.14.1+cpu`, so the constraints file holds either way.
RUN { [ -n "${TORCH_INDEX_URL}" ] \
      && pip install --no-cache-dir --timeout 20 --retries 1 --index-url "${TORCH_INDEX_URL}" \
         "torch==2.14.1" "torchvision==0.29.1" ; } \
    || { echo "torch: ${TORCH_INDEX_URL:-no CPU index} not reachable, using the main index's pinned build" \
         && pip install --no-cache-dir --constraint constraints.txt "torch==2.14.1" "torchvision==0.29.1" ; }
RUN pip install --no-cache-dir --constraint constraints.txt ".[train,deploy]" \
    && pip check \
    && python -c "import torch, torchvision, vitbench.trainer, vitbench.cli.main; print('torch', torch.__version__)"

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
