# The gateway node image (docs/gateway.md, "Run it").
#
#   docker build -t seg-gateway .                       # on the official python:3.11-slim
#   podman build --format docker -t seg-gateway .       # same; --format docker keeps HEALTHCHECK
#   make image                                          # Debian-package base, no registry needed
#
#   docker run --read-only --tmpfs /tmp -v seg-state:/var/lib/seg-gateway -p 443:8443 \
#     -v /etc/seg-gateway:/etc/seg-gateway:ro seg-gateway --config /etc/seg-gateway/gateway.toml
#
# One Dockerfile for both bases: BASE is any image with python3.11 (+ pip, useradd) on
# PATH as `python`. The build stage installs into /install with `pip install --root`, so
# the runtime stage gets exactly the files pip wrote, wherever the base's Python keeps
# its packages (site-packages on the official image, dist-packages on Debian's).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1
WORKDIR /src
# 1. The dependencies, from pyproject.toml alone: this layer is reused until it changes
#    (a source change rebuilds only step 2, without the network). The build backend is
#    installed once here so that step 2 needs no isolated build environment.
COPY pyproject.toml ./
RUN python -m pip install --quiet "setuptools>=77" wheel \
 && mkdir seg_contract onprem_gateway \
 && touch README.md seg_contract/__init__.py onprem_gateway/__init__.py \
 && python -m pip install --quiet --no-compile --no-build-isolation --root=/install ".[gateway]" \
 # the placeholder's build output must not shadow the real sources in step 2
 && rm -rf build ./*.egg-info README.md seg_contract onprem_gateway
# 2. The gateway distribution: the contract and the gateway package, nothing else.
COPY README.md ./
COPY seg_contract ./seg_contract
COPY onprem_gateway ./onprem_gateway
RUN python -m pip install --quiet --no-compile --no-build-isolation --no-deps --root=/install \
      --no-warn-script-location . \
 # the distribution's other console script (the admin CLI) needs packages not in the image
 && rm -f /install/usr/local/bin/seg \
 # Bytecode compiled here, with the paths it will have at run time: the root file system
 # is read-only, so Python could not write it later and would recompile at every start.
 && python -m compileall -q -j 0 --invalidation-mode unchecked-hash -s /install -p / /install

FROM ${BASE}
LABEL org.opencontainers.image.title="seg-gateway" \
      org.opencontainers.image.description="Secure Email Gateway node (Exchange ActiveSync)" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged user (numeric below, so Kubernetes' runAsNonRoot can check it).
# The state directory (last-known-good policy, event spool, runtime.json) is its only
# writable place: run with --read-only, this volume and a tmpfs on /tmp.
RUN groupadd --system --gid 10001 seg \
 && useradd --system --uid 10001 --gid seg --home-dir /var/lib/seg-gateway \
      --no-create-home --shell /usr/sbin/nologin seg \
 && mkdir -p /var/lib/seg-gateway /etc/seg-gateway \
 && chown seg:seg /var/lib/seg-gateway \
 && chmod 0700 /var/lib/seg-gateway
COPY --from=build /install/ /
USER 10001:10001
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LANG=C.UTF-8 \
    SEG_GW_STATE_DIR=/var/lib/seg-gateway \
    SEG_GW_LISTEN_PORT=8443 \
    SEG_GW_ADMIN_PORT=9090
VOLUME ["/var/lib/seg-gateway"]
# 8443: EAS (HTTPS; non-root cannot bind 443, map it). 9090: the admin port (health,
# metrics), 127.0.0.1 only unless SEG_GW_ADMIN_HOST says otherwise (a load balancer's
# or the kubelet's health checks need SEG_GW_ADMIN_HOST=0.0.0.0 on a private network).
EXPOSE 8443
# The health check asks the admin port the node actually bound (runtime.json in the state
# directory), whether it came from SEG_GW_ADMIN_PORT, a --config file or port 0.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import json, os, urllib.request; d = os.environ.get('SEG_GW_STATE_DIR', '/var/lib/seg-gateway'); p = json.load(open(d + '/runtime.json'))['admin_port']; urllib.request.urlopen('http://127.0.0.1:%d/livez' % p, timeout=4)"]
# The node is PID 1 (exec form, no shell): SIGTERM reaches it directly, it stops
# accepting, drains held requests for shutdown_grace_s (30 s by default) and exits 0.
# Give the runtime's stop timeout more than that (docker stop -t 45, compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["seg-gateway", "run"]
