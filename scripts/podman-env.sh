#!/usr/bin/env bash
# The project's own podman set-up, kept out of the machine's /etc/containers: writes
# containers.conf and storage.conf under the cache dir and exports CONTAINERS_CONF /
# CONTAINERS_STORAGE_CONF pointing at them. Images and build layers live in that cache,
# so they survive between runs (a warm build reuses them).
#
#   source scripts/podman-env.sh        # in a script: podman now uses the project's set-up
#   bash scripts/podman-env.sh --print  # write the files, print the variables (KEY=VALUE)
#
# Cache dir: $SEG_CONTAINER_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/seg/containers.
#
# Why each setting (measured on Debian 12 hosts with cgroup v1 and a hybrid v2 mount):
# - runc, not crun: crun refuses to start containers there;
# - cgroupfs + no-conmon cgroups + file events: no systemd as PID 1 is assumed;
# - default_ulimits at or below the host's hard limits: root without CAP_SYS_RESOURCE
#   cannot raise them, and podman's defaults are above them;
# - netns "host" by default: the default bridge network rewrites the machine's
#   nftables; callers that want isolation pass --network slirp4netns explicitly.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail  # run, not sourced: the caller's shell options stay its own
fi

_seg_podman_env() {
  local home="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
  local cache="${SEG_CONTAINER_CACHE:-${XDG_CACHE_HOME:-$home/.cache}/seg/containers}"
  # Run-time state (locks, mounts) per storage: two caches must not share it.
  local run_root key
  key=$(printf '%s' "$cache" | sha256sum | cut -c1-8)
  if [ "$(id -u)" -eq 0 ]; then
    run_root="/run/seg-podman/$key"
  else
    run_root="${XDG_RUNTIME_DIR:-/tmp/seg-podman-$(id -u)}/seg-podman/$key"
  fi
  local nofile nproc
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  [ "$nofile" = "unlimited" ] && nofile=1048576
  [ "$nproc" = "unlimited" ] && nproc=32768
  [ "$nproc" -gt 32768 ] && nproc=32768
  mkdir -p "$cache/storage" "$run_root"
  local conf="$cache/containers.conf" storage="$cache/storage.conf"
  local new_conf new_storage
  new_conf=$(cat <<EOF
# Written by scripts/podman-env.sh; edits are overwritten.
[containers]
cgroups = "no-conmon"
netns = "host"
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "${cache}/events.log"
tmp_dir = "${run_root}/libpod"
EOF
)
  new_storage=$(cat <<EOF
# Written by scripts/podman-env.sh; edits are overwritten.
[storage]
driver = "overlay"
graphroot = "${cache}/storage"
runroot = "${run_root}/storage"
EOF
)
  [ -f "$conf" ] && [ "$(cat "$conf")" = "$new_conf" ] || printf '%s\n' "$new_conf" >"$conf"
  [ -f "$storage" ] && [ "$(cat "$storage")" = "$new_storage" ] || printf '%s\n' "$new_storage" >"$storage"
  export CONTAINERS_CONF="$conf" CONTAINERS_STORAGE_CONF="$storage" SEG_CONTAINER_CACHE="$cache"
}

_seg_podman_env
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = "--print" ]; then
  printf 'CONTAINERS_CONF=%s\nCONTAINERS_STORAGE_CONF=%s\nSEG_CONTAINER_CACHE=%s\n' \
    "$CONTAINERS_CONF" "$CONTAINERS_STORAGE_CONF" "$SEG_CONTAINER_CACHE"
fi
