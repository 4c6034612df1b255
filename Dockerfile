# syntax=docker/dockerfile:1
# ccm cloud-controller-manager image, one recipe for every provider: the PROVIDER build argument
# names the provider's source folder (a distribution registering the `ccm.cloud_providers` entry
# point); empty builds the image with only the `fake` provider that ships in the kube-ccm wheel.
#   docker build -t ccm:latest .
#   docker build --build-arg PROVIDER=samples/private-cloud -t ccm-private-cloud:latest .
#   docker build --build-arg PROVIDER=providers/aws -t ccm-aws:latest .
# Multi-arch (BuildKit; the wheels are pure Python or have manylinux wheels for both):
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg PROVIDER=providers/aws \
#     -t registry.example/ccm-aws:v0.1.0 --push .
# This repository's CI has no container engine, so the image is never built here (docs/deploy.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: the wheels of kube-ccm, of the provider, and of every dependency ----------------
FROM ${PYTHON_IMAGE} AS builder
ARG PROVIDER=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# pyproject.toml, README.md, ccm/ and the provider folders (samples/, providers/): .dockerignore
# keeps tests, docs and the rest out. Only the provider named by PROVIDER is built.
COPY . ./
RUN python -m pip wheel --wheel-dir /wheels . ${PROVIDER:+"./${PROVIDER}"}

# ---- runtime: slim Python, the wheels installed into a venv, no build tools, non-root ----------
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/ccm PATH=/opt/ccm/bin:$PATH
# Every wheel the builder made: kube-ccm, the provider (if any) and their dependencies, nothing
# fetched from an index.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-index --find-links=/wheels /wheels/*.whl \
    && groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot
USER 65532:65532
# The secure port (HTTPS: /healthz, /livez, /readyz open; /metrics behind delegated auth).
EXPOSE 10258
# Runs with a read-only root filesystem; the manifests mount an emptyDir on /tmp.
ENTRYPOINT ["python", "-m", "ccm"]
