# syntax=docker/dockerfile:1
# gme-recwatch: `make image` (docker, podman or buildah, whichever works), then
#   docker run -p 8080:8080 -p 8081:8081 -e GME_RECWATCH_SECRET_KEY=... gme-recwatch:<version>
# The Helm chart (helm/gme-recwatch) runs it as the same UID, with a read-only root.
#
# BASE is any Debian-like image with python3 (>= 3.11, with its venv module), useradd and
# groupadd; builder and runtime must use the same one, since the venv links to its python3.
# The default is the official slim image of one fixed Python minor version; Renovate keeps it
# current (renovate.json). tests/e2e/test_image.py builds on a base made from Debian packages.
ARG BASE=python:3.12-slim-bookworm

# -- builder: the locked dependencies and the project's wheel, installed into /opt/venv -------
FROM ${BASE} AS builder
# renovate: datasource=pypi depName=uv
ARG UV_VERSION=0.13.9
# The commit's time, from make image and the release workflow: the wheel's files are dated
# with it, so the same commit gives the same bytes.
ARG SOURCE_DATE_EPOCH
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_INSTALLER_METADATA=1
WORKDIR /src
# binutils for `strip` below; the builder stage never reaches the image. The base's Debian
# release fixes its version.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
# uv lives in the builder only; its own venv keeps it away from the one that ships.
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
COPY pyproject.toml uv.lock ./
# Dependencies first: this layer is reused until uv.lock changes. --frozen installs what the
# lock says, with its hashes, and never resolves. Every dependency ships binary wheels for
# linux amd64 and arm64, so no compiler is needed.
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3
COPY README.md ./
COPY src ./src
# The project itself, as a built wheel (--no-editable): /opt/venv holds no reference to /src.
# Then two cuts that change nothing the service runs: debug symbols come off the extensions
# (some wheels ship them: uvloop's .so is 13 MB of 15), as the image has no debugger; and
# botocore keeps the model of S3 alone (its others, every AWS service, are 26 MB), as COS
# lookups speak S3 and nothing else. tests/e2e/test_image.py looks a file up from the image.
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable --python python3 \
 && find /opt/venv -name '*.so' -exec strip --strip-debug {} + \
 && find /opt/venv/lib/python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name s3 -exec rm -rf {} +

# -- runtime: the venv on the same base; no build tools, no caches, non-root ------------------
FROM ${BASE} AS runtime
# useradd dates the account with it (/etc/shadow) instead of today.
ARG SOURCE_DATE_EPOCH
LABEL org.opencontainers.image.title="gme-recwatch" \
      org.opencontainers.image.description="Verified intake and lifecycle monitoring for Tencent Cloud GME recording callbacks" \
      org.opencontainers.image.licenses="Apache-2.0"
# UID/GID 10001 match podSecurityContext in the Helm chart; the state directory is the only
# place the service writes besides /tmp.
RUN groupadd --system --gid 10001 recwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --no-log-init \
        --home-dir /nonexistent --shell /usr/sbin/nologin recwatch \
 && mkdir -p /var/lib/gme-recwatch \
 && chown 10001:10001 /var/lib/gme-recwatch
COPY --from=builder /opt/venv /opt/venv
# Bytecode for the modules a start imports, and only those (docker/compile_startup_bytecode.py
# says why); it also proves the installed service builds everything it needs to start.
RUN --mount=type=bind,source=docker/compile_startup_bytecode.py,target=/run/compile.py \
    /opt/venv/bin/python -B /run/compile.py
# The snapshot goes where the chart's volume is mounted, so `docker run -v` keeps state too.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GME_RECWATCH_STATE_FILE=/var/lib/gme-recwatch/state.snapshot
WORKDIR /var/lib/gme-recwatch
USER 10001:10001
# 8080: callbacks (the only port to expose to the internet); 8081: /metrics, probes, API.
EXPOSE 8080 8081
ENTRYPOINT ["gme-recwatch"]
CMD ["serve"]
