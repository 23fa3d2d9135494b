# crystal-watchd as a container for NAS app platforms (Synology Container Manager, QNAP
# Container Station, Unraid, TrueNAS) and plain Docker/Podman hosts.
#
#   docker build -t crystal-watchd .
#   docker compose up -d          (see compose.yaml and the README's "Container" section)
#
# Any Debian-based image with python3 and its venv module works as BASE_IMAGE.
ARG BASE_IMAGE=python:3.12-slim-bookworm

# --- build: wheels for the project and every dependency, installed into a venv -------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crystal_watchd ./crystal_watchd
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --wheel-dir /wheels '.[postgres]' \
 && python3 -m venv /opt/crystal-watchd \
 && /opt/crystal-watchd/bin/pip install --no-index --find-links /wheels 'crystal-watchd[postgres]' \
 && /opt/crystal-watchd/bin/pip uninstall --yes pip setuptools

# --- runtime: the base, tini, time zones, the venv and the container's own scripts --------
FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends tini tzdata \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY --from=build /opt/crystal-watchd /opt/crystal-watchd
COPY container/entrypoint /usr/local/bin/crystal-watchd-entrypoint
COPY container/healthcheck.py /usr/local/lib/crystal-watchd/healthcheck.py
COPY container/config.yaml /usr/local/share/crystal-watchd/config.yaml
RUN chmod 0755 /usr/local/bin/crystal-watchd-entrypoint \
 && chmod 0644 /usr/local/lib/crystal-watchd/healthcheck.py /usr/local/share/crystal-watchd/config.yaml \
 && mkdir -p /config /data

ENV PATH=/opt/crystal-watchd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CRYSTAL_WATCHD_CONFIG=/config/config.yaml \
    STATE_DIRECTORY=/config/state \
    PUID=1000 \
    PGID=1000 \
    UMASK=022
VOLUME ["/config"]
# The daemon finishes in-flight jobs for shutdown_grace seconds (default 20) on SIGTERM: give
# the container a longer stop timeout (compose stop_grace_period, docker stop -t).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["/opt/crystal-watchd/bin/python", "/usr/local/lib/crystal-watchd/healthcheck.py"]
# tini as PID 1 passes SIGTERM on and reaps children; the entrypoint drops root and execs.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/crystal-watchd-entrypoint"]
CMD ["run"]
