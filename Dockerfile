# syntax=docker/dockerfile:1
# The chatmemory operator image: the locked dependency set (uv.lock, the same one CI tests) in a
# virtualenv, on a slim Python base, running as a non-root user with a read-only root filesystem.
#
#   docker build -t chatmemory-operator:0.1.0 .
#
# Both stages use the same base so the virtualenv's interpreter path (/usr/local/bin/python3.11)
# exists in the final image.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# ---- builder: resolve nothing, install exactly what uv.lock says -----------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Same uv as the Makefile (UV_VERSION), from PyPI.
ARG UV_VERSION=0.13.9
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

WORKDIR /src

# 1. Third-party dependencies (a cached layer until uv.lock or a pyproject.toml changes): the
#    operator's runtime set from the lockfile, hashes checked, no resolution.
COPY pyproject.toml uv.lock ./
COPY sdk/pyproject.toml sdk/README.md sdk/
COPY operator/pyproject.toml operator/README.md operator/
RUN uv export --frozen --no-dev --no-emit-workspace --package chatmemory-operator --output-file requirements.txt \
    && uv venv --python /usr/local/bin/python3.11 /opt/venv \
    && uv pip install --python /opt/venv/bin/python --require-hashes --no-deps -r requirements.txt

# 2. The two workspace packages themselves (the SDK and the operator), not editable.
COPY sdk/src sdk/src
COPY operator/src operator/src
RUN uv pip install --python /opt/venv/bin/python --no-deps ./sdk ./operator

# ---- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="chatmemory-operator" \
      org.opencontainers.image.description="Kubernetes operator: ChatMemory on Redis, Kafka and TiDB" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed non-root uid/gid (10001), no home, no shell: matches the chart's securityContext.
RUN groupadd --system --gid 10001 chatmemory \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin chatmemory

COPY --from=builder /opt/venv /opt/venv

# Read-only friendly: no bytecode writes at run time (compiled at build), temp files in /tmp
# (an emptyDir in the chart). Two malloc arenas: glibc allows 8 per core, each keeping the pages
# it freed, and the operator's backend calls run in a few executor threads (RSS with 1,060 memories:
# 142-158 MB with it, 161-178 MB without, bench/operator_scale.py).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    MALLOC_ARENA_MAX=2

USER 10001:10001
WORKDIR /tmp

# 8080: kopf's liveness probe (/healthz); 9090: Prometheus /metrics (CHATMEMORY_METRICS_PORT).
EXPOSE 8080 9090

# kopf's CLI runs the package's handlers: one replica (--standalone, no peering), every namespace
# (the chart passes --namespace=... instead for a namespaced install), kopf's liveness endpoint.
# Equivalent to `python -m chatmemory_operator` with its defaults.
CMD ["kopf", "run", "--standalone", "--module=chatmemory_operator", "--all-namespaces", \
     "--liveness=http://0.0.0.0:8080/healthz"]
