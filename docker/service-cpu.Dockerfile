# syntax=docker/dockerfile:1
# Inference service on CPU: vitbench[serve] on onnxruntime (CPU), no torch, no CUDA.
#   docker build -f docker/service-cpu.Dockerfile -t ghcr.io/vitbench/service:0.1.0-cpu .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md docker/constraints.txt ./
COPY registry ./registry
COPY service ./service
COPY deploy ./deploy
COPY vitbench ./vitbench
RUN pip install --no-cache-dir --constraint constraints.txt ".[serve]" \
    && python -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)" \
    && python -c "import onnxruntime, vitbench.service.app; print('onnxruntime', onnxruntime.__version__)"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 vitbench \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vitbench
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
