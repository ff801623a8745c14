# syntax=docker/dockerfile:1
# gme-recwatch: `make image` (docker, podman or buildah, whichever works), then
#   docker run -p 8080:8080 -p 8081:8081 -e GME_RECWATCH_SECRET_KEY=... gme-recwatch:<version>
# The Helm chart (helm/gme-recwatch) runs it as the same UID, with a read-only root.
#
# BASE is the builder's: any Debian-like image with python3 (>= 3.11, with its venv module),
# ldd and ldconfig. The final stage is `scratch` holding its interpreter, the part of its
# standard library and of its shared libraries that the service needs, and the venv: no
# shell, no package manager (docs/container-image.md). The default is the official slim
# image of one fixed Python minor version; Renovate keeps it current (renovate.json).
# tests/e2e/test_image.py builds on a base made from Debian packages.
ARG BASE=python:3.12-slim-bookworm

# -- builder: the locked dependencies and the project's wheel, installed into /opt/venv -------
FROM ${BASE} AS builder
# renovate: datasource=pypi depName=uv
ARG UV_VERSION=0.13.9
# The commit's time, from make image and the release workflow: the wheel's files are dated
# with it, so the same commit gives the same bytes.
ARG SOURCE_DATE_EPOCH
# Left out of the venv, as nothing the service runs imports them (tests/e2e/test_image.py
# imports every module of the project and everything it names, and runs serve, the canary
# and the online check in the image): faker and polyfactory (litestar's OpenAPI examples,
# which the project turns off), rich, rich-click, pygments, markdown-it-py, mdurl (CLIs of
# litestar and httpx) and litestar-htmx.
ARG UV_LEAVE_OUT="--no-install-package faker --no-install-package polyfactory \
    --no-install-package rich --no-install-package rich-click --no-install-package pygments \
    --no-install-package markdown-it-py --no-install-package mdurl --no-install-package litestar-htmx"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_NO_INSTALLER_METADATA=1
WORKDIR /src
# binutils for `strip` (docker/assemble_runtime.py); the builder stage never reaches the
# image. The base's Debian release fixes its version.
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
    /opt/uv/bin/uv sync --frozen --no-dev --no-install-project --python python3 ${UV_LEAVE_OUT}
COPY README.md ./
COPY src ./src
# The project itself, as a built wheel (--no-editable): /opt/venv holds no reference to /src.
# botocore keeps the model of S3 alone (its others, every AWS service, are 26 MB), as COS
# lookups speak S3 and nothing else.
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --no-editable --python python3 ${UV_LEAVE_OUT} \
 && find /opt/venv/lib/python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name s3 -exec rm -rf {} +
# What the final stage holds, in three trees (docker/assemble_runtime.py says how each is
# found): the interpreter, the stdlib it needs and the shared libraries it and the wheels link
# against (ldd), stripped; the dependencies; the project and its SBOM. Every module gets
# bytecode; every file the commit's time.
RUN --mount=type=bind,source=docker/assemble_runtime.py,target=/run/assemble.py \
    /opt/venv/bin/python -B /run/assemble.py /out

# -- runtime: nothing but those files. No shell, no package manager, no pip; non-root. --------
# Three layers, so that a new commit of the project changes the last one only (BENCHMARKS.md
# section 8 gives each one's size).
FROM scratch AS runtime
LABEL org.opencontainers.image.title="gme-recwatch" \
      org.opencontainers.image.description="Verified intake and lifecycle monitoring for Tencent Cloud GME recording callbacks" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/runtime/ /
COPY --from=builder /out/deps/ /
COPY --from=builder /out/app/ /
# UID/GID 10001 (named in /etc/passwd) match podSecurityContext in the Helm chart; the state
# directory is the only place the service writes besides /tmp. COPY makes files root's, so
# the directory is given to the service here.
COPY --from=builder --chown=10001:10001 /out/state/ /var/lib/gme-recwatch/
# The snapshot goes where the chart's volume is mounted, so `docker run -v` keeps state too.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GME_RECWATCH_STATE_FILE=/var/lib/gme-recwatch/state.snapshot
WORKDIR /var/lib/gme-recwatch
USER 10001:10001
# 8080: callbacks (the only port to expose to the internet); 8081: /metrics, probes, API.
EXPOSE 8080 8081
ENTRYPOINT ["gme-recwatch"]
CMD ["serve"]
