# syntax=docker/dockerfile:1
# MLflow tracking server + registry for the chart: PostgreSQL driver and S3 client included.
# Debian's own Python; every package pinned by docker/constraints.txt (the versions the tests ran with).
#   make images            (or: docker build -f docker/mlflow.Dockerfile -t vitbench/mlflow:3.17.2 .)
ARG DEBIAN_IMAGE=docker.io/library/debian:12.12-slim

FROM ${DEBIAN_IMAGE} AS python
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
COPY docker/constraints.txt ./
RUN pip install --no-cache-dir --constraint constraints.txt "mlflow[auth]" psycopg2-binary boto3 \
    && pip check \
    && mlflow --version

FROM python
# `mlflow server` is a Python launcher that starts uvicorn (and its workers) as child processes;
# tini as PID 1 forwards SIGTERM to the whole process group (-g), so `docker stop` and a pod's
# termination stop the server at once instead of waiting for SIGKILL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MLFLOW_DISABLE_TELEMETRY=true
WORKDIR /tmp
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["/usr/bin/tini", "-g", "--"]
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "2"]
