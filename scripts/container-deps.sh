#!/usr/bin/env bash
# Installs the Debian packages the container tier (tests/container) needs, only when they
# are missing: podman with runc (crun cannot start containers on cgroup v1 hosts with a
# hybrid v2 mount), buildah, mmdebstrap (the Debian-package base image), fuse-overlayfs,
# slirp4netns, uidmap, and haproxy (the two-node site's load balancer under test).
# Needs root, as on the dev and CI machines; elsewhere it says what is missing and exits
# 0, and the tier skips with that reason (tests/container/podman.py).
set -euo pipefail
packages=(podman buildah mmdebstrap uidmap fuse-overlayfs slirp4netns runc haproxy)
need=()
for pkg in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "installed" ] || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "container-deps: missing ${need[*]}; the container tier will be skipped" \
    "(run as root or: sudo apt-get install -y ${need[*]})" >&2
  exit 0
fi
echo "container-deps: installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts haproxy as a service on install; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet haproxy 2>/dev/null; then
  systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
