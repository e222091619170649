# syntax=docker/dockerfile:1
# The eligibility gateway (and the loader, same image): see deploy/README.md.
#
#   docker build -t eligibility-gateway:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9464:9464 \
#     -e ELIG_REDIS_URL=redis://redis.example:6379/0 \
#     -e ELIG_TRUSTED_KEYS=/etc/eligibility/keys/signing.pub \
#     -v "$PWD/keys:/etc/eligibility/keys:ro" eligibility-gateway:0.1.0
#
# The image has no redis-server: give ELIG_REDIS_URL (the embedded default of
# `make run` is for a laptop, not for a container).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the project and its dependencies into /opt/venv -----------------
FROM ${PYTHON_IMAGE} AS build
# A compiler for the compiled claim path (gateway/kernel.pyx) and for any
# dependency without a wheel for this platform (grpcio,
# numpy, pyarrow, hiredis, orjson and cryptography ship manylinux wheels for
# amd64 and arm64; elsewhere pip builds them here, never in the runtime image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY contract contract
COPY gateway gateway
COPY loader loader
COPY proto proto
# A regular (not editable) install: the code lives in the venv's site-packages,
# byte-compiled once here so that the read-only runtime writes no .pyc files.
# setup.py compiles the claim path (gateway/kernel.pyx, Cython) here, with
# build-essential; the import check fails the build if it is missing.
RUN pip install . \
 && python -m compileall -q /opt/venv/lib \
 && python -c "import gateway.server, gateway.kernel, loader.cli, gateway.ops.cli"

# ---- runtime: the venv, the health check, a non-root user -------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="eligibility-gateway" \
      org.opencontainers.image.description="Claims-settlement eligibility gateway (gRPC) and loader"
RUN groupadd --system --gid 10001 elig \
 && useradd --system --uid 10001 --gid elig --home-dir /var/lib/eligibility --no-create-home \
      --shell /usr/sbin/nologin elig \
 && mkdir -p /var/lib/eligibility/snapshot-cache /var/lib/eligibility/audit-spool \
 && chown -R 10001:10001 /var/lib/eligibility
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /app/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ELIG_SNAPSHOT_CACHE_DIR=/var/lib/eligibility/snapshot-cache \
    ELIG_AUDIT_SPOOL_DIR=/var/lib/eligibility/audit-spool
WORKDIR /app
USER 10001:10001
# The override spool must outlive the container (records not yet in Redis).
VOLUME ["/var/lib/eligibility"]
# 50051 gRPC, 9464 Prometheus /metrics.
EXPOSE 50051 9464
# The gRPC health service (overall status: SERVING once an index is loaded,
# NOT_SERVING while draining). Plaintext; with TLS on the gRPC port set
# ELIG_HEALTHCHECK_CA_FILE (and _CERT_FILE/_KEY_FILE for mutual TLS).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["python", "-m", "gateway"]
CMD ["--metrics-port", "9464", "--metrics-host", "0.0.0.0"]
