#!/usr/bin/env bash
# Builds the gateway image with podman, without Docker and without a registry:
#
#   bash scripts/build-image.sh [TAG]          # default localhost/seg-gateway:latest
#   SEG_IMAGE_BASE=python:3.11-slim bash scripts/build-image.sh   # the official base
#
# By default the base is the Debian-package image of scripts/build-base-image.sh (built
# once, then cached). Layers are cached in the project's podman storage
# (scripts/podman-env.sh): a build after a source change re-runs only the last steps.
# Package downloads inside the build see the host's CA bundle, so a TLS-inspecting proxy
# the host trusts is trusted by pip too.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
source scripts/podman-env.sh

tag="${1:-localhost/seg-gateway:latest}"
if [ -n "${SEG_IMAGE_BASE:-}" ]; then
  base="$SEG_IMAGE_BASE"
  pull=missing
else
  base=$(bash scripts/build-base-image.sh)
  pull=never
fi
args=(--format docker --network host --pull="$pull" --build-arg "BASE=$base" --tag "$tag")
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ]; then
  # Debian's pip reads this path (the official image's pip keeps its own bundle).
  args+=(--volume "$bundle:$bundle:ro")
fi
start=$(date +%s.%N)
podman build --quiet "${args[@]}" . >/dev/null
seconds=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "build-image: $tag on $base in ${seconds} s, $((size / 1000000)) MB" >&2
echo "$tag"
