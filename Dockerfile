# syntax=docker/dockerfile:1
# gme-recwatch: `docker build -t gme-recwatch .`, then
#   docker run -p 8080:8080 -p 8081:8081 -e GME_RECWATCH_SECRET_KEY=... gme-recwatch
# The Helm chart (helm/gme-recwatch) runs it as the same UID, with a read-only root.

ARG PYTHON_VERSION=3.12

# -- builder: build the wheel and install it with its dependencies into a venv ---------------
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY src ./src
# Every dependency ships binary wheels for linux amd64/arm64, so no compiler is needed here
# either; the wheel is built first so the venv holds an installed package, not the source.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# -- runtime: the venv on a slim Python, no build tools, non-root ----------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="gme-recwatch" \
      org.opencontainers.image.description="Verified intake and lifecycle monitoring for Tencent Cloud GME recording callbacks" \
      org.opencontainers.image.licenses="Apache-2.0"
# UID/GID 10001 match podSecurityContext in the Helm chart.
RUN groupadd --system --gid 10001 recwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin recwatch \
 && mkdir -p /var/lib/gme-recwatch \
 && chown 10001:10001 /var/lib/gme-recwatch
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /var/lib/gme-recwatch
USER 10001:10001
# 8080: callbacks (the only port to expose to the internet); 8081: /metrics, probes, API.
EXPOSE 8080 8081
ENTRYPOINT ["gme-recwatch"]
CMD ["serve"]
