# Notebook Gateway: `docker build -t notebook-gateway .` then
# `docker run -p 8080:8080 --env-file gateway.env notebook-gateway` (see docs/operators.md).
# Two stages so the image holds the installed package in a venv, not the build inputs or pip's cache.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gateway
WORKDIR /src
# Only what `pip install .` reads (see .dockerignore), so edits to tests or docs do not bust the cache.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN /opt/gateway/bin/pip install ".[fast]"

FROM python:3.12-slim
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080
COPY --from=build /opt/gateway /opt/gateway
# A numeric uid, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /home/gateway --create-home --shell /usr/sbin/nologin gateway
USER 10001:10001
WORKDIR /home/gateway
EXPOSE 8080
# The slim image has no curl: ask /healthz with the standard library instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=4)" || exit 1
# aiohttp handles SIGTERM itself: it stops accepting, lets in-flight requests finish within
# GATEWAY_SHUTDOWN_GRACE_S and closes relayed WebSockets with 1001.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "gateway", "serve"]
