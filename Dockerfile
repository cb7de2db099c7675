# tick-exporter image: linux/arm/v7 (Raspberry Pi, HypriotOS), linux/arm64, linux/amd64.
#
#   docker build -t tick-exporter .                         # on the target machine
#   docker buildx build --platform linux/arm/v7,linux/arm64,linux/amd64 -t REPO/tick-exporter .
#
# BASE_IMAGE: any Debian-like image with python3 >= 3.11 and its venv module. The default
# is the official Python image; the tests build FROM a debootstrapped Debian instead
# (scripts/build-base-image), since no registry is reachable there. PIP_NO_INDEX and
# PIP_FIND_LINKS (build arguments, read by pip as environment) let a build install from
# a directory of wheels in the build context with no network.
#
# Runtime dependencies are pure Python or have wheels for all three platforms except
# dbus-fast on arm/v7, which then installs as pure Python (no compiler needed). Nothing
# is compiled, so the runtime stage has no toolchain.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX=
ARG PIP_FIND_LINKS=
# SKIP_CYTHON: where dbus-fast has no wheel (arm/v7) pip builds it from its sdist, which
# would run Cython for minutes on a Pi only to find no compiler here and fall back to
# pure Python; skip straight to that.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 SKIP_CYTHON=1
COPY . /src
RUN python3 -m venv /opt/tick-exporter \
 && /opt/tick-exporter/bin/pip install /src \
 && /opt/tick-exporter/bin/pip uninstall -y pip \
 && find /opt/tick-exporter -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/tick-exporter/bin/python -m compileall -q /opt/tick-exporter/lib

FROM ${BASE_IMAGE}
# journalctl, to read a failed run's lines from the host's journal files (mounted
# read-only, docs/deploy.md). Debian ships it only in `systemd` (bookworm has no
# smaller package with it): --no-install-recommends adds 11 packages, 17 MB installed
# (5.4 MB download) on amd64. Nothing of it runs but journalctl, and only when a run
# failed. JOURNALCTL_PACKAGE= (empty) leaves it out: the runs' `log` is then empty and
# the agent reports "cannot run journalctl" (component=journal).
ARG JOURNALCTL_PACKAGE=systemd
RUN if [ -n "$JOURNALCTL_PACKAGE" ] && ! command -v journalctl >/dev/null; then \
        apt-get update \
     && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$JOURNALCTL_PACKAGE" \
     && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /opt/tick-exporter /opt/tick-exporter
# Configuration by environment (TICK_EXPORTER_<SECTION>_<KEY>) or a file named by
# TICK_EXPORTER_CONFIG. The defaults fit a container: the system bus at
# /run/dbus/system_bus_socket (mount the host's /run/dbus), the state file and spool
# under /var/lib/tick-exporter (a volume, so they survive upgrades).
ENV PATH=/opt/tick-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1
VOLUME /var/lib/tick-exporter
# Root in the container: reading the host's system bus needs no privilege, but the DNS
# probes enter other containers' network namespaces (setns needs CAP_SYS_ADMIN). The
# compose file drops every capability except those.
HEALTHCHECK --interval=30s --timeout=10s --start-period=2m --retries=3 \
    CMD ["tick-exporter", "health"]
ENTRYPOINT ["tick-exporter"]
CMD ["run"]
