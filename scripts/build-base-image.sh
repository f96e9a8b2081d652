#!/usr/bin/env bash
# The Debian-package base image for CI and for sites without a container registry:
# Debian 12's python3 (3.11) on a minimal root file system made by mmdebstrap, imported
# into the project's podman storage (scripts/podman-env.sh). Prints the image name.
#
#   bash scripts/build-base-image.sh            # reuse the cached tarball/image if any
#   SEG_BASE_REFRESH=1 bash scripts/build-base-image.sh   # rebuild (security updates)
#
# The root file system tarball is cached in $SEG_CONTAINER_CACHE/base/, keyed by a hash
# of the recipe below (suite, variant, packages, dpkg options), so a change of the
# package list builds a new one and everything else reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh

suite=bookworm
# python3 + pip (pip runs in the Dockerfile's build stage only), python-is-python3
# (the image's HEALTHCHECK runs `python`), passwd (useradd), ca-certificates (TLS to the
# mail server and the control plane).
packages=python3,python3-pip,python-is-python3,ca-certificates,passwd
# Documentation, manual pages and translations are of no use in an image.
dpkgopts=(
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/locale/*'
  'path-exclude=/usr/share/info/*'
)
# The merged-/usr hook: without it Debian 12 pulls in usrmerge and perl (+50 MB).
hook_dir=/usr/share/mmdebstrap/hooks/merged-usr

recipe="suite=$suite variant=minbase packages=$packages hook=merged-usr dpkg=${dpkgopts[*]}"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
image="localhost/seg-debian-py:$key"
tarball="$SEG_CONTAINER_CACHE/base/seg-debian-py-$suite-$key.tar"

if [ -z "${SEG_BASE_REFRESH:-}" ] && podman image exists "$image"; then
  echo "$image"
  exit 0
fi
if [ -n "${SEG_BASE_REFRESH:-}" ] || [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || {
    echo "build-base-image: mmdebstrap is missing (bash scripts/container-deps.sh)" >&2
    exit 1
  }
  mkdir -p "$(dirname "$tarball")"
  echo "build-base-image: mmdebstrap $suite ($packages) -> $tarball" >&2
  args=(--variant=minbase --format=tar --hook-dir="$hook_dir" --include="$packages")
  for opt in "${dpkgopts[@]}"; do args+=(--dpkgopt="$opt"); done
  log="$tarball.log"
  if ! mmdebstrap "${args[@]}" "$suite" "$tarball.partial" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "build-base-image: mmdebstrap failed (full log: $log)" >&2
    exit 1
  fi
  mv "$tarball.partial" "$tarball"
  # Tarballs of earlier recipes are of no further use.
  find "$(dirname "$tarball")" -name 'seg-debian-py-*.tar*' ! -name "$(basename "$tarball")*" -delete
fi
echo "build-base-image: importing $tarball as $image" >&2
podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$image" >/dev/null
echo "$image"
