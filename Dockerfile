# The zomro-backup-operator image. Needs BuildKit (the default builder since Docker 23):
#   docker build -t zomro-backup-operator:0.1.0 .
# Runs as a numeric non-root user with a read-only root filesystem; only /tmp must be writable
# (the Helm chart and deploy/ mount an emptyDir there).

# python:3.11-slim-bookworm (Python 3.11.16), pinned by its multi-arch index digest so that a build
# today and one next month start from the same bytes. Move it on purpose, e.g. with
#   docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:fe556eaffd0d96abd8685b83bb8a69addd0dc730fa193669a7df0d49ddcfac02

# ---- builder: turns the locked dependencies and the project into wheels -------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Dependencies first, from the lock alone: this layer is rebuilt only when they change, not on every
# source edit. requirements.lock (`make lock`) pins [project].dependencies and all they need, each
# with its hashes: pip refuses a file whose hash is not listed, and takes published wheels only, so
# the image holds exactly the bytes that were locked, whatever the index serves today.
COPY requirements.lock ./
RUN pip wheel --no-cache-dir --require-hashes --only-binary=:all: --wheel-dir /wheels/deps --requirement requirements.lock \
    && cp requirements.lock /wheels/deps/requirements.lock

# Then the project itself, without its dependencies (they are above).
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/app .

# ---- runtime: the slim base plus installed wheels; no compilers, no wheels left behind -----------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="zomro-backup-operator" \
      org.opencontainers.image.description="Kubernetes operator that keeps Zomro VPS backup schedules in step with BackupSchedule resources" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm" \
      org.opencontainers.image.base.digest="sha256:fe556eaffd0d96abd8685b83bb8a69addd0dc730fa193669a7df0d49ddcfac02"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Installed as root into the interpreter's site-packages (owned by root, read-only to the operator's
# user); --no-index proves the wheels from the builder are all that is installed, and
# --require-hashes checks each against the lock once more.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --require-hashes --find-links=/wheels/deps --requirement /wheels/deps/requirements.lock
# A layer of its own, so that a source change leaves the dependency layer above cached.
# hadolint ignore=DL3059
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/app/zomro_backup_operator-*.whl

# A numeric user (no passwd entry needed) so that runAsNonRoot can be verified by the kubelet.
# HOME points at the one writable place.
ENV HOME=/tmp
WORKDIR /tmp
USER 65532:65532

# 8080: liveness (/healthz, with --liveness); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["zomro-backup-operator", "run"]
CMD ["--standalone", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
