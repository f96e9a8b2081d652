#!/usr/bin/env bash
# `make bench`: run every bench script in bench/ (files starting with "_" are helpers),
# one after the other, on this machine. Figures are printed, never asserted.
# Extra arguments for one script: BENCH_ARGS_<name>="..." e.g.
#   BENCH_ARGS_held_pings="--pings 20000" make bench
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
status=0
for script in bench/*.py; do
    name=$(basename "$script" .py)
    case "$name" in _*) continue ;; esac
    var="BENCH_ARGS_${name}"
    echo "=== $script ${!var:-}"
    # shellcheck disable=SC2086
    if ! "$PY" "$script" ${!var:-}; then
        echo "!!! $script failed" >&2
        status=1
    fi
    echo
done
exit $status
