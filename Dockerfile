# The gateway node image: `docker build -t seg-gateway .` then
#   docker run -p 8443:8443 -v /srv/seg:/var/lib/seg-gateway \
#     -e SEG_GW_TLS_CERT=... -e SEG_GW_UPSTREAM_URL=... -e SEG_GW_API_URL=... seg-gateway
# Configuration: environment variables SEG_GW_* or `--config FILE` (docs/gateway.md).

FROM python:3.11-slim AS build
WORKDIR /src
# Only what the gateway distribution needs: the contract and the gateway package.
COPY pyproject.toml README.md ./
COPY seg_contract ./seg_contract
COPY onprem_gateway ./onprem_gateway
RUN pip install --no-cache-dir --no-compile --prefix=/install ".[gateway]"

FROM python:3.11-slim
COPY --from=build /install /usr/local
# A fixed, unprivileged user; the state directory (last-known-good policy, event spool)
# is its only writable place and the natural volume mount.
RUN groupadd --system --gid 10001 seg \
 && useradd --system --uid 10001 --gid seg --home-dir /var/lib/seg-gateway --shell /usr/sbin/nologin seg \
 && mkdir -p /var/lib/seg-gateway \
 && chown seg:seg /var/lib/seg-gateway \
 && chmod 0700 /var/lib/seg-gateway
USER seg:seg
ENV PYTHONUNBUFFERED=1 \
    SEG_GW_STATE_DIR=/var/lib/seg-gateway \
    SEG_GW_LISTEN_PORT=8443 \
    SEG_GW_ADMIN_PORT=9090
VOLUME ["/var/lib/seg-gateway"]
# 8443: EAS (HTTPS, non-root cannot bind 443; map it). 9090: admin port, 127.0.0.1 only
# unless SEG_GW_ADMIN_HOST says otherwise.
EXPOSE 8443
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('SEG_GW_ADMIN_PORT', '9090'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["seg-gateway", "run"]
