#!/usr/bin/env bash
# `make bench`: run every bench script in bench/ (files starting with "_" are helpers),
# one after the other, on this machine, then print ONE table of their headline figures
# (each script appends its rows to $SEG_BENCH_SUMMARY; bench/_summary.py prints them).
# Figures are printed, never asserted. Every script also runs alone (see its docstring).
# Extra arguments for one script: BENCH_ARGS_<name>="..." e.g.
#   BENCH_ARGS_held_pings="--pings 20000" make bench
# Only some scripts: BENCH_ONLY="proxy_throughput serial_latency" make bench
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SEG_BENCH_SUMMARY=$(mktemp -t seg-bench-summary.XXXXXX)
export SEG_BENCH_SUMMARY
trap 'rm -f "$SEG_BENCH_SUMMARY"' EXIT
status=0
failed=()
for script in bench/*.py; do
    name=$(basename "$script" .py)
    case "$name" in _*) continue ;; esac
    if [ -n "${BENCH_ONLY:-}" ] && [[ " $BENCH_ONLY " != *" $name "* ]]; then
        continue
    fi
    var="BENCH_ARGS_${name}"
    echo "=== $script ${!var:-}"
    # shellcheck disable=SC2086
    if ! "$PY" "$script" ${!var:-}; then
        echo "!!! $script failed" >&2
        failed+=("$name")
        status=1
    fi
    echo
done
echo "=== summary (median (min-max) over each bench's rounds; vs nginx: same run)"
"$PY" bench/_summary.py "$SEG_BENCH_SUMMARY"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}"
fi
exit $status
