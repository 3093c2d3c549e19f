# syntax=docker/dockerfile:1
# CPU-only trainer (laptops, CI, CPU clusters): torch from the CPU wheel index, no CUDA libraries.
#   docker build -f docker/trainer-cpu.Dockerfile -t ghcr.io/vitbench/trainer:0.1.0-cpu .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md docker/constraints.txt ./
COPY trainer ./trainer
COPY registry ./registry
COPY service ./service
COPY deploy ./deploy
COPY vitbench ./vitbench
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.14.1" "torchvision==0.29.1" \
    && pip install --no-cache-dir --constraint constraints.txt ".[train,deploy]" \
    && python -c "import torch; assert not torch.cuda.is_available(); print('torch', torch.__version__)"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 vitbench \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vitbench
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TORCH_HOME=/tmp/cache/torch \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /tmp
USER 10001:10001
CMD ["vitbench", "--help"]
