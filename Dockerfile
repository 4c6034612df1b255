# syntax=docker/dockerfile:1
# ccm cloud-controller-manager image. This repository's CI has no container engine, so the image is
# never built here: build it where Docker/Podman/BuildKit runs (see docs/deploy.md):
#   docker build -t ccm:latest .
# The image also carries the `fake` provider (ccm/testing is part of the wheel); a real provider is
# a separate distribution registering the `ccm.cloud_providers` entry point: add its wheel to the
# builder stage (`pip wheel . ./providers/<name>`), or build FROM this image and pip install it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: the ccm wheel and the wheels of every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ccm ./ccm
RUN python -m pip wheel --wheel-dir /wheels .

# ---- runtime: slim Python, the wheels installed into a venv, no build tools, non-root ----------
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/ccm PATH=/opt/ccm/bin:$PATH
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-index --find-links=/wheels ccm \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot
USER 65532:65532
# The secure port (HTTPS: /healthz, /livez, /readyz open; /metrics behind delegated auth).
EXPOSE 10258
# Runs with a read-only root filesystem; the manifests mount an emptyDir on /tmp.
ENTRYPOINT ["python", "-m", "ccm"]
