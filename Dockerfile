# ecomm-cdc: the service image.
#
# Three stages: `deps` installs the dependencies into a virtualenv, `wheel`
# builds the package; the runtime stage copies that virtualenv onto a clean
# base and installs the wheel into it.
# The runtime runs as uid 10001 and writes nowhere but /data (the embedded
# DuckDB file) and /tmp, so it runs with a read-only root filesystem.
#
#   podman build --format docker -t ecomm-cdc .      # or: docker build -t ecomm-cdc .
#
# Behind a TLS-intercepting proxy, hand pip the proxy's CA as a build secret
# (never an ARG or a COPY, so it stays out of every layer):
#   podman build --secret id=pip-ca,src="$PIP_CERT" ...
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL / PIP_TRUSTED_HOST may be passed as
# --build-arg: they exist in the `deps` stage only, which the final image
# does not keep (its history shows the runtime stage alone).

ARG PYTHON_IMAGE=docker.io/library/python:3.12-slim

FROM ${PYTHON_IMAGE} AS deps

ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120

SHELL ["/bin/sh", "-eu", "-c"]
WORKDIR /src
# Call `python3`, not `python`: a Debian-based base has only the former.
RUN python3 -m venv /opt/venv

# The dependencies (and the build backend) alone: this stage is rebuilt only
# when pyproject.toml changes, not on every change to the code.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip-ca,required=false \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
        print("\n".join(p["project"]["dependencies"] + p["build-system"]["requires"]))' \
        > /tmp/requirements.txt; \
    /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt


# The package as a wheel (not editable); sql/ ships inside it as service.sql.
FROM deps AS wheel
COPY README.md ./
COPY sql ./sql
COPY service ./service
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .


FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="ecomm-cdc" \
      org.opencontainers.image.description="Streams e-commerce order changes (CDC) into DuckDB or Snowflake" \
      org.opencontainers.image.licenses="MIT"

# A fixed numeric uid/gid: Kubernetes can check runAsNonRoot only against a number.
# No home of its own: HOME is /tmp, the one writable place besides /data.
# CDC_RATE: a long-lived container streams at a realistic 200 events/s unless
# told otherwise (-e CDC_RATE=0 for as fast as possible), so a bare
# `docker run` does not fill its volume at full speed.
RUN groupadd --gid 10001 cdc \
    && useradd --no-log-init --uid 10001 --gid 10001 \
        --home-dir /tmp --no-create-home --shell /usr/sbin/nologin cdc \
    && mkdir -p /data \
    && chown 10001:10001 /data \
    && chmod 0750 /data

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CDC_DUCKDB_PATH=/data/ecomm.duckdb \
    CDC_LOG_FORMAT=json \
    CDC_RATE=200

WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# Stdlib only (a slim image has no curl). Follows CDC_HTTP_PORT if it is changed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CDC_HTTP_PORT', '8080'), timeout=3)"]

# Exec form: Python is PID 1 and receives SIGTERM itself (it drains, then exits 0).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ecomm-cdc"]
CMD ["run"]

# Last, so a change to the code rebuilds only these layers. The files stay
# owned by root: the service cannot change its own code. (A COPY, not a
# RUN --mount from the wheel stage: buildah's layer cache does not see a
# changed wheel through a mount and would keep the old code.)
COPY --from=deps /opt/venv /opt/venv
COPY --from=wheel /wheels/ /wheels/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-index /wheels/*.whl \
    && /opt/venv/bin/pip check

USER 10001:10001
