# syntax=docker/dockerfile:1
# Inference service on GPU: vitbench[serve] on onnxruntime-gpu with the TensorRT libraries, and no torch.
#   make images            (or: docker build -f docker/service.Dockerfile -t vitbench/service:0.1.0 .)
# onnxruntime-gpu 1.31.1 is built for CUDA 13; its `cuda`/`cudnn` extras pull the CUDA runtime, cuBLAS,
# cuFFT, cuRAND, NVRTC (site-packages/nvidia/cu13/lib) and cuDNN 9 (site-packages/nvidia/cudnn/lib) as
# wheels, so the base is CUDA's `-base-` image (toolkit settings, driver mount point) and the loader
# path names those folders. ORT's TensorRT execution provider loads libnvinfer at session creation; the
# TensorRT major version must match the one onnxruntime-gpu was built against (ORT's "TensorRT EP
# requirements" table): bump the ARGs together. `tensorrt-cu13-libs` on PyPI is a stub that fetches
# the real wheel from NVIDIA's index during the install, so that index is named here explicitly.
# Not run on a GPU in the session that wrote it; the service falls back to the CUDA provider when
# the TensorRT one cannot load.
ARG CUDA_IMAGE=docker.io/nvidia/cuda:13.0.2-base-ubuntu24.04
ARG ORT_GPU_VERSION=1.31.1
ARG TENSORRT_LIBS_VERSION=10.16.1.11
ARG NVIDIA_INDEX_URL=https://pypi.nvidia.com

FROM ${CUDA_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
ARG ORT_GPU_VERSION
ARG TENSORRT_LIBS_VERSION
ARG NVIDIA_INDEX_URL
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
# The CPU onnxruntime that [serve] pulls in is swapped for the GPU build (same `onnxruntime` module;
# vitbench requires onnxruntime only through its `serve` extra, which `pip check` does not hold against
# an installed package, so the swap leaves no broken requirement). The real TensorRT wheel comes straight
# from NVIDIA's index (--extra-index-url), not through the PyPI stub's install-time download.
# The service must not need torch: the build fails if anything pulled it in.
RUN pip install --no-cache-dir --constraint constraints.txt ".[serve]" \
    && pip uninstall -y onnxruntime \
    && pip install --no-cache-dir --extra-index-url "${NVIDIA_INDEX_URL}" \
       "onnxruntime-gpu[cuda,cudnn]==${ORT_GPU_VERSION}" "tensorrt-cu13-libs==${TENSORRT_LIBS_VERSION}" \
    && pip check \
    && python -c "import importlib.util as u, sys; sys.exit(1 if u.find_spec('torch') else 0)" \
    && S=/opt/venv/lib/python3.12/site-packages \
    && test -e "$S/nvidia/cudnn/lib/libcudnn.so.9" && test -e "$S/nvidia/cu13/lib/libcudart.so.13" \
    && ls "$S"/tensorrt_libs/libnvinfer.so.* \
    && python -c "import onnxruntime as o, vitbench.service.app; p = o.get_available_providers(); print(o.__version__, p); assert {'TensorrtExecutionProvider', 'CUDAExecutionProvider'} <= set(p)" \
    && python -P -c "import vitbench.service._rle, vitbench.service._resize"

FROM python
RUN groupadd --gid 10001 vitbench \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin vitbench \
    && mkdir -p /cache/home /cache/models /cache/trt \
    && chown -R 10001:10001 /cache
COPY --from=build /opt/venv /opt/venv
# The loader path names the wheels' library folders (TensorRT, cuDNN, CUDA 13) and keeps whatever the
# base or the cluster put there (the driver's libraries are often mounted through it).
ENV PATH=/opt/venv/bin:$PATH \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.12/site-packages/tensorrt_libs:/opt/venv/lib/python3.12/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.12/site-packages/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
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
