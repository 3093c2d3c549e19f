# syntax=docker/dockerfile:1
# Inference service on CPU: vitbench[serve] on onnxruntime (CPU), no torch, no CUDA.
# Debian's own Python (3.11 from bookworm), so a base built from Debian's packages is the same thing.
#   make images            (or: docker build -f docker/service-cpu.Dockerfile -t vitbench/service:0.1.0-cpu .)
#   docker run --rm -p 8000:8000 --read-only -v "$PWD/model:/model:ro" -e VITBENCH_MODEL_DIR=/model IMAGE
ARG DEBIAN_IMAGE=docker.io/library/debian:12.12-slim

FROM ${DEBIAN_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
# gcc and the Python headers build the service's C extensions (setup.py); they stay in this stage,
# python -P checks the installed package: in /src, the source tree would shadow it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-dev gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_CONFIG_FILE=/run/vitbench-build/pip.conf \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md docker/constraints.txt ./
COPY registry ./registry
COPY service ./service
COPY deploy ./deploy
COPY vitbench ./vitbench
# Package-index settings and CA bundle, where the build needs them, come in as build-time mounts
# (scripts/images.sh), never as a layer. The service must not need torch: the build fails if anything
# pulled it in.
RUN pip install --no-cache-dir --constraint constraints.txt ".[serve]" \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)" \
    && python -c "import onnxruntime, vitbench.service.app; print('onnxruntime', onnxruntime.__version__)" \
    && python -P -c "import vitbench.service._rle, vitbench.service._resize"

FROM python
# /cache is the service's writable place (VITBENCH_HOME, downloaded models): it exists in the image
# and belongs to the service user, so `docker run` works without a volume; with a read-only root
# filesystem mount a volume or tmpfs there (the chart mounts an emptyDir).
RUN groupadd --gid 10001 vitbench \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vitbench \
    && mkdir -p /cache/home /cache/models \
    && chown -R 10001:10001 /cache
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    VITBENCH_HOME=/cache/home \
    VITBENCH_CACHE_DIR=/cache/models \
    VITBENCH_PROVIDERS=CPUExecutionProvider \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
CMD ["vitbench", "serve", "--host", "0.0.0.0", "--port", "8000"]
