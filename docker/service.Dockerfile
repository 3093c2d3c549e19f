# syntax=docker/dockerfile:1
# Inference service on GPU: vitbench[serve] on onnxruntime-gpu with the TensorRT libraries, and no torch.
#   docker build -f docker/service.Dockerfile -t ghcr.io/vitbench/service:0.1.0 .
# onnxruntime-gpu 1.31.1 is built for CUDA 13 (its `cuda`/`cudnn` extras pull nvidia-*-cu13 wheels).
# ORT's TensorRT execution provider loads libnvinfer at session creation; the TensorRT major version must
# match the one onnxruntime-gpu was built against (ORT's "TensorRT EP requirements" table): bump the two
# ARGs together. This pairing was not run on a GPU in the session that wrote it; the service falls back
# to the CUDA provider when the TensorRT one cannot load.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1
ARG TENSORRT_LIBS_VERSION=10.16.1.11

FROM ${CUDA_IMAGE} AS build
ARG ORT_GPU_VERSION
ARG TENSORRT_LIBS_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md docker/constraints.txt ./
COPY registry ./registry
COPY service ./service
COPY deploy ./deploy
COPY vitbench ./vitbench
# The CPU onnxruntime that [serve] pulls in is swapped for the GPU build (same `onnxruntime` module).
# The service must not need torch: the build fails if anything pulled it in.
RUN pip install --no-cache-dir --constraint constraints.txt ".[serve]" \
    && pip uninstall -y onnxruntime \
    && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}" "tensorrt-cu13-libs==${TENSORRT_LIBS_VERSION}" \
    && python -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)" \
    && python -c "import onnxruntime, vitbench.service.app; print('onnxruntime', onnxruntime.__version__)"

FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 vitbench \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vitbench
COPY --from=build /opt/venv /opt/venv
# tensorrt_libs keeps libnvinfer*.so under site-packages; ORT finds it through the loader path.
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.12/site-packages/tensorrt_libs \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    VITBENCH_HOME=/cache/home \
    VITBENCH_CACHE_DIR=/cache/models \
    VITBENCH_TRT_CACHE_DIR=/cache/trt \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
CMD ["vitbench", "serve", "--host", "0.0.0.0", "--port", "8000"]
